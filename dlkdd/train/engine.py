"""The training engine: one epoch of training, evaluation, and the epoch loop with resume.

Generic over (model, loader, loss function). A batch is a dict
``{"video": (B,3,T,H,W) float, "label": (B,) int64, "key": list[str], ...}`` (optionally
``"teacher_logits": (B,C)``); for multi-view evaluation ``"video"`` may be ``(B,V,3,T,H,W)``.
A loss function is ``loss_fn(model, batch, epoch) -> (terms, logits)``: ``terms`` a dict of named
scalars including ``"loss"`` (the one optimised), ``logits`` ``(B,C)`` or None
(see :mod:`dlkdd.train.objectives`).

- :func:`train_one_epoch` -> dict of averaged metrics: every term, ``top1``/``top5`` (%),
  ``clips``, ``clips_per_s``, ``lr``, ``seconds``. Gradient accumulation, bf16 autocast and
  channels_last_3d on CUDA; ``amp="auto"`` is bf16 on CUDA and on CPUs with native bf16
  (:mod:`dlkdd.train.amp`), fp32 elsewhere. A non-finite loss raises
  :class:`~dlkdd.errors.TrainingError` before any optimizer step (the weights stay good).
- :func:`evaluate` -> ``dict(top1, top5, loss, n, per_class, per_class_n, confusion)``, optionally
  averaging the logits of the views of one key; summed over DDP ranks.
- :func:`fit` - the epoch loop: per-epoch seeding of the data order, train, evaluate every
  ``eval_every`` epochs, ``log.csv``/``log.json``/``curves.png``, ``last.pt`` every epoch, ``best.pt``
  when val top-1 improves (a hard link to that epoch's ``last.pt``: no second copy on disk),
  ``metrics.json`` at the end; ``resume=DIR`` continues exactly (model, optimizer, scheduler,
  epoch, history, best metric, RNG states).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dlkdd.errors import TrainingError
from dlkdd.train import distributed as ddp
from dlkdd.train.amp import autocast as _autocast, autocast_dtype, resolve_amp
from dlkdd.train.checkpoint import check_compatible, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from dlkdd.train.logger import EpochLogger
from dlkdd.utils import atomic_link, atomic_write_json

log = logging.getLogger(__name__)

__all__ = ["LossFn", "autocast_dtype", "prepare_model", "to_device", "train_one_epoch", "evaluate", "fit",
           "resume_state", "steps_per_epoch", "topk_correct"]

LossFn = Callable[[nn.Module, dict, int], "tuple[dict[str, Any], torch.Tensor | None]"]


# ----------------------------------------------------------------------------------- helpers
def prepare_model(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Move ``model`` to ``device`` (channels_last_3d memory format on CUDA). Call before :func:`wrap_ddp`."""
    device = torch.device(device)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
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


def _keys_of(batch: Mapping[str, Any], limit: int = 8) -> str:
    keys = batch.get("key")
    if keys is None:
        return "<no keys>"
    keys = list(keys)
    more = f" ... (+{len(keys) - limit})" if len(keys) > limit else ""
    return ", ".join(map(str, keys[:limit])) + more


def _logits_of(out: Any) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        return out[0]
    if isinstance(out, dict):
        return out["logits"]
    return out


def steps_per_epoch(num_batches: int, accum_steps: int = 1, max_steps: int = 0) -> int:
    """Optimizer steps in an epoch of ``num_batches`` batches (what the scheduler counts)."""
    steps = math.ceil(num_batches / max(1, accum_steps))
    return min(steps, max_steps) if max_steps > 0 else steps


# ----------------------------------------------------------------------------------- training
def train_one_epoch(model: nn.Module, loader: Iterable[dict], optimizer: torch.optim.Optimizer,
                    scheduler: Any, loss_fn: LossFn, device: str | torch.device, epoch: int, accum_steps: int = 1,
                    amp: str = "auto", max_steps: int = 0, grad_clip: float | None = None, progress: bool = True,
                    is_main: bool = True, last_good: str | Path | None = None) -> dict[str, float]:
    """Train ``model`` for one epoch; returns the epoch's metrics averaged over all clips (all ranks).

    ``accum_steps`` batches per optimizer step (each batch's loss scaled by 1/group size, so
    accumulation of equal batches equals one big batch); ``max_steps`` > 0 caps optimizer steps;
    ``scheduler`` (or None) is stepped after every optimizer step; ``grad_clip``: max grad norm.
    ``last_good``: the last good checkpoint, named in the error for a non-finite loss.
    """
    from tqdm import tqdm

    device = torch.device(device)
    dtype = autocast_dtype(amp, device)
    accum_steps = max(1, int(accum_steps))
    model.train()
    try:
        n_batches = len(loader)  # type: ignore[arg-type]
    except TypeError:
        n_batches = None
    if max_steps > 0:
        cap = max_steps * accum_steps
        n_batches = cap if n_batches is None else min(n_batches, cap)

    sums: dict[str, float] = defaultdict(float)
    correct1 = correct5 = 0
    n_clips = n_logit_clips = 0
    lr = optimizer.param_groups[0]["lr"]
    opt_steps = 0
    grad_norm_sum = 0.0
    world = torch.distributed.get_world_size() if ddp.is_distributed() else 1
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(total=n_batches, desc=f"epoch {epoch}", disable=not (progress and is_main), mininterval=2.0,
               dynamic_ncols=True, leave=False)
    try:
        for i, batch in enumerate(loader):
            if n_batches is not None and i >= n_batches:
                break
            batch = to_device(batch, device)
            bs = _batch_size(batch)
            group_start = (i // accum_steps) * accum_steps
            group = accum_steps if n_batches is None else min(accum_steps, n_batches - group_start)
            last_in_group = (i - group_start + 1) == group
            sync = contextlib.nullcontext()
            if not last_in_group and hasattr(model, "no_sync"):
                sync = model.no_sync()
            with sync:
                with _autocast(dtype, device):
                    terms, logits = loss_fn(model, batch, epoch)
                loss = terms["loss"]
                finite = torch.isfinite(loss.detach()).all()
                if world > 1:  # every rank must stop together, not hang in the gradient all-reduce
                    flag = (~finite).to(torch.float32).reshape(1)
                    finite = ddp.all_reduce_sum(flag)[0] == 0
                if not bool(finite):
                    vals = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                            for k, v in terms.items() if isinstance(v, (torch.Tensor, float, int))}
                    bad = [k for k, v in vals.items() if not math.isfinite(v)] or ["loss (on another rank)"]
                    raise TrainingError(
                        f"non-finite {', '.join(bad)} at epoch {epoch}, step {i} (batch keys: {_keys_of(batch)}); "
                        f"terms {vals}. The weights were not updated by this batch. Last good checkpoint: "
                        f"{last_good or 'none'}. Lower train.lr, set train.amp=fp32 or check these clips, "
                        f"then resume from the last good checkpoint.")
                (loss / group).backward()
            if last_in_group:
                if grad_clip:
                    gn = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None],
                                                        grad_clip)
                    grad_norm_sum += float(gn)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if scheduler is not None:
                    scheduler.step()
                opt_steps += 1
            for k, v in terms.items():
                if isinstance(v, torch.Tensor):
                    v = float(v.detach().float().mean())
                if isinstance(v, (int, float)):
                    sums[k] += float(v) * bs
            if logits is not None and "label" in batch:
                c1, c5 = topk_correct(logits.detach().float(), batch["label"])
                correct1 += c1
                correct5 += c5
                n_logit_clips += bs
            n_clips += bs
            if not bar.disable:
                el = time.perf_counter() - t0
                bar.set_postfix(loss=f"{sums['loss'] / max(1, n_clips):.4f}", clips_s=f"{n_clips / max(el, 1e-9):.1f}",
                                refresh=False)
            bar.update(1)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0

    # sum over ranks: clip-weighted term sums, correct counts, clip counts
    names = sorted(sums)
    vec = torch.tensor([sums[k] for k in names] + [correct1, correct5, n_clips, n_logit_clips], dtype=torch.float64)
    vec = _reduce_cpu(vec, device)
    n_all = max(1.0, float(vec[-2]))
    n_logit_all = float(vec[-1])
    out: dict[str, float] = {k: float(vec[j]) / n_all for j, k in enumerate(names)}
    if n_logit_all > 0:
        out["top1"] = 100.0 * float(vec[-4]) / n_logit_all
        out["top5"] = 100.0 * float(vec[-3]) / n_logit_all
    out["clips"] = int(vec[-2])
    out["seconds"] = seconds
    out["clips_per_s"] = float(vec[-2]) / max(seconds, 1e-9)
    out["lr"] = float(lr)
    out["steps"] = opt_steps
    if grad_clip and opt_steps:
        out["grad_norm"] = grad_norm_sum / opt_steps
    return out


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
             amp: str = "auto", aggregate_views: bool = False, progress: bool = True,
             is_main: bool = True) -> dict[str, Any]:
    """Top-1/top-5 accuracy (%), mean cross-entropy, per-class accuracy (%) and confusion matrix.

    ``confusion[i][j]``: clips of true class i predicted as j. ``per_class[i]``: accuracy on class i
    (0.0 where ``per_class_n[i] == 0``). A 6-D video ``(B,V,3,T,H,W)`` is scored by the mean of its
    V views' logits. ``aggregate_views``: batches carry several views of one key (``"key"`` repeated);
    their logits are averaged per key over the whole loader (the views of one key must be on one
    rank). Under DDP the counts are summed over ranks, so every rank returns the global metrics.
    """
    from tqdm import tqdm

    device = torch.device(device)
    dtype = autocast_dtype(amp, device)
    net = ddp.unwrap(model)
    was_training = net.training
    net.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    loss_sum = 0.0
    c5 = 0
    per_key: dict[str, list] = {}

    def score(logits: torch.Tensor, labels: torch.Tensor) -> None:
        nonlocal loss_sum, c5
        logits = logits.float().cpu()
        labels = labels.cpu()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        c5 += topk_correct(logits, labels, (5,))[0]
        pred = logits.argmax(1)
        conf.index_put_((labels, pred), torch.ones(len(labels), dtype=torch.float64), accumulate=True)

    try:
        for batch in tqdm(loader, desc="eval", disable=not (progress and is_main), mininterval=2.0, leave=False,
                          dynamic_ncols=True):
            batch = to_device(batch, device)
            video, labels = batch["video"], batch["label"].long()
            with _autocast(dtype, device):
                if video.dim() == 6:
                    b, v = video.shape[:2]
                    logits = _logits_of(net(video.flatten(0, 1))).float().reshape(b, v, -1).mean(1)
                else:
                    logits = _logits_of(net(video)).float()
            if aggregate_views:
                for key, lg, lb in zip(batch["key"], logits.cpu(), labels.cpu()):
                    if key in per_key:
                        per_key[key][0] += lg
                        per_key[key][1] += 1
                    else:
                        per_key[key] = [lg.clone(), 1, int(lb)]
            else:
                score(logits, labels)
        if aggregate_views and per_key:
            lg = torch.stack([s / c for s, c, _ in per_key.values()])
            score(lg, torch.tensor([lb for _, _, lb in per_key.values()], dtype=torch.long))
    finally:
        net.train(was_training)

    vec = torch.cat([conf.flatten(), torch.tensor([loss_sum, float(c5)], dtype=torch.float64)])
    vec = _reduce_cpu(vec, device)
    conf = vec[: num_classes * num_classes].reshape(num_classes, num_classes).round().long()
    loss_sum, c5 = float(vec[-2]), int(round(float(vec[-1])))
    n = int(conf.sum())
    support = conf.sum(1)
    diag = conf.diag()
    per_class = [100.0 * float(d) / float(s) if s > 0 else 0.0 for d, s in zip(diag, support)]
    return {"top1": 100.0 * float(diag.sum()) / max(1, n), "top5": 100.0 * c5 / max(1, n),
            "loss": loss_sum / max(1, n), "n": n, "per_class": per_class,
            "per_class_n": [int(s) for s in support], "confusion": conf.tolist()}


# ----------------------------------------------------------------------------------- epoch loop
def _set_epoch(loader: Any, epoch: int, seed: int) -> None:
    """Seed ``loader``'s data order for ``epoch``: sampler, dataset and the loader's generator."""
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    for obj in (sampler, getattr(batch_sampler, "sampler", None), getattr(loader, "dataset", None)):
        if obj is not None and hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
    gen = getattr(loader, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(ddp.loader_seed(seed, epoch))


def _remove_torn_files(out_dir: Path) -> None:
    """Delete the temporary files (``.last.pt.*.tmp`` ...) a killed run left in ``out_dir``.

    :func:`dlkdd.utils.atomic_path` writes beside the target and renames; a kill mid-write leaves
    the previous good file plus a torn temporary one, which is garbage (often hundreds of MB).
    """
    for tmp in out_dir.glob(".*.tmp"):
        try:
            tmp.unlink()
            log.info("removed %s, left by an interrupted write", tmp)
        except OSError:  # pragma: no cover - gone already
            pass


def _state_dict_mismatch(own: Mapping[str, Any], theirs: Any) -> str:
    """``"2 missing (head.cls, ...); 1 unexpected (...); 1 mis-shaped (...)"`` between two state dicts."""
    if not isinstance(theirs, Mapping):
        return ""
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shaped = [f"{k} {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in theirs and hasattr(theirs[k], "shape") and tuple(theirs[k].shape) != tuple(own[k].shape)]
    parts = [f"{len(v)} {name} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
             for name, v in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)) if v]
    return "; ".join(parts)


def _arch_hint(arch: Any) -> str:
    if not isinstance(arch, Mapping):
        return ""
    return (f". The checkpoint is a {arch.get('backbone')} with a {arch.get('head')} head and "
            f"{arch.get('num_classes')} classes: resume with the model settings it was trained with")


def resume_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 scheduler: Any = None, kind: str | None = None, arch: dict | None = None,
                 restore_rng: bool = True) -> dict[str, Any]:
    """Load a checkpoint (``path`` a file or a run directory holding ``last.pt``) into model, optimizer
    and scheduler; restore the RNG states. Returns ``dict(start_epoch, history, best_top1, best_epoch, ckpt)``."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    ckpt = load_checkpoint(path)
    check_compatible(ckpt, kind=kind, arch=arch, path=path)
    try:
        ddp.unwrap(model).load_state_dict(ckpt["model"])
    except RuntimeError as e:
        from dlkdd.errors import CheckpointError

        raise CheckpointError(f"{path}: model weights do not fit this model: "
                              f"{_state_dict_mismatch(ddp.unwrap(model).state_dict(), ckpt['model']) or str(e).splitlines()[0]}"
                              f"{_arch_hint(ckpt.get('arch'))}") from None
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if restore_rng and ckpt.get("rng") is not None:
        set_rng_state(ckpt["rng"])
    extra = ckpt.get("extra") or {}
    epoch = ckpt.get("epoch")
    log.info("resuming from %s after epoch %s", path, epoch)
    return {"start_epoch": (int(epoch) + 1) if epoch is not None else 0, "history": list(ckpt.get("history") or []),
            "best_top1": ckpt.get("best_top1"), "best_epoch": extra.get("best_epoch"), "ckpt": ckpt, "path": path}


def fit(model: nn.Module, train_loader: Iterable[dict], val_loader: Iterable[dict] | None,
        optimizer: torch.optim.Optimizer, scheduler: Any, loss_fn: LossFn, out_dir: str | Path, epochs: int,
        device: str | torch.device, num_classes: int,
        ckpt_fields: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        start_epoch: int = 0, resume: str | Path | None = None, seed: int = 0, eval_every: int = 1,
        accum_steps: int = 1, amp: str = "auto", max_steps: int = 0, grad_clip: float | None = None,
        epoch_extras: Callable[[int], Mapping[str, Any]] | None = None, aggregate_views: bool = False,
        info: ddp.DistInfo | None = None, progress: bool = True, plot: bool = True,
        on_epoch_end: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Train epochs ``start_epoch .. epochs-1`` and return the final metrics (also ``out_dir/metrics.json``).

    ``ckpt_fields``: the static checkpoint fields (``kind``, ``arch``, ``config``, ``classes``,
    ``enhancer``, ``extra``) or a callable returning them at save time. ``resume``: a run directory
    (its ``last.pt``) or checkpoint file to continue from exactly. ``epoch_extras(epoch)``: extra
    scalars logged with the epoch (e.g. ``alpha``, ``tau``). ``seed``: seeds the per-epoch data order
    of loaders built by :func:`dlkdd.train.distributed.build_loader`. Rank 0 writes ``last.pt``,
    ``best.pt``, ``log.csv``, ``log.json``, ``curves.png``, ``metrics.json``.
    """
    out_dir = Path(out_dir)
    device = torch.device(device)
    info = info or ddp.DistInfo(device=device)
    history: list[dict[str, Any]] = []
    best_top1: float | None = None
    best_epoch: int | None = None
    if resume is not None:
        static = dict(ckpt_fields() if callable(ckpt_fields) else (ckpt_fields or {}))
        st = resume_state(resume, model, optimizer, scheduler, kind=static.get("kind"))
        start_epoch, history = st["start_epoch"], st["history"]
        best_top1, best_epoch = st["best_top1"], st["best_epoch"]
    val: dict[str, Any] | None = None
    train_m: dict[str, Any] = {}
    if resume is not None:  # a run resumed after its last epoch still reports its final metrics
        done = st["ckpt"].get("metrics") or {}
        val, train_m = done.get("val"), done.get("train") or {}
    logger = EpochLogger(out_dir, history)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            _remove_torn_files(out_dir)
    last_good: Path | None = (out_dir / "last.pt") if (out_dir / "last.pt").exists() else None
    amp_used = resolve_amp(amp, device) if info.is_main else None  # logged; in checkpoints and metrics.json

    for epoch in range(start_epoch, epochs):
        _set_epoch(train_loader, epoch, seed)
        extras = dict(epoch_extras(epoch)) if epoch_extras is not None else {}
        train_m = train_one_epoch(model, train_loader, optimizer, scheduler, loss_fn, device, epoch,
                                  accum_steps=accum_steps, amp=amp, max_steps=max_steps, grad_clip=grad_clip,
                                  progress=progress, is_main=info.is_main, last_good=last_good)
        row: dict[str, Any] = {"epoch": epoch}
        row.update({f"train_{k}": v for k, v in train_m.items() if k not in ("lr", "clips", "steps")})
        row["lr"] = train_m["lr"]
        row.update(extras)
        improved = False
        if val_loader is not None and ((epoch + 1) % eval_every == 0 or epoch == epochs - 1):
            val = evaluate(model, val_loader, device, num_classes, amp=amp, aggregate_views=aggregate_views,
                           progress=progress, is_main=info.is_main)
            row.update({"val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"]})
            if best_top1 is None or val["top1"] > best_top1:
                best_top1, best_epoch, improved = val["top1"], epoch, True
        logger.append(row)
        msg = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                       if k in ("epoch", "train_loss", "train_top1", "val_top1", "val_top5", "lr") or k in extras)
        if info.is_main:
            log.info("%s", msg)
            static = dict(ckpt_fields() if callable(ckpt_fields) else (ckpt_fields or {}))
            extra = dict(static.pop("extra", None) or {})
            extra["best_epoch"] = best_epoch
            extra["amp"] = amp_used
            ckpt = dict(static, model=ddp.unwrap(model).state_dict(), optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict() if scheduler is not None else None, epoch=epoch,
                        rng=get_rng_state(), metrics={"train": train_m, "val": val}, history=logger.history,
                        best_top1=best_top1, extra=extra)
            save_checkpoint(out_dir / "last.pt", **ckpt)
            last_good = out_dir / "last.pt"
            if improved:  # the same bytes as last.pt: a hard link costs no disk (or a copy)
                atomic_link(out_dir / "last.pt", out_dir / "best.pt")
            logger.write(plot=plot)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        ddp.barrier()

    final = {"epochs": epochs, "best_top1": best_top1, "best_epoch": best_epoch,
             "top1": val["top1"] if val else None, "top5": val["top5"] if val else None,
             "val": val, "train": train_m, "history": logger.history, "amp": amp_used}
    if info.is_main:
        atomic_write_json(out_dir / "metrics.json", final)
    return final
