"""The offline logit cache (DESIGN.md "Logit cache"): teacher logits stored once per
(teacher checkpoint, training manifest, view spec) in Zarr or HDF5, read by the student.

- :mod:`dlkdd.cache.store`: :class:`LogitStore` (create / open / write / read / mark_complete).
- :mod:`dlkdd.cache.keying`: default store names and paths derived from hashes.
- :mod:`dlkdd.cache.lock`: :class:`WriterLock`, the exclusive writer lock.
- :mod:`dlkdd.cache.inspect`: ``list_stores``, ``store_info``, ``verify_store``.
- :mod:`dlkdd.cache.match`: ``check_store_matches`` (refuse a store built for other data).

Names are imported lazily so that importing ``dlkdd.cache`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LogitStore": "dlkdd.cache.store",
    "SCHEMA_VERSION": "dlkdd.cache.store",
    "detect_format": "dlkdd.cache.backends",
    "store_name": "dlkdd.cache.keying",
    "default_store_path": "dlkdd.cache.keying",
    "view_spec_from_config": "dlkdd.cache.keying",
    "WriterLock": "dlkdd.cache.lock",
    "list_stores": "dlkdd.cache.inspect",
    "store_info": "dlkdd.cache.inspect",
    "verify_store": "dlkdd.cache.inspect",
    "check_store_matches": "dlkdd.cache.match",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'dlkdd.cache' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)
