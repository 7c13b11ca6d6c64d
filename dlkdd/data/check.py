"""Dataset checks: does every clip decode, how many per class, what do the frames look like.

* :func:`check_dataset` (``dlkdd data check``): decodes every clip of the chosen splits,
  collects each bad one with its one-line reason, counts clips per class, frame statistics
  (min/mean/max frames), and on the training clips the mean luma (BT.601) and per-channel
  mean/std of pixels in [0,1] (from ``stats_frames`` evenly spaced frames per clip) - the
  statistics ``model.normalize: dataset`` uses.
* :func:`scan_clips`: the cheaper check training runs before it starts (open + demux each clip,
  or fully decode it: catches missing, empty, non-video, audio-only and truncated files); the
  ``data.on_bad_clip`` policy on its result is :mod:`dlkdd.data.prepare`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlkdd.data.formats import data_format
from dlkdd.data.manifest import Manifest, manifest_from_config
from dlkdd.data.video import VideoReader
from dlkdd.errors import DataError, VideoError

log = logging.getLogger(__name__)

__all__ = ["BadClip", "SplitReport", "CheckReport", "check_dataset", "scan_clips", "overlapping_clips"]

_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601


@dataclass
class BadClip:
    split: str
    key: str
    path: str
    source: str
    reason: str

    def line(self) -> str:
        where = f" (listed at {self.source})" if self.source else ""
        return f"{self.path}: {self.reason}{where}"


@dataclass
class SplitReport:
    split: str
    clips: int
    class_counts: list[int]
    frames: list[int] = field(default_factory=list)  # per good clip

    def frame_stats(self) -> tuple[int, float, int] | None:
        if not self.frames:
            return None
        return min(self.frames), float(np.mean(self.frames)), max(self.frames)


@dataclass
class CheckReport:
    classes: list[str]
    splits: dict[str, SplitReport]
    bad: list[BadClip]
    overlap: list[str] = field(default_factory=list)  # keys in both train and test
    leakage: Any = None  # dlkdd.data.groups.Leakage: recording groups in both train and test (None: not checked)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    mean_luma: float | None = None  # of 255

    @property
    def ok(self) -> bool:
        return not self.bad

    def lines(self) -> list[str]:
        out = []
        names = list(self.splits)
        out.append(f"{len(self.classes)} classes; " + ", ".join(f"{s}: {self.splits[s].clips} clips" for s in names))
        w = max([len(c) for c in self.classes] + [5])
        out.append(f"  {'class':<{w}} " + " ".join(f"{s:>7}" for s in names))
        for i, c in enumerate(self.classes):
            out.append(f"  {c:<{w}} " + " ".join(f"{self.splits[s].class_counts[i]:>7}" for s in names))
        for s in names:
            fs = self.splits[s].frame_stats()
            if fs:
                out.append(f"frames ({s}): min {fs[0]}, mean {fs[1]:.1f}, max {fs[2]}")
        if self.mean is not None:
            out.append(f"mean luma (train): {self.mean_luma:.1f}/255")
            out.append("pixel mean (train, RGB): [" + ", ".join(f"{v:.4f}" for v in self.mean) + "]")
            out.append("pixel std  (train, RGB): [" + ", ".join(f"{v:.4f}" for v in self.std) + "]")
        out.extend(f"warning: {w}" for w in self.warnings())
        if self.leakage is not None:
            out.extend(self.leakage.lines())
        if self.bad:
            out.append(f"{len(self.bad)} bad clips:")
            out.extend(f"  [{b.split}] {b.line()}" for b in self.bad)
        else:
            out.append("all clips decode")
        return out

    def warnings(self) -> list[str]:
        """What would make training or testing meaningless: an empty train list, a class without training
        clips, clips in both lists."""
        out = []
        train = self.splits.get("train")
        if train is not None and train.clips == 0:
            out.append("the train list is empty: nothing to train on")
        elif train is not None:
            empty = [c for c, n in zip(self.classes, train.class_counts) if n == 0]
            if empty:
                out.append(f"{len(empty)} class(es) have no training clip ({', '.join(empty[:5])}): the model can "
                           f"never learn them")
        if self.overlap:
            out.append(f"{len(self.overlap)} clip(s) are in both the train and the test list (first: "
                       f"{self.overlap[0]}): test accuracy on them measures memorisation")
        return out

    @property
    def usable(self) -> bool:
        """No bad clip, a non-empty train list (where checked) and no clip in both lists."""
        train = self.splits.get("train")
        return self.ok and not self.overlap and (train is None or train.clips > 0)

    def stats_yaml(self) -> str:
        """A config snippet selecting the dataset's own normalisation."""
        if self.mean is None:
            raise DataError("no training-set statistics (check the train split: --split train or all)")
        import yaml

        snippet = {"model": {"normalize": "dataset", "mean": [round(float(v), 5) for v in self.mean],
                             "std": [round(float(v), 5) for v in self.std]}}
        return (f"# per-channel statistics of the training clips (mean luma {self.mean_luma:.1f}/255), "
                f"written by dlkdd data check\n" + yaml.safe_dump(snippet, sort_keys=False, default_flow_style=None))


def _reason(e: BaseException) -> str:
    if isinstance(e, VideoError):
        return e.reason
    return f"undecodable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def check_dataset(cfg, split: str = "all", stats_frames: int = 8, progress: bool = True) -> CheckReport:
    """Decode every clip of ``split`` (train | test | all) of ``cfg.data``; see the module docstring."""
    from tqdm import tqdm

    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be train, test or all, got {split!r}")
    names = ["train", "test"] if split == "all" else [split]
    manifests: dict[str, Manifest] = {}
    for s in names:
        if split == "all" and s == "test" and not data_format(cfg.data.format).has_split(cfg.data, "test"):
            continue
        manifests[s] = manifest_from_config(cfg.data, s, check_files=False)
    classes = next(iter(manifests.values())).classes
    for s, m in manifests.items():
        if m.classes != classes:
            raise DataError(f"the {s} list's classes differ from the train list's ({len(m.classes)} vs {len(classes)})")
    bad: list[BadClip] = []
    splits: dict[str, SplitReport] = {}
    s1 = np.zeros(3)
    s2 = np.zeros(3)
    npx = 0
    for s, m in manifests.items():
        rep = SplitReport(s, len(m), m.class_counts())
        for e in tqdm(m.entries, desc=f"check {s}", unit="clip", disable=not progress, leave=False):
            try:
                with VideoReader(e.path) as r:
                    n = r.num_frames
                    k = min(stats_frames, n) if s == "train" else 1
                    pick = np.unique(np.linspace(0, n - 1, k).round().astype(int))
                    frames = r.get(pick, verify_all=True)
                    decoded = r.decoded_frames
            except Exception as ex:  # every failure becomes a listed bad clip, never a traceback
                bad.append(BadClip(s, e.key, e.path, e.source, _reason(ex)))
                continue
            rep.frames.append(int(decoded))
            if s == "train":
                x = frames.reshape(-1, 3).astype(np.float64) / 255.0
                s1 += x.sum(0)
                s2 += (x * x).sum(0)
                npx += x.shape[0]
        splits[s] = rep
    report = CheckReport(classes, splits, bad)
    if "train" in manifests and "test" in manifests:
        report.overlap = overlapping_clips(manifests["train"], manifests["test"])
        from dlkdd.data.groups import leakage_for_config

        # recordings shared between the lists (dlkdd/data/groups.py)
        report.leakage = leakage_for_config(cfg.data, manifests["train"].keys(), manifests["test"].keys())
    if npx:
        mean = s1 / npx
        std = np.sqrt(np.maximum(s2 / npx - mean**2, 0.0))
        report.mean = tuple(float(v) for v in mean)
        report.std = tuple(float(v) for v in std)
        report.mean_luma = float(mean @ _LUMA * 255.0)
    return report


def overlapping_clips(train: Manifest, test: Manifest) -> list[str]:
    """Keys of the training clips that are also test clips: the same key, or the same file (real path)."""
    test_keys = set(test.keys())
    test_files = {os.path.realpath(e.path) for e in test.entries}
    return [e.key for e in train.entries if e.key in test_keys or os.path.realpath(e.path) in test_files]


#: files this process has already opened (and fully decoded) without error, keyed by
#: ``(path, mtime_ns, size, decode)``: a pipeline run in one process (``make demo``: four stages) scans
#: each clip once; a file that changes on disk has a new key and is scanned again
_SCANNED_OK: set[tuple[str, int, int, bool]] = set()


def _scan_key(path: str, decode: bool) -> tuple[str, int, int, bool] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.abspath(path), st.st_mtime_ns, st.st_size, decode)


def scan_clips(manifest: Manifest, progress: bool = True, decode: bool = False) -> list[tuple[int, str]]:
    """``(index, reason)`` of the clips that fail to open (``decode``: or to fully decode).

    A clip that passed the same scan earlier in this process, unchanged since (path, mtime, size),
    is not decoded again; failures are never remembered."""
    from tqdm import tqdm

    out = []
    for i, e in enumerate(tqdm(manifest.entries, desc="scan clips", unit="clip", disable=not progress, leave=False)):
        key = _scan_key(e.path, decode)
        if key is not None and (key in _SCANNED_OK or (decode is False and key[:3] + (True,) in _SCANNED_OK)):
            continue
        try:
            with VideoReader(e.path) as r:
                if decode:
                    r.get([0], verify_all=True)
        except Exception as ex:
            out.append((i, _reason(ex)))
            continue
        if key is not None:
            _SCANNED_OK.add(key)
    return out
