"""``make demo``: the whole DL-KDD pipeline on a small real (or synthetic) dark dataset.

teacher (ZeroDCE + R(2+1)D-BERT) -> cache-logits (teacher run once) -> student (dark clips +
cached soft targets) and the no-KD baseline -> the test-split scores of all three (each run's own
last-epoch evaluation on the centred view, as ``dlkdd evaluate`` scores by default) -> a table in
the shape of the paper's ablation and the list of artifacts.

Data: ``../shared/data/arid6`` with ``configs/arid6-mini.yaml`` when present, else a
``dlkdd synth`` dataset written under the output directory. The demo budget is lighter than
the accuracy preset (fewer epochs, see ``DEMO_OVERRIDES``) so that it runs in minutes on 2 CPU cores.

    python -m dlkdd.demo --out runs/demo [--epochs N] [--seed S]
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("dlkdd.demo")

REPO = Path(__file__).resolve().parents[1]
ARID6 = REPO.parent / "shared" / "data" / "arid6"
# lighter than the accuracy preset: the demo shows the pipeline, BENCHMARKS.md holds the accuracy runs
DEMO_OVERRIDES = ["train.epochs=2", "cache.views=2", "train.eval_every=2"]
# the synthetic set written when arid6 is absent (dlkdd.data.synth.make_synthetic)
SYNTH = {"classes": 4, "clips_per_class": 10, "frames": 48}


def _config(out: Path, seed: int) -> tuple[Path, list[str], str]:
    if (ARID6 / "arid6_train.txt").is_file():
        return REPO / "configs" / "arid6-mini.yaml", [], "arid6 (150 real ARID dark clips, ../shared/data/arid6)"
    from dlkdd.data.synth import make_synthetic

    log.info("../shared/data/arid6 not found: generating a synthetic dark action set with dlkdd synth")
    res = make_synthetic(out / "data", seed=seed, **SYNTH)
    cfg = Path(res["config"] if isinstance(res, dict) else res[-1])
    # the synthetic clips are smaller than ARID's: keep the mini clip spec but fewer frames
    return cfg, ["clip.size=56", "clip.resize=64", "clip.frames=16", "clip.stride=2"], \
        f"synthetic (dlkdd synth: {SYNTH['classes']} classes x {SYNTH['clips_per_class']} clips; " \
        "../shared/data/arid6 absent)"


def run_demo(out: str | Path = "runs/demo", seed: int = 0, epochs: int | None = None, device: str = "auto",
             progress: bool = True, overrides: list[str] | None = None) -> dict:
    """Run the demo; ``overrides`` (``key=value``) are applied last (tests use tiny clips)."""
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.utils import atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg, cfg_path, overrides, dataset = _demo_config(out, seed, epochs, overrides)
    log.info("demo on %s with %s (+ %s)", dataset, cfg_path, " ".join(overrides))
    times: dict[str, float] = {}
    runs, store = _run_stages(cfg, out, device, progress, times)
    test = manifest_from_config(cfg.data, "test")
    rows = _score_rows(runs, out, list(test.classes))
    text = [f"# dlkdd demo: {dataset}", "", f"config: `{cfg_path}` + `{' '.join(overrides)}`",
            f"test split: {len(test)} clips, {len(test.classes)} classes; time: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f" (total {sum(times.values()) / 60:.1f} min)",
            "", *_table(rows), "", PAPER, "", _what_it_means(rows, len(test.classes), cfg.train.epochs), "",
            "Artifacts:"]
    text += [f"- {k}: `{p}`" for k, p in _artifacts(out, store)]
    summary = "\n".join(text) + "\n"
    atomic_write_text(out / "summary.md", summary)
    result = {"dataset": dataset, "config": str(cfg_path), "overrides": overrides, "times_s": times,
              "results": {k: {"top1": v["top1"], "top5": v["top5"], "n": v["n"]} for k, v in rows.items()},
              "cache": str(store)}
    atomic_write_json(out / "summary.json", result)
    print(summary)  # noqa: T201 - the demo's report to the terminal
    return result


PAPER = ("Paper (ARID, R(2+1)D-34 IG65M + BERT, 64x112x112, 30 epochs): backbone only 92.97, "
         "teacher 95.73, student 97.64.")


def _demo_config(out: Path, seed: int, epochs: int | None, user: list[str] | None) -> tuple[Any, Path, list[str], str]:
    """The demo's config (arid6-mini or a synthetic set), its path, the overrides applied and the data's name."""
    from dlkdd.config import load_config

    cfg_path, extra, dataset = _config(out, seed)
    overrides = DEMO_OVERRIDES + extra + [f"seed={seed}", f"cache.dir={out / 'cache'}"]
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    overrides += list(user or [])
    return load_config(cfg_path, overrides), cfg_path, overrides, dataset


def _run_stages(cfg: Any, out: Path, device: str, progress: bool, times: dict[str, float]) -> tuple[dict, Any]:
    """teacher -> cache-logits -> student and baseline; each stage's seconds go into ``times``.
    Returns the runs' results and the store path."""
    from dlkdd.pipeline.cache_logits import precompute_logits
    from dlkdd.pipeline.student import train_student
    from dlkdd.pipeline.teacher import train_teacher

    def step(name: str, fn):
        t0 = time.perf_counter()
        log.info("==== %s", name)
        r = fn()
        times[name] = time.perf_counter() - t0
        return r

    runs = {"teacher": step("teacher", lambda: train_teacher(cfg, out / "teacher", device=device, progress=progress))}
    store = step("cache-logits", lambda: precompute_logits(cfg, out / "teacher" / "teacher.pt", device=device,
                                                           progress=progress))
    runs["student"] = step("student", lambda: train_student(cfg, out / "student", cache=store, device=device,
                                                            progress=progress))
    runs["baseline"] = step("baseline", lambda: train_student(cfg, out / "baseline", no_kd=True, device=device,
                                                              progress=progress))
    return runs, store


def _score_rows(runs: dict, out: Path, classes: list[str]) -> dict[str, dict]:
    """Each run's last epoch already scored the test clips on their centred view, exactly what
    `dlkdd evaluate` does by default (dlkdd.pipeline.evaluate): reuse it instead of a second pass."""
    from dlkdd.pipeline.evaluate import plot_confusion
    from dlkdd.utils import atomic_write_json

    rows = {}
    for name, run, ck in (("Backbone only (no KD)", "baseline", "student.pt"),
                          ("Teacher (ZeroDCE + R(2+1)D-BERT)", "teacher", "teacher.pt"),
                          ("Student (DL-KDD, dark input)", "student", "student.pt")):
        m = dict(runs[run]["val"], checkpoint=str(out / run / ck), classes=classes,
                 views={"clips": 1, "crops": 1},
                 source=f"{out / run / 'metrics.json'} (the run's last-epoch evaluation)")
        atomic_write_json(out / run / "eval.json", m)
        plot_confusion(m, out / run / "confusion.png")
        rows[name] = m
    return rows


def _table(rows: dict[str, dict]) -> list[str]:
    table = ["| Method | Input at inference | Top-1 (%) | Top-5 (%) |", "|---|---|---:|---:|"]
    for name, m in rows.items():
        inp = "enhanced (ZeroDCE)" if name.startswith("Teacher") else "dark"
        table.append(f"| {name} | {inp} | {m['top1']:.2f} | {m['top5']:.2f} |")
    return table


def _artifacts(out: Path, store: Any) -> list[tuple[str, Path]]:
    return [
        ("teacher checkpoint", out / "teacher" / "teacher.pt"), ("teacher curves", out / "teacher" / "curves.png"),
        ("logit cache", Path(store)), ("student checkpoint", out / "student" / "student.pt"),
        ("student curves", out / "student" / "curves.png"), ("baseline checkpoint", out / "baseline" / "student.pt"),
        ("confusion matrices", out / "*" / "confusion.png"), ("per-epoch logs", out / "*" / "log.csv"),
        ("summary", out / "summary.md"),
    ]


def _what_it_means(rows: dict, num_classes: int, epochs: int) -> str:
    """One paragraph on what the table can and cannot show: chance level and, per model, whether its
    top-1 is above chance by an exact binomial test (:func:`dlkdd.compare.binomial_above_chance`)."""
    from dlkdd.compare import binomial_above_chance

    verdicts = []
    for name, m in rows.items():
        correct = int(round(m["top1"] * m["n"] / 100.0))
        p = binomial_above_chance(correct, m["n"], num_classes)["p_value"]
        verdicts.append(f"{name.split(' (')[0].lower()} {'yes' if p < 0.05 else 'no'} (p = {p:.2g})")
    return (f"What these numbers mean: models trained from scratch for {epochs} epochs on a small training set, scored "
            f"on {rows[next(iter(rows))]['n']} test clips; chance is {100.0 / num_classes:.1f}%. Above chance at 95% "
            f"(exact binomial): {'; '.join(verdicts)}. One seed of a demo shows that the pipeline runs, not "
            "that distillation helps: compare several seeds with `dlkdd compare` (README, \"Is my student better?\").")


def main(argv: list[str] | None = None) -> None:
    from dlkdd.utils import setup_logging

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, applied last (repeatable)")
    a = ap.parse_args(argv)
    setup_logging()
    run_demo(a.out, a.seed, a.epochs, a.device, progress=not a.no_progress, overrides=a.sets)


if __name__ == "__main__":
    main()
