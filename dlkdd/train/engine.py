"""The training engine: one epoch of training, and evaluation. The epoch loop is :mod:`dlkdd.train.fit`.

Generic over (model, loader, objective). A batch is a dict ``{"video": (B,3,T,H,W) float,
"label": (B,) int64, "key": list[str], ...}`` (optionally ``"teacher_logits": (B,C)``); for
multi-view evaluation ``"video"`` may be ``(B,V,3,T,H,W)``. An objective is
``objective(model, batch, epoch) -> (terms, logits)``: ``terms`` a dict of named scalars including
``"loss"`` (the one optimised), ``logits`` ``(B,C)`` or None (see :mod:`dlkdd.train.objectives`).

- :func:`train_one_epoch` ``(model, loader, objective, optimizer, scheduler, epoch, tc, run)``, ``tc`` the
  ``cfg.train`` section and ``run`` an :class:`EpochRun` (device, rank 0, progress, last good checkpoint)
  -> dict of averaged metrics: every term, ``top1``/``top5`` (%),
  ``clips``, ``clips_per_s``, ``lr``, ``seconds``. Gradient accumulation, bf16 autocast and
  channels_last_3d on CUDA; ``amp="auto"`` is bf16 on CUDA and on CPUs with native bf16
  (:mod:`dlkdd.train.amp`), fp32 elsewhere. A non-finite loss raises
  :class:`~dlkdd.errors.TrainingError` before any optimizer step (the weights stay good).
- :func:`evaluate` -> ``dict(top1, top5, loss, n, per_class, per_class_n, confusion)``; a 6-D video
  ``(B,V,3,T,H,W)`` is scored by the mean of its V views' logits; summed over DDP ranks.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dlkdd.errors import TrainingError
from dlkdd.train import distributed as ddp
from dlkdd.train.amp import autocast as _autocast, autocast_dtype
from dlkdd.train.objectives import logits_of

log = logging.getLogger(__name__)

__all__ = ["Objective", "EpochRun", "autocast_dtype", "prepare_model", "channels_last", "to_device", "train_one_epoch",
           "evaluate", "set_epoch", "steps_per_epoch", "topk_correct"]

Objective = Callable[[nn.Module, dict, int], "tuple[dict[str, Any], torch.Tensor | None]"]


# ----------------------------------------------------------------------------------- helpers
def prepare_model(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Move ``model`` to ``device`` (channels-last memory formats on CUDA). Call before :func:`wrap_ddp`."""
    device = torch.device(device)
    model = model.to(device)
    if device.type == "cuda":
        model = channels_last(model)
    return model


def channels_last(model: nn.Module) -> nn.Module:
    """3-D convolutions' weights to ``channels_last_3d``, 2-D ones' to ``channels_last`` (in place; returned).
    Per module: ``model.to(memory_format=channels_last_3d)`` raises on the 4-D weights of a per-frame 2-D
    trunk (``efficientnet_lite0``, ``mobilenet_v2``)."""
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            m.to(memory_format=torch.channels_last_3d)
        elif isinstance(m, nn.Conv2d):
            m.to(memory_format=torch.channels_last)
    return model


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of ``batch`` onto ``device`` (5-D videos channels_last_3d on CUDA); other values as is."""
    device = torch.device(device)
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if device.type == "cuda" and v.dim() == 5 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last_3d)
        out[k] = v
    return out


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Iterable[int] = (1, 5)) -> list[int]:
    """Number of samples whose label is among the top-k logits, for each k (k capped at C)."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred == labels[:, None]
    return [int(hit[:, : min(k, maxk)].any(1).sum()) for k in ks]


def _batch_size(batch: Mapping[str, Any]) -> int:
    for k in ("label", "video"):
        v = batch.get(k)
        if isinstance(v, torch.Tensor):
            return int(v.shape[0])
    return len(batch["key"])


def _nan_hint(epoch: int, step: int) -> str:
    """The likely cause of a non-finite loss: at the very first step no update has happened yet, so
    it is the input (normalisation ``model.mean``/``model.std``, or the clips), not the learning rate."""
    if epoch == 0 and step == 0:
        return ("It happened before any weight update, so the learning rate is not the cause: check the input "
                "normalisation (model.mean / model.std: a tiny std overflows; `dlkdd data check --write-stats`) "
                "and these clips; set train.amp=fp32 if bf16 overflows.")
    return ("Lower train.lr, set train.amp=fp32 or check these clips, then resume from the last good checkpoint.")


def _keys_of(batch: Mapping[str, Any], limit: int = 8) -> str:
    keys = batch.get("key")
    if keys is None:
        return "<no keys>"
    keys = list(keys)
    more = f" ... (+{len(keys) - limit})" if len(keys) > limit else ""
    return ", ".join(map(str, keys[:limit])) + more


def steps_per_epoch(num_batches: int, accum_steps: int = 1, max_steps: int = 0) -> int:
    """Optimizer steps in an epoch of ``num_batches`` batches (what the scheduler counts)."""
    steps = math.ceil(num_batches / max(1, accum_steps))
    return min(steps, max_steps) if max_steps > 0 else steps


# ----------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class EpochRun:
    """Where an epoch runs: ``device``; ``is_main`` (rank 0: the progress bar); ``progress``; ``last_good``:
    the last good checkpoint, named in the error for a non-finite loss."""

    device: str | torch.device = "cpu"
    is_main: bool = True
    progress: bool = True
    last_good: str | Path | None = None


class _EpochStats:
    """Clip-weighted sums of an epoch's terms, top-1/top-5 counts, optimizer steps; :meth:`result` sums them
    over DDP ranks."""

    def __init__(self, lr: float):
        self.sums: dict[str, float] = defaultdict(float)
        self.correct1 = self.correct5 = self.n_clips = self.n_logit_clips = 0
        self.lr, self.opt_steps, self.grad_norm_sum = lr, 0, 0.0
        self.step_losses: list[float] = []
        self.t0 = time.perf_counter()

    def add(self, terms: Mapping[str, Any], logits: torch.Tensor | None, batch: Mapping[str, Any], bs: int) -> None:
        for k, v in terms.items():
            if isinstance(v, torch.Tensor):
                v = float(v.detach().float().mean())
            if isinstance(v, (int, float)):
                self.sums[k] += float(v) * bs
        if logits is not None and "label" in batch:
            c1, c5 = topk_correct(logits.detach().float(), batch["label"])
            self.correct1 += c1
            self.correct5 += c5
            self.n_logit_clips += bs
        self.n_clips += bs

    def postfix(self) -> dict[str, str]:
        el = time.perf_counter() - self.t0
        return {"loss": f"{self.sums['loss'] / max(1, self.n_clips):.4f}",
                "clips_s": f"{self.n_clips / max(el, 1e-9):.1f}"}

    def result(self, device: torch.device, grad_clip: float | None) -> dict[str, Any]:
        seconds = time.perf_counter() - self.t0
        names = sorted(self.sums)
        vec = torch.tensor([self.sums[k] for k in names] + [self.correct1, self.correct5, self.n_clips,
                                                            self.n_logit_clips], dtype=torch.float64)
        vec = _reduce_cpu(vec, device)
        n_all = max(1.0, float(vec[-2]))
        n_logit_all = float(vec[-1])
        out: dict[str, Any] = {k: float(vec[j]) / n_all for j, k in enumerate(names)}
        if n_logit_all > 0:
            out["top1"] = 100.0 * float(vec[-4]) / n_logit_all
            out["top5"] = 100.0 * float(vec[-3]) / n_logit_all
        out.update(clips=int(vec[-2]), seconds=seconds, clips_per_s=float(vec[-2]) / max(seconds, 1e-9),
                   lr=float(self.lr), steps=self.opt_steps, loss_steps=self.step_losses)
        if grad_clip and self.opt_steps:
            out["grad_norm"] = self.grad_norm_sum / self.opt_steps
        return out


def _check_finite(terms: Mapping[str, Any], epoch: int, step: int, batch: Mapping[str, Any],
                  last_good: Any) -> None:
    """Raise :class:`TrainingError` when the loss is not finite on this rank or on any other (every rank
    must stop together, not hang in the gradient all-reduce)."""
    finite = torch.isfinite(terms["loss"].detach()).all()
    if ddp.is_distributed() and torch.distributed.get_world_size() > 1:
        flag = (~finite).to(torch.float32).reshape(1)
        finite = ddp.all_reduce_sum(flag)[0] == 0
    if bool(finite):
        return
    vals = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
            for k, v in terms.items() if isinstance(v, (torch.Tensor, float, int))}
    bad = [k for k, v in vals.items() if not math.isfinite(v)] or ["loss (on another rank)"]
    raise TrainingError(
        f"non-finite {', '.join(bad)} at epoch {epoch}, step {step} (batch keys: {_keys_of(batch)}); "
        f"terms {vals}. The weights were not updated by this batch. Last good checkpoint: "
        f"{last_good or 'none'}. " + _nan_hint(epoch, step))


def _optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, grad_clip: float | None,
                    stats: _EpochStats) -> None:
    """Clip (optionally), step, zero the gradients, step the schedule; counted in ``stats``."""
    if grad_clip:
        gn = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], grad_clip)
        stats.grad_norm_sum += float(gn)
    stats.lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    stats.opt_steps += 1


def _epoch_batches(loader: Iterable[dict], accum_steps: int, max_steps: int) -> int | None:
    """Batches this epoch trains on (None when the loader has no length): ``max_steps`` caps optimizer steps."""
    try:
        n_batches = len(loader)  # type: ignore[arg-type]
    except TypeError:
        n_batches = None
    if max_steps > 0:
        cap = max_steps * accum_steps
        n_batches = cap if n_batches is None else min(n_batches, cap)
    return n_batches


def train_one_epoch(model: nn.Module, loader: Iterable[dict], objective: Objective,
                    optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int, tc: Any,
                    run: EpochRun = EpochRun()) -> dict[str, Any]:
    """Train ``model`` for one epoch as ``tc`` (a :class:`dlkdd.config.TrainConfig`) says; returns the
    epoch's metrics averaged over all clips (all ranks).

    ``tc.accum_steps`` batches per optimizer step (each batch's loss scaled by 1/group size, so
    accumulation of equal batches equals one big batch); ``tc.max_steps_per_epoch`` > 0 caps optimizer
    steps; ``tc.grad_clip`` > 0: max grad norm; ``tc.amp``: autocast. ``scheduler`` (or None) is stepped
    after every optimizer step.
    """
    from tqdm import tqdm

    device = torch.device(run.device)
    dtype = autocast_dtype(tc.amp, device)
    accum = max(1, int(tc.accum_steps))
    grad_clip = tc.grad_clip or None
    model.train()
    n_batches = _epoch_batches(loader, accum, int(tc.max_steps_per_epoch))
    stats = _EpochStats(optimizer.param_groups[0]["lr"])
    group_loss = 0.0
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(total=n_batches, desc=f"epoch {epoch}", disable=not (run.progress and run.is_main), mininterval=2.0,
               dynamic_ncols=True, leave=False)
    try:
        for i, batch in enumerate(loader):
            if n_batches is not None and i >= n_batches:
                break
            batch = to_device(batch, device)
            group_start = (i // accum) * accum
            group = accum if n_batches is None else min(accum, n_batches - group_start)
            last_in_group = (i - group_start + 1) == group
            sync = model.no_sync() if not last_in_group and hasattr(model, "no_sync") else contextlib.nullcontext()
            with sync:
                with _autocast(dtype, device):
                    terms, logits = objective(model, batch, epoch)
                _check_finite(terms, epoch, i, batch, run.last_good)
                (terms["loss"] / group).backward()
                group_loss += float(terms["loss"].detach()) / group
            if last_in_group:
                stats.step_losses.append(group_loss)
                group_loss = 0.0
                _optimizer_step(model, optimizer, scheduler, grad_clip, stats)
            stats.add(terms, logits, batch, _batch_size(batch))
            if not bar.disable:
                bar.set_postfix(**stats.postfix(), refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return stats.result(device, grad_clip)


def _reduce_cpu(vec: torch.Tensor, device: torch.device) -> torch.Tensor:
    """all_reduce a float64/int64 vector (moved to the backend's device and back to CPU)."""
    if not ddp.is_distributed():
        return vec
    backend = torch.distributed.get_backend()
    dev = device if backend == "nccl" else torch.device("cpu")
    return ddp.all_reduce_sum(vec.to(dev)).cpu()


# ----------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[dict], device: str | torch.device, num_classes: int,
             amp: str = "auto", progress: bool = True, is_main: bool = True,
             predictions: bool = False) -> dict[str, Any]:
    """Top-1/top-5 accuracy (%), mean cross-entropy, per-class accuracy (%) and confusion matrix.

    ``confusion[i][j]``: clips of true class i predicted as j. ``per_class[i]``: accuracy on class i
    (None where ``per_class_n[i] == 0``: no clip, no accuracy). A 6-D video ``(B,V,3,T,H,W)`` is scored
    by the mean of its V views' logits. Under DDP the counts are summed over ranks, so every rank
    returns the global metrics. ``predictions``: also return ``"predictions": {"keys", "labels",
    "logits" (N,C) float32}``, every scored clip's logits (gathered from all ranks; for
    :mod:`dlkdd.predictions`).
    """
    from tqdm import tqdm

    device = torch.device(device)
    dtype = autocast_dtype(amp, device)
    net = ddp.unwrap(model)
    module = isinstance(net, nn.Module)  # an exported model (dlkdd.deploy.runtime) is a plain callable
    was_training = net.training if module else False
    if module:
        net.eval()
    scores = _Scores(num_classes, predictions)
    try:
        for batch in tqdm(loader, desc="eval", disable=not (progress and is_main), mininterval=2.0, leave=False,
                          dynamic_ncols=True):
            batch = to_device(batch, device)
            video = batch["video"]
            with _autocast(dtype, device):
                if video.dim() == 6:
                    b, v = video.shape[:2]
                    logits = logits_of(net(video.flatten(0, 1))).float().reshape(b, v, -1).mean(1)
                else:
                    logits = logits_of(net(video)).float()
            scores.add(logits, batch["label"].long(), batch.get("key"))
    finally:
        if module:
            net.train(was_training)
    return scores.result(device)


class _Scores:
    """The confusion matrix, summed cross-entropy and top-5 count of :func:`evaluate` (and, with
    ``predictions``, every clip's key, label and logits)."""

    def __init__(self, num_classes: int, predictions: bool):
        self.num_classes, self.predictions = num_classes, predictions
        self.conf = torch.zeros(num_classes, num_classes, dtype=torch.float64)
        self.loss_sum, self.c5 = 0.0, 0
        self.rows: dict[str, list] = {"keys": [], "labels": [], "logits": []}

    def add(self, logits: torch.Tensor, labels: torch.Tensor, keys: Any = None) -> None:
        logits = logits.float().cpu()
        labels = labels.cpu()
        if self.predictions:
            rows = self.rows
            n = len(rows["keys"])
            rows["keys"] += list(keys) if keys is not None else [f"#{n + i}" for i in range(len(labels))]
            rows["labels"] += labels.tolist()
            rows["logits"].append(logits)
        self.loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        self.c5 += topk_correct(logits, labels, (5,))[0]
        pred = logits.argmax(1)
        self.conf.index_put_((labels, pred), torch.ones(len(labels), dtype=torch.float64), accumulate=True)

    def result(self, device: torch.device) -> dict[str, Any]:
        """The metrics of :func:`evaluate`, summed over DDP ranks."""
        c = self.num_classes
        vec = torch.cat([self.conf.flatten(), torch.tensor([self.loss_sum, float(self.c5)], dtype=torch.float64)])
        vec = _reduce_cpu(vec, device)
        conf = vec[: c * c].reshape(c, c).round().long()
        loss_sum, c5 = float(vec[-2]), int(round(float(vec[-1])))
        n = int(conf.sum())
        support = conf.sum(1)
        diag = conf.diag()
        per_class = [100.0 * float(d) / float(s) if s > 0 else None for d, s in zip(diag, support)]
        out = {"top1": 100.0 * float(diag.sum()) / max(1, n), "top5": 100.0 * c5 / max(1, n),
               "loss": loss_sum / max(1, n), "n": n, "per_class": per_class,
               "per_class_n": [int(s) for s in support], "confusion": conf.tolist()}
        if self.predictions:
            out["predictions"] = _gather_rows(self.rows, c)
        return out


def _gather_rows(rows: dict[str, list], num_classes: int) -> dict[str, Any]:
    """Per-clip rows of :func:`evaluate` from every DDP rank (rank order), logits ``(N,C)`` float32."""
    lg = torch.cat(rows["logits"]) if rows["logits"] else torch.zeros(0, num_classes)
    parts = [(rows["keys"], rows["labels"], lg)]
    if ddp.is_distributed():
        parts = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, (rows["keys"], rows["labels"], lg))
    return {"keys": [k for p in parts for k in p[0]], "labels": [lb for p in parts for lb in p[1]],
            "logits": torch.cat([p[2] for p in parts])}


# ----------------------------------------------------------------------------------- epoch loop
def set_epoch(loader: Any, epoch: int, seed: int) -> None:
    """Seed ``loader``'s data order for ``epoch``: sampler, dataset and the loader's generator."""
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    for obj in (sampler, getattr(batch_sampler, "sampler", None), getattr(loader, "dataset", None)):
        if obj is not None and hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
    gen = getattr(loader, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(ddp.loader_seed(seed, epoch))
