"""The pose stage: decode -> frozen enhancer -> BlazePose -> pose store, once per (list, enhancer).

For each clip of the list: the posed frames (:func:`dlkdd.pose.sampling.posed_frames`) are decoded,
enhanced in [0,1] by the enhancer of ``kind`` (none | gamma | zerodce: :mod:`dlkdd.models.enhancers`,
rounded back to uint8 as BlazePose takes images), posed (:class:`dlkdd.pose.blazepose.BlazePose`) and
written to the store's row, then ``done``. Resumable: a killed run continues from ``done``; a writer lock
(rank 0) refuses a second run on the same store. Under ``torchrun`` rank 0 creates the store, every rank
poses a disjoint share of the missing clips (one clip per chunk: no chunk is shared; Zarr only), and
rank 0 marks it complete - the same store as one process writes.

``estimator`` / ``model_sha256`` may be given (tests, other pose models); by default the BlazePose of
the installed mediapipe, which only the pose environment has (:class:`~dlkdd.pose.blazepose.PoseEnvError`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from dlkdd.cache.lock import WriterLock
from dlkdd.cache.parts import shard_rows
from dlkdd.data.video import VideoReader
from dlkdd.errors import CacheError, DataError, VideoError
from dlkdd.models.enhancers import enhancer_from_spec, enhancer_spec
from dlkdd.pose.sampling import posed_frames
from dlkdd.pose.store import PoseStore, pose_spec, store_path
from dlkdd.train import distributed as ddp
from dlkdd.utils import sha256_file

log = logging.getLogger(__name__)

__all__ = ["enhancer_of", "store_dir", "pose_store_path", "pose_clip", "PoseOutput", "extract_poses"]

_ENHANCE_BATCH = 16


def enhancer_of(cfg: Any, kind: str) -> tuple[torch.nn.Module | None, dict[str, Any]]:
    """``(enhancer module or None for none, spec)`` of the ``enhancer`` section with ``kind``."""
    spec = enhancer_of_spec(cfg, kind)
    return (enhancer_from_spec(spec) if kind != "none" else None), spec


def store_dir(cfg: Any) -> Path:
    return Path(cfg.pose.store_dir or Path(cfg.cache.dir) / "pose")


def pose_store_path(cfg: Any, manifest: Any, kind: str, model_sha256: str, fmt: str = "zarr") -> Path:
    """The content address of the pose store of ``manifest`` with enhancer ``kind``."""
    return store_path(store_dir(cfg), manifest.sha256(), pose_spec(cfg.pose, enhancer_of_spec(cfg, kind), model_sha256),
                      fmt)


def enhancer_of_spec(cfg: Any, kind: str) -> dict[str, Any]:
    """The ``enhancer`` section's spec with ``kind`` (ZeroDCE's carries its weights' sha256)."""
    spec = dict(enhancer_spec(cfg.enhancer), kind=kind)
    if kind == "zerodce":
        spec["weights_sha256"] = sha256_file(spec["weights"])
    return spec


@torch.inference_mode()
def pose_clip(path: str, enhancer: torch.nn.Module | None, estimator: Callable, pose_cfg: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """``(keypoints (r,33,4), mask (r,), video frames)`` of one video."""
    with VideoReader(path) as r:
        n = r.num_frames
        idx = posed_frames(n, pose_cfg.stride, pose_cfg.max_frames)
        if not idx:
            return np.zeros((0, 33, 4), np.float32), np.zeros((0,), bool), n
        frames = r.get(idx)
    if enhancer is not None:
        out = []
        for s in range(0, len(frames), _ENHANCE_BATCH):
            x = torch.from_numpy(frames[s:s + _ENHANCE_BATCH]).permute(0, 3, 1, 2).float().div_(255)
            y = enhancer(x).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
            out.append(y.permute(0, 2, 3, 1).numpy())
        frames = np.concatenate(out)
    kp, mask = estimator(frames)
    return kp, mask, n


def _default_estimator(pose_cfg: Any) -> tuple[Callable, str]:
    from dlkdd.pose.blazepose import BlazePose, model_sha256

    sha = model_sha256()
    return BlazePose(video=pose_cfg.video, min_detection=pose_cfg.min_detection,
                     min_tracking=pose_cfg.min_tracking), sha


@dataclass(frozen=True)
class PoseOutput:
    """Where and how :func:`extract_poses` writes: ``out`` (None: the content-addressed path under
    ``pose.store_dir``), ``fmt`` (zarr|hdf5), ``overwrite``, ``progress`` and ``what`` (the list it came from,
    recorded in the store's metadata)."""

    out: str | Path | None = None
    fmt: str = "zarr"
    overwrite: bool = False
    progress: bool = True
    what: str = ""


def extract_poses(cfg: Any, manifest: Any, kind: str, output: PoseOutput = PoseOutput(),
                  estimator: tuple[Callable, str] | None = None) -> Path:
    """Build (or resume, or reuse) the pose store of ``manifest`` with enhancer ``kind``; returns its path.

    ``estimator``: ``(fn, model_sha256)``, a pose function and the sha256 that keys its stores (None:
    BlazePose "full" from the mediapipe wheel)."""
    out, fmt, overwrite, progress, what = output.out, output.fmt, output.overwrite, output.progress, output.what
    estimator, model_sha256 = estimator if estimator is not None else _default_estimator(cfg.pose)
    info = ddp.init_distributed(torch.device("cpu"))
    enhancer, spec = enhancer_of(cfg, kind)
    path = Path(out) if out else pose_store_path(cfg, manifest, kind, model_sha256, fmt)
    if path.suffix == ".h5" and info.distributed:
        raise CacheError(f"{path}: an HDF5 pose store has one writer; run a sharded pose stage with a .zarr store")
    meta = {"spec": pose_spec(cfg.pose, spec, model_sha256), "manifest_sha256": manifest.sha256(),
            "classes": list(manifest.classes), "list": what}
    lock = WriterLock(path, what=f"pose store {path}") if info.is_main else None
    if lock is not None:
        lock.acquire()
    try:
        todo: list[int] = []
        if info.is_main:
            todo = _plan(path, manifest, meta, overwrite)
        todo = ddp.broadcast_object(todo)
        ddp.barrier()
        mine = shard_rows(todo, info.rank, info.world_size, 1)
        if mine:
            _pose_rows(path, manifest, mine, enhancer, estimator, cfg, progress and info.is_main, kind)
        ddp.barrier()
        if info.is_main:
            with PoseStore.open(path, "r+") as s:
                a = s.read_all()
                if not a["done"].all():
                    raise CacheError(f"{path}: {int((~a['done']).sum())} clips not posed; rerun `dlkdd pose` to resume")
                skipped = [k for k, f in zip(s.keys(), a["frames"]) if f == 0]
                s.set_meta(complete=True, skipped_keys=skipped, found=float(a["mask"].sum() / max(1, a["rows"].sum())))
            log.info("pose store complete: %s (a person in %.0f%% of %d posed frames)", path,
                     100 * a["mask"].sum() / max(1, a["rows"].sum()), int(a["rows"].sum()))
        return path
    finally:
        if lock is not None:
            lock.release()
        ddp.cleanup()


def _plan(path: Path, manifest: Any, meta: dict[str, Any], overwrite: bool) -> list[int]:
    """Rank 0: create, validate or reuse the store; the rows still to pose."""
    if path.exists() and overwrite:
        from dlkdd.cache.backends import remove_store

        remove_store(path)
    if path.exists():
        with PoseStore.open(path) as s:
            if s.keys() != manifest.keys() or s.meta.get("spec") != meta["spec"]:
                raise CacheError(f"{path} exists but was built for another list or pose spec; remove it, pass "
                                 f"--overwrite, or choose another --out")
            todo = [int(i) for i in np.flatnonzero(~s.done)]
        log.info("pose store %s: %d of %d clips to do", path, len(todo), len(manifest))
        return todo
    PoseStore.create(path, manifest.keys(), meta["spec"]["max_frames"], meta).close()
    return list(range(len(manifest)))


def _pose_rows(path: Path, manifest: Any, rows: list[int], enhancer: Any, estimator: Callable, cfg: Any,
               progress: bool, kind: str) -> None:
    t0, frames = time.perf_counter(), 0
    with PoseStore.open(path, "r+") as s:
        bar = tqdm(rows, desc=f"poses ({kind})", unit="clip", disable=not progress)
        for i in bar:
            e = manifest[i]
            try:
                kp, mask, n = pose_clip(e.path, enhancer, estimator, cfg.pose)
            except VideoError as err:
                if cfg.data.on_bad_clip != "skip":
                    raise DataError(f"{err} (listed at {e.source or e.key}); data.on_bad_clip=skip poses the "
                                    f"others and stores no person for it") from None
                log.warning("pose: skipping %s: %s", e.key, err)
                kp, mask, n = np.zeros((0, 33, 4), np.float32), np.zeros((0,), bool), 0
            s.write(i, kp, mask, n)
            frames += len(mask)
            bar.set_postfix(fps=f"{frames / max(1e-9, time.perf_counter() - t0):.1f}")
    log.info("posed %d frames of %d clips in %.1f s (%.1f frames/s)", frames, len(rows), time.perf_counter() - t0,
             frames / max(1e-9, time.perf_counter() - t0))
