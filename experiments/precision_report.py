"""fp32 vs bf16 on the same seeds (issue 14): training-loss curves, accuracy, and the agreement of the
two precisions scoring one trained model.

Reads the ``prec-{baseline,student}-{bf16,fp32}-s<seed>`` runs of ``experiments/study.py`` (``--arms
precision``) and writes ``OUT/precision.png`` (per-step training loss, baseline and student side by
side, one line per seed and precision), ``OUT/precision.md`` and ``OUT/precision.json``. With
``--agreement RUN ...`` it also scores each named checkpoint on the test clips once in fp32 and once
under bf16 autocast and reports how often the predicted class agrees and the largest difference of a class probability.

    python -m experiments precision_report --study runs/study --agreement runs/study/baseline-s0 runs/study/student-s0
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _steps(run: Path) -> list[float]:
    """The run's per-optimizer-step training losses, in order (log.json ``train_loss_steps``)."""
    hist = json.loads((run / "log.json").read_text())
    return [v for row in hist for v in row.get("train_loss_steps") or []]


def _ms(xs: list[float], fmt: str = "{:.2f}") -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.mean(xs))} ± {fmt.format(statistics.stdev(xs))}"


def collect(study: Path) -> dict:
    out: dict = {}
    for model in ("baseline", "student"):
        for amp in ("bf16", "fp32"):
            runs = sorted(study.glob(f"prec-{model}-{amp}-s*"), key=lambda p: int(p.name.rsplit("-s", 1)[1]))
            for run in runs:
                if not (run / "metrics.json").exists():
                    continue
                m = json.loads((run / "metrics.json").read_text())
                hist = m.get("history") or []
                seed = int(run.name.rsplit("-s", 1)[1])
                out.setdefault(model, {}).setdefault(amp, {})[seed] = {
                    "steps": _steps(run), "top1": m.get("top1"), "amp": m.get("amp"),
                    "train_loss": [r.get("train_loss") for r in hist], "run": str(run)}
    return out


def summarise(data: dict) -> dict:
    """Per model: per precision the final loss / top-1 over seeds; per seed the bf16 - fp32 step-loss gap."""
    rep: dict = {}
    for model, by_amp in data.items():
        r: dict = {}
        for amp, seeds in by_amp.items():
            r[amp] = {"seeds": sorted(seeds), "top1": [seeds[s]["top1"] for s in sorted(seeds)],
                      "final_loss": [seeds[s]["train_loss"][-1] for s in sorted(seeds)]}
        common = sorted(set(by_amp.get("bf16", {})) & set(by_amp.get("fp32", {})))
        gaps = {}
        for s in common:
            a, b = by_amp["bf16"][s]["steps"], by_amp["fp32"][s]["steps"]
            n = min(len(a), len(b))
            d = [abs(x - y) for x, y in zip(a[:n], b[:n])]
            gaps[s] = {"steps": n, "mean_abs": statistics.mean(d) if d else None, "max_abs": max(d) if d else None,
                       "first_abs": d[0] if d else None, "mean_rel": statistics.mean(
                           [abs(x - y) / abs(y) for x, y in zip(a[:n], b[:n]) if y]) if n else None}
        r["gap"] = gaps
        if common:  # seed-to-seed spread in the same precision, for scale
            fp = [by_amp["fp32"][s]["steps"] for s in common]
            n = min(len(x) for x in fp)
            spread = [statistics.pstdev([x[i] for x in fp]) for i in range(n)] if len(fp) > 1 else []
            r["fp32_seed_spread_mean"] = statistics.mean(spread) if spread else None
        rep[model] = r
    return rep


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for ax, model in zip(axes, ("baseline", "student")):
        for amp, style in (("fp32", "-"), ("bf16", "--")):
            for seed, run in sorted((data.get(model, {}).get(amp) or {}).items()):
                ys = run["steps"]
                ax.plot(range(1, len(ys) + 1), ys, style, color=colours[seed % len(colours)], lw=1.2,
                        label=f"seed {seed} {amp}")
        ax.set_title(f"{model}: training loss per step (fp32 solid, bf16 dashed)")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, ncol=2)
    axes[0].set_ylabel("loss (student: CE + alpha KL)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def agreement(run: Path) -> dict:
    """Score ``run``'s checkpoint on its config's test clips in fp32 and in bf16: agreement and probability gap."""
    import numpy as np
    import torch

    from dlkdd.config import config_from_dict
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.pipeline.evaluate import evaluate_checkpoint

    ck = run / "student.pt"
    cfg = config_from_dict(torch.load(ck, map_location="cpu", weights_only=False)["config"])
    test = manifest_from_config(cfg.data, "test")
    res = {amp: evaluate_checkpoint(ck, test, device="cpu", workers=0, progress=False, amp=amp)
           for amp in ("fp32", "bf16")}

    def probs(m):
        return np.asarray([p["probs"] for p in m["predictions"]], dtype=np.float64)

    a, b = probs(res["fp32"]), probs(res["bf16"])
    return {"run": str(run), "clips": int(a.shape[0]), "same_prediction": int((a.argmax(1) == b.argmax(1)).sum()),
            "max_abs_prob_diff": float(np.abs(a - b).max()), "top1_fp32": res["fp32"]["top1"],
            "top1_bf16": res["bf16"]["top1"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments precision_report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="runs/study")
    ap.add_argument("--out", default=None, help="default: the study directory")
    ap.add_argument("--agreement", nargs="*", default=[], help="run directories to score in both precisions")
    a = ap.parse_args(argv)
    study = Path(a.study)
    out = Path(a.out or study)
    data = collect(study)
    rep = summarise(data)
    rep["agreement"] = [agreement(Path(r)) for r in a.agreement]
    plot(data, out / "precision.png")
    lines = ["| model | precision | seeds | test top-1 (%) per seed | mean ± sd | final-epoch train loss |",
             "|---|---|---:|---|---:|---:|"]
    for model in ("baseline", "student"):
        for amp in ("fp32", "bf16"):
            r = rep.get(model, {}).get(amp)
            if not r:
                continue
            lines.append(f"| {model} | {amp} | {len(r['seeds'])} | {', '.join(f'{v:.1f}' for v in r['top1'])} | "
                         f"{_ms(r['top1'])} | {_ms(r['final_loss'], '{:.3f}')} |")
    lines += ["", "| model | seed | steps | mean abs(bf16 - fp32) step loss | max | first step | mean relative |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for model in ("baseline", "student"):
        for s, g in sorted((rep.get(model, {}).get("gap") or {}).items()):
            lines.append(f"| {model} | {s} | {g['steps']} | {g['mean_abs']:.4f} | {g['max_abs']:.4f} | "
                         f"{g['first_abs']:.5f} | {100 * g['mean_rel']:.2f}% |")
        sp = rep.get(model, {}).get("fp32_seed_spread_mean")
        if sp is not None:
            lines.append(f"| {model} | (fp32 seed-to-seed sd, mean over steps) | | {sp:.4f} | | | |")
    if rep["agreement"]:
        lines += ["", "| model scored twice | clips | same prediction | max abs probability diff | top-1 fp32 | top-1 bf16 |",
                  "|---|---:|---:|---:|---:|---:|"]
        for g in rep["agreement"]:
            lines.append(f"| {g['run']} | {g['clips']} | {g['same_prediction']}/{g['clips']} | "
                         f"{g['max_abs_prob_diff']:.4f} | {g['top1_fp32']:.2f} | {g['top1_bf16']:.2f} |")
    (out / "precision.md").write_text("\n".join(lines) + "\n")
    (out / "precision.json").write_text(json.dumps(rep, indent=1))
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
