"""Small shared helpers: atomic writes, file hashes, logging set-up, device choice, seeding."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

log = logging.getLogger("dlkdd")


def setup_logging(verbose: int = 0) -> None:
    """Configure the ``dlkdd`` logger once (CLI entry point)."""
    level = logging.DEBUG if verbose > 0 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    A kill at any moment leaves either the previous file or the new one, never a torn file. The file
    gets the mode a plain ``open()`` would give it (0666 less the umask), not ``mkstemp``'s 0600.
    A write that runs out of room (full disk, ``ulimit -f``, quota) raises one
    :class:`~dlkdd.errors.OutputError` line naming ``path`` and ``needed`` bytes
    (:func:`dlkdd.outputs.disk_full`); ``path`` keeps its previous contents.
    """
    from dlkdd.outputs import disk_full

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as e:
        full = disk_full(e, path, needed)
        if full is None:
            raise
        raise full from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """This process's umask (``/proc/self/status`` where it exists; else set-and-restore)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_link(src: str | os.PathLike, dst: str | os.PathLike) -> bool:
    """Make ``dst`` the same file as ``src`` (a hard link, no extra disk), atomically.

    ``src`` must only ever be replaced by rename (as :func:`atomic_path` does), never rewritten in
    place, so the link keeps the contents ``src`` had now. Where hard links are not supported
    (some network or FAT file systems) the file is copied instead. Returns True for a link.
    """
    src, dst = Path(src), Path(dst)
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
            return True
        except OSError:
            shutil.copyfile(src, tmp)
            return False


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path, needed=len(text.encode())) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def fmt_pct(v: float | None) -> str:
    """``"12.34%"``, or ``"n/a"`` for None: how summaries print a top-1 / top-5 percentage."""
    return "n/a" if v is None else f"{v:.2f}%"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    import torch

    torch.manual_seed(seed)


def resolve_device(device: str | None) -> "torch.device":  # noqa: F821
    """``auto``/None: CUDA if available, else CPU. A device this machine lacks (``cuda`` on a CPU-only
    torch, ``cuda:3`` on a 2-GPU machine, ``tpu``, a typo) is a one-line
    :class:`~dlkdd.errors.ResourceError` naming the devices that are available."""
    import torch

    from dlkdd.errors import ResourceError

    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    avail = "cpu" + (", cuda" + (f", cuda:0..cuda:{n - 1}" if n > 1 else ", cuda:0") if n else "") + ", auto"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ResourceError(f"--device {device}: unknown device; available here: {avail}") from None
    if dev.type == "cuda" and (n == 0 or (dev.index is not None and dev.index >= n)):
        have = "this torch has no CUDA support or sees no GPU" if n == 0 else f"this machine has {n} GPU(s)"
        raise ResourceError(f"--device {device}: not available ({have}); available here: {avail}")
    if dev.type not in ("cpu", "cuda"):
        raise ResourceError(f"--device {device}: dlkdd runs on cpu or cuda; available here: {avail}")
    return dev


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a matplotlib figure to ``path`` as a PNG (parents created, written atomically) and close it."""
    import matplotlib.pyplot as plt

    import io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # rendered first: its size is what a full disk's error names
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    with atomic_path(path, needed=buf.getbuffer().nbytes) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path
