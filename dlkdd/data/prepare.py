"""The data a stage trains or scores on, with the one bad-clip policy (``data.on_bad_clip``).

``prepare_data(cfg)`` reads the train/test manifests, scans every clip of both splits (missing,
unreadable, empty, non-video, audio-only, truncated and corrupt files) and applies
``data.on_bad_clip`` (``error``: stop before the first step listing every bad clip of both
splits; ``skip``: drop them, warn, and report the skipped keys - recorded in the run's
``metrics.json`` and checkpoints). A bad test clip is caught here too, not after an epoch.
:func:`apply_bad_clip_policy` is the same policy on one list (``dlkdd evaluate``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from dlkdd.data.check import scan_clips
from dlkdd.data.formats import data_format
from dlkdd.data.manifest import Manifest, manifest_from_config
from dlkdd.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["PreparedData", "find_bad_clips", "prepare_data", "apply_bad_clip_policy", "check_class_coverage"]


@dataclass
class PreparedData:
    train: Any  # Manifest (bad clips removed under on_bad_clip=skip)
    test: Any | None
    skipped: list[str] = field(default_factory=list)  # training keys dropped (on_bad_clip=skip)
    skipped_test: list[str] = field(default_factory=list)  # test keys dropped (on_bad_clip=skip)

    @property
    def classes(self) -> list[str]:
        return list(self.train.classes)


def find_bad_clips(manifest: Any, progress: bool = True) -> list[tuple[str, str, str]]:
    """``[(key, path, reason)]`` for every clip of ``manifest`` that does not fully decode."""
    return [(manifest[i].key, manifest[i].path, reason) for i, reason in scan_clips(manifest, progress, decode=True)]


def prepare_data(cfg: Any, need_test: bool = True, progress: bool = True, scan: bool = True) -> PreparedData:
    """Manifests of ``cfg.data`` with the bad-clip policy applied to both splits.

    A missing video is a bad clip like an undecodable one (listed with its list line), so one
    error lists every problem, and ``skip`` can drop it. ``scan=False`` leaves the training split
    as listed (the caller drops what it knows to be bad, e.g. a logit store's ``skipped_keys``);
    the test split is always scanned, so a bad test clip never stops training after an epoch.
    """
    fmt = data_format(cfg.data.format)
    train_src, test_src = fmt.source(cfg.data, "train"), fmt.source(cfg.data, "test")
    train = manifest_from_config(cfg.data, "train", check_files=False)
    test = (manifest_from_config(cfg.data, "test", check_files=False)
            if need_test and fmt.has_split(cfg.data, "test") else None)
    skipped: list[str] = []
    skipped_test: list[str] = []
    bad = find_bad_clips(train, progress=progress) if scan else []
    bad_test = find_bad_clips(test, progress=progress) if test is not None else []
    if bad or bad_test:
        src = {e.key: e.source for m in (train, test) if m is not None for e in m.entries}

        def at(key: str) -> str:
            return f" (listed at {src[key]})" if src.get(key) else ""

        listing = "\n".join([f"  {path}: {reason}{at(k)}" for k, path, reason in bad]
                            + [f"  [test] {path}: {reason}{at(k)}" for k, path, reason in bad_test])
        if cfg.data.on_bad_clip == "error":
            where = train_src + (f" and {test_src}" if bad_test else "")
            raise DataError(f"{len(bad)} bad training clip(s)"
                            + (f" and {len(bad_test)} bad test clip(s)" if bad_test else "")
                            + f" in {where}:\n{listing}\n"
                            "Fix or remove them, or train without them with --set data.on_bad_clip=skip")
        skipped = [k for k, _, _ in bad]
        skipped_test = [k for k, _, _ in bad_test]
        log.warning("skipping %d bad training and %d bad test clip(s) (data.on_bad_clip=skip):\n%s",
                    len(skipped), len(skipped_test), listing)
        train = train.without(skipped)
        if test is not None:
            test = test.without(skipped_test)
        if len(train) == 0:
            raise DataError(f"no training clip of {train_src} decodes; nothing to train on")
    if test is not None and list(test.classes) != list(train.classes):
        raise DataError(f"the test list {test_src} has other classes than the training list")
    # classes matter to the classifier stages (need_test: teacher, student); cache-logits, pretrain and
    # the enhancer only need clips
    check_class_coverage(train, test, train_src, test_src, per_class=need_test)
    return PreparedData(train, test, skipped, skipped_test)


def check_class_coverage(train: Any, test: Any | None, train_list: str = "", test_list: str = "",
                         per_class: bool = True) -> None:
    """Stop before any work when the training list has no usable clip or (``per_class``) a class has
    no training clip (a classifier cannot learn a class it never sees); warn when a class has no test
    clip (its accuracy cannot be measured)."""
    if len(train) == 0:
        raise DataError(f"the training list {train_list} has no usable clip (empty, or every clip was skipped); "
                        f"nothing to train on")
    if not per_class:
        return
    counts = train.class_counts()
    empty = [c for c, n in zip(train.classes, counts) if n == 0]
    if empty:
        raise DataError(f"{len(empty)} of {len(counts)} classes have no training clip in {train_list}: "
                        f"{', '.join(empty[:8])}{' ...' if len(empty) > 8 else ''}; add clips of them to the list, "
                        f"or remove them from the class mapping")
    if test is not None:
        missing = [c for c, n in zip(test.classes, test.class_counts()) if n == 0]
        if missing:
            log.warning("%d class(es) have no clip in the test list %s: %s (their accuracy is not measured)",
                        len(missing), test_list, ", ".join(missing[:8]))


def apply_bad_clip_policy(manifest: Manifest, on_bad_clip: str, progress: bool = True,
                          decode: bool = False) -> Manifest:
    """Scan one list; ``on_bad_clip="error"``: raise :class:`DataError` listing the bad clips;
    ``"skip"``: return the manifest without them (logged). ``decode``: fully decode each clip
    (else only open it)."""
    bad = scan_clips(manifest, progress=progress, decode=decode)
    if not bad:
        return manifest
    lines = [f"{manifest[i].path}: {reason}" + (f" (listed at {manifest[i].source})" if manifest[i].source else "")
             for i, reason in bad]
    if on_bad_clip == "skip":
        for ln in lines:
            log.warning("skipping bad clip %s", ln)
        drop = {j for j, _ in bad}
        return manifest.subset([i for i in range(len(manifest)) if i not in drop])
    shown = "; ".join(lines[:5]) + (f"; ... ({len(lines) - 5} more)" if len(lines) > 5 else "")
    raise DataError(f"{len(bad)} bad clips: {shown}. Run 'dlkdd data check --config ...' for the full list, "
                    f"or --set data.on_bad_clip=skip to train without them")
