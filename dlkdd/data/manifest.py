"""Manifests: the ordered list of ``(key, path, label)`` of a dataset split, plus its class names.

Readers for the three list formats dlkdd accepts (see README.md "Data preparation"; the table of
formats, folders included, is :mod:`dlkdd.data.formats`):

* ARID v1.0 (Xu et al., "ARID: A New Dataset for Recognizing Action in the Dark", 2021):
  lists ``index<TAB>label<TAB>Class/Name.avi`` and ``mapping_table.txt`` (``id<TAB>Class``).
  The lists say ``.avi`` while distributed files are often ``.mp4``: the reader resolves the
  path to whichever of the listed extension, ``.mp4``, ``.avi``, ``.mkv``, ``.webm`` exists.
* Dark-48 (DarkLight's release): lists ``class/name.mp4 label`` and ``classInd.txt`` (``id<TAB>name``).
* Plain CSV with a ``path,label`` header; ``label`` is a class name or an integer id.

The **key** of a clip is its path as written in the list, without extension, with ``/``
separators (``Jump/Jump_8_3``): stable across machines, and what the logit cache is keyed by.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from dlkdd.data.video import unreadable_parent
from dlkdd.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "Entry",
    "Manifest",
    "VIDEO_EXTENSIONS",
    "read_arid",
    "read_dark48",
    "read_csv",
    "read_class_table",
    "manifest_from_config",
    "ListRow",
    "arid_rows",
    "dark48_rows",
    "csv_rows",
    "read_lines",
    "key_of",
]

# Extensions tried, in order after the listed one, when a listed file does not exist.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm")


@dataclass(frozen=True)
class Entry:
    """One clip: ``key`` (list path without extension), ``path`` (file on disk), ``label`` (int).

    ``source`` (``list_file:line``) is where it was listed - for error messages only; it takes
    no part in equality or hashing.
    """

    key: str
    path: str
    label: int
    source: str = field(default="", compare=False)


class Manifest:
    """An ordered list of :class:`Entry` plus the class names and the dataset root."""

    def __init__(self, entries: Sequence[Entry], classes: Sequence[str], root: str | os.PathLike = ""):
        self.entries = list(entries)
        self.classes = list(classes)
        self.root = str(root)
        seen: dict[str, str] = {}
        for e in self.entries:
            if not 0 <= e.label < len(self.classes):
                raise DataError(f"{e.source or e.key}: label {e.label} out of range for {len(self.classes)} classes")
            if e.key in seen:
                raise DataError(f"{e.source or e.key}: clip '{e.key}' listed twice (first at {seen[e.key] or '?'})")
            seen[e.key] = e.source

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Entry:
        return self.entries[i]

    def __iter__(self):
        return iter(self.entries)

    def __repr__(self) -> str:
        return f"Manifest({len(self)} clips, {len(self.classes)} classes, root={self.root!r})"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def keys(self) -> list[str]:
        return [e.key for e in self.entries]

    def labels(self) -> list[int]:
        return [e.label for e in self.entries]

    def paths(self) -> list[str]:
        return [e.path for e in self.entries]

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for e in self.entries:
            counts[e.label] += 1
        return counts

    def index_of(self, key: str) -> int:
        for i, e in enumerate(self.entries):
            if e.key == key:
                return i
        raise KeyError(key)

    def sha256(self) -> str:
        """Hash of the ordered ``key<TAB>label`` lines and the class names.

        Independent of the root directory and of file extensions, so the same data at
        another path (or re-encoded .avi -> .mp4) hashes the same.
        """
        h = hashlib.sha256()
        h.update(("classes\t" + "\t".join(self.classes) + "\n").encode("utf-8"))
        for e in self.entries:
            h.update(f"{e.key}\t{e.label}\n".encode("utf-8"))
        return h.hexdigest()

    def subset(self, indices: Iterable[int]) -> "Manifest":
        """A manifest of the entries at ``indices`` (in that order), same classes and root."""
        return Manifest([self.entries[i] for i in indices], self.classes, self.root)

    def without(self, keys: Iterable[str]) -> "Manifest":
        """A manifest without the clips whose key is in ``keys`` (e.g. bad clips to skip)."""
        drop = set(keys)
        return Manifest([e for e in self.entries if e.key not in drop], self.classes, self.root)


# ------------------------------------------------------------------------------------ helpers


def read_lines(path: str | os.PathLike, what: str) -> list[str]:
    """The lines of a text list file; :class:`DataError` naming ``what`` and the path when it cannot be read."""
    p = Path(path)
    if not str(path):
        raise DataError(f"no {what} given (set it in the config's data section)")
    try:
        is_file = p.is_file()
    except PermissionError:  # a directory above it may not be entered
        is_file = False
    if not is_file:
        d = unreadable_parent(p)
        if d is not None:
            raise DataError(f"{what} {p}: permission denied: cannot enter directory {d} (fix its permissions)")
        if p.is_dir():
            raise DataError(f"{what} {p} is a directory, expected a text file")
        raise DataError(f"{what} not found: {p}")
    try:
        return p.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not a text file ({e})") from None
    except OSError as e:
        raise DataError(f"{what} {p}: cannot be read ({e.strerror or e})") from None


def key_of(listed: str) -> str:
    """The key of a listed path: without extension and leading ``./``, with ``/`` separators."""
    listed = listed.strip().replace("\\", "/")
    while listed.startswith("./"):
        listed = listed[2:]
    stem, ext = os.path.splitext(listed)
    return stem if ext else listed


def _resolve(root: str, listed: str, source: str, check_files: bool) -> str:
    """The file for a listed path: the listed extension first, then the usual video ones."""
    listed = listed.replace("\\", "/")
    base = os.path.join(root, listed) if root else listed
    stem, ext = os.path.splitext(base)
    tried = [base] + [stem + e for e in VIDEO_EXTENSIONS if e != ext.lower()]
    for cand in tried:
        if os.path.isfile(cand):
            return cand
    if check_files:
        d = unreadable_parent(base)
        if d is not None:
            raise DataError(f"{source}: cannot read {base}: permission denied on directory {d} (fix its permissions)")
        raise DataError(
            f"{source}: video not found; tried {', '.join(tried)} "
            f"(check data.root, or drop the clip from the list)"
        )
    return base


def read_class_table(path: str | os.PathLike, what: str = "class mapping") -> list[str]:
    """Read ``id<TAB>name`` lines (ARID ``mapping_table.txt``, Dark-48 ``classInd.txt``).

    Ids must be 0..N-1 (any order); separators may be tabs or spaces.
    """
    by_id: dict[int, str] = {}
    for n, line in enumerate(read_lines(path, what), 1):
        if not line.strip():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not parts[0].lstrip("-").isdigit():
            raise DataError(f"{path}:{n}: expected 'id<TAB>class name', got {line!r}")
        i, name = int(parts[0]), parts[1].strip()
        if i in by_id:
            raise DataError(f"{path}:{n}: class id {i} listed twice")
        if name in by_id.values():
            first = next(j for j, c in by_id.items() if c == name)
            raise DataError(f"{path}:{n}: class name {name!r} listed twice (ids {first} and {i}); class names "
                            f"must be unique")
        by_id[i] = name
    if not by_id:
        raise DataError(f"{path}: no classes listed")
    if sorted(by_id) != list(range(len(by_id))):
        raise DataError(f"{path}: class ids must be 0..{len(by_id) - 1}, got {sorted(by_id)}")
    return [by_id[i] for i in range(len(by_id))]


def _warn_dir_mismatch(entries: list[Entry], classes: list[str], list_path: str) -> None:
    bad = [e for e in entries if "/" in e.key and e.key.split("/")[0] != classes[e.label]]
    if bad:
        e = bad[0]
        log.warning("%s: %d clips sit in a folder other than their class name (first: %s, label %d = %s); "
                    "is the mapping file the right one?", list_path, len(bad), e.source, e.label, classes[e.label])


# ------------------------------------------------------------------------------------ list rows


@dataclass(frozen=True)
class ListRow:
    """One clip of a list file: ``key`` (path without extension), ``label`` (as written), ``line`` (as
    written), ``listed`` (the path as listed) and ``source`` (``list_file:line``)."""

    key: str
    label: str
    line: str
    listed: str = field(default="", compare=False)
    source: str = field(default="", compare=False)


def arid_rows(list_path: str | os.PathLike) -> list[ListRow]:
    """Rows of an ARID list: ``index<TAB>label<TAB>Class/Name.avi`` (tabs or spaces)."""
    rows = []
    for n, line in enumerate(read_lines(list_path, "ARID list"), 1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [p.strip() for p in parts if p.strip()]
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{list_path}:{n}: expected 'index<TAB>label<TAB>Class/Name.avi', got {line!r}")
        rows.append(ListRow(key_of(parts[2]), parts[1], line, parts[2], f"{list_path}:{n}"))
    return rows


def dark48_rows(list_path: str | os.PathLike) -> list[ListRow]:
    """Rows of a Dark-48 list: ``class/name.mp4 label``."""
    rows = []
    for n, line in enumerate(read_lines(list_path, "Dark-48 list"), 1):
        if not line.strip():
            continue
        parts = line.rstrip().rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{list_path}:{n}: expected 'class/name.mp4 label', got {line!r}")
        rows.append(ListRow(key_of(parts[0]), parts[1], line, parts[0].strip(), f"{list_path}:{n}"))
    return rows


def csv_rows(csv_path: str | os.PathLike) -> tuple[list[ListRow], str]:
    """Rows of a ``path,label`` CSV and its header line."""
    lines = read_lines(csv_path, "CSV manifest")
    if not lines or [c.strip().lower() for c in next(csv.reader([lines[0]]))][:2] != ["path", "label"]:
        raise DataError(f"{csv_path}:1: the first line must be the header 'path,label'")
    rows = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        row = next(csv.reader([line]))
        if not "".join(row).strip():
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{csv_path}:{n}: expected 'path,label', got {line!r}")
        rows.append(ListRow(key_of(row[0].strip()), row[1].strip(), line, row[0].strip(), f"{csv_path}:{n}"))
    return rows, lines[0]


def _labelled(rows: list[ListRow], classes: list[str], mapping_path: Any, root: str,
              check_files: bool) -> list[Entry]:
    """Entries of integer-labelled rows (ARID, Dark-48), labels checked against ``classes``."""
    entries = []
    for r in rows:
        label = int(r.label)
        if not 0 <= label < len(classes):
            raise DataError(f"{r.source}: label {label} out of range 0..{len(classes) - 1} of {mapping_path}")
        entries.append(Entry(r.key, _resolve(root, r.listed, r.source, check_files), label, r.source))
    return entries


# ------------------------------------------------------------------------------------ readers


def read_arid(list_path: str | os.PathLike, mapping_path: str | os.PathLike, root: str | os.PathLike,
              check_files: bool = True) -> Manifest:
    """Read an ARID list (``index<TAB>label<TAB>Class/Name.avi``) with its ``mapping_table.txt``.

    ``check_files``: raise :class:`DataError` (list file, line, paths tried) for a missing video;
    with False, a missing video keeps its listed path (for list-only statistics, or so that
    ``dlkdd data check`` can report it as a bad clip).
    """
    classes = read_class_table(mapping_path, "ARID mapping table")
    root = str(root)
    entries = _labelled(arid_rows(list_path), classes, mapping_path, root, check_files)
    _warn_dir_mismatch(entries, classes, str(list_path))
    return Manifest(entries, classes, root)


def read_dark48(list_path: str | os.PathLike, class_ind_path: str | os.PathLike, root: str | os.PathLike,
                check_files: bool = True) -> Manifest:
    """Read a Dark-48 list (``class/name.mp4 label``) with its ``classInd.txt`` (``id<TAB>name``)."""
    classes = read_class_table(class_ind_path, "Dark-48 classInd")
    root = str(root)
    entries = _labelled(dark48_rows(list_path), classes, class_ind_path, root, check_files)
    _warn_dir_mismatch(entries, classes, str(list_path))
    return Manifest(entries, classes, root)


def csv_class_names(csv_paths: Sequence[str | os.PathLike]) -> list[str]:
    """Classes of CSV manifests without a mapping: sorted label names (or 0..max for int labels)."""
    labels = {r.label for p in csv_paths if str(p) for r in csv_rows(p)[0]}
    if labels and all(lab.lstrip("-").isdigit() for lab in labels):
        return [str(i) for i in range(max(int(x) for x in labels) + 1)]
    return sorted(labels)


def read_csv(csv_path: str | os.PathLike, root: str | os.PathLike = "", classes: Sequence[str] | None = None,
             check_files: bool = True) -> Manifest:
    """Read a ``path,label`` CSV. ``label``: a class name, or an integer id.

    ``classes``: the class names (e.g. from a mapping file, or shared with the other split);
    default: the sorted label names of this file. Relative paths are relative to ``root``
    (default: the CSV's folder).
    """
    rows = csv_rows(csv_path)[0]
    root = str(root) if str(root) else str(Path(csv_path).parent)
    classes = list(classes) if classes is not None else csv_class_names([csv_path])
    index = {c: i for i, c in enumerate(classes)}
    entries = []
    for r in rows:
        src, path, lab = r.source, r.listed, r.label
        if lab in index:
            label = index[lab]
        elif lab.lstrip("-").isdigit() and 0 <= int(lab) < len(classes):
            label = int(lab)
        else:
            raise DataError(f"{src}: unknown label {lab!r} (classes: {', '.join(classes[:10])}"
                            f"{', ...' if len(classes) > 10 else ''})")
        entries.append(Entry(r.key, _resolve(root, path, src, check_files), label, src))
    return Manifest(entries, classes, root)


def manifest_from_config(data_cfg, split: str, check_files: bool = True) -> Manifest:
    """The manifest of ``split`` ("train" | "test") described by a :class:`dlkdd.config.DataConfig`:
    the reader of ``data.format`` in :data:`dlkdd.data.formats.FORMATS`."""
    from dlkdd.data.formats import data_format

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return data_format(data_cfg.format).read(data_cfg, split, check_files)


def read_list_config(data_cfg, split: str, check_files: bool = True) -> Manifest:
    """The reader of the list formats (ARID, Dark-48, CSV): ``data.<split>_list`` with ``data.mapping``."""
    list_path = data_cfg.train_list if split == "train" else data_cfg.test_list
    if not list_path:
        raise DataError(f"no data.{split}_list in the config (set --set data.{split}_list=PATH)")
    if data_cfg.format == "arid":
        return read_arid(list_path, data_cfg.mapping, data_cfg.root, check_files)
    if data_cfg.format == "dark48":
        return read_dark48(list_path, data_cfg.mapping, data_cfg.root, check_files)
    if data_cfg.mapping:
        classes = read_class_table(data_cfg.mapping)
    else:  # both splits share the class list
        classes = csv_class_names([p for p in (data_cfg.train_list, data_cfg.test_list) if p])
    return read_csv(list_path, data_cfg.root, classes, check_files)
