"""The pose family's own flows, from pose stores (never from video, never importing mediapipe).

The teacher and student stages are the common ones (:mod:`dlkdd.pipeline.teacher`,
:mod:`dlkdd.pipeline.student`) asking :data:`dlkdd.pose.family.POSE` for the model, the arch and the
dataset (:func:`find_poses`: the pose store of a list; :func:`pose_arch`; :func:`check_stored_windows`).
What differs is here:

- :func:`precompute_logits`: the teacher's raw logits for K windows per training clip (the centred one and
  K-1 random ones seeded by ``(cache.seed, key)``, :class:`~dlkdd.pose.dataset.CacheWindows`) into a
  :class:`dlkdd.cache.store.LogitStore`; the windows are stored as views, so a pose student (rows of its
  pose store) or an RGB student (frames of the video) replays them exactly.
- :func:`evaluate_checkpoint`: any pose checkpoint on a list, each clip scored by the mean logits of
  ``clips`` windows; the list's pose store is found, or made by the pose environment (:func:`ensure_store`).

The pose stores are found by content address (:func:`dlkdd.pose.store.find_store`) under ``pose.store_dir``.
"""
from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from dlkdd.cache.keying import view_spec_from_config
from dlkdd.cache.store import LogitStore, StoreLayout
from dlkdd.data.dataset import collate
from dlkdd.data.manifest import manifest_from_config
from dlkdd.errors import CacheError, CheckpointError, DataError
from dlkdd.predictions import eval_view_spec
from dlkdd.pose.dataset import CacheWindows, PoseDataset, WindowGrid, load_poses
from dlkdd.pose.extract import enhancer_of_spec as _enhancer
from dlkdd.pose.extract import store_dir as _store_dir
from dlkdd.pose.infer import POSE_PYTHON, pose_python, run_pose_python  # the pose env (DLKDD_POSE_PYTHON overrides)
from dlkdd.pose.infer import has_mediapipe as _has_mediapipe
from dlkdd.pose.skeleton import skeleton_arch
from dlkdd.pose.store import find_store, pose_spec
from dlkdd.train.engine import evaluate
from dlkdd.utils import sha256_file, sha256_text

log = logging.getLogger(__name__)

__all__ = ["pose_arch", "find_poses", "ensure_store", "precompute_logits", "check_stored_windows",
           "evaluate_checkpoint", "POSE_PYTHON"]


def pose_arch(cfg: Any, num_classes: int, kind: str) -> dict[str, Any]:
    """A pose checkpoint's ``arch``: the skeleton network, the enhancer its poses come from, the pose sampling."""
    spec = pose_spec(cfg.pose, _enhancer(cfg, kind), "")
    return dict(skeleton_arch(cfg.pose, num_classes), enhancer=spec["enhancer"],
                pose={k: v for k, v in spec.items() if k not in ("enhancer", "model_sha256")})


def find_poses(cfg: Any, manifest: Any, kind: str, split: str) -> Any:
    """:class:`~dlkdd.pose.dataset.PoseArrays` of ``manifest`` with enhancer ``kind`` (the complete store)."""
    spec = pose_spec(cfg.pose, _enhancer(cfg, kind), "")
    make = f"make pose-env && .venv-pose/bin/dlkdd pose --config C --split {split} --enhancer {kind}"
    return load_poses(find_store(_store_dir(cfg), manifest, spec, f"{split} list with enhancer {kind}", make), manifest)


def _split(cfg: Any, split: str, kind: str) -> tuple[Any, Any]:
    manifest = manifest_from_config(cfg.data, split, check_files=False)
    return manifest, find_poses(cfg, manifest, kind, split)


def _teacher_kind(ckpt: dict, path: Any) -> str:
    arch = ckpt.get("arch") or {}
    if arch.get("family") != "pose" or ckpt.get("kind") != "teacher":
        raise CheckpointError(f"{path}: not a pose teacher (kind {ckpt.get('kind')!r}, family {arch.get('family')!r}); "
                              f"train one with `dlkdd teacher` and model.teacher: pose")
    return arch["enhancer"]["kind"]


@torch.inference_mode()
def precompute_logits(cfg: Any, teacher_path: Path, ckpt: dict, out: Any, views: int, fmt: str,
                      progress: bool, overwrite: bool) -> Path:
    """The pose teacher's logit store (called by :func:`dlkdd.pipeline.cache_logits.precompute_logits`)."""
    from dlkdd.models.build import model_from_checkpoint
    from dlkdd.models.families import family_of_arch

    kind = _teacher_kind(ckpt, teacher_path)
    train, poses = _split(cfg, "train", kind)
    if list(ckpt.get("classes") or []) != list(train.classes):
        raise CacheError(f"{teacher_path}: the teacher's classes {ckpt.get('classes')} differ from the data's {train.classes}")
    sha = sha256_file(teacher_path)
    windows = {"frames": cfg.clip.frames, "stride": cfg.clip.stride, "flip": cfg.clip.flip, "seed": int(cfg.cache.seed),
               "pose_stride": poses.stride, "views": int(views)}
    wid = sha256_text(json.dumps(windows, sort_keys=True))[:8]
    path = Path(out) if out else Path(cfg.cache.dir) / f"pose-logits-{sha[:12]}-{train.sha256()[:12]}-{wid}.zarr"
    if path.exists():
        if not overwrite:
            with LogitStore.open(path) as s:
                if (s.is_complete and s.meta.get("teacher_sha256") == sha and s.meta.get("windows") == windows
                        and s.meta.get("manifest_sha256") == train.sha256()):
                    log.info("reusing the complete logit store %s", path)
                    return path
            raise CacheError(f"{path} exists (another teacher, list or an unfinished run); pass --overwrite or another --out")
    fam = family_of_arch(ckpt["arch"])
    # view_seed and clip as a video teacher's store records them (cache/keying.py): a student's store check passes
    meta = {"family": fam.name, "teacher_sha256": sha, "teacher_path": str(teacher_path), "teacher_kind": fam.name,
            "teacher_enhancer": fam.enhancer_label(ckpt["arch"]), "manifest_sha256": train.sha256(),
            "classes": list(train.classes), "pose_store": poses.path, "pose_spec": poses.meta.get("spec"),
            **view_spec_from_config(cfg, views), "windows": windows, "config": cfg.to_dict()}
    model = model_from_checkpoint(ckpt, str(teacher_path)).eval()
    ds = PoseDataset(train, poses, cfg.clip, CacheWindows(cfg.clip, poses.stride, views, seed=cfg.cache.seed))
    with LogitStore.create(path, train.keys(), views, len(train.classes), meta,
                           layout=StoreLayout(dtype=cfg.cache.dtype), fmt=fmt, overwrite=True) as s:
        for lo in range(0, len(ds), 32):
            batch = collate([ds[i] for i in range(lo, min(lo + 32, len(ds)))])
            logits = model(batch["video"].flatten(0, 1)).reshape(len(batch["index"]), views, -1)
            s.write_many(batch["index"].tolist(), logits.numpy(), batch["view"].numpy())
        s.mark_complete()
    log.info("pose teacher logits: %s (%d clips x %d windows)", path, len(ds), views)
    return path


def check_stored_windows(rows: Any, poses: Any) -> None:
    """Refuse a logit store whose windows a pose student cannot replay on ``poses``: not a pose teacher's,
    or its windows cut at another ``pose.stride``."""
    store = getattr(rows, "store", None)  # StoreRows: one store (an ensemble is checked by its members)
    if store is None:
        return
    m = store.meta
    path = getattr(rows, "path", "the logit store")
    if m.get("family") != "pose":
        raise CacheError(f"{path}: not a pose-teacher logit store; make one with "
                         f"`dlkdd cache-logits --config C --teacher T/teacher.pt --out {path}`")
    stride = (m.get("pose_spec") or {}).get("stride")
    if stride != poses.stride:
        raise CacheError(f"{path}: its windows were cut at pose.stride {stride}, the student's poses at {poses.stride}")


def ensure_store(cfg: Any, manifest: Any, kind: str, progress: bool = True) -> Any:
    """The poses of ``manifest`` (enhancer ``kind``): the complete store if there is one, else made now by the
    pose stage - in this process where mediapipe imports, else by the pose environment's python (a
    subprocess; ``DLKDD_POSE_PYTHON`` or ``.venv-pose/bin/python``), else a one-line error naming
    ``make pose-env``."""
    try:
        return find_poses(cfg, manifest, kind, "test")
    except CacheError:
        pass
    with tempfile.TemporaryDirectory(prefix="dlkdd-pose-") as tmp:
        cfg_path, man_path = Path(tmp) / "config.yaml", Path(tmp) / "manifest.json"
        _write_job(cfg, manifest, cfg_path, man_path)
        cmd = ["-m", "dlkdd", "pose", "--config", str(cfg_path), "--manifest", str(man_path), "--enhancer", kind]
        if not progress:
            cmd.append("--no-progress")
        py = sys.executable if _has_mediapipe() else str(pose_python())
        if not Path(py).exists():
            raise CacheError(f"no pose store for these {len(manifest)} clips, and no pose environment to make one "
                             f"({py} is missing): create it with `make pose-env`")
        log.info("posing %d clips (enhancer %s) with %s", len(manifest), kind, py)
        err = run_pose_python(py, cmd)
        if err is not None:
            raise CacheError(f"the pose stage failed ({py} -m dlkdd pose): {err}")
    return find_poses(cfg, manifest, kind, "test")


def _write_job(cfg: Any, manifest: Any, cfg_path: Path, man_path: Path) -> None:
    import yaml

    d = cfg.to_dict()
    d["pose"] = dict(d["pose"], store_dir=str(_store_dir(cfg).resolve()))
    cfg_path.write_text(yaml.safe_dump(d))
    man_path.write_text(json.dumps({"classes": list(manifest.classes), "root": manifest.root,
                                    "entries": [[e.key, e.path, e.label] for e in manifest]}))


def evaluate_checkpoint(ckpt: dict, ckpt_path: Any, manifest: Any, device: Any, clips: int = 1,
                        progress: bool = True) -> dict[str, Any]:
    """A pose checkpoint on ``manifest``: top-1/top-5, per class, confusion, per-clip predictions, each clip
    scored by the mean logits of ``clips`` evenly spaced windows (called by
    :func:`dlkdd.pipeline.evaluate.evaluate_checkpoint`)."""
    from dlkdd.config import config_from_dict
    from dlkdd.models.build import model_from_checkpoint

    cfg = config_from_dict(ckpt.get("config") or {})
    classes = list(ckpt.get("classes") or [])
    if classes != list(manifest.classes):
        raise DataError(f"{ckpt_path} was trained on classes {classes}, the evaluation list has {list(manifest.classes)}")
    poses = ensure_store(cfg, manifest, ckpt["arch"]["enhancer"]["kind"], progress)
    model = model_from_checkpoint(ckpt, str(ckpt_path)).to(device).eval()
    ds = PoseDataset(manifest, poses, cfg.clip, WindowGrid(cfg.clip, poses.stride, clips))
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False, collate_fn=collate)
    m = evaluate(model, loader, device, len(classes), amp="fp32", progress=progress, predictions=True)
    rows = m.pop("predictions")
    probs = rows["logits"].softmax(-1)
    predictions = [{"key": k, "label": int(y), "pred": int(p.argmax()), "probs": p.tolist()}
                   for k, y, p in zip(rows["keys"], rows["labels"], probs)]
    return {"checkpoint": str(ckpt_path), "kind": ckpt.get("kind"), "seed": cfg.seed, **m, "classes": classes,
            "views": {"clips": clips, "crops": 1}, "test_views": eval_view_spec(cfg.clip, clips, 1),
            "predictions": predictions, "amp": "fp32", "pose_store": poses.path}
