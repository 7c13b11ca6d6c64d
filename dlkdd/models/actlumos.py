"""The ActLumos teacher: dark + Retinex streams, one shared R(2+1)D, fusion, BERT head, SupCon.

Suresh Dass et al., "Seeing in the Dark: A Teacher-Student Framework for Dark Video Action
Recognition via Knowledge Distillation and Contrastive Learning" (ActLumos). Forward::

    x (B,3,T,H,W) dark, in [0,1]
      dark stream    : (x - mean) / std                                   (dark statistics)
      Retinex stream : (MSR(x) - retinex_mean) / retinex_std               (frozen, no gradient)
    one weight-shared trunk (model.backbone) on both -> 2 maps (B,D,T',H',W') (D = 512 for R(2+1)D)
    fusion (dynamic | static, :mod:`dlkdd.models.fusion`) -> (B,D,T',H',W'), weights (B,T',2)
    temporal head (BERT | avg) -> logits (B,C), clip embedding (B,D)
    projection MLP D -> D -> proj_dim on the clip embedding -> z (B,proj_dim)

``forward(x, return_features=False)`` returns logits, or ``(logits, z)`` with
``return_features=True``: ``z`` is what :class:`dlkdd.train.objectives.SupConObjective`
normalises for the supervised contrastive term (Khosla et al. 2020 put the loss on a projection
of the representation, not on the representation itself). The cache stores this ``z`` under
``cache.features`` (its ``feature_dim`` is ``proj_dim``, not 512).

Design choices (documented, not from the paper):

- Both streams go through the trunk as one batch of 2B clips (same weights, one pass), so
  BatchNorm sees both streams' statistics together.
- Per-stream input normalisation: MSR output is far brighter than the dark clip (ARID: dark
  mean ~0.07, Retinex ~0.53), so each stream has its own mean/std buffers. The Retinex ones
  default to :data:`RETINEX_MEAN` / :data:`RETINEX_STD`, measured on the arid6 training clips
  (18 centred 16x56x56 clips, MSR sigmas 2/8/24); they are stored in the checkpoint ``arch``.
- Multi-scale Retinex = :class:`dlkdd.models.enhancers.MultiScaleRetinex` with
  ``enhancer.retinex_sigmas``. ``model.pretrained`` (e.g. Kinetics / IG65M R(2+1)D weights)
  initialises the shared trunk. The paper uses R(2+1)D-34; the mini preset uses R(2+1)D-18.

The checkpoint ``arch`` is :func:`actlumos_arch`: the classifier arch of
:func:`dlkdd.models.classifier.arch_dict` plus ``family: "actlumos"``, the Retinex sigmas and
statistics, the fusion kind and ``proj_dim``; :func:`actlumos_from_arch` rebuilds the model.
:data:`ACTLUMOS` is the family object (:mod:`dlkdd.models.family`) that the table
:data:`dlkdd.models.families.FAMILIES` holds: its teacher is this model trained with CE + SupCon,
its student the DL-KDD classifier distilled from the cached logits.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from dlkdd.models.fusion import build_fusion
from dlkdd.models.bert_head import AvgHead, BertHead
from dlkdd.models.classifier import arch_dict
from dlkdd.models.enhancers import MultiScaleRetinex
from dlkdd.models.family import DlkddFamily
from dlkdd.models.backbones import backbone_spec

log = logging.getLogger(__name__)

__all__ = ["RETINEX_MEAN", "RETINEX_STD", "ActLumosTeacher", "actlumos_arch", "build_actlumos_teacher",
           "actlumos_from_arch", "ActLumosFamily", "ACTLUMOS"]

# per-channel (RGB) statistics of MultiScaleRetinex((2, 8, 24)) on arid6 training clips
RETINEX_MEAN = (0.535, 0.531, 0.544)
RETINEX_STD = (0.227, 0.231, 0.206)


def _stat(v: Sequence[float]) -> torch.Tensor:
    return torch.tensor([float(a) for a in v], dtype=torch.float32).view(1, 3, 1, 1, 1)


class ActLumosTeacher(nn.Module):
    """Dual-stream teacher (see the module docstring). State dict: ``mean``, ``std``,
    ``retinex_mean``, ``retinex_std``, ``backbone.*`` (torchvision names, ``fc`` Identity),
    ``fusion.*`` (dynamic only), ``head.*``, ``proj.*``."""

    def __init__(self, arch: Mapping[str, Any]):
        """``arch``: :func:`actlumos_arch`'s dict (backbone, head, ``num_classes``, mean/std, dropouts,
        ``token_keep``, Retinex sigmas and statistics, ``fusion``, ``proj_dim``, the BERT head's ``ffn``: 4 x the
        trunk's ``feature_dim``, 2048 when absent as in checkpoints written before it was recorded); absent keys
        take the defaults."""
        super().__init__()
        head = arch.get("head", "bert")
        if head not in ("bert", "avg"):
            raise ValueError(f"unknown head {head!r}; choose bert or avg")
        drops = arch.get("dropouts", {}) or {}
        self.num_classes = num_classes = int(arch["num_classes"])
        self.fusion_kind = arch.get("fusion", "dynamic")
        self.register_buffer("mean", _stat(arch.get("mean", (0.0, 0.0, 0.0))))
        self.register_buffer("std", _stat(arch.get("std", (1.0, 1.0, 1.0))))
        self.register_buffer("retinex_mean", _stat(arch.get("retinex_mean", RETINEX_MEAN)))
        self.register_buffer("retinex_std", _stat(arch.get("retinex_std", RETINEX_STD)))
        self.enhancer = MultiScaleRetinex(arch.get("retinex_sigmas", (2.0, 8.0, 24.0))).eval()  # no parameters
        spec = backbone_spec(arch.get("backbone", "r2plus1d_18"))
        self.backbone = spec.build(num_classes)
        dim = spec.feature_dim
        self.fusion = build_fusion(self.fusion_kind, dim, streams=2)
        head_dropout = float(drops.get("head", 0.8))
        if head == "bert":
            # BERT's FFN is 4 x the trunk width; an arch without "ffn" (written before it was recorded) had 2048
            self.head: nn.Module = BertHead(dim, num_classes, ffn=int(arch.get("ffn", 2048)),
                                            dropout=float(drops.get("bert", 0.1)), head_dropout=head_dropout,
                                            token_keep=float(arch.get("token_keep", 0.8)))
        else:
            self.head = AvgHead(dim, num_classes, head_dropout=head_dropout)
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True),
                                  nn.Linear(dim, int(arch.get("proj_dim", 128))))

    def train(self, mode: bool = True) -> "ActLumosTeacher":
        super().train(mode)
        self.enhancer.eval()
        return self

    def enhance(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,T,H,W) in [0,1] -> the Retinex-enhanced clip in [0,1], no gradient."""
        with torch.no_grad():
            return self.enhancer(x.float()).to(x.dtype)

    def stream_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B,3,T,H,W) in [0,1] -> (dark map, Retinex map), each (B,D,T',H',W')."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"ActLumosTeacher expects clips (B,3,T,H,W), got {tuple(x.shape)}")
        dark = (x - self.mean) / self.std
        bright = (self.enhance(x) - self.retinex_mean) / self.retinex_std
        feats = self.backbone.features(torch.cat([dark, bright], dim=0))
        b = x.shape[0]
        return feats[:b], feats[b:]

    def fuse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (fused map (B,D,T',H',W'), fusion weights (B,T',2): [:, :, 0] dark, [:, :, 1] Retinex)."""
        return self.fusion(self.stream_maps(x))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """x (B,3,T,H,W) in [0,1] -> logits (B,C), or (logits, projection z (B,proj_dim))."""
        fused, _ = self.fuse(x)
        if not return_features:
            return self.head(fused)
        logits, emb = self.head(fused, return_features=True)
        return logits, self.proj(emb)


def actlumos_arch(cfg: Any, num_classes: int) -> dict[str, Any]:
    """``arch`` of the ActLumos teacher of ``cfg`` (a :class:`dlkdd.config.Config`)."""
    return dict(arch_dict(cfg.model, num_classes), family="actlumos", enhancer=None,
                retinex_sigmas=[float(s) for s in cfg.enhancer.retinex_sigmas],
                retinex_mean=[float(v) for v in RETINEX_MEAN], retinex_std=[float(v) for v in RETINEX_STD],
                fusion=cfg.actlumos.fusion, proj_dim=int(cfg.actlumos.proj_dim),
                ffn=4 * backbone_spec(cfg.model.backbone).feature_dim,
                actlumos={"fusion": cfg.actlumos.fusion, "proj_dim": int(cfg.actlumos.proj_dim),
                          "supcon_weight": float(cfg.actlumos.supcon_weight),
                          "supcon_temperature": float(cfg.actlumos.supcon_temperature)})


def actlumos_from_arch(arch: Mapping[str, Any]) -> ActLumosTeacher:
    """An untrained :class:`ActLumosTeacher` of ``arch`` (the caller loads the state dict)."""
    return ActLumosTeacher(arch)


def build_actlumos_teacher(cfg: Any, num_classes: int) -> ActLumosTeacher:
    """The ActLumos teacher of ``cfg``; ``model.pretrained`` initialises the shared trunk."""
    model = actlumos_from_arch(actlumos_arch(cfg, num_classes))
    if cfg.model.pretrained:
        backbone_spec(cfg.model.backbone).load_pretrained(model.backbone, cfg.model.pretrained)
    log.info("ActLumos teacher: %s, %s fusion, Retinex sigmas %s, proj %d", cfg.model.backbone, cfg.actlumos.fusion,
             tuple(cfg.enhancer.retinex_sigmas), cfg.actlumos.proj_dim)
    return model


class ActLumosFamily(DlkddFamily):
    """The ActLumos family: the dual-stream teacher above (CE + SupCon), the DL-KDD student."""

    name = "actlumos"

    def teacher_arch(self, cfg: Any, num_classes: int) -> dict[str, Any]:
        return actlumos_arch(cfg, num_classes)

    def build_teacher(self, cfg: Any, num_classes: int) -> nn.Module:
        return build_actlumos_teacher(cfg, num_classes)

    def from_arch(self, arch: Mapping[str, Any], state: Mapping[str, Any]) -> nn.Module:
        return actlumos_from_arch(arch)

    def objective(self, cfg: Any, kind: str) -> Any:
        """Teacher: ``CE + actlumos.supcon_weight * SupCon`` (:class:`dlkdd.train.objectives.SupConObjective`)."""
        if kind != "teacher":
            return super().objective(cfg, kind)
        from dlkdd.train.objectives import SupConObjective

        return SupConObjective(cfg.actlumos.supcon_weight, cfg.actlumos.supcon_temperature)

    def feature_dim(self, arch: Mapping[str, Any]) -> int:
        """The cached feature is the SupCon projection ``z``: ``proj_dim`` wide."""
        return int(arch.get("proj_dim", 128))

    def enhancer_label(self, arch: Mapping[str, Any]) -> str | None:
        return "retinex"  # the second stream's multi-scale Retinex


ACTLUMOS = ActLumosFamily()
