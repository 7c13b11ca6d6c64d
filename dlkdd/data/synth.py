"""A small procedural low-light action dataset in ARID format, for tests, demos and smoke runs.

Each class is a distinct motion of a rendered figure (body ellipse, head, one arm):
Jump (vertical hops), Walk (slow horizontal translation, random direction - horizontal
flips keep the class), Wave (arm swinging), Turn (body width oscillating, a figure turning
about its vertical axis), Run (fast horizontal translation with a bounce), Sit (the figure
lowers and shrinks), Stand (the reverse) and Push (the figure grows, approaching). Per clip:
random colours, background gradient, size, position, speed and phase.

The bright scene is then darkened the way a dark camera frame is formed: exposure scaled so
the mean luma is U[10, 40]/255 (ARID's clips average about 7-50/255, Xu et al. 2021), Poisson
shot noise at a gain of ``1/3`` DN per electron, Gaussian read noise (sigma 1-2 DN), 8-bit
quantisation (the Poisson-Gaussian sensor model, Foi et al., "Practical Poissonian-Gaussian
noise modeling", IEEE TIP 2008). Clips are encoded h264 (yuv420p, keyframe every 16 frames)
with PyAV.

Output (``make_synthetic``)::

    OUT/clips/<Class>/<Class>_<actor>_<n>.mp4
    OUT/mapping_table.txt   id<TAB>Class
    OUT/train.txt, OUT/test.txt   index<TAB>label<TAB>Class/Name.avi  (ARID's list format)
    OUT/config.yaml         a data: section pointing at the above
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["make_synthetic", "SYNTH_CLASSES", "render_clip", "darken"]

# Ordered so that the first few classes are the most distinct motions.
SYNTH_CLASSES = ("Jump", "Walk", "Wave", "Turn", "Run", "Sit", "Stand", "Push")

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


def _smooth(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _motion(cls: str, t: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-frame figure parameters for a class. ``t``: (F,) time in [0,1]. Units: frame heights."""
    F = len(t)
    ones = np.ones(F, dtype=np.float64)
    speed = rng.uniform(0.8, 1.25)
    phase = rng.uniform(0, 2 * np.pi)
    direction = rng.choice([-1.0, 1.0])
    p = {"cx": ones * 0.0, "cy": ones * 0.0, "sy": ones, "sx": ones, "arm": ones * 0.35 * np.pi}
    p["cy"] = ones * 0.0
    p["cx"] = ones * 0.0 + 0.03 * np.sin(2 * np.pi * 0.3 * t + phase)  # idle sway
    if cls == "Jump":
        p["cy"] = -0.22 * np.abs(np.sin(np.pi * 2.0 * speed * t + phase))
        p["sy"] = 1 - 0.08 * np.abs(np.cos(np.pi * 2.0 * speed * t + phase))
    elif cls == "Walk":
        p["cx"] = direction * (0.5 * speed * (t - 0.5))
        p["cy"] = 0.015 * np.sin(2 * np.pi * 4 * t + phase)
    elif cls == "Run":
        p["cx"] = direction * (1.2 * speed * (t - 0.5))
        p["cy"] = -0.06 * np.abs(np.sin(2 * np.pi * 4 * speed * t + phase))
        p["arm"] = ones * 0.15 * np.pi
    elif cls == "Wave":
        p["arm"] = 0.55 * np.pi + 0.35 * np.pi * np.sin(2 * np.pi * 3 * speed * t + phase)
    elif cls == "Turn":
        p["sx"] = 0.35 + 0.65 * np.abs(np.cos(np.pi * 1.5 * speed * t + phase))
    elif cls in ("Sit", "Stand"):
        a, b = sorted(rng.uniform(0.1, 0.9, size=2))
        b = max(b, a + 0.3)
        s = _smooth((t - a) / (b - a))
        if cls == "Stand":
            s = 1 - s
        p["sy"] = 1 - 0.4 * s
        p["cy"] = 0.2 * s  # lower (y grows downwards)
    elif cls == "Push":
        p["sx"] = p["sy"] = 0.7 + 0.6 * _smooth(t * speed)
    else:  # pragma: no cover - guarded by make_synthetic
        raise ValueError(cls)
    return p


def render_clip(cls: str, frames: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A bright, noiseless clip of class ``cls``: float32 ``(F,H,W,3)`` radiance in [0,1]."""
    H, W = size
    aspect = W / H
    t = np.linspace(0.0, 1.0, frames)
    m = _motion(cls, t, rng)
    yy, xx = np.meshgrid(np.linspace(0, 1, H, dtype=np.float32), np.linspace(0, aspect, W, dtype=np.float32),
                         indexing="ij")
    # background: a lit gradient + a floor, random tint
    g = rng.uniform(0.2, 0.5) + rng.uniform(-0.2, 0.2) * (xx / aspect) + rng.uniform(0.0, 0.2) * yy
    tint = rng.uniform(0.7, 1.0, size=3).astype(np.float32)
    floor = (yy > rng.uniform(0.72, 0.85)).astype(np.float32) * rng.uniform(-0.15, 0.1)
    bg = np.clip(g + floor, 0.02, 1.0)[..., None] * tint  # (H,W,3)
    colour = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    base_x = aspect / 2 + rng.uniform(-0.15, 0.15) * aspect
    base_y = rng.uniform(0.5, 0.6)
    r = rng.uniform(0.11, 0.15)  # body half-width
    soft = 1.5 / H
    out = np.empty((frames, H, W, 3), dtype=np.float32)
    for f in range(frames):
        sx, sy = float(m["sx"][f]), float(m["sy"][f])
        cx = base_x + float(m["cx"][f]) * aspect
        cy = base_y + float(m["cy"][f])
        ry, rx = 1.9 * r * sy, r * sx
        body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        hy, hr = cy - ry - 0.55 * r * sy, 0.55 * r * min(sy, 1.0) * (0.6 + 0.4 * sx)
        head = ((yy - hy) ** 2 + (xx - cx) ** 2) / hr**2
        # arm: a segment from the shoulder at angle m["arm"] (0 = down, pi = up)
        ang = float(m["arm"][f])
        shy, shx = cy - 0.6 * ry, cx + 0.8 * rx
        dy, dx = -np.cos(np.pi - ang), np.sin(np.pi - ang)
        L = 1.6 * r * sy
        proj = np.clip((yy - shy) * dy + (xx - shx) * dx, 0, L)
        dist = np.sqrt((yy - shy - proj * dy) ** 2 + (xx - shx - proj * dx) ** 2)
        mask = np.maximum.reduce([
            1 / (1 + np.exp(np.clip((np.sqrt(body) - 1) * ry / soft, -30, 30))),
            1 / (1 + np.exp(np.clip((np.sqrt(head) - 1) * hr / soft, -30, 30))),
            1 / (1 + np.exp(np.clip((dist - 0.22 * r) / soft, -30, 30))),
        ])[..., None]
        out[f] = bg * (1 - mask) + colour * mask
    return out


def darken(scene: np.ndarray, rng: np.random.Generator, mean_luma: float | None = None,
           electrons_per_dn: float = 3.0, read_sigma: float | None = None) -> np.ndarray:
    """Expose a bright scene as a dark camera would: float radiance -> noisy uint8.

    ``DN = Poisson(k * s * scene) / k + N(0, read_sigma^2)``, rounded and clipped to [0,255],
    where ``s`` sets the mean luma to ``mean_luma`` DN (default U[10,40]) and ``k`` electrons per DN.
    The Poisson term is drawn in its Gaussian approximation ``N(x, x/k)`` (Foi et al. 2008), which
    is 20x faster and indistinguishable after 8-bit quantisation at these photon counts.
    """
    if mean_luma is None:
        mean_luma = float(rng.uniform(10.0, 40.0))
    if read_sigma is None:
        read_sigma = float(rng.uniform(1.0, 2.0))
    luma = float((scene @ _LUMA).mean())
    dn = np.maximum(scene * np.float32(mean_luma / max(luma, 1e-6)), 0).astype(np.float32)
    # shot noise (Poisson, variance dn/k) + read noise, in the heteroscedastic Gaussian form of Foi et al.
    sigma = np.sqrt(dn / np.float32(electrons_per_dn) + np.float32(read_sigma**2))
    noisy = dn + sigma * rng.standard_normal(size=scene.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _encode(path: Path, frames: np.ndarray, fps: int = 30) -> None:
    import av

    T, H, W, _ = frames.shape
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), mode="w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.gop_size = 16
        s.options = {"crf": "18", "preset": "veryfast"}
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    os.replace(tmp, path)


def make_synthetic(out_dir: str | os.PathLike, classes: int = 4, clips_per_class: int = 6, frames: int = 40,
                   size: tuple[int, int] = (96, 128), seed: int = 0) -> dict[str, str]:
    """Write a synthetic dark action dataset in ARID format; returns its paths
    ``{"root", "train_list", "test_list", "mapping", "config"}``.

    Every third clip of a class (``n % 3 == 2``; at least one when a class has 2+ clips)
    goes to ``test.txt``, the rest to ``train.txt``. ``size``: (height, width), both even.
    """
    if not 1 <= classes <= len(SYNTH_CLASSES):
        raise ValueError(f"classes must be 1..{len(SYNTH_CLASSES)}, got {classes}")
    if clips_per_class < 1 or frames < 1:
        raise ValueError("clips_per_class and frames must be >= 1")
    H, W = int(size[0]), int(size[1])
    if H % 2 or W % 2 or H < 16 or W < 16:
        raise ValueError(f"size must be even and >= 16 (h264 yuv420p), got {H}x{W}")
    out = Path(out_dir)
    names = list(SYNTH_CLASSES[:classes])
    planned = _planned_files(names, clips_per_class)
    previous = _claim(out, planned)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label, cls in enumerate(names):
        (out / "clips" / cls).mkdir(parents=True, exist_ok=True)
        test_ids = {j for j in range(clips_per_class) if j % 3 == 2}
        if clips_per_class >= 2 and not test_ids:
            test_ids = {clips_per_class - 1}
        for j in range(clips_per_class):
            crng = np.random.default_rng(rng.integers(0, 2**63))
            name = _clip_name(cls, j)
            clip = darken(render_clip(cls, frames, (H, W), crng), crng)
            _encode(out / "clips" / cls / f"{name}.mp4", clip)
            (test if j in test_ids else train).append((label, f"{cls}/{name}.avi"))
    (out / "mapping_table.txt").write_text("".join(f"{i}\t{c}\n" for i, c in enumerate(names)))
    for fname, rows in (("train.txt", train), ("test.txt", test)):
        (out / fname).write_text("".join(f"{i}\t{lab}\t{p}\n" for i, (lab, p) in enumerate(rows)))
    paths = {
        "root": str((out / "clips").resolve()),
        "train_list": str((out / "train.txt").resolve()),
        "test_list": str((out / "test.txt").resolve()),
        "mapping": str((out / "mapping_table.txt").resolve()),
    }
    import yaml

    cfg = {"name": f"synth-{classes}x{clips_per_class}", "data": {"format": "arid", **paths},
           "clip": {"frames": min(16, frames), "stride": 1 if frames < 32 else 2, "size": 56, "resize": 64}}
    (out / "config.yaml").write_text(
        "# written by dlkdd synth: a synthetic dark action dataset in ARID format\n" + yaml.safe_dump(cfg, sort_keys=False))
    paths["config"] = str((out / "config.yaml").resolve())
    _remove_stale(out, previous, set(planned))
    _write_record(out, planned)
    log.info("synthetic dataset: %d classes x %d clips (%d train / %d test) in %s",
             classes, clips_per_class, len(train), len(test), out)
    return paths


# ---------------------------------------------------------------- what synth wrote, and may replace
#: The record of a set's files, ``{"dlkdd_synth": 1, "files": {relative path: sha256}}``: the only
#: files a later ``make_synthetic`` into the same folder may replace or remove.
RECORD = ".dlkdd-synth.json"
_TOP = ("mapping_table.txt", "train.txt", "test.txt", "config.yaml")


def _clip_name(cls: str, j: int) -> str:
    return f"{cls}_{j // 2 + 1}_{j + 1}"


def _planned_files(names: list[str], clips_per_class: int) -> list[str]:
    """Paths (relative to the set's folder) this set writes."""
    return [*_TOP, *(f"clips/{c}/{_clip_name(c, j)}.mp4" for c in names for j in range(clips_per_class))]


def _read_record(out: Path) -> dict[str, str]:
    import json

    from dlkdd.errors import OutputError

    f = out / RECORD
    if not f.is_file():
        return {}
    try:
        files = json.loads(f.read_text())["files"]
        return {str(k): str(v) for k, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise OutputError(f"{f}: damaged record of a synthetic set; delete the folder {out.absolute()} yourself "
                          f"or choose a new one") from None


def _claim(out: Path, planned: list[str]) -> dict[str, str]:
    """Refuse (OutputError) to write where a file exists that the folder's record does not list with its
    current contents: a user's file, or one changed since. Returns the previous record."""
    from dlkdd.errors import OutputError
    from dlkdd.utils import sha256_file

    for part in ("clips", *(str(Path(p).parent) for p in planned if p.startswith("clips/"))):
        if (out / part).is_symlink():
            raise OutputError(f"{(out / part).absolute()} is a symbolic link; dlkdd synth writes only into a "
                              f"folder of its own: choose an empty or new folder")
    previous = _read_record(out)
    for rel in sorted(set(planned) | set(previous)):
        f = out / rel
        if f.is_symlink() or (f.exists() and (rel not in previous or not f.is_file()
                                               or sha256_file(f) != previous[rel])):
            raise OutputError(f"{f.absolute()}: not a file dlkdd synth wrote there (or changed since); it is never "
                              f"replaced: choose an empty or new folder, or move it away")
    return previous


def _remove_stale(out: Path, previous: dict[str, str], keep: set[str]) -> None:
    """Delete the previous set's files this one did not rewrite (checked by :func:`_claim`), then the
    class folders left empty; nothing else."""
    for rel in sorted(set(previous) - keep):
        (out / rel).unlink(missing_ok=True)
        d = (out / rel).parent
        while d != out and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent


def _write_record(out: Path, planned: list[str]) -> None:
    import json

    from dlkdd.utils import atomic_write_text, sha256_file

    files = {rel: sha256_file(out / rel) for rel in planned}
    atomic_write_text(out / RECORD, json.dumps({"dlkdd_synth": 1, "files": files}, indent=1) + "\n")
