"""Per-epoch history of a training run: ``log.csv``, ``log.json`` and ``curves.png``.

One row per epoch: a flat dict of scalars (``epoch``, ``train_loss``, ``train_<term>``,
``train_top1``, ``val_top1``, ``lr``, ``alpha`` ...) plus ``train_loss_steps``, the list of the
epoch's per-optimizer-step losses (in ``log.json`` and the plot; the CSV keeps the scalars). Rows may
have different keys (validation every N epochs); the CSV has the union of the columns, empty where absent. Files are written
atomically after every epoch, so a killed run leaves a readable log.
"""
from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

from dlkdd.utils import atomic_path, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["EpochLogger"]


class EpochLogger:
    """Collects epoch rows and writes them under ``out_dir`` (``history``: rows to start from, e.g. resumed)."""

    def __init__(self, out_dir: str | Path, history: list[dict[str, Any]] | None = None):
        self.out_dir = Path(out_dir)
        self.history: list[dict[str, Any]] = [dict(r) for r in (history or [])]

    def append(self, row: dict[str, Any]) -> None:
        self.history.append(dict(row))

    def columns(self) -> list[str]:
        """The scalar columns, in order of first appearance (lists such as ``train_loss_steps`` excluded)."""
        cols: list[str] = []
        for r in self.history:
            for k, v in r.items():
                if k not in cols and not isinstance(v, (list, tuple)):
                    cols.append(k)
        return cols

    def write(self, plot: bool = True) -> None:
        """Write ``log.csv``, ``log.json`` and (if ``plot``) ``curves.png``."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns(), restval="")
        w.writeheader()
        for r in self.history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()
                        if not isinstance(v, (list, tuple))})
        atomic_write_text(self.out_dir / "log.csv", buf.getvalue())
        atomic_write_json(self.out_dir / "log.json", self.history)
        if plot:
            try:
                self.plot(self.out_dir / "curves.png")
            except Exception as e:  # a plot must never stop training
                log.warning("could not draw %s: %s", self.out_dir / "curves.png", e)

    def plot(self, path: str | Path) -> None:
        """Two panels: every loss term per epoch (and the training loss per step, a thin line at
        fractional epochs), and top-1/top-5 accuracy per epoch."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = self.columns()
        loss_cols = [c for c in cols if "loss" in c]
        acc_cols = [c for c in cols if c.endswith("top1") or c.endswith("top5")]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        steps = [(r["epoch"] - 0.5 + (i + 0.5) / len(r["train_loss_steps"]), v) for r in self.history
                 for i, v in enumerate(r.get("train_loss_steps") or []) if math.isfinite(v)]
        if steps:
            xs, ys = zip(*steps)
            axes[0].plot(xs, ys, lw=0.7, alpha=0.5, color="0.4", label="train loss / step")
        for ax, keys, title in ((axes[0], loss_cols, "loss"), (axes[1], acc_cols, "accuracy (%)")):
            for k in keys:
                pts = [(r["epoch"], r[k]) for r in self.history
                       if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, marker="o", ms=3, label=k)
            ax.set_xlabel("epoch")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
