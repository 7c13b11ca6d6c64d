"""``dlkdd cache-logits``: run the trained teacher once over every training clip.

For each clip, K views are cut (the centred view and K-1 random training views drawn from a
generator seeded by ``(cache.seed, sha256(key))``, so they depend on neither the order nor the
process that scores them); the video is decoded once for all K views; teacher inference is
batched under ``torch.inference_mode``; the raw logits ``(K, C)`` and the views ``(K, P)`` are
written to the store's row, then ``done[i]``. ``complete`` is set last, after every row.

Resumable: a killed run continues from the ``done`` mask. A writer lock (held by rank 0)
refuses a second run on the same store.

Under ``torchrun`` rank 0 creates (or validates) the store and lists the missing rows; each rank
scores a disjoint, padding-free share of them; with HDF5 each rank writes a Zarr part store that
rank 0 merges (:mod:`dlkdd.cache.parts`). The result equals a single-process run's: the views
depend only on ``(cache.seed, key)``, never on the rank.

- data: the teacher family's dataset (:meth:`dlkdd.models.family.Family.dataset`; DL-KDD:
  :class:`~dlkdd.data.dataset.ClipDataset`) with the :class:`~dlkdd.data.views.CacheViews` policy
  (K views per clip, decoded once), prefetched by a DataLoader while the teacher runs.
- model: the teacher, rebuilt from its checkpoint (:func:`dlkdd.models.build.model_from_checkpoint`).
- output: :class:`dlkdd.cache.store.LogitStore`.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from dlkdd.cache.backends import format_for, remove_store
from dlkdd.cache.keying import clip_spec, default_store_path, view_spec_from_config
from dlkdd.cache.lock import WriterLock
from dlkdd.cache.match import store_differences
from dlkdd.cache.parts import merge_parts, parts_dir, shard_rows
from dlkdd.cache.store import LogitStore, StoreLayout
from dlkdd.data.formats import data_format
from dlkdd.data.prepare import prepare_data
from dlkdd.data.views import CacheViews, StoredViews
from dlkdd.data.workers import worker_context
from dlkdd.cache.clips import ClipStore, clip_store_path, dequantize, quantize, zarr_available
from dlkdd.errors import CacheError
from dlkdd.models.build import model_from_checkpoint
from dlkdd.models.families import family, family_of_arch
from dlkdd.outputs import check_writable_dir
from dlkdd.train import distributed as ddp
from dlkdd.train.amp import amp_name, autocast_dtype, infer, resolve_amp
from dlkdd.train.checkpoint import check_compatible, load_checkpoint
from dlkdd.utils import resolve_device, sha256_file

log = logging.getLogger(__name__)

__all__ = ["precompute_logits", "store_path_for"]


def store_path_for(cfg: Any, teacher_sha256: str, manifest_sha256: str, views: int, fmt: str) -> Path:
    """The default store path under ``cache.dir``, derived from the teacher, data and view spec."""
    return default_store_path(cfg.cache.dir, teacher_sha256, manifest_sha256, view_spec_from_config(cfg, views), fmt)


def _meta(cfg: Any, ckpt: dict, teacher_path: Path, teacher_sha: str, manifest: Any, views: int,
          skipped: list[str], device: Any = "cpu") -> dict[str, Any]:
    arch = ckpt.get("arch") or {}
    return {
        "teacher_sha256": teacher_sha,
        "teacher_path": str(teacher_path),
        "teacher_kind": arch.get("family", "dlkdd"),
        "teacher_enhancer": family_of_arch(arch).enhancer_label(arch),  # the family's own label
        "teacher_backbone": arch.get("backbone"),
        "manifest_sha256": manifest.sha256(),
        "dataset": data_format(cfg.data.format).source(cfg.data, "train"),
        "classes": list(manifest.classes),
        "clip": clip_spec(cfg.clip),
        "view_seed": int(cfg.cache.seed),
        "config": cfg.to_dict(),
        "skipped_keys": list(skipped),
        "num_skipped": len(skipped),
        "teacher_amp": amp_name(autocast_dtype(cfg.train.amp, device)),
        "clips": "uint8" if cfg.cache.clips else None,  # the teacher scored stored uint8 clips (dlkdd.cache.clips)
    }


@dataclass
class _Job:
    """What one cache-logits run works on: the teacher, the data, the store path and this process."""

    cfg: Any
    teacher_path: Path
    ckpt: dict
    teacher_sha: str
    manifest: Any
    skipped: list[str]
    views: int
    features: bool
    fmt: str
    path: Path
    info: Any  # this process (dlkdd.train.distributed.init_distributed)
    progress: bool
    stored_views: dict[str, Any] | None = None  # --views-from: {key: (K,P) views} of another store
    views_from: str | None = None

    def meta(self) -> dict[str, Any]:
        m = _meta(self.cfg, self.ckpt, self.teacher_path, self.teacher_sha, self.manifest, self.views,
                  self.skipped, self.info.device)
        if self.views_from:
            m["views_from"] = self.views_from
        return m


def precompute_logits(cfg: Any, teacher_path: str | Path, out: str | Path | None = None, fmt: str | None = None,
                      device: str = "auto", progress: bool = True, overwrite: bool = False,
                      views_from: str | Path | None = None) -> Path:
    """Build (or reuse, or resume) the logit store of ``teacher_path`` on ``cfg``'s training set.

    ``views_from``: another complete store of the same clips and clip spec; this teacher then scores exactly
    the views that store holds (its K replaces ``cache.views``), so both stores can teach one student as an
    ensemble (``student --cache A --cache B`` needs the same views in every cache) - e.g. an RGB teacher on
    the pose teacher's posed-frame windows.

    Returns the store path. The views per clip are ``cfg.cache.views``, the stored features
    ``cfg.cache.features``, the decoding workers ``cfg.train.workers``. A complete store with matching
    metadata is reused as it is, without write access to it or its folder (shared read-only caches);
    anything else needs the folder writable and takes the writer lock.
    """
    teacher_path = Path(teacher_path)
    if not teacher_path.is_file():
        raise CacheError(f"teacher checkpoint not found: {teacher_path} (train one with `dlkdd teacher`)")
    if int(cfg.cache.views) < 1:
        raise CacheError(f"--views must be >= 1, got {int(cfg.cache.views)}")
    fmt = format_for(out, fmt, default=cfg.cache.format)  # --out x.h5 means HDF5
    own = family(cfg.model.teacher).own_logit_cache(cfg, teacher_path, out, int(cfg.cache.views), fmt, progress,
                                                   overwrite)
    if own is not None:  # a family whose input is not decoded video (pose) makes its store itself
        return own
    info = ddp.init_distributed(resolve_device(device))
    try:
        job = _job(cfg, teacher_path, out, fmt, info, progress, views_from)
        reuse = info.is_main and not overwrite and _existing(job) == "reuse"  # read-only: no lock needed
        if ddp.broadcast_object(reuse):
            if info.is_main:
                log.info("reusing the complete logit store %s (same teacher, data and views)", job.path)
            return job.path
        lock = None
        if info.is_main:  # anything to write: the store's folder must be writable (the lock file goes there)
            check_writable_dir(job.path.parent, "--out" if out else "cache.dir")
            lock = WriterLock(job.path)
            lock.acquire()  # a second run on the same store is refused (CacheError)
        try:
            return _build(job, overwrite)
        finally:
            if lock is not None:
                lock.release()
    finally:
        ddp.cleanup()


def _job(cfg: Any, teacher_path: Path, out: str | Path | None, fmt: str, info: Any, progress: bool,
         views_from: str | Path | None = None) -> _Job:
    """Load and check the teacher against the data; decide the store path."""
    k = int(cfg.cache.views)
    teacher_sha = sha256_file(teacher_path)
    ckpt = load_checkpoint(teacher_path)
    data = prepare_data(cfg, need_test=False, progress=progress and info.is_main)
    manifest = data.train
    check_compatible(ckpt, kind="teacher", num_classes=len(manifest.classes), path=teacher_path)
    _warn_clip_mismatch(ckpt, cfg, teacher_path)
    if list(ckpt.get("classes") or []) != list(manifest.classes):
        raise CacheError(f"{teacher_path}: the teacher's classes {ckpt.get('classes')} differ from the data's "
                         f"{list(manifest.classes)}")
    stored = None
    if views_from is not None:
        stored = _stored_views(views_from, manifest, cfg)
        k = len(next(iter(stored.values())))
        cfg = dataclasses.replace(cfg, cache=dataclasses.replace(cfg.cache, views=k))
    path = Path(out) if out else store_path_for(cfg, teacher_sha, manifest.sha256(), k, fmt)
    if out and path.suffix not in (".zarr", ".h5", ".hdf5"):
        raise CacheError(f"--out {path}: a store path ends in .zarr or .h5")
    if views_from is not None and path.resolve() == Path(views_from).resolve():
        raise CacheError(f"--out {path} is the --views-from store: choose another --out")
    return _Job(cfg, teacher_path, ckpt, teacher_sha, manifest, list(data.skipped), k, bool(cfg.cache.features),
                fmt, path, info, progress, stored, str(views_from) if views_from is not None else None)


def _stored_views(src: str | Path, manifest: Any, cfg: Any) -> dict[str, Any]:
    """``{key: (K,P) views}`` of the complete store ``src``, which must hold exactly ``manifest``'s clips
    with ``cfg``'s clip spec and view seed (then a student of ``cfg`` accepts both stores)."""
    if not Path(src).exists():
        raise CacheError(f"--views-from {src}: no such store (build it with `dlkdd cache-logits` first)")
    with LogitStore.open(src) as s:
        diffs = store_differences(s, manifest, cfg, views=s.views_per_clip)
        if diffs:
            raise CacheError(f"--views-from {src} does not match this run: {'; '.join(diffs)}")
        _, views = s.read_all()
        return {k: views[i] for i, k in enumerate(s.keys)}


def _existing(job: _Job) -> str | None:
    """``"reuse"`` (complete, same teacher, data and views), ``"resume"`` (same, incomplete) or None (no
    store); a store built for something else is refused. Reads only."""
    if not job.path.exists():
        return None
    with LogitStore.open(job.path) as s:
        diffs = [d for d in store_differences(s, job.manifest, job.cfg, job.teacher_sha, job.views)
                 if not d.startswith("the store is incomplete")]
        if diffs:
            raise CacheError(f"{job.path} exists but was built for something else: {'; '.join(diffs)}. "
                             "Remove it, pass --overwrite, or choose another --out")
        return "reuse" if s.is_complete and not parts_dir(job.path).exists() else "resume"


def _build(job: _Job, overwrite: bool) -> Path:
    """Under the writer lock: plan on rank 0, score every rank's share, merge and mark the store complete."""
    path, info = job.path, job.info
    plan = _plan(job, overwrite) if info.is_main else {}
    plan = ddp.broadcast_object(plan)
    if plan["status"] == "reuse":  # completed by another run while this one waited for nothing
        if info.is_main:
            log.info("reusing the complete logit store %s (same teacher, data and views)", path)
        return path
    use_parts = plan["fmt"] == "hdf5" and info.distributed
    mine = shard_rows(plan["todo"], info.rank, info.world_size, 1 if use_parts else plan["rows_per_chunk"])
    target = path
    if use_parts and mine:
        # HDF5 has one writer: this rank writes a Zarr part (same keys and layout) beside it
        target = parts_dir(path) / f"rank{info.rank}.zarr"
        pmeta = dict(job.meta(), part_of=path.name, part_rank=info.rank, part_world_size=info.world_size)
        LogitStore.create(target, job.manifest.keys(), job.views, len(job.manifest.classes), pmeta,
                          layout=StoreLayout(dtype=plan["dtype"], feature_dim=plan["feature_dim"]), fmt="zarr",
                          overwrite=True).close()
    ddp.barrier()
    _score(job, target, mine, plan["clips"])
    ddp.barrier()
    if info.is_main:
        with LogitStore.open(path, mode="r+") as s:
            if use_parts:
                merge_parts(s)
            s.mark_complete()
        log.info("logit store complete: %s", path)
    ddp.barrier()
    return path


def _plan(job: _Job, overwrite: bool) -> dict[str, Any]:
    """Rank 0 decides: reuse, resume or create; merges the parts of a killed run; lists the rows to score."""
    path, cfg = job.path, job.cfg
    if overwrite and parts_dir(path).exists():
        shutil.rmtree(parts_dir(path))
    if path.exists() and overwrite:
        remove_store(path)
        shutil.rmtree(clip_store_path(path), ignore_errors=True)
    status = "reuse" if _existing(job) is not None else "create"
    if status == "create":
        if cfg.cache.clips:  # before the logit store: a store that records clips always has them
            if not zarr_available():
                raise CacheError("cache.clips=true stores the decoded clips with Zarr: pip install zarr, "
                                 "or set cache.clips=false")
            ClipStore.create(clip_store_path(path), len(job.manifest), job.views, cfg.clip.frames, cfg.clip.size)
        layout = StoreLayout(dtype=cfg.cache.dtype, feature_dim=_feature_dim(job.ckpt) if job.features else 0)
        LogitStore.create(path, job.manifest.keys(), job.views, len(job.manifest.classes), job.meta(), layout,
                          fmt=job.fmt).close()
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
                "feature_dim": s.feature_dim, "rows_per_chunk": s.rows_per_chunk}
    if plan["fmt"] == "hdf5" and job.info.distributed and todo:
        parts_dir(path).mkdir(exist_ok=True)
    return plan


def _warn_clip_mismatch(ckpt: dict, cfg: Any, teacher_path: Path) -> None:
    """Say so when the views are cut with other clip settings than the teacher was trained on (it then
    scores clips of a length or resolution it never saw, and its soft targets are weaker)."""
    trained = ((ckpt.get("config") or {}).get("clip") or {})
    diffs = [f"clip.{k}={getattr(cfg.clip, k)!r} (teacher: {trained[k]!r})" for k in ("frames", "stride", "size", "resize")
             if k in trained and trained[k] != getattr(cfg.clip, k)]
    if diffs:
        log.warning("the config cuts clips unlike the teacher %s was trained on: %s; --set %s matches it",
                    teacher_path, ", ".join(diffs),
                    " --set ".join(f"clip.{k}={trained[k]}" for k in ("frames", "stride", "size", "resize")
                                   if k in trained and trained[k] != getattr(cfg.clip, k)))


def _feature_dim(ckpt: dict) -> int:
    """Width of the teacher's ``return_features`` output, as its family says (:mod:`dlkdd.models.families`:
    the trunk's ``feature_dim`` for DL-KDD, the SupCon projection size for ActLumos)."""
    arch = ckpt.get("arch") or {}
    return family_of_arch(arch).feature_dim(arch)


def _score(job: _Job, path: Path, mine: list[int], clips_path: str | None = None) -> None:
    """Score rows ``mine`` (this rank's share) and write them into the store at ``path`` (and their
    uint8 clips into the clip store ``clips_path``, before the rows are marked done)."""
    if not mine:
        return
    cfg, info, k, feats = job.cfg, job.info, job.views, job.features
    store = LogitStore.open(path, mode="r+")
    clip_store = ClipStore.open(clips_path, mode="r+") if clips_path else None
    try:
        model = model_from_checkpoint(job.ckpt, str(job.teacher_path)).to(info.device).eval()
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
                raise CacheError(f"teacher {job.teacher_path} produced non-finite logits for "
                                 f"{[job.manifest[i].key for i in bad[:5]]}; the store keeps the rows done so far")
            rows = [i for i, _, _, _ in pending]
            if clip_store is not None:
                clip_store.write_many(rows, torch.stack([q for _, _, _, q in pending]))
            store.write_many(rows, logits.reshape(len(rows), k, -1), np.stack([v for _, _, v, _ in pending]),
                             fts.reshape(len(rows), k, -1) if feats else None)
            pending.clear()

        bar = tqdm(total=len(mine), desc=f"teacher logits (K={k})", unit="clip",
                   disable=not (job.progress and info.is_main))
        for sample in _loader(job, mine):
            clips, q = sample["video"], None
            if clip_store is not None:  # the teacher scores the uint8 rounding the student will read back
                q = quantize(clips)
                clips = dequantize(q)
            pending.append((int(sample["index"]), clips, sample["view"].numpy(), q))
            if sum(c.shape[0] for _, c, _, _ in pending) >= bs:
                flush()
            bar.update(1)
        flush()
        bar.close()
    finally:
        store.close()


def _loader(job: _Job, mine: list[int]) -> DataLoader:
    """Rows ``mine`` of the teacher family's dataset (decoded clips for DL-KDD), K views each, decoded in
    ``cfg.train.workers`` background workers while the teacher runs; ``sample["index"]`` is the manifest
    row. A worker that cannot hand over a sample raises instead of hanging (:mod:`dlkdd.data.workers`)."""
    cfg = job.cfg
    workers = int(cfg.train.workers)
    fam = family_of_arch(job.ckpt.get("arch") or {})
    policy = (StoredViews(job.stored_views) if job.stored_views is not None
              else CacheViews(cfg.clip, job.views, seed=cfg.cache.seed))
    ds = Subset(fam.dataset(cfg, job.manifest, policy), mine)
    return DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers,
                      prefetch_factor=4 if workers else None,
                      multiprocessing_context=worker_context() if workers else None)
