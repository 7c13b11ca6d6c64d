"""Frozen dataclass configuration, loaded from YAML and overridable from the CLI.

A :class:`Config` is built by :func:`load_config` from a YAML preset (``configs/*.yaml``)
plus ``--set key=value`` overrides with dotted keys (``kd.tau=4``). Every key is checked
when the config loads: an unknown key, a wrong type or a value out of range raises
:class:`ConfigError` naming the key. The resolved config (``Config.to_dict()``) is saved
into every checkpoint and every logit cache, so a run can always be reproduced.

Relative input paths (:data:`PATH_KEYS`: ``data.root``, ``data.train_list``, ``data.test_list``,
``data.mapping``, ``enhancer.weights``, ``model.pretrained``) are made absolute when the config
loads (:func:`resolve_paths`), by one rule:

- written in a config file: relative to that file's directory; if nothing exists there but the
  path exists relative to the working directory, that one (the presets in ``configs/`` name
  ``../shared/data/...`` relative to the repository root, where the Makefile runs); if neither
  exists, the config-relative path (so an error names the absolute path that was looked for);
- given with ``--set``: relative to the working directory (where it was typed);
- a default (``enhancer.weights``): relative to the dlkdd source tree's parent directory (the
  repository root of a checkout), else the working directory.

Outputs (``cache.dir``, ``--out``) stay relative to the working directory.
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from dlkdd.errors import DlkddError

__all__ = [
    "ConfigError",
    "DataConfig",
    "ClipConfig",
    "ModelConfig",
    "EnhancerConfig",
    "TrainConfig",
    "KDConfig",
    "CacheConfig",
    "ActLumosConfig",
    "PretrainConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "apply_overrides",
]


class ConfigError(ValueError, DlkddError):
    """A configuration value is unknown, of the wrong type or out of range.

    Also a :class:`~dlkdd.errors.DlkddError`, so a bad config met anywhere (e.g. the config
    stored in a checkpoint) is a one-line CLI error, never a traceback."""


# Mean and std (RGB, on [0,1] inputs) of the normalisations a classifier can use.
# Kinetics: the statistics torchvision's video models and the IG65M release were trained with.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")


def _choice(value: str, key: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, f"must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the videos and the lists are. ``format``: arid | dark48 | csv."""

    format: str = "arid"
    root: str = ""
    train_list: str = ""
    test_list: str = ""
    mapping: str = ""
    on_bad_clip: str = "error"  # error: stop before training, listing bad clips; skip: drop them
    # recording group of a clip key (leakage check, group-disjoint splits; dlkdd/data/groups.py):
    # a regex whose named group 'group' (or first group) is the recording; "" = the format's default
    group_regex: str = ""

    def validate(self) -> None:
        _choice(self.format, "data.format", ("arid", "dark48", "csv"))
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

    def validate(self) -> None:
        _check(self.frames >= 1, "clip.frames", f"must be >= 1, got {self.frames}")
        _check(self.stride >= 1, "clip.stride", f"must be >= 1, got {self.stride}")
        _check(self.size >= 8, "clip.size", f"must be >= 8, got {self.size}")
        _check(self.resize >= self.size, "clip.resize", f"must be >= clip.size ({self.size}), got {self.resize}")
        _check(0 < self.min_scale <= self.max_scale, "clip.min_scale", "must satisfy 0 < min_scale <= max_scale")
        _check(self.max_scale <= self.resize / self.size + 1e-9, "clip.max_scale",
               f"must be <= resize/size = {self.resize / self.size:.3f} (the crop must fit in the frame)")


@dataclass(frozen=True)
class ModelConfig:
    """The classifier: R(2+1)D trunk + temporal head.

    ``normalize``: kinetics | imagenet | dataset. With ``dataset``, ``mean``/``std`` hold the
    training set's own per-channel statistics (``dlkdd data check --write-stats``).
    ``teacher_normalize``: the teacher's own choice for its *enhanced* input (ZeroDCE output
    averages about 0.3, close to normal-light video): kinetics | imagenet | dataset.
    ``pretrained``: optional path to a published R(2+1)D checkpoint or a dlkdd checkpoint
    (e.g. an ActLumos self-supervised ``pretrain.pt``) to initialise from.
    ``teacher``: which teacher family ``dlkdd teacher`` trains (dlkdd | actlumos).
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

    def validate(self) -> None:
        _choice(self.backbone, "model.backbone", ("r2plus1d_18", "r2plus1d_34", "r2plus1d_34_ig65m"))
        _choice(self.head, "model.head", ("bert", "avg"))
        _choice(self.teacher, "model.teacher", ("dlkdd", "actlumos"))
        _choice(self.normalize, "model.normalize", ("kinetics", "imagenet", "dataset"))
        _choice(self.teacher_normalize, "model.teacher_normalize", ("kinetics", "imagenet", "dataset"))
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
    """

    alpha: float = 1.5
    gamma: float = 0.95
    tau: float = 5.0
    tau2_scale: bool = False

    def validate(self) -> None:
        _check(self.alpha >= 0, "kd.alpha", f"must be >= 0, got {self.alpha}")
        _check(0 < self.gamma <= 1, "kd.gamma", f"must be in (0, 1], got {self.gamma}")
        _check(self.tau > 0, "kd.tau", f"must be > 0, got {self.tau}")


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
    """Self-supervised student pre-training (ActLumos stage 1): InfoNCE between two views."""

    epochs: int = 5
    temperature: float = 0.1
    proj_dim: int = 128
    lr: float = 1e-4

    def validate(self) -> None:
        _check(self.epochs >= 1, "pretrain.epochs", "must be >= 1")
        _check(self.temperature > 0, "pretrain.temperature", "must be > 0")
        _check(self.proj_dim >= 1, "pretrain.proj_dim", "must be >= 1")
        _check(self.lr > 0, "pretrain.lr", "must be > 0")


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of a run."""

    data: DataConfig = field(default_factory=DataConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    enhancer: EnhancerConfig = field(default_factory=EnhancerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    actlumos: ActLumosConfig = field(default_factory=ActLumosConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    seed: int = 0
    name: str = ""

    def validate(self) -> "Config":
        for f in fields(self):
            v = getattr(self, f.name)
            if is_dataclass(v):
                v.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists) - YAML/JSON/checkpoint friendly."""

        def conv(o: Any) -> Any:
            if is_dataclass(o):
                return {f.name: conv(getattr(o, f.name)) for f in fields(o)}
            if isinstance(o, tuple):
                return [conv(x) for x in o]
            return o

        return conv(self)

    def replace(self, **overrides: Any) -> "Config":
        """``cfg.replace(**{"kd.tau": 4})``: a validated copy with dotted-key overrides."""
        return config_from_dict(self.to_dict(), overrides)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"config key '{key}': expected a boolean, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value)
            except ValueError:
                raise ConfigError(f"config key '{key}': expected a number, got {value!r}") from None
        else:
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        if not math.isfinite(out):
            raise ConfigError(f"config key '{key}': must be finite, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if value is None:
            return ""
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        elem = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, elem, key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"config key '{key}': expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    raise ConfigError(f"config key '{key}': unsupported type {tp}")  # pragma: no cover


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'"
            + (f" (and {', '.join(prefix + u for u in unknown[1:])})" if len(unknown) > 1 else "")
            + f"; known keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if isinstance(tp, type) and is_dataclass(tp):
            kwargs[name] = _build(tp, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"config key '{dotted}': '{p}' is not a section")
        node = nxt
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: Mapping[str, Any] | list[str] | None) -> dict[str, Any]:
    """Apply ``{"kd.tau": 4}`` or ``["kd.tau=4"]`` overrides to a nested dict (copied)."""
    import copy

    tree = copy.deepcopy(tree)
    if not overrides:
        return tree
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key=value (e.g. kd.tau=4)")
            k, v = item.split("=", 1)
            items.append((k.strip(), yaml.safe_load(v) if v.strip() else "")) 
    for k, v in items:
        _set_dotted(tree, k, v)
    return tree


def config_from_dict(tree: Mapping[str, Any], overrides: Mapping[str, Any] | list[str] | None = None) -> Config:
    """Build and validate a :class:`Config` from a nested dict plus overrides."""
    tree = apply_overrides(dict(tree or {}), overrides)
    return _build(Config, tree, "").validate()


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | list[str] | None = None) -> Config:
    """Load a YAML preset (or the defaults if ``path`` is None) and apply overrides.

    Raises :class:`ConfigError` for a missing/unparsable file or a bad key or value.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            is_file = p.is_file()
        except PermissionError:
            raise ConfigError(f"config file {p} cannot be read: permission denied on a directory above it") from None
        if not is_file:
            raise ConfigError(f"config file not found: {p}" if not p.is_dir() else f"config {p} is a directory, "
                              "expected a YAML file")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {' '.join(str(e).split())}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {p} cannot be read: {getattr(e, 'strerror', None) or e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: top level must be a mapping of sections")
        tree = loaded or {}
        _resolve_in_tree(tree, p.resolve().parent)
    over = _override_items(overrides)
    _resolve_in_tree(over, Path.cwd(), flat=True)
    for key in PATH_KEYS:  # a relative default: from the repository root of this dlkdd checkout
        sec, name = key.split(".")
        default = getattr(getattr(Config(), sec), name)
        given = (isinstance(tree.get(sec), dict) and name in tree[sec]) or key in over
        if default and not given and not Path(default).is_absolute():
            over[key] = _pick(default, [_REPO_ROOT, Path.cwd()])
    return config_from_dict(tree, over)


#: Config keys holding input paths, made absolute when a config loads (module docstring).
PATH_KEYS = ("data.root", "data.train_list", "data.test_list", "data.mapping", "enhancer.weights",
             "model.pretrained")
_REPO_ROOT = Path(__file__).resolve().parents[1]


def _pick(value: str, bases: list[Path]) -> str:
    """``value`` under the first base where it exists, else under the first base; absolute."""
    for b in bases:
        if (b / value).exists():
            return os.path.abspath(b / value)
    return os.path.abspath(bases[0] / value)


def resolve_paths(value: str, config_dir: Path | None) -> str:
    """One relative path of a config file (module docstring); absolute ones, ``""`` and non-strings pass."""
    if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
        return str(Path(value).expanduser()) if isinstance(value, str) and value.startswith("~") else value
    return _pick(value, [config_dir, Path.cwd()] if config_dir is not None else [Path.cwd()])


def _resolve_in_tree(tree: dict[str, Any], base: Path, flat: bool = False) -> None:
    for key in PATH_KEYS:
        if flat:
            if key in tree:
                tree[key] = resolve_paths(tree[key], base)
            continue
        sec, name = key.split(".")
        if isinstance(tree.get(sec), dict) and name in tree[sec]:
            tree[sec][name] = resolve_paths(tree[sec][name], base)


def _override_items(overrides: Mapping[str, Any] | list[str] | None) -> dict[str, Any]:
    """``["kd.tau=4"]`` or ``{"kd.tau": 4}`` as a dict of dotted keys (values parsed as YAML)."""
    if not overrides:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. kd.tau=4)")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
    return out
