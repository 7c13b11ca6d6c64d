"""Merge the accuracy study's results.json files (one per run directory) into one Markdown table.

    python -m experiments accuracy_table runs/accuracy runs/accuracy_s1 [--actlumos runs/actlumos-arid6-mini] \
        [--plot docs/accuracy-arid6.png] [--curves docs/curves-arid6.png]

``--curves``: the training cross-entropy per epoch of every run (seeds overlaid), against
log C (the loss of a uniform guess), to see how far the models got at this budget.

``--plot``: one row per model, each seed's top-1 as a dot and the mean as a bar, so the spread
between seeds is visible next to the differences between models.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.accuracy import table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments accuracy_table")
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--plot", default=None, help="also write a PNG of per-seed top-1 per model")
    ap.add_argument("--curves", default=None, help="also write a PNG of the training CE per epoch of every run")
    ap.add_argument("--actlumos", default=None, help="an ActLumos run directory (teacher/, student/) to add, seed 0")
    a = ap.parse_args(argv)
    results: dict = {}
    for d in a.dirs:
        p = Path(d) / "results.json"
        if p.exists():
            results.update(json.loads(p.read_text()))
    if a.actlumos:
        for name, sub in (("actlumos-teacher", "teacher"), ("actlumos-student", "student")):
            m = Path(a.actlumos) / sub / "metrics.json"
            if m.exists():
                mm = json.loads(m.read_text())
                hist = json.loads((Path(a.actlumos) / sub / "log.json").read_text())
                results[f"{name}/0"] = {"name": name, "seed": 0, "top1": mm["top1"], "top5": mm["top5"],
                                        "n": mm["val"]["n"], "train_s": sum(r.get("train_seconds", 0) for r in hist)}
    print(table(results))  # noqa: T201
    if a.plot:
        plot(results, Path(a.plot))
    if a.curves:
        curves([Path(d) for d in a.dirs], Path(a.curves))


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from accuracy import LABELS, by_model

    groups = {n: [r["top1"] for r in rs] for n, rs in by_model(results).items()}
    names = list(groups)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.2))
    for i, n in enumerate(names):
        xs = groups[n]
        ax.barh(i, sum(xs) / len(xs), color="#9ecae1", height=0.6)
        ax.plot(xs, [i] * len(xs), "o", color="#08519c", ms=5)
        ax.text(sum(xs) / len(xs) + 0.5, i + 0.32, f"{sum(xs) / len(xs):.1f} (n={len(xs)})", fontsize=8)
    ax.set_yticks(range(len(names)), [LABELS.get(n, n) for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("top-1 on arid6_test (%) - bar: mean, dots: seeds")
    ax.set_xlim(0, 100)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def curves(dirs: list[Path], out: Path) -> None:
    """Training CE (the task term for students) per epoch, one panel per model, seeds overlaid."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from accuracy import LABELS, ordered

    runs: dict[str, list[tuple[int, list[float]]]] = {}
    n_classes = 0
    for d in dirs:
        for sd in sorted(d.glob("seed*")):
            for rd in sorted(p for p in sd.iterdir() if (p / "log.json").exists()):
                hist = json.loads((rd / "log.json").read_text())
                ce = [r.get("train_task_loss", r["train_loss"]) for r in hist]
                runs.setdefault(rd.name, []).append((int(sd.name[4:]), ce))
                if (rd / "eval.json").exists():
                    n_classes = len(json.loads((rd / "eval.json").read_text())["classes"])
    names = ordered(runs)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], names):
        for seed, ce in sorted(runs[n]):
            ax.plot(range(len(ce)), ce, marker=".", label=f"seed {seed}")
        if n_classes:
            ax.axhline(math.log(n_classes), color="k", ls="--", lw=0.8, label=f"log {n_classes} (uniform)")
        ax.set_title(LABELS.get(n, n), fontsize=8)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training cross-entropy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
