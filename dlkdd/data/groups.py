"""Recording groups: which clips were cut from one recording, leakage checks and group-disjoint splits.

An ARID clip is named ``<Class>_<group>_<n>`` (Xu et al., "ARID: A New Dataset for Recognizing
Action in the Dark", 2021): the clips of one group are consecutive cuts of one recording (same
person, scene and light). A test clip whose recording also gave training clips measures how well
a model recognises a scene it has seen, not an action in a new one; the official ARID splits
never share a group between train and test (``../shared/data/README.md``, "arid6").

* The group of a clip comes from its **key** (``Jump/Jump_8_3`` -> ``Jump_8``) through a regex:
  ``data.group_regex`` (:mod:`dlkdd.config`), whose named group ``group`` (else its first group,
  else the whole match) is the group; ``""`` means the format's default
  (the format's ``group_regex`` in :data:`dlkdd.data.formats.FORMATS`: :data:`ARID_GROUP_REGEX` for
  ARID lists, the ARID group or the file stem for folders; none for Dark-48 and CSV).
* :func:`find_shared_groups` (``dlkdd data check``): the groups with clips in both lists.
* :func:`group_split` (``dlkdd data split --by-group``): a stratified group-disjoint split - every
  group goes whole to one side; per class, whole groups are drawn (seeded) into the test side
  until its clip count is as close as possible to ``test_fraction`` of the class, keeping at
  least one group of the class on each side.
* :func:`read_list` / :func:`write_list`: list files as rows ``(key, label, line)`` in the list
  formats of :mod:`dlkdd.data.formats`, written back unchanged except ARID's re-numbered index.

Inputs are keys (``str``) and labels (``int`` or class-name ``str``); outputs index lists. No
video is read.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np

from dlkdd.data.formats import ARID_GROUP_REGEX, data_format, list_formats
from dlkdd.data.manifest import ListRow
from dlkdd.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["ARID_GROUP_REGEX", "compile_group_regex", "default_group_regex", "group_pattern", "group_of",
           "groups_of", "Leakage", "find_shared_groups", "leakage_for_config", "SplitResult", "group_split", "ListRow", "read_list",
           "write_list"]



def compile_group_regex(regex: str) -> re.Pattern:
    """Compile a group regex; ``ValueError`` (one line) if it is not a valid regular expression."""
    try:
        return re.compile(regex)
    except re.error as e:
        raise ValueError(f"{regex!r} is not a valid regular expression ({e})") from None


def default_group_regex(fmt: str) -> str | None:
    """The default group regex of a data format (:data:`dlkdd.data.formats.FORMATS`): ARID's
    ``<Class>_<group>_<n>``; None where names carry no group."""
    return data_format(fmt).group_regex


def group_pattern(data_cfg: Any) -> re.Pattern | None:
    """The compiled group regex of a :class:`dlkdd.config.DataConfig` (None: no groups known)."""
    regex = getattr(data_cfg, "group_regex", "") or default_group_regex(data_cfg.format)
    return compile_group_regex(regex) if regex else None


def group_of(key: str, pattern: re.Pattern) -> str:
    """The recording group of one clip key; :class:`DataError` if the key does not match."""
    m = pattern.search(key)
    if m is None:
        raise DataError(f"clip key {key!r} does not match the group regex {pattern.pattern!r} "
                        f"(set data.group_regex to one that matches every key)")
    if "group" in pattern.groupindex:
        g = m.group("group")
    elif pattern.groups:
        g = m.group(1)
    else:
        g = m.group(0)
    if not g:
        raise DataError(f"the group regex {pattern.pattern!r} gives an empty group for clip key {key!r}")
    return g


def groups_of(keys: Sequence[str], pattern: re.Pattern) -> list[str]:
    return [group_of(k, pattern) for k in keys]


# ----------------------------------------------------------------------------------- leakage
@dataclass
class Leakage:
    """Groups with clips in both the training and the test list.

    ``shared``: group -> (training clips, test clips) of each shared group; ``train_groups`` /
    ``test_groups``: number of distinct groups per list; ``test_clips``: clips in the test list.
    """

    shared: dict[str, tuple[int, int]]
    train_groups: int
    test_groups: int
    test_clips: int
    unchecked: str = ""  # why the lists were not checked (keys that the default regex does not fit)

    @property
    def ok(self) -> bool:
        return not self.shared

    @property
    def leaked_test_clips(self) -> int:
        return sum(n for _, n in self.shared.values())

    def lines(self) -> list[str]:
        if self.unchecked:
            return [f"recording groups: not checked ({self.unchecked})"]
        head = f"recording groups: {self.train_groups} in train, {self.test_groups} in test"
        if self.ok:
            return [head + ", none shared (group-disjoint)"]
        names = sorted(self.shared)
        shown = ", ".join(f"{g} ({self.shared[g][0]} train / {self.shared[g][1]} test)" for g in names[:8])
        return [head,
                f"WARNING: LEAKAGE: {len(names)} recording group(s) are in both train and test: "
                f"{self.leaked_test_clips} of {self.test_clips} test clips come from recordings seen in training "
                f"({shown}{', ...' if len(names) > 8 else ''})",
                "WARNING: accuracy on this test list measures recognising seen scenes, not actions in new ones; "
                "make a group-disjoint split with `dlkdd data split --by-group LIST`"]


def find_shared_groups(train_keys: Sequence[str], test_keys: Sequence[str], pattern: re.Pattern) -> Leakage:
    """The groups (by ``pattern``) that have clips in both key lists."""
    tr = groups_of(train_keys, pattern)
    te = groups_of(test_keys, pattern)
    n_tr: dict[str, int] = {}
    n_te: dict[str, int] = {}
    for g in tr:
        n_tr[g] = n_tr.get(g, 0) + 1
    for g in te:
        n_te[g] = n_te.get(g, 0) + 1
    shared = {g: (n_tr[g], n_te[g]) for g in sorted(set(n_tr) & set(n_te))}
    return Leakage(shared, len(n_tr), len(n_te), len(te))


def leakage_for_config(data_cfg: Any, train_keys: Sequence[str], test_keys: Sequence[str]) -> Leakage | None:
    """:func:`find_shared_groups` with ``data.group_regex`` (None where the format has no groups).

    A key that the format's *default* regex does not fit gives an unchecked report saying so (the
    names follow another scheme: set ``data.group_regex``); with an explicit regex it is an error.
    """
    pattern = group_pattern(data_cfg)
    if pattern is None:
        return None
    try:
        return find_shared_groups(train_keys, test_keys, pattern)
    except DataError as e:
        if getattr(data_cfg, "group_regex", ""):
            raise
        return Leakage({}, 0, 0, len(test_keys), unchecked=str(e))


# ----------------------------------------------------------------------------------- split
@dataclass
class SplitResult:
    """Indices into the input of each side; ``test_groups`` per class label; ``warnings``."""

    train: list[int]
    test: list[int]
    test_groups: dict[Hashable, list[str]] = field(default_factory=dict)
    train_groups: dict[Hashable, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def group_split(keys: Sequence[str], labels: Sequence[Hashable], test_fraction: float, pattern: re.Pattern,
                seed: int = 0) -> SplitResult:
    """Stratified group-disjoint split of clips ``(keys[i], labels[i])``.

    A group belongs to the class most of its clips have (ties: the first in sorted order). Per
    class (sorted), the test side gets a non-empty proper subset of its groups (sorted by name)
    whose clip count is within ``max(1, 5%)`` clips of the closest reachable to
    ``test_fraction * (clips of the class)``, drawn by ``np.random.default_rng(seed)`` among all
    such subsets (:func:`_pick_test_groups`), so every class keeps a group on each side. A class
    with a single group stays wholly in training (a warning says so). Deterministic for a given
    ``seed``; indices come back in input order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if len(keys) != len(labels):
        raise ValueError(f"{len(keys)} keys but {len(labels)} labels")
    groups = groups_of(keys, pattern)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    by_class: dict[Hashable, list[str]] = {}
    res = SplitResult([], [])
    mixed = 0
    for g in sorted(members):
        labs = [labels[i] for i in members[g]]
        values = sorted(set(labs), key=str)
        mixed += len(values) > 1
        major = max(values, key=lambda v: labs.count(v))  # max keeps the first of equal counts
        by_class.setdefault(major, []).append(g)
    if mixed:
        res.warnings.append(f"{mixed} group(s) hold clips of several classes; each is assigned whole to the class "
                            f"most of its clips have")
    rng = np.random.default_rng(seed)
    test_set: set[str] = set()
    for c in sorted(by_class, key=str):
        gs = by_class[c]
        n_c = sum(len(members[g]) for g in gs)
        if len(gs) < 2:
            res.warnings.append(f"class {c} has a single recording group ({gs[0]}): all its {n_c} clips stay in "
                                f"training, the test side has none of this class")
            res.train_groups[c] = list(gs)
            res.test_groups[c] = []
            continue
        sizes = [len(members[g]) for g in gs]
        taken = [gs[j] for j in _pick_test_groups(sizes, test_fraction * n_c, rng)]
        test_set.update(taken)
        res.test_groups[c] = sorted(taken)
        res.train_groups[c] = sorted(g for g in gs if g not in taken)
    for i, g in enumerate(groups):
        (res.test if g in test_set else res.train).append(i)
    return res


# ----------------------------------------------------------------------------------- list files
def _pick_test_groups(sizes: Sequence[int], target: float, rng: np.random.Generator,
                      exhaustive_max: int = 16) -> list[int]:
    """Indices of the groups (sizes ``sizes``, at least 2) to put in the test side: a non-empty
    proper subset whose clip count is within ``max(1, 5% of the class)`` clips of the best reachable
    distance to ``target``, drawn uniformly by ``rng`` among all such subsets (enumerated in a
    fixed order). Beyond ``exhaustive_max`` groups: greedy over a random order instead."""
    k = len(sizes)
    if k <= exhaustive_max:
        masks = np.arange(1, 2 ** k - 1, dtype=np.int64)
        bits = (masks[:, None] >> np.arange(k)) & 1
        dev = np.abs(bits @ np.asarray(sizes, dtype=np.float64) - target)
        tol = max(1.0, 0.05 * sum(sizes))
        ok = np.flatnonzero(dev <= dev.min() + tol)
        m = int(masks[ok[rng.integers(len(ok))]])
        return [j for j in range(k) if m >> j & 1]
    taken: list[int] = []
    t = 0
    for j in rng.permutation(k):
        if len(taken) == k - 1:
            break
        if not taken or abs(t + sizes[j] - target) < abs(t - target):
            taken.append(int(j))
            t += sizes[j]
    return taken


def read_list(path: str | Path, fmt: str = "arid") -> tuple[list[ListRow], str]:
    """Rows of a list file of format ``fmt`` (:data:`dlkdd.data.formats.FORMATS`) and its header line
    (CSV) or ``""``."""
    f = data_format(fmt)
    if f.rows is None:
        raise DataError(f"data.format {fmt} has no list files (list formats: {', '.join(list_formats())})")
    return f.rows(path)


def write_list(path: str | Path, rows: Sequence[ListRow], fmt: str = "arid", header: str = "") -> Path:
    """Write rows as a list file of ``fmt`` (atomically); ARID rows are re-numbered 0..N-1."""
    from dlkdd.utils import atomic_write_text

    f = data_format(fmt)
    if f.write is None:
        raise DataError(f"data.format {fmt} has no list files (list formats: {', '.join(list_formats())})")
    atomic_write_text(path, f.write(rows, header))
    return Path(path)
