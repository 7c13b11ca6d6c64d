"""The ``folders`` data format: ``root/<class>/<video>``, split into train and test by recording.

Layout: every sub-folder of ``data.root`` that holds at least one video (``.mp4``, ``.avi``, ``.mkv``,
``.webm``, any case; only files directly inside it) is a class; classes are the sorted folder
names, labels their indices. A clip's key is ``<class>/<file stem>``, like the list formats' keys.

Split: there are no lists, so train and test are drawn from the same folders by
:func:`dlkdd.data.groups.group_split` - stratified per class, recording-disjoint (every recording
goes whole to one side), seeded by ``data.split_seed``, about ``data.test_fraction`` of each class
in test. The recording of a clip is its group by ``data.group_regex`` or, by default,
:data:`FOLDERS_GROUP_REGEX`: the ARID-style ``<Class>_<group>_<n>`` group (``Jump_8_3`` -> ``Jump_8``)
when the file stem ends in ``_<digits>_<digits>``, else the whole file stem (each video is its own
recording). A class with a single recording stays wholly in training (logged).

``data.train_list``, ``data.test_list`` and ``data.mapping`` are ignored (a logged note says so),
so ``--set data.format=folders --set data.root=DIR`` works on any preset.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from dlkdd.data.formats import FOLDERS_GROUP_REGEX
from dlkdd.data.manifest import VIDEO_EXTENSIONS, Entry, Manifest
from dlkdd.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["FOLDERS_GROUP_REGEX", "scan_folders", "read_folders"]


_noted: set[str] = set()


def scan_folders(root: str | os.PathLike) -> Manifest:
    """Every video of ``root/<class>/`` as one manifest (sorted by key), classes = the sorted folder names."""
    top = Path(root)
    if not str(root):
        raise DataError("data.format=folders needs data.root (set --set data.root=DIR, a folder of class folders)")
    if not top.is_dir():
        raise DataError(f"data.root {top}: not a folder (data.format=folders reads DIR/<class>/<video>)")
    found: dict[str, list[Path]] = {}
    for d in sorted(p for p in top.iterdir() if p.is_dir()):
        vids = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
        if vids:
            found[d.name] = vids
    if not found:
        raise DataError(f"data.root {top}: no class folder with videos ({', '.join(VIDEO_EXTENSIONS)}) in it; "
                        f"data.format=folders expects DIR/<class>/<video>")
    classes = sorted(found)
    entries = [Entry(f"{c}/{v.stem}", str(v), label, str(v)) for label, c in enumerate(classes) for v in found[c]]
    stems = {}
    for e in entries:
        if e.key in stems:
            raise DataError(f"{e.path} and {stems[e.key]}: two videos with one name in a class folder (keys must be "
                            f"unique); rename one")
        stems[e.key] = e.path
    return Manifest(entries, classes, str(top))


def read_folders(data_cfg: Any, split: str, check_files: bool = True) -> Manifest:
    """The ``split`` side of the recording-disjoint split of ``data.root`` (see the module docstring)."""
    from dlkdd.data.groups import compile_group_regex, group_split

    _note_ignored(data_cfg)
    full = scan_folders(data_cfg.root)
    pattern = compile_group_regex(data_cfg.group_regex or FOLDERS_GROUP_REGEX)
    res = group_split(full.keys(), full.labels(), float(data_cfg.test_fraction), pattern,
                      seed=int(data_cfg.split_seed))
    if split == "train":
        for w in res.warnings:
            log.info("folders split of %s: %s", data_cfg.root, w)
    return full.subset(res.train if split == "train" else res.test)


def _note_ignored(data_cfg: Any) -> None:
    set_keys = [k for k in ("train_list", "test_list", "mapping") if getattr(data_cfg, k, "")]
    if set_keys and data_cfg.root not in _noted:
        _noted.add(data_cfg.root)
        log.info("note: data.format=folders reads %s/<class>/<video> and splits it by recording; %s ignored",
                 data_cfg.root, ", ".join(f"data.{k}" for k in set_keys))
