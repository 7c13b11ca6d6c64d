"""The arid6 accuracy study behind BENCHMARKS.md: backbone only / teacher / student, several seeds.

For each seed: teacher (ZeroDCE + R(2+1)D-BERT) -> cache-logits -> student (KD) and baseline
(no KD), the dark-input models with ``model.normalize`` = dataset and (``--kinetics``) kinetics.
Resumable: a run whose ``eval.json`` exists is skipped. Results: ``OUT/results.json`` and
``OUT/results.md`` (mean +- std over seeds, training time).

    python -m experiments accuracy --out runs/accuracy --seeds 0 1 2 [--kinetics-seeds 0] [--set k=v ...]

KD experiments on the same footing (BENCHMARKS.md, "Why the student does not win"):

    # students at tau 2 distilled from the seed-0 teacher already trained in runs/accuracy
    python -m experiments accuracy --out runs/kd-tau2 --seeds 0 --teacher-from runs/accuracy --set kd.tau=2 \
        --only student
    # a teacher trained 3x longer, then the usual 10-epoch student
    python -m experiments accuracy --out runs/kd-teacher30 --seeds 0 --teacher-set train.epochs=30 --only student
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

log = logging.getLogger("accuracy")


def main(argv: list[str] | None = None) -> None:
    from dlkdd.pipeline.cache_logits import precompute_logits
    from dlkdd.config import load_config
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.pipeline.evaluate import evaluate_checkpoint
    from dlkdd.pipeline.student import train_student
    from dlkdd.pipeline.teacher import train_teacher
    from dlkdd.utils import atomic_write_json, atomic_write_text, setup_logging

    ap = argparse.ArgumentParser(prog="python -m experiments accuracy")
    ap.add_argument("--config", default="configs/arid6-mini.yaml")
    ap.add_argument("--out", default="runs/accuracy")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--kinetics-seeds", type=int, nargs="*", default=[],
                    help="seeds for which the dark-input models also train with Kinetics statistics")
    ap.add_argument("--only", nargs="*", default=None, help="subset of runs: teacher student baseline ...")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="override for every run (k=v)")
    ap.add_argument("--teacher-set", dest="teacher_sets", action="append", default=[],
                    help="override for the teacher only (k=v), e.g. train.epochs=30")
    ap.add_argument("--teacher-from", default=None,
                    help="reuse the teachers of another study dir (DIR/seedN/teacher) instead of training them")
    a = ap.parse_args(argv)
    setup_logging()
    out = Path(a.out)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}

    def record(name: str, seed: int, run_dir: Path, seconds: float | None, cfg) -> None:
        test = manifest_from_config(cfg.data, "test")
        ck = run_dir / ("teacher.pt" if name.startswith("teacher") else "student.pt")
        m = evaluate_checkpoint(ck, test, device="cpu", workers=cfg.train.workers, progress=False)
        atomic_write_json(run_dir / "eval.json", m)
        # training time = sum of the epochs' training seconds (survives --resume; excludes evaluation)
        hist = json.loads((run_dir / "log.json").read_text())
        seconds = sum(r.get("train_seconds", 0.0) for r in hist)
        results[f"{name}/{seed}"] = {"name": name, "seed": seed, "top1": m["top1"], "top5": m["top5"], "n": m["n"],
                                     "train_s": seconds}
        atomic_write_json(res_path, results)
        log.info("%s seed %d: top1 %.2f top5 %.2f", name, seed, m["top1"], m["top5"])

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    want = set(a.only) if a.only else None
    for seed in a.seeds:
        base = [*a.sets, f"seed={seed}"]
        cfg = load_config(a.config, base)
        sd = out / f"seed{seed}"
        tdir = (Path(a.teacher_from) if a.teacher_from else out) / f"seed{seed}" / "teacher"
        if a.teacher_from and not (tdir / "teacher.pt").exists():
            raise SystemExit(f"--teacher-from: no trained teacher at {tdir / 'teacher.pt'}")
        if not (tdir / "eval.json").exists():
            tcfg = load_config(a.config, [*base, *a.teacher_sets])
            s = timed(lambda: train_teacher(tcfg, tdir, device="cpu", progress=False, resume=_resume(tdir)))
            record("teacher", seed, tdir, s, tcfg)
        store = {}
        t0 = time.perf_counter()
        store["path"] = precompute_logits(cfg, tdir / "teacher.pt", device="cpu", progress=False)
        results.setdefault(f"cache/{seed}", {"seconds": time.perf_counter() - t0, "path": str(store["path"])})
        norms = ["dataset", "kinetics"] if seed in a.kinetics_seeds else ["dataset"]
        for norm in norms:
            ncfg = load_config(a.config, [*base, f"model.normalize={norm}"])
            for kind in ("student", "baseline"):
                name = f"{kind}-{norm}"
                if want and kind not in want and name not in want:
                    continue
                rd = sd / name
                if (rd / "eval.json").exists():
                    continue
                s = timed(lambda: train_student(ncfg, rd, cache=None if kind == "baseline" else store["path"],
                                                no_kd=kind == "baseline", device="cpu", progress=False,
                                                resume=_resume(rd)))
                record(name, seed, rd, s, ncfg)
        atomic_write_text(out / "results.md", table(results))
    atomic_write_text(out / "results.md", table(results))
    print(table(results))  # noqa: T201


def _resume(run_dir: Path) -> Path | None:
    """Continue an interrupted run of the study from its last.pt."""
    return run_dir if (run_dir / "last.pt").exists() else None


ORDER = ["baseline-dataset", "teacher", "student-dataset", "baseline-kinetics", "student-kinetics",
          "actlumos-teacher", "actlumos-student"]
LABELS = {"baseline-dataset": "Backbone only (dark, dataset stats)", "teacher": "Teacher (ZeroDCE + R(2+1)D-BERT)",
          "student-dataset": "Student DL-KDD (dark, dataset stats)",
          "baseline-kinetics": "Backbone only (dark, Kinetics stats)",
          "student-kinetics": "Student DL-KDD (dark, Kinetics stats)",
          "actlumos-teacher": "ActLumos teacher (dark + Retinex, dynamic fusion)",
          "actlumos-student": "ActLumos student (SSL init + KD, dark)"}


def by_model(results: dict) -> dict[str, list[dict]]:
    """The run records of ``results`` grouped by model name, in table order, each list by seed."""
    groups: dict[str, list[dict]] = {}
    for v in results.values():
        if "name" in v:
            groups.setdefault(v["name"], []).append(v)
    return {n: sorted(groups[n], key=lambda r: r["seed"]) for n in ordered(groups)}


def ordered(names) -> list[str]:
    """Model names in the tables' order: ORDER first, then any others alphabetically."""
    return [n for n in ORDER if n in names] + sorted(set(names) - set(ORDER))


def table(results: dict) -> str:
    def ms(xs: list[float]) -> str:
        if len(xs) == 1:
            return f"{xs[0]:.2f}"
        return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"

    lines = ["| Model | seeds | Top-1 (%) | Top-5 (%) | per-seed top-1 | train time / run |",
             "|---|---:|---:|---:|---|---:|"]
    for name, rs in by_model(results).items():
        ts = [r["train_s"] for r in rs if r.get("train_s")]
        per_seed = ", ".join("%.1f" % r["top1"] for r in rs)
        lines.append(f"| {LABELS.get(name, name)} | {len(rs)} | {ms([r['top1'] for r in rs])} | "
                     f"{ms([r['top5'] for r in rs])} | {per_seed} | "
                     f"{(statistics.mean(ts) / 60 if ts else 0):.1f} min |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
