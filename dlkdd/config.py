"""Frozen dataclass configuration, loaded from YAML and overridable from the CLI.

The sections (``data``, ``clip``, ``model`` ...) are the dataclasses of :mod:`dlkdd.config_sections`,
importable from here. A :class:`Config` is built by :func:`load_config` from a YAML preset (``configs/*.yaml``)
plus ``--set key=value`` overrides with dotted keys (``kd.tau=4``). Every key is checked
when the config loads: an unknown key, a wrong type or a value out of range raises
:class:`ConfigError` naming the key. The resolved config (``Config.to_dict()``) is saved
into every checkpoint and every logit cache, so a run can always be reproduced.

Relative input paths (:data:`PATH_KEYS`: ``data.root``, ``data.train_list``, ``data.test_list``,
``data.mapping``, ``enhancer.weights``, ``model.pretrained``) are made absolute when the config
loads (:func:`resolve_paths`; ``model.pretrained: imagenet`` is a name, kept: :data:`NAMED_VALUES`), by one rule:

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

import math
import os
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from dlkdd.config_sections import (ActLumosConfig, CacheConfig, ClipConfig, ConfigError, DataConfig, EnhancerConfig,
                                   KDConfig, ModelConfig, PoseConfig, PretrainConfig, TrainConfig)

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
    "PoseConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "apply_overrides",
]


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
    pose: PoseConfig = field(default_factory=PoseConfig)  # dlkdd/pose (issue 22)
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


class _DuplicateKey(yaml.YAMLError):
    """A mapping key given twice in a config file."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (PyYAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(f"key {key!r} is given twice (lines {seen[key].start_mark.line + 1} and "
                                    f"{key_node.start_mark.line + 1}; YAML would keep the last silently): keep one")
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


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
            loaded = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        except _DuplicateKey as e:
            raise ConfigError(f"config file {p}: {e}") from None
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
#: Values of a path key that name something instead of a file, kept as written (``model.pretrained:
#: imagenet``: a light trunk's packaged ImageNet weights; a file of that name: ``./imagenet``).
NAMED_VALUES = {"model.pretrained": ("imagenet",)}
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
            if key in tree and tree[key] not in NAMED_VALUES.get(key, ()):
                tree[key] = resolve_paths(tree[key], base)
            continue
        sec, name = key.split(".")
        if isinstance(tree.get(sec), dict) and name in tree[sec] and tree[sec][name] not in NAMED_VALUES.get(key, ()):
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
