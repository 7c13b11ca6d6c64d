"""``dlkdd cache-logits``: run the trained teacher once over every training clip.

For each clip, K views are cut (the centred view and K-1 random training views drawn from a
generator seeded by ``(cache.seed, sha256(key))``, so they depend on neither the order nor the
process that scores them); the video is decoded once for all K views; teacher inference is
batched under ``torch.inference_mode``; the raw logits ``(K, C)`` and the views ``(K, P)`` are
written to the store's row, then ``done[i]``. ``complete`` is set last, after every row.

Resumable: a killed run continues from the ``done`` mask. Under ``torchrun`` each rank scores a
disjoint, padding-free share of the missing rows (every row is its own Zarr chunk, so ranks never
write the same chunk); HDF5 is single-writer, so ranks write per-rank Zarr part stores that rank
0 merges into the ``.h5`` at the end. A writer lock refuses a second run on the same store.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from dlkdd.errors import CacheError

log = logging.getLogger(__name__)

__all__ = ["clip_views", "precompute_logits", "store_path_for"]


def _key_seed(seed: int, key: str) -> np.random.Generator:
    h = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:15], 16)
    return np.random.default_rng((int(seed), h))


def clip_views(key: str, num_frames: int, height: int, width: int, clip_cfg: Any, k: int, seed: int) -> list:
    """The K stored views of clip ``key``: centred view first, then K-1 seeded random views."""
    from dlkdd.data.views import center_view, random_view

    rng = _key_seed(seed, key)
    views = [center_view(num_frames, clip_cfg, height, width)]
    views += [random_view(num_frames, clip_cfg, rng, height, width) for _ in range(k - 1)]
    return views


def _load_views(path: str, key: str, clip_cfg: Any, k: int, seed: int):
    """Decode ``path`` once; return ``(clips (K,3,T,S,S), views (K,P) float64)``."""
    import torch

    from dlkdd.data.video import VideoReader
    from dlkdd.data.views import apply_view, frame_indices

    with VideoReader(path) as r:
        info = r.info
        views = clip_views(key, info.num_frames, info.height, info.width, clip_cfg, k, seed)
        idx = [frame_indices(v, info.num_frames) for v in views]
        uniq = sorted({i for ii in idx for i in ii})
        frames = r.get(uniq)
    pos = {f: j for j, f in enumerate(uniq)}
    clips = torch.stack([apply_view(frames[[pos[i] for i in ii]], v, clip_cfg.size) for v, ii in zip(views, idx)])
    return clips, np.stack([v.to_array() for v in views])


class _Prefetch:
    """Decode clips in a background DataLoader while the teacher runs (1+ workers)."""

    def __init__(self, manifest: Any, rows: list[int], clip_cfg: Any, k: int, seed: int, workers: int):
        self.manifest, self.rows, self.clip_cfg, self.k, self.seed = manifest, rows, clip_cfg, k, seed
        self.workers = workers

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int):
        e = self.manifest[self.rows[j]]
        clips, views = _load_views(e.path, e.key, self.clip_cfg, self.k, self.seed)
        return self.rows[j], clips, views

    def __iter__(self):
        from torch.utils.data import DataLoader

        loader = DataLoader(self, batch_size=None, shuffle=False, num_workers=self.workers,
                            prefetch_factor=4 if self.workers else None)
        return iter(loader)


def store_path_for(cfg: Any, teacher_sha256: str, manifest_sha256: str, views: int, fmt: str) -> Path:
    from dlkdd.cache.keying import default_store_path, view_spec_from_config

    return default_store_path(cfg.cache.dir, teacher_sha256, manifest_sha256, view_spec_from_config(cfg, views), fmt)


def _meta(cfg: Any, ckpt: dict, teacher_path: Path, teacher_sha: str, manifest: Any, views: int,
          skipped: list[str]) -> dict[str, Any]:
    from dlkdd.cache.keying import clip_spec

    arch = ckpt.get("arch") or {}
    return {
        "teacher_sha256": teacher_sha,
        "teacher_path": str(teacher_path),
        "teacher_kind": arch.get("family", "dlkdd"),
        "teacher_enhancer": (arch.get("enhancer") or {}).get("kind") if arch.get("family", "dlkdd") == "dlkdd" else "retinex",
        "teacher_backbone": arch.get("backbone"),
        "manifest_sha256": manifest.sha256(),
        "dataset": cfg.data.train_list,
        "classes": list(manifest.classes),
        "clip": clip_spec(cfg.clip),
        "view_seed": int(cfg.cache.seed),
        "config": cfg.to_dict(),
        "skipped_keys": list(skipped),
    }


def precompute_logits(cfg: Any, teacher_path: str | Path, out: str | Path | None = None, views: int | None = None,
                      fmt: str | None = None, device: str = "auto", features: bool | None = None,
                      progress: bool = True, config_path: str | None = None, workers: int | None = None,
                      overwrite: bool = False) -> Path:
    """Build (or reuse, or resume) the logit store of ``teacher_path`` on ``cfg``'s training set.

    Returns the store path. A complete store with matching metadata is reused as it is.
    """
    import torch

    from dlkdd.cache.lock import WriterLock
    from dlkdd.cache.match import store_differences
    from dlkdd.cache.store import LogitStore
    from dlkdd.models.build import model_from_checkpoint
    from dlkdd.runs import prepare_data
    from dlkdd.train import distributed as ddp
    from dlkdd.train.checkpoint import check_compatible, load_checkpoint
    from dlkdd.utils import resolve_device, sha256_file

    teacher_path = Path(teacher_path)
    if not teacher_path.is_file():
        raise CacheError(f"teacher checkpoint not found: {teacher_path} (train one with `dlkdd teacher`)")
    k = int(views if views is not None else cfg.cache.views)
    if k < 1:
        raise CacheError(f"--views must be >= 1, got {k}")
    fmt = fmt or cfg.cache.format
    feats = cfg.cache.features if features is None else bool(features)
    workers = cfg.train.workers if workers is None else int(workers)
    info = ddp.init_distributed(resolve_device(device))
    try:
        teacher_sha = sha256_file(teacher_path)
        ckpt = load_checkpoint(teacher_path)
        data = prepare_data(cfg, need_test=False, progress=progress and info.is_main)
        manifest = data.train
        check_compatible(ckpt, kind="teacher", num_classes=len(manifest.classes), path=teacher_path)
        if list(ckpt.get("classes") or []) != list(manifest.classes):
            raise CacheError(f"{teacher_path}: the teacher's classes {ckpt.get('classes')} differ from the data's "
                             f"{list(manifest.classes)}")
        path = Path(out) if out else store_path_for(cfg, teacher_sha, manifest.sha256(), k, fmt)
        if out and path.suffix not in (".zarr", ".h5", ".hdf5"):
            raise CacheError(f"--out {path}: a store path ends in .zarr or .h5")

        lock = WriterLock(path) if info.is_main else None
        if lock is not None:
            lock.acquire()  # a second run on the same store is refused (CacheError)
        try:
            # ---- rank 0 decides: reuse, resume or create
            status = "create"
            if info.is_main:
                if path.exists() and overwrite:
                    from dlkdd.cache.store import _remove_store

                    _remove_store(path)
                if path.exists():
                    with LogitStore.open(path) as s:
                        diffs = [d for d in store_differences(s, manifest, cfg, teacher_sha, k)
                                 if not d.startswith("the store is incomplete")]
                        if diffs:
                            raise CacheError(f"{path} exists but was built for something else: {'; '.join(diffs)}. "
                                             "Remove it, pass --overwrite, or choose another --out")
                        status = "reuse" if s.is_complete else "resume"
                else:
                    LogitStore.create(path, manifest.keys(), k, len(manifest.classes),
                                      _meta(cfg, ckpt, teacher_path, teacher_sha, manifest, k, data.skipped),
                                      dtype=cfg.cache.dtype, feature_dim=512 if feats else 0, fmt=fmt).close()
            status = _broadcast_str(status, info)
            if status == "reuse":
                if info.is_main:
                    log.info("reusing the complete logit store %s (same teacher, data and views)", path)
                return path
            ddp.barrier()
            _score(cfg, ckpt, path, manifest, k, feats, info, progress, workers, model_from_checkpoint, teacher_path)
            ddp.barrier()
            if info.is_main:
                with LogitStore.open(path, mode="r+") as s:
                    s.mark_complete()
                log.info("logit store complete: %s", path)
            ddp.barrier()
            return path
        finally:
            if lock is not None:
                lock.release()
    finally:
        ddp.cleanup()


def _broadcast_str(value: str, info: Any) -> str:
    import torch.distributed as dist

    if not info.distributed:
        return value
    obj = [value]
    dist.broadcast_object_list(obj, src=0)
    return obj[0]


def _score(cfg: Any, ckpt: dict, path: Path, manifest: Any, k: int, feats: bool, info: Any, progress: bool,
           workers: int, model_from_checkpoint: Any, teacher_path: Path) -> None:
    """Score this rank's share of the rows not yet done and write them."""
    import torch
    from tqdm import tqdm

    from dlkdd.cache.store import LogitStore

    store = LogitStore.open(path, mode="r+")
    try:
        todo = [int(i) for i in np.flatnonzero(~store.done)]
        mine = todo[info.rank::info.world_size]  # disjoint, no padding
        if info.is_main and len(todo) < store.num_clips:
            log.info("resuming: %d of %d clips already done", store.num_clips - len(todo), store.num_clips)
        if not mine:
            return
        model = model_from_checkpoint(ckpt, str(teacher_path)).to(info.device).eval()
        bs = max(1, int(cfg.cache.batch_size))
        pending: list[tuple[int, Any, np.ndarray]] = []

        def flush() -> None:
            if not pending:
                return
            x = torch.cat([c for _, c, _ in pending]).to(info.device)
            with torch.inference_mode():
                outs = [model(x[j:j + bs], return_features=feats) for j in range(0, x.shape[0], bs)]
            if feats:
                logits = torch.cat([o[0] for o in outs]).float().cpu().numpy()
                fts = torch.cat([o[1] for o in outs]).float().cpu().numpy()
            else:
                logits = torch.cat(outs).float().cpu().numpy()
            if not np.isfinite(logits).all():
                bad = [pending[j // k][0] for j in np.flatnonzero(~np.isfinite(logits).all(1))]
                raise CacheError(f"teacher {teacher_path} produced non-finite logits for "
                                 f"{[manifest[i].key for i in bad[:5]]}; the store keeps the rows done so far")
            rows = [i for i, _, _ in pending]
            store.write_many(rows, logits.reshape(len(rows), k, -1), np.stack([v for _, _, v in pending]),
                             fts.reshape(len(rows), k, -1) if feats else None)
            pending.clear()

        bar = tqdm(total=len(mine), desc=f"teacher logits (K={k})", unit="clip",
                   disable=not (progress and info.is_main))
        for i, clips, views in _Prefetch(manifest, mine, cfg.clip, k, cfg.cache.seed, workers):
            pending.append((int(i), clips, np.asarray(views)))
            if sum(c.shape[0] for _, c, _ in pending) >= bs:
                flush()
            bar.update(1)
        flush()
        bar.close()
    finally:
        store.close()
