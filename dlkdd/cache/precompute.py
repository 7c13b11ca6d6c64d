"""``dlkdd cache-logits``: run the trained teacher once over every training clip.

For each clip, K views are cut (the centred view and K-1 random training views drawn from a
generator seeded by ``(cache.seed, sha256(key))``, so they depend on neither the order nor the
process that scores them); the video is decoded once for all K views; teacher inference is
batched under ``torch.inference_mode``; the raw logits ``(K, C)`` and the views ``(K, P)`` are
written to the store's row, then ``done[i]``. ``complete`` is set last, after every row.

Resumable: a killed run continues from the ``done`` mask. A writer lock (held by rank 0)
refuses a second run on the same store.

Under ``torchrun`` rank 0 creates (or validates) the store and lists the missing rows; each rank
scores a disjoint, padding-free share of them (:func:`dlkdd.train.distributed.shard_rows`: whole
storage chunks per rank - a Zarr row is its own chunk, so ranks never write the same chunk or
shard). HDF5 has a single writer, so there each rank writes its rows into its own Zarr part
store ``<store>.h5.parts/rank<r>.zarr``; after a barrier rank 0 copies the parts' done rows into
the ``.h5`` and removes the parts. Parts left by a killed run are merged first on the next run
(any number of processes), so nothing already scored is lost. The result equals a
single-process run's: the views depend only on ``(cache.seed, key)``, never on the rank.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dlkdd.cache.clips import ClipStore, clip_store_path, zarr_available
from dlkdd.errors import CacheError

log = logging.getLogger(__name__)

__all__ = ["clip_views", "precompute_logits", "store_path_for", "parts_dir", "merge_parts"]


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


def _load_views(path: str, key: str, clip_cfg: Any, k: int, seed: int, quantized: bool = False):
    """Decode ``path`` once; return ``(clips (K,3,T,S,S), views (K,P) float64, uint8 clips or None)``.

    ``quantized``: the clips are to be stored (:mod:`dlkdd.cache.clips`): the teacher then scores
    their uint8 rounding, exactly what the student will read back."""
    import torch

    from dlkdd.data.views import cut_views

    clips, views = cut_views(path, lambda info: clip_views(key, info.num_frames, info.height, info.width, clip_cfg,
                                                           k, seed), clip_cfg.size)
    x, q = torch.stack(clips), None
    if quantized:
        from dlkdd.cache.clips import dequantize, quantize

        q = quantize(x)
        x = dequantize(q)
    return x, np.stack([v.to_array() for v in views]), q


class _Prefetch:
    """Decode clips in a background DataLoader while the teacher runs (1+ workers)."""

    def __init__(self, manifest: Any, rows: list[int], clip_cfg: Any, k: int, seed: int, workers: int,
                 quantized: bool = False):
        self.manifest, self.rows, self.clip_cfg, self.k, self.seed = manifest, rows, clip_cfg, k, seed
        self.workers, self.quantized = workers, quantized

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int):
        e = self.manifest[self.rows[j]]
        return (self.rows[j], *_load_views(e.path, e.key, self.clip_cfg, self.k, self.seed, self.quantized))

    def __iter__(self):
        from torch.utils.data import DataLoader

        loader = DataLoader(self, batch_size=None, shuffle=False, num_workers=self.workers,
                            prefetch_factor=4 if self.workers else None)
        return iter(loader)


def store_path_for(cfg: Any, teacher_sha256: str, manifest_sha256: str, views: int, fmt: str) -> Path:
    from dlkdd.cache.keying import default_store_path, view_spec_from_config

    return default_store_path(cfg.cache.dir, teacher_sha256, manifest_sha256, view_spec_from_config(cfg, views), fmt)


def _meta(cfg: Any, ckpt: dict, teacher_path: Path, teacher_sha: str, manifest: Any, views: int,
          skipped: list[str], device: Any = "cpu") -> dict[str, Any]:
    from dlkdd.cache.keying import clip_spec
    from dlkdd.train.amp import amp_name, autocast_dtype

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
        "num_skipped": len(skipped),
        "teacher_amp": amp_name(autocast_dtype(cfg.train.amp, device)),
        "clips": "uint8" if cfg.cache.clips else None,  # the teacher scored stored uint8 clips (dlkdd.cache.clips)
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
    if fmt is None and out is not None and Path(out).suffix.lower() in (".h5", ".hdf5", ".zarr"):
        fmt = "zarr" if Path(out).suffix.lower() == ".zarr" else "hdf5"  # --out x.h5 means HDF5
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
            # ---- rank 0 decides: reuse, resume or create; merges parts of a killed run; lists the work
            plan: dict[str, Any] = {}
            if info.is_main:
                if overwrite and parts_dir(path).exists():
                    shutil.rmtree(parts_dir(path))
                if path.exists() and overwrite:
                    from dlkdd.cache.store import _remove_store

                    _remove_store(path)
                    shutil.rmtree(clip_store_path(path), ignore_errors=True)
                if path.exists():
                    with LogitStore.open(path) as s:
                        diffs = [d for d in store_differences(s, manifest, cfg, teacher_sha, k)
                                 if not d.startswith("the store is incomplete")]
                        if diffs:
                            raise CacheError(f"{path} exists but was built for something else: {'; '.join(diffs)}. "
                                             "Remove it, pass --overwrite, or choose another --out")
                    status = "reuse"
                else:
                    if cfg.cache.clips:  # before the logit store: a store that records clips always has them
                        if not zarr_available():
                            raise CacheError("cache.clips=true stores the decoded clips with Zarr: pip install zarr, "
                                             "or set cache.clips=false")
                        ClipStore.create(clip_store_path(path), len(manifest), k, cfg.clip.frames, cfg.clip.size)
                    LogitStore.create(path, manifest.keys(), k, len(manifest.classes),
                                      _meta(cfg, ckpt, teacher_path, teacher_sha, manifest, k, data.skipped,
                                            info.device),
                                      dtype=cfg.cache.dtype, feature_dim=_feature_dim(ckpt) if feats else 0,
                                      fmt=fmt).close()
                    status = "create"
                with LogitStore.open(path, mode="r+") as s:
                    if parts_dir(path).exists():
                        merge_parts(s)  # rows scored by a killed distributed run
                    if status == "reuse" and not s.is_complete:
                        status = "resume"
                    todo = [int(i) for i in np.flatnonzero(~s.done)]
                    if status == "resume":
                        log.info("resuming: %d of %d clips already done", s.num_clips - len(todo), s.num_clips)
                    plan = {"status": status, "todo": todo, "fmt": s.fmt, "dtype": s.dtype,
                            "clips": str(clip_store_path(path)) if s.meta.get("clips") else None,
                            "feature_dim": s.feature_dim, "rows_per_chunk": _rows_per_chunk(s)}
                if plan["fmt"] == "hdf5" and info.distributed and todo:
                    parts_dir(path).mkdir(exist_ok=True)
            plan = ddp.broadcast_object(plan)
            if plan["status"] == "reuse":
                if info.is_main:
                    log.info("reusing the complete logit store %s (same teacher, data and views)", path)
                return path
            use_parts = plan["fmt"] == "hdf5" and info.distributed
            mine = ddp.shard_rows(plan["todo"], info.rank, info.world_size, 1 if use_parts else plan["rows_per_chunk"])
            target = path
            if use_parts and mine:
                # HDF5 has one writer: this rank writes a Zarr part (same keys and layout) beside it
                target = parts_dir(path) / f"rank{info.rank}.zarr"
                pmeta = dict(_meta(cfg, ckpt, teacher_path, teacher_sha, manifest, k, data.skipped, info.device),
                             part_of=path.name, part_rank=info.rank, part_world_size=info.world_size)
                LogitStore.create(target, manifest.keys(), k, len(manifest.classes), pmeta, dtype=plan["dtype"],
                                  feature_dim=plan["feature_dim"], fmt="zarr", overwrite=True).close()
            ddp.barrier()
            _score(cfg, ckpt, target, mine, manifest, k, feats, info, progress, workers, model_from_checkpoint,
                   teacher_path, plan["clips"])
            ddp.barrier()
            if info.is_main:
                with LogitStore.open(path, mode="r+") as s:
                    if use_parts:
                        merge_parts(s)
                    s.mark_complete()
                log.info("logit store complete: %s", path)
            ddp.barrier()
            return path
        finally:
            if lock is not None:
                lock.release()
    finally:
        ddp.cleanup()


def _feature_dim(ckpt: dict) -> int:
    """Width of the teacher's ``return_features`` output: 512 (the head's clip feature), or the
    SupCon projection size ``proj_dim`` for an ActLumos teacher (see dlkdd.actlumos.teacher)."""
    arch = ckpt.get("arch") or {}
    if arch.get("family") == "actlumos":
        return int(arch.get("proj_dim", 128))
    return 512


def parts_dir(path: str | Path) -> Path:
    """Where the ranks of a distributed HDF5 precompute write their part stores: ``<store>.parts/``."""
    p = Path(path)
    return p.with_name(p.name + ".parts")


def merge_parts(store: Any, block: int = 256) -> int:
    """Copy the done rows of every part store under :func:`parts_dir` into ``store`` (open ``r+``),
    then delete the parts. Parts that do not match the store (other keys, teacher, views, classes)
    or cannot be read are discarded with a warning. Returns the number of rows copied."""
    import shutil as _shutil

    from dlkdd.cache.store import LogitStore

    pdir = parts_dir(store.path)
    if not pdir.is_dir():
        return 0
    copied = 0
    done = store.done
    meta = store.meta
    for part in sorted(pdir.glob("rank*.zarr")):
        try:
            with LogitStore.open(part) as ps:
                pm = ps.meta
                same = (ps.keys == store.keys and ps.views_per_clip == store.views_per_clip
                        and ps.num_classes == store.num_classes and ps.feature_dim == store.feature_dim
                        and all(pm.get(x) == meta.get(x) for x in ("teacher_sha256", "manifest_sha256", "view_seed")))
                if not same:
                    log.warning("discarding %s: it was written for another store", part)
                    continue
                rows = np.flatnonzero(ps.done & ~done)
                for j in range(0, rows.size, block):
                    r = rows[j:j + block]
                    lg, vw = ps.read_many(r)  # float32 view of the part's dtype: exact back in the same dtype
                    ft = np.stack([ps.read_features(int(i)) for i in r]) if store.feature_dim else None
                    store.write_many(r, lg, vw, ft)
                done[rows] = True
                copied += int(rows.size)
        except CacheError as e:
            log.warning("discarding unreadable part %s: %s", part, e)
    _shutil.rmtree(pdir)
    if copied:
        log.info("merged %d rows from the rank part stores into %s", copied, store.path)
    return copied


def _rows_per_chunk(store: Any) -> int:
    """Rows per storage unit (chunk, or shard if sharded) of a Zarr store's per-row arrays; 1 for HDF5."""
    import math

    arrays = getattr(store._backend_now(), "arrays", None) or {}
    rpc = 1
    for name, a in arrays.items():
        if name == "keys":  # written once, at creation
            continue
        unit = getattr(a, "shards", None) or a.chunks
        rpc = math.lcm(rpc, int(unit[0]))
    return rpc


def _score(cfg: Any, ckpt: dict, path: Path, mine: list[int], manifest: Any, k: int, feats: bool, info: Any,
           progress: bool, workers: int, model_from_checkpoint: Any, teacher_path: Path,
           clips_path: str | None = None) -> None:
    """Score rows ``mine`` (this rank's share) and write them into the store at ``path`` (and their
    uint8 clips into the clip store ``clips_path``, before the rows are marked done)."""
    import torch
    from tqdm import tqdm

    from dlkdd.cache.store import LogitStore
    from dlkdd.train.amp import infer, resolve_amp

    if not mine:
        return
    store = LogitStore.open(path, mode="r+")
    clip_store = ClipStore.open(clips_path, mode="r+") if clips_path else None
    try:
        model = model_from_checkpoint(ckpt, str(teacher_path)).to(info.device).eval()
        bs = max(1, int(cfg.cache.batch_size))
        # bf16 where it pays (logged); under autocast, fixed-size chunks keep a resumed run's logits identical
        dtype = torch.bfloat16 if resolve_amp(cfg.train.amp, info.device, "teacher inference") == "bf16" else None
        pending: list[tuple[int, Any, np.ndarray, Any]] = []

        def flush() -> None:
            if not pending:
                return
            x = torch.cat([c for _, c, _, _ in pending]).to(info.device)
            out = infer(model, x, bs, dtype, info.device, return_features=feats)
            if feats:
                logits, fts = out[0].cpu().numpy(), out[1].cpu().numpy()
            else:
                logits = out.cpu().numpy()
            if not np.isfinite(logits).all():
                bad = [pending[j // k][0] for j in np.flatnonzero(~np.isfinite(logits).all(1))]
                raise CacheError(f"teacher {teacher_path} produced non-finite logits for "
                                 f"{[manifest[i].key for i in bad[:5]]}; the store keeps the rows done so far")
            rows = [i for i, _, _, _ in pending]
            if clip_store is not None:
                clip_store.write_many(rows, torch.stack([q for _, _, _, q in pending]))
            store.write_many(rows, logits.reshape(len(rows), k, -1), np.stack([v for _, _, v, _ in pending]),
                             fts.reshape(len(rows), k, -1) if feats else None)
            pending.clear()

        bar = tqdm(total=len(mine), desc=f"teacher logits (K={k})", unit="clip",
                   disable=not (progress and info.is_main))
        for i, clips, views, q in _Prefetch(manifest, mine, cfg.clip, k, cfg.cache.seed, workers,
                                            quantized=clip_store is not None):
            pending.append((int(i), clips, np.asarray(views), q))
            if sum(c.shape[0] for _, c, _, _ in pending) >= bs:
                flush()
            bar.update(1)
        flush()
        bar.close()
    finally:
        store.close()
