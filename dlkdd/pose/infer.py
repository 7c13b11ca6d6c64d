"""A pose checkpoint on new videos (``dlkdd predict``): pose them as its training stores were, then score windows.

:func:`pose_settings` reads what posed the checkpoint's training data from the checkpoint itself: the
enhancer kind (``arch["enhancer"]``: a teacher's ``enhancer``, a student's or baseline's
``pose.student_enhancer``) and the sampling / tracking settings of its resolved config's ``pose`` section
(``stride``, ``max_frames``, ``video``, ``min_detection``, ``min_tracking``).

:func:`pose_videos` poses videos with :func:`dlkdd.pose.extract.pose_clip` (decode -> enhancer ->
BlazePose): in this process where ``mediapipe`` imports (or an ``estimator`` is given), else in the pose
environment - ``<pose python> -m dlkdd.pose.infer --config C --enhancer K --out O.npz VIDEO...``, which
writes per video ``kp{i}`` float32 ``(R,33,4)``, ``mask{i}`` bool ``(R,)``, ``frames{i}`` int and, for a
video it could not decode, ``error{i}`` (its one-line message) to a temporary ``.npz`` read back here. The
pose python is ``DLKDD_POSE_PYTHON``, else ``.venv-pose/bin/python`` of this checkout; neither: one
:class:`~dlkdd.pose.blazepose.PoseEnvError` line naming ``make pose-env``. Nothing is downloaded.

:func:`predict_posed` scores one video's poses like :func:`dlkdd.pipeline.evaluate.predict_video` scores
clips: windows of ``clip.frames`` posed rows (:mod:`dlkdd.pose.sampling`), sliding over videos longer than
1.5 window spans (``window_stride`` video frames apart, default half a span, rounded to posed rows), else
the centred window; the same result dict (``top``, ``windows``, ``scored``, ``note``) plus ``pose``
(enhancer, posed rows, rows with a person). A video with nobody found is scored (all-zero windows) with a
note saying so; only the first ``pose.max_frames`` posed frames exist, as in training (noted).
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from dlkdd.errors import DataError, DlkddError, VideoError

log = logging.getLogger(__name__)

__all__ = ["pose_settings", "pose_videos", "predict_posed", "predict_pose_videos", "pose_python", "pose_env",
           "run_pose_python", "main"]

#: the pose environment's python of this checkout (``make pose-env``); DLKDD_POSE_PYTHON overrides it
POSE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-pose" / "bin" / "python"


def pose_python() -> Path:
    """The pose environment's python: ``DLKDD_POSE_PYTHON``, else ``.venv-pose/bin/python`` of this checkout."""
    return Path(os.environ.get("DLKDD_POSE_PYTHON") or POSE_PYTHON)


def pose_env() -> dict[str, str]:
    """The environment of a subprocess in the pose environment: this one, with this checkout first on
    ``PYTHONPATH`` (the pose environment imports this very ``dlkdd``)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]),
                                                                   os.environ.get("PYTHONPATH", "")) if p))


#: stderr lines of mediapipe / TensorFlow Lite start-up noise, skipped when a failure is reported
_NOISE = ("W0000", "I0000", "INFO:", "WARNING:")


def run_pose_python(py: str | os.PathLike, args: Sequence[str]) -> str | None:
    """Run ``py args...`` (:func:`pose_env`); None when it succeeds, else its last meaningful stderr line (or
    its exit status) for the caller's one-line error."""
    r = subprocess.run([str(py), *args], env=pose_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode == 0:
        return None
    err = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(_NOISE)]
    return err[-1] if err else f"exit status {r.returncode}"


def has_mediapipe() -> bool:
    """mediapipe is importable here (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("mediapipe") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["mediapipe"] is None (blocked)
        return False


def pose_settings(ckpt: dict) -> tuple[Any, str]:
    """``(config, enhancer kind)`` that posed a pose checkpoint's training data (see the module docstring)."""
    from dlkdd.config import config_from_dict

    cfg = config_from_dict(ckpt.get("config") or {})
    arch = ckpt.get("arch") or {}
    enh = arch.get("enhancer_spec") or arch.get("enhancer")  # an export's arch: the kind, and the spec beside it
    enh = enh if isinstance(enh, dict) else {"kind": enh} if enh else {}
    kind = enh.get("kind") or (cfg.enhancer.kind if ckpt.get("kind") == "teacher" else cfg.pose.student_enhancer)
    recorded = {f"pose.{k}": v for k, v in (arch.get("pose") or {}).items() if hasattr(cfg.pose, k)}
    if "gamma" in enh:
        recorded["enhancer.gamma"] = enh["gamma"]
    for k, v in recorded.items():  # the arch's copy of the sampling (an export carries no config): it wins
        sec, f = k.split(".")
        if getattr(getattr(cfg, sec), f) != v:
            if ckpt.get("config", {}).get(sec):
                log.warning("the checkpoint's arch records %s=%r, its config %r: using the arch's", k, v,
                            getattr(getattr(cfg, sec), f))
            cfg = cfg.replace(**{k: v})
    want = enh.get("weights_sha256")
    if kind == "zerodce" and want:
        from dlkdd.pose.extract import enhancer_of_spec

        have = enhancer_of_spec(cfg, kind)["weights_sha256"]
        if have != want:
            log.warning("ZeroDCE weights %s (sha256 %s...) are not the ones the checkpoint's poses were made with "
                        "(%s...)", cfg.enhancer.weights, have[:12], want[:12])
    return cfg, str(kind)


Posed = tuple  # (keypoints (R,33,4) float32, mask (R,) bool, video frames int)


def pose_videos(paths: Sequence[str | os.PathLike], cfg: Any, kind: str,
                estimator: tuple[Callable, str] | None = None) -> list[Posed | DlkddError]:
    """Per video, ``(keypoints, mask, frames)`` or the :class:`DlkddError` that kept it from being posed."""
    if estimator is not None or has_mediapipe():
        return _pose_here(paths, cfg, kind, estimator)
    return _pose_in_env(paths, cfg, kind)


def _pose_here(paths: Sequence[Any], cfg: Any, kind: str, estimator: tuple[Callable, str] | None) -> list:
    from dlkdd.pose.extract import _default_estimator, enhancer_of, pose_clip

    fn = (estimator or _default_estimator(cfg.pose))[0]
    enhancer, _ = enhancer_of(cfg, kind)
    out: list = []
    try:
        for p in paths:
            try:
                out.append(pose_clip(str(p), enhancer, fn, cfg.pose))
            except VideoError as e:
                out.append(e)
    finally:
        if hasattr(fn, "close"):
            fn.close()
    return out


def _pose_in_env(paths: Sequence[Any], cfg: Any, kind: str) -> list:
    import yaml

    from dlkdd.pose.blazepose import POSE_ENV_HINT, PoseEnvError

    py = pose_python()
    if not py.exists():
        raise PoseEnvError(f"posing videos needs mediapipe, which this environment lacks, and the pose environment "
                           f"is missing ({py}): create it with `{POSE_ENV_HINT.split(' (')[0]}` or set DLKDD_POSE_PYTHON")
    with tempfile.TemporaryDirectory(prefix="dlkdd-posepredict-") as tmp:
        cfg_path, out = Path(tmp) / "config.yaml", Path(tmp) / "poses.npz"
        cfg_path.write_text(yaml.safe_dump(cfg.to_dict()))
        args = ["-m", "dlkdd.pose.infer", "--config", str(cfg_path), "--enhancer", kind, "--out", str(out),
                *[str(Path(p).resolve()) for p in paths]]
        log.info("posing %d video(s) (enhancer %s) with %s", len(paths), kind, py)
        err = run_pose_python(py, args)
        if err is not None or not out.exists():
            raise PoseEnvError(f"posing failed in the pose environment ({py} -m dlkdd.pose.infer): "
                               f"{err or 'no output written'}")
        with np.load(out) as z:
            return [VideoError(str(z[f"error{i}"])) if f"error{i}" in z.files else
                    (z[f"kp{i}"].astype(np.float32), z[f"mask{i}"].astype(bool), int(z[f"frames{i}"]))
                    for i in range(len(paths))]


def main(argv: Sequence[str] | None = None) -> int:
    """The pose environment's side of :func:`_pose_in_env` (``python -m dlkdd.pose.infer``)."""
    from dlkdd.config import load_config

    ap = argparse.ArgumentParser(prog="python -m dlkdd.pose.infer", description="Pose videos into one .npz.")
    ap.add_argument("--config", required=True)
    ap.add_argument("--enhancer", required=True, choices=("none", "gamma", "zerodce"))
    ap.add_argument("--out", required=True)
    ap.add_argument("videos", nargs="+")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        cfg = load_config(a.config)
        res = _pose_here(a.videos, cfg, a.enhancer, None)
    except DlkddError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    arrays: dict[str, Any] = {}
    for i, r in enumerate(res):
        if isinstance(r, DlkddError):
            arrays[f"error{i}"] = np.asarray(str(r))
        else:
            arrays[f"kp{i}"], arrays[f"mask{i}"], arrays[f"frames{i}"] = r[0], r[1], np.asarray(r[2])
    tmp = Path(a.out + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(a.out)
    return 0


def _rows_of(view: Any, frames: int, stride: int, rows: int) -> np.ndarray:
    from dlkdd.pose.sampling import view_rows

    return view_rows(view, frames, stride, rows)


@torch.inference_mode()
def predict_posed(model: Any, ckpt: dict, cfg: Any, kind: str, path: Any, posed: Posed, info: Any, device: Any,
                  opts: Any) -> dict[str, Any]:
    """The result dict of :func:`dlkdd.pipeline.evaluate.predict_video` for one posed video (module docstring)."""
    from dlkdd.pipeline.evaluate import check_finite_outputs, top_labels, window_starts, window_tops
    from dlkdd.pose.sampling import last_start, pose_window, window_stride

    kp, mask, frames = posed
    cc, s = (opts.clip_cfg or cfg.clip), int(cfg.pose.stride)
    classes = list(ckpt.get("classes") or [])
    rows = len(mask)
    wstride = window_stride(cc, s)
    step = wstride // s
    span_rows = (int(cc.frames) - 1) * step + 1
    span = (int(cc.frames) - 1) * wstride + 1  # video frames a window covers
    if rows >= 1.5 * span_rows:
        hop = max(1, round(opts.window_stride / s)) if opts.window_stride > 0 else max(1, span_rows // 2)
        starts = window_starts(rows, span_rows, hop, opts.max_windows)
    else:
        starts = [last_start(rows, cc, s) // 2]
    views = [pose_window(r, cc, s) for r in starts]
    x = np.stack([kp[_rows_of(v, frames, s, rows)] for v in views]) if rows else np.zeros(
        (len(views), int(cc.frames), 33, 4), np.float32)
    logits = model(torch.from_numpy(x).to(device)).float().cpu()
    check_finite_outputs(logits, ckpt.get("_path", "the checkpoint"), [str(path)] * len(logits))
    k = min(opts.topk, len(classes))
    fps = info.fps or 30.0
    windows = window_tops([r * s for r in starts], span, logits.softmax(-1), classes, k, fps)
    notes = []
    found = int(mask.sum())
    if found == 0:
        notes.append(f"BlazePose found nobody in the {rows} posed frame(s) ({kind}-enhanced): the windows are empty "
                     "skeletons and the labels below carry no evidence")
    elif rows < span_rows:
        notes.append(f"the video has {frames} frame(s), a window spans {span} ({cc.frames} posed frames every "
                     f"{wstride}): its posed frames are looped to fill one window")
    if frames > rows * s:
        notes.append(f"only the first {rows * s} of {frames} frames were posed (pose.max_frames={cfg.pose.max_frames} "
                     f"at pose.stride={s}, as in training)")
    note = "; ".join(notes) or None
    if note:
        log.warning("%s: %s", path, note)
    end_frame = min(frames, starts[-1] * s + span)
    return {"video": str(path), "frames": frames, "fps": fps, "note": note,
            "top": top_labels(logits.mean(0).softmax(-1), classes, k), "windows": windows,
            "scored": {"windows": len(starts), "start_s": round(starts[0] * s / fps, 3),
                       "end_s": round(end_frame / fps, 3), "duration_s": round(frames / fps, 3)},
            "pose": {"enhancer": kind, "posed_frames": rows, "person_frames": found, "stride": s}}


def predict_pose_videos(model: Any, ckpt: dict, paths: Sequence[Any], device: Any, opts: Any,
                        estimator: tuple[Callable, str] | None = None) -> list[dict[str, Any] | DlkddError]:
    """Per video, the prediction or the one-line error that kept it from being scored. Every video is probed
    first (a missing or corrupt one is its error), the others posed in one go (one pose-environment call)."""
    from dlkdd.data.video import probe

    cfg, kind = pose_settings(ckpt)
    infos: list[Any] = []
    for p in paths:
        try:
            infos.append(probe(p))
        except VideoError as e:
            infos.append(e)
    good = [i for i, x in enumerate(infos) if not isinstance(x, DlkddError)]
    posed = pose_videos([paths[i] for i in good], cfg, kind, estimator) if good else []
    out: list[dict[str, Any] | DlkddError] = list(infos)
    for i, r in zip(good, posed):
        if isinstance(r, DlkddError):
            out[i] = r
        elif r[2] < 1:
            out[i] = DataError(f"{paths[i]}: no frame could be decoded")
        else:
            out[i] = predict_posed(model, ckpt, cfg, kind, paths[i], r, infos[i], device, opts)
    return out


if __name__ == "__main__":
    sys.exit(main())
