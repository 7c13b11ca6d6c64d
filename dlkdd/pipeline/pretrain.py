"""ActLumos student, stage 1: self-supervised pre-training on dark clips (``dlkdd pretrain``).

ActLumos (Suresh Dass et al.) first pre-trains the student without labels on the dark clips
only, with two views of each clip and a contrastive objective; stage 2 is the usual
``dlkdd student`` initialised from this checkpoint (``model.pretrained``) and distilled from the
ActLumos teacher's cached logits.

- :class:`TwoViewDataset`: sample ``i`` at epoch ``e`` is two random training views of one dark
  clip drawn from one generator ``view_rng(seed, e, i)`` (independent crops, scales and flips,
  and start frames forced apart when the video is long enough: a temporal offset)::

      {"video": (3,T,S,S), "video2": (3,T,S,S), "label": int, "key": str, "view": (2,P), "index": int}

- :class:`PretrainNet`: the student's trunk + a projection head::

      x (B,3,T,H,W) in [0,1] -> (x - mean)/std -> R(2+1)D trunk (B,512,T',H',W')
        -> mean over T',H',W' (B,512) -> Linear 512 -> ReLU -> Linear proj_dim -> z (B,proj_dim)

  State dict ``mean``, ``std``, ``backbone.*`` (torchvision names), ``proj.*``: the ``backbone.``
  prefix is what :func:`dlkdd.models.r2plus1d.load_pretrained` takes from a dlkdd checkpoint, so
  ``--set model.pretrained=OUT/pretrain.pt`` initialises the student's trunk (the temporal head
  and classifier start fresh, the projection head is dropped).
- :class:`InfoNCEObjective`: ``L = info_nce(z(view1), z(view2); pretrain.temperature)`` (SimCLR
  NT-Xent, Chen et al. 2020; :func:`dlkdd.losses.info_nce`); both views in one 2B batch.
  Logged terms: ``loss``, ``pos_sim`` (mean cosine of the two views' embeddings) and ``pair_acc``
  (% of the 2B anchors whose nearest other embedding is their own second view).
- :func:`pretrain_student`: the training run (``pretrain.epochs``, ``pretrain.lr``, the rest of
  ``train.*``), no validation; writes ``OUT/pretrain.pt`` (kind ``pretrain``), ``OUT/last.pt``,
  ``OUT/log.{csv,json}`` (the loss per epoch), ``OUT/metrics.json``.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlkdd.losses import info_nce

log = logging.getLogger(__name__)

__all__ = ["TwoViewDataset", "two_views", "PretrainNet", "InfoNCEObjective", "pretrain_arch", "pretrain_student"]


def two_views(num_frames: int, clip_cfg: Any, rng: np.random.Generator, height: int | None = None,
              width: int | None = None) -> tuple[Any, Any]:
    """Two random training views of one video; their start frames differ whenever the video has
    more than one possible start (the second is shifted by a random non-zero offset if equal)."""
    from dlkdd.data.views import random_view

    v1 = random_view(num_frames, clip_cfg, rng, height, width)
    v2 = random_view(num_frames, clip_cfg, rng, height, width)
    starts = num_frames - ((clip_cfg.frames - 1) * clip_cfg.stride + 1) + 1  # possible start frames
    if starts > 1 and v2.start == v1.start:
        v2 = dataclasses.replace(v2, start=int((v1.start + rng.integers(1, starts)) % starts))
    return v1, v2


class TwoViewDataset:
    """Two random views of each dark clip of ``manifest`` (labels carried, never used by the loss)."""

    def __init__(self, manifest: Any, clip_cfg: Any, seed: int = 0):
        self.manifest, self.clip_cfg, self.seed, self.epoch = manifest, clip_cfg, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> dict:
        from dlkdd.data.dataset import view_rng
        from dlkdd.data.views import cut_views

        if not 0 <= index < len(self):
            raise IndexError(index)
        e = self.manifest[index]
        rng = view_rng(self.seed, self.epoch, index)
        clips, views = cut_views(e.path, lambda info: two_views(info.num_frames, self.clip_cfg, rng, info.height,
                                                                info.width), self.clip_cfg.size)  # decode once
        return {"video": clips[0], "video2": clips[1], "label": int(e.label), "key": e.key,
                "view": torch.from_numpy(np.stack([v.to_array() for v in views])), "index": int(index)}


class PretrainNet(nn.Module):
    """normalise -> R(2+1)D trunk -> global average -> projection MLP (see the module docstring)."""

    def __init__(self, backbone_name: str = "r2plus1d_18", mean: Sequence[float] = (0.0, 0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0, 1.0), proj_dim: int = 128):
        super().__init__()
        from dlkdd.models.r2plus1d import build_r2plus1d

        self.register_buffer("mean", torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1, 1))
        self.register_buffer("std", torch.tensor([float(v) for v in std]).view(1, 3, 1, 1, 1))
        self.backbone = build_r2plus1d(backbone_name, 1)
        self.backbone.fc = nn.Identity()
        dim = self.backbone.feature_dim
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, int(proj_dim)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,3,T,H,W) in [0,1] -> pooled trunk feature (B,512)."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"PretrainNet expects clips (B,3,T,H,W), got {tuple(x.shape)}")
        return self.backbone.features((x - self.mean) / self.std).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,3,T,H,W) -> projection z (B,proj_dim) (not normalised; info_nce normalises)."""
        return self.proj(self.embed(x))


class InfoNCEObjective:
    """``L = info_nce(z1, z2, temperature)`` on ``batch["video"]`` / ``batch["video2"]``; no logits."""

    def __init__(self, temperature: float = 0.1):
        self.temperature = float(temperature)

    def __call__(self, model: nn.Module, batch: dict, epoch: int) -> tuple[dict[str, torch.Tensor], None]:
        v1, v2 = batch["video"], batch["video2"]
        z = model(torch.cat([v1, v2], dim=0)).float()
        b = v1.shape[0]
        z1, z2 = z[:b], z[b:]
        loss = info_nce(z1, z2, self.temperature)
        with torch.no_grad():
            zn = F.normalize(z, dim=1)
            sim = zn @ zn.t()
            sim.fill_diagonal_(-2.0)
            target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
            pair_acc = 100.0 * (sim.argmax(1) == target).float().mean()
            pos_sim = (zn[:b] * zn[b:]).sum(1).mean()
        return {"loss": loss, "pos_sim": pos_sim, "pair_acc": pair_acc}, None


def pretrain_arch(cfg: Any) -> dict[str, Any]:
    """``arch`` of a ``pretrain.pt``: trunk, normalisation, projection size."""
    mean, std = cfg.model.norm_stats()
    return {"family": "pretrain", "backbone": cfg.model.backbone, "normalize": cfg.model.normalize,
            "mean": [float(v) for v in mean], "std": [float(v) for v in std], "proj_dim": int(cfg.pretrain.proj_dim),
            "enhancer": None}


def pretrain_student(cfg: Any, out_dir: str | Path, device: str = "auto", resume: str | Path | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Self-supervised InfoNCE pre-training of the student trunk on ``cfg``'s dark training clips.

    Runs ``pretrain.epochs`` epochs at ``pretrain.lr`` (AdamW, ``train.*`` for the rest: batch,
    schedule, workers); ``model.pretrained`` (if set) is the starting point. Returns the final
    metrics (``train``: loss, pos_sim, pair_acc of the last epoch; ``history``: every epoch).
    """
    from dlkdd.runs import prepare_data, run_training
    from dlkdd.train import distributed as ddp
    from dlkdd.utils import resolve_device, seed_everything

    info = ddp.init_distributed(resolve_device(device))
    try:
        seed_everything(cfg.seed)
        data = prepare_data(cfg, need_test=False, progress=progress and info.is_main)
        run_cfg = cfg.replace(**{"train.epochs": cfg.pretrain.epochs})
        model = PretrainNet(cfg.model.backbone, *cfg.model.norm_stats(), proj_dim=cfg.pretrain.proj_dim)
        if cfg.model.pretrained:
            from dlkdd.models.r2plus1d import load_pretrained

            load_pretrained(model.backbone, cfg.model.pretrained)
        train_ds = TwoViewDataset(data.train, cfg.clip, seed=cfg.seed)
        if len(train_ds) < 2:
            from dlkdd.errors import DataError

            raise DataError(f"{cfg.data.train_list}: InfoNCE pre-training needs at least 2 training clips "
                            f"(negatives), got {len(train_ds)}")
        log.info("pretrain (InfoNCE, T=%g): %d dark clips, %d epochs, lr %g -> %s", cfg.pretrain.temperature,
                 len(train_ds), cfg.pretrain.epochs, cfg.pretrain.lr, out_dir)
        final = run_training(run_cfg, model, train_ds, None, InfoNCEObjective(cfg.pretrain.temperature),
                             kind="pretrain", arch=pretrain_arch(cfg), classes=data.classes, out_dir=out_dir,
                             info=info, resume=resume, lr=cfg.pretrain.lr, progress=progress,
                             extra={"skipped_keys": data.skipped, "num_skipped": len(data.skipped)})
        for row in final.get("history") or []:
            log.info("pretrain epoch %s: loss %.4f pos_sim %.3f pair_acc %.1f%%", row.get("epoch"),
                     row.get("train_loss", float("nan")), row.get("train_pos_sim", float("nan")),
                     row.get("train_pair_acc", float("nan")))
        return final
    finally:
        ddp.cleanup()
