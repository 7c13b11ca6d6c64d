"""The data-format table: ``data.format`` -> :class:`DataFormat` (reader, list rows and writer, group rule).

==========  ==============================================  ==================  ==========================
format      input                                           list rows / writer  recording group (default)
==========  ==============================================  ==================  ==========================
``arid``    ``index<TAB>label<TAB>Class/Name.avi`` lists    yes / re-numbered   ``<Class>_<group>_<n>``
            + ``mapping_table.txt``
``dark48``  ``class/name.mp4 label`` lists + ``classInd``   yes / as written    none
``csv``     ``path,label`` lists (+ optional mapping)       yes / as written    none
``folders`` ``root/<class>/<video>``, split by recording    no                  ARID group, else the stem
==========  ==============================================  ==================  ==========================

Every consumer asks this table: :func:`dlkdd.data.manifest.manifest_from_config` (the reader),
:mod:`dlkdd.data.groups` (list rows, writer, group rule), :mod:`dlkdd.data.prepare` /
:mod:`dlkdd.data.check` (whether a test split exists, how to name the source in messages),
config validation (``data.format``) and the CLI's ``--format`` of list files.

Adding a format: a reader module, and one entry in :data:`FORMATS`.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the readers import numpy and video code: loaded when a format is used, not by the CLI
    from dlkdd.data.manifest import ListRow, Manifest

__all__ = ["DataFormat", "FORMATS", "data_format", "list_formats", "ARID_GROUP_REGEX", "FOLDERS_GROUP_REGEX"]

# <Class>_<group>_<n> as the last path component: the group is everything before the last "_"
ARID_GROUP_REGEX = r"(?:^|/)(?P<group>[^/]+)_[^/_]+$"
# folders: the ARID group of a stem ending in _<digits>_<digits>, else the whole stem (dlkdd/data/folders.py)
FOLDERS_GROUP_REGEX = r"(?:^|/)(?P<group>[^/]+_\d+(?=_\d+$)|[^/]+$)"


@dataclass(frozen=True)
class DataFormat:
    """One data format.

    ``read(data_cfg, split, check_files) -> Manifest``; ``rows(path) -> (rows, header)`` and
    ``write(rows, header) -> text``: the list file (None for a format without lists); ``group_regex``:
    the default recording rule (None: names carry no recording); ``uses_lists``: the format reads
    ``data.train_list`` / ``data.test_list`` (else both splits come from ``data.root``).
    """

    read: Callable[[Any, str, bool], "Manifest"]
    rows: Callable[[str | Path], "tuple[list[ListRow], str]"] | None
    write: Callable[[Sequence["ListRow"], str], str] | None
    group_regex: str | None
    uses_lists: bool
    summary: str

    def has_split(self, data_cfg: Any, split: str) -> bool:
        """Whether ``data_cfg`` describes ``split`` (a list format: its list is set)."""
        if not self.uses_lists:
            return True
        return bool(data_cfg.train_list if split == "train" else data_cfg.test_list)

    def source(self, data_cfg: Any, split: str) -> str:
        """Where ``split`` comes from, for messages and store metadata: the list file, or the folder."""
        if not self.uses_lists:
            return f"{data_cfg.root} ({split} side of the folders split)"
        return str(data_cfg.train_list if split == "train" else data_cfg.test_list)


def _read_lists(data_cfg: Any, split: str, check_files: bool) -> "Manifest":
    from dlkdd.data.manifest import read_list_config

    return read_list_config(data_cfg, split, check_files)


def _read_folders(data_cfg: Any, split: str, check_files: bool) -> "Manifest":
    from dlkdd.data.folders import read_folders

    return read_folders(data_cfg, split, check_files)


def _rows(name: str) -> Callable[[Any], "tuple[list[ListRow], str]"]:
    """The list-row reader ``name`` of :mod:`dlkdd.data.manifest`, with a header line where the format has one."""

    def rows(path: Any) -> "tuple[list[ListRow], str]":
        from dlkdd.data import manifest

        out = getattr(manifest, name)(path)
        return out if isinstance(out, tuple) else (out, "")

    return rows


def _write_arid(rows: Sequence["ListRow"], header: str) -> str:
    buf = io.StringIO()
    for i, r in enumerate(rows):  # re-numbered 0..N-1
        parts = [p.strip() for p in (r.line.split("\t") if "\t" in r.line else r.line.split()) if p.strip()]
        buf.write(f"{i}\t{parts[1]}\t{parts[2]}\n")
    return buf.getvalue()


def _write_as_is(rows: Sequence["ListRow"], header: str) -> str:
    return "".join(r.line.rstrip("\r\n") + "\n" for r in rows)


def _write_csv(rows: Sequence["ListRow"], header: str) -> str:
    return (header or "path,label") + "\n" + _write_as_is(rows, header)


FORMATS: dict[str, DataFormat] = {
    "arid": DataFormat(_read_lists, _rows("arid_rows"), _write_arid, ARID_GROUP_REGEX, True,
                       "ARID v1.0 lists + mapping_table.txt"),
    "dark48": DataFormat(_read_lists, _rows("dark48_rows"), _write_as_is, None, True,
                         "Dark-48 lists + classInd.txt"),
    "csv": DataFormat(_read_lists, _rows("csv_rows"), _write_csv, None, True, "path,label CSV lists"),
    "folders": DataFormat(_read_folders, None, None, FOLDERS_GROUP_REGEX, False,
                          "root/<class>/<video>, seeded recording-disjoint split"),
}


def data_format(name: str) -> DataFormat:
    """The format ``name``; unknown -> :class:`dlkdd.errors.DataError` listing the table."""
    fmt = FORMATS.get(name)
    if fmt is None:
        from dlkdd.errors import DataError

        raise DataError(f"unknown data.format {name!r} ({', '.join(FORMATS)})")
    return fmt


def list_formats() -> list[str]:
    """The formats with list files (``--format`` of ``dlkdd data split`` / ``dlkdd evaluate --list``)."""
    return [k for k, f in FORMATS.items() if f.rows is not None]
