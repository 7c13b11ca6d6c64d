"""``make demo``: DL-KDD end to end on a small real dark dataset, in minutes on 2 CPU cores.

On arid6 (``../shared/data/arid6``: 150 real ARID clips, 6 classes, 46 test clips of held-out recordings)
it runs the dual-light **pose** pipeline of ``configs/arid6-pose.yaml`` (issue 22)::

    pose stage (the pose environment, one process per enhancer: BlazePose on gamma-enhanced and on dark frames)
      -> pose teacher (gamma poses) -> cache-logits -> pose student (dark poses, CE + KD) and the no-KD baseline

at the preset's settings (``POSE_OVERRIDES``: none; posing in two processes, training on one thread), and shows
the **RGB** rows beside them: those of ``make demo-rgb`` (``runs/demo-rgb/summary.json``) where it was run,
else the paper's, with why RGB models are at chance on arid6 (:data:`RGB_AT_CHANCE`). ``--rgb`` runs the
RGB pipeline instead (ZeroDCE + R(2+1)D-BERT teacher -> cache-logits -> student and baseline,
``configs/arid6-mini.yaml`` at ``RGB_OVERRIDES``), and so does a clone without arid6, on a ``dlkdd synth``
set (its clips have no people to pose).

Each model is scored by its run's own last-epoch evaluation on the test clips (one centred window or view,
as ``dlkdd evaluate`` scores by default); the table and the list of artifacts go to ``OUT/summary.md`` and
``OUT/summary.json``.

    python -m dlkdd.demo --out runs/demo [--rgb] [--epochs N] [--seed S] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("dlkdd.demo")

REPO = Path(__file__).resolve().parents[1]
ARID6 = REPO.parent / "shared" / "data" / "arid6"
# the RGB demo: lighter than the accuracy preset (it shows the pipeline; BENCHMARKS.md holds the accuracy runs)
RGB_OVERRIDES = ["train.epochs=2", "cache.views=2", "train.eval_every=2"]
# the pose demo is the preset: every 2nd frame posed (arid6's clips have at most 100 frames, so max_frames 64
# poses them whole), 40 epochs. Posing every 4th frame would halve the pose stage, but it costs the teacher its
# lead (3 seeds: teacher 34.8 / 47.8 / 37.0%, baseline 32.6 / 39.1 / 34.8%; BENCHMARKS.md, "`make demo`"); the
# time comes from posing the two enhancers in two processes at once (_pose_stage) and training on one thread.
POSE_OVERRIDES: list[str] = []
# the synthetic set written when arid6 is absent (dlkdd.data.synth.make_synthetic)
SYNTH = {"classes": 4, "clips_per_class": 10, "frames": 48}
RGB_FROM = Path("runs/demo-rgb")

RGB_NAMES = ("Backbone only (no KD)", "Teacher (ZeroDCE + R(2+1)D-BERT)", "Student (DL-KDD, dark input)")
POSE_NAMES = {"teacher": "pose teacher (gamma-enhanced frames)", "baseline": "pose baseline (dark frames, CE)",
              "student": "pose student (dark frames, CE + KD from the cached teacher)"}
PAPER = ("Paper (ARID, R(2+1)D-34 IG65M + BERT, 64x112x112, 30 epochs): backbone only 92.97, "
         "teacher 95.73, student 97.64.")
PAPER_TOP1 = {RGB_NAMES[0]: 92.97, RGB_NAMES[1]: 95.73, RGB_NAMES[2]: 97.64}
RGB_AT_CHANCE = (
    "Why RGB models are at chance on arid6: each training recording's scene holds one class and the held-out "
    "test recordings come from scenes of other classes, so an appearance model learns the scene, not the action "
    "(3 seeds of the 10-epoch preset: backbone 8.0%, teacher 9.4%, student 8.0%; chance 16.7%; BENCHMARKS.md, "
    "\"Accuracy on arid6\"). Human pose does not carry the scene. The RGB pipeline alone takes the demo's "
    "5 minutes on this machine: `make demo-rgb` runs it (runs/demo-rgb), and `make demo` then shows its rows.")


def has_arid6() -> bool:
    return (ARID6 / "arid6_train.txt").is_file()


def run_demo(out: str | Path = "runs/demo", seed: int = 0, epochs: int | None = None, device: str = "auto",
             progress: bool = True, overrides: list[str] | None = None, rgb: bool = False,
             rgb_from: str | Path = RGB_FROM) -> dict:
    """Run the demo (the pose pipeline on arid6; the RGB one with ``rgb`` or without arid6). ``overrides``
    (``key=value``) are applied last (tests use tiny settings); ``rgb_from``: the ``make demo-rgb`` output
    whose rows the pose demo shows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if rgb or not has_arid6():
        return _run_rgb(out, seed, epochs, device, progress, overrides)
    return _run_pose(out, seed, epochs, device, progress, overrides, Path(rgb_from))


# ---------------------------------------------------------------- the pose demo
def _run_pose(out: Path, seed: int, epochs: int | None, device: str, progress: bool, user: list[str] | None,
              rgb_from: Path) -> dict:
    from dlkdd.config import load_config
    from dlkdd.data.manifest import manifest_from_config
    from dlkdd.pose.extract import store_dir

    cfg_path = REPO / "configs" / "arid6-pose.yaml"
    overrides = _arid6_data() + POSE_OVERRIDES + [f"seed={seed}", f"cache.dir={out.resolve() / 'cache'}"]
    overrides += [f"train.epochs={epochs}"] if epochs is not None else []
    overrides += list(user or [])
    cfg = load_config(cfg_path, overrides)
    dataset = f"arid6 (150 real ARID dark clips, {ARID6})"
    log.info("pose demo on %s with %s (+ %s)", dataset, cfg_path, " ".join(overrides))
    kinds = [cfg.enhancer.kind, cfg.pose.student_enhancer]
    times = {"pose stage": _pose_stage(cfg_path, overrides, kinds, out, store_dir(cfg), progress)}
    import torch

    threads = torch.get_num_threads()
    # the skeleton network is tiny: one thread trains it faster than two (a 30-epoch teacher on the shared 2-core
    # machine: 9.4 s against 33.9 s, the same model; BENCHMARKS.md, "`make demo`")
    torch.set_num_threads(1)
    try:
        runs, store = _run_stages(cfg, out, device, progress, times)
    finally:
        torch.set_num_threads(threads)
    test = manifest_from_config(cfg.data, "test", check_files=False)
    rows = _score_rows(runs, out, list(test.classes), [(POSE_NAMES[k], k) for k in ("teacher", "baseline", "student")])
    rgb, rgb_note = _rgb_rows(rgb_from)
    inputs = {POSE_NAMES["teacher"]: f"poses of {cfg.enhancer.kind}-enhanced frames",
              POSE_NAMES["baseline"]: "poses of dark frames", POSE_NAMES["student"]: "poses of dark frames"}
    text = [f"# dlkdd demo: the dual-light pose pipeline on {dataset}", "",
            f"config: `{cfg_path.relative_to(REPO)}` + `{' '.join(overrides)}`",
            f"test split: {len(test)} clips of held-out recordings, {len(test.classes)} classes; " + _times(times), "",
            *_table(rows, inputs, len(test.classes), rgb), "", rgb_note, "", RGB_AT_CHANCE, "",
            _pose_meaning(rows, len(test.classes), cfg.train.epochs), "", "Artifacts:"]
    text += [f"- {k}: `{p}`" for k, p in _artifacts(out, store, pose_dir=store_dir(cfg))]
    return _write_summary(out, text, {"dataset": dataset, "pipeline": "pose", "config": str(cfg_path),
                                      "overrides": overrides, "times_s": times, "results": _results(rows),
                                      "num_classes": len(test.classes), "cache": str(store),
                                      "rgb": {"source": rgb_note, "results": _results(rgb)}})


def _arid6_data() -> list[str]:
    """The data section pointing at :data:`ARID6` (the presets' relative paths, made absolute)."""
    return [f"data.root={ARID6 / 'clips'}", f"data.train_list={ARID6 / 'arid6_train.txt'}",
            f"data.test_list={ARID6 / 'arid6_test.txt'}", f"data.mapping={ARID6 / 'mapping_table.txt'}"]


def _pose_stage(cfg_path: Path, overrides: list[str], kinds: list[str], out: Path, pose_dir: Path,
                progress: bool) -> float:
    """Pose the train and test lists once per enhancer of ``kinds`` with the pose environment's ``dlkdd pose``
    (mediapipe cannot share this environment), one process per enhancer at once: BlazePose keeps one core busy,
    so two processes use both. Each writes its log to ``OUT/pose-<kind>.log``; with ``progress``, the clips
    posed so far (the stores under ``pose_dir``) are logged every 20 s. Returns the seconds taken."""
    from dlkdd.pose.blazepose import POSE_ENV_HINT, PoseEnvError
    from dlkdd.pose.infer import pose_env, pose_python

    py = str(pose_python())
    if not Path(py).exists():
        raise PoseEnvError(f"the pose demo needs the pose environment ({py} is missing): `{POSE_ENV_HINT}`, "
                           f"or `make demo` (it creates it), or `make demo-rgb` for the RGB pipeline only")
    env = dict(pose_env(), OMP_NUM_THREADS="1")
    sets = [a for o in overrides for a in ("--set", o)]
    t0, procs = time.perf_counter(), {}
    for kind in dict.fromkeys(kinds):
        logf = open(out / f"pose-{kind}.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below
        cmd = [py, "-m", "dlkdd", "pose", "--config", str(cfg_path), *sets, "--enhancer", kind, "--no-progress"]
        log.info("==== pose stage (%s frames): %s", kind, " ".join(cmd[:6] + ["..."]))
        procs[kind] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT), logf)
    report = t0 + 20
    while any(p.poll() is None for p, _ in procs.values()):
        time.sleep(0.5)
        if progress and time.perf_counter() >= report:
            report += 20
            log.info("pose stage: %.0f s, %s", time.perf_counter() - t0, _posed(pose_dir))
    failed = []
    for kind, (p, logf) in procs.items():
        p.wait()
        logf.close()
        lines = (out / f"pose-{kind}.log").read_text(encoding="utf-8", errors="replace").splitlines()
        for ln in lines:
            if "posed " in ln and "frames/s" in ln or "pose store complete" in ln:
                log.info("pose stage (%s): %s", kind, ln.split(": ", 1)[-1])
        if p.returncode != 0:
            err = [ln for ln in lines if ln.strip() and not ln.startswith(("W0000", "I0000", "INFO:", "WARNING:"))]
            failed.append(f"{kind}: {err[-1] if err else p.returncode} (log: {out / f'pose-{kind}.log'})")
    if failed:
        from dlkdd.errors import CacheError

        raise CacheError("the demo's pose stage failed: " + "; ".join(failed))
    return time.perf_counter() - t0


def _posed(pose_dir: Path) -> str:
    """How far the pose stores under ``pose_dir`` are: clips posed of each store's list."""
    from dlkdd.pose.store import PoseStore

    done = []
    for path in sorted(pose_dir.glob("*.zarr")):
        try:
            with PoseStore.open(path) as s:
                done.append(f"{int(s.done.sum())}/{len(s)} {s.meta['spec']['enhancer']['kind']}")
        except Exception:  # noqa: BLE001 - a store being created: counted on the next look
            continue
    return "clips posed: " + (", ".join(done) or "none yet")


def _pose_meaning(rows: dict, num_classes: int, epochs: int) -> str:
    n = rows[next(iter(rows))]["n"]
    return (f"What these numbers mean: skeleton networks trained from scratch for {epochs} epochs on the poses of "
            f"104 training clips, scored on {n} test clips of recordings none of them saw; chance is "
            f"{100.0 / num_classes:.1f}%. One seed. The 3-seed study at the preset (BENCHMARKS.md, \"The "
            "dual-light pose teacher\") has teacher 50.7%, baseline 29.7%, student 28.3%: light enhancement pays "
            "at the pose model's input (teacher - baseline +21 pp, 95% CI [+8, +35]), while the student does not "
            "beat the baseline (cannot tell) - compare seeds with `dlkdd compare` (README, \"Is my student "
            "better?\").")


def _rgb_rows(rgb_from: Path) -> tuple[dict[str, dict], str]:
    """The RGB rows: ``make demo-rgb``'s (``rgb_from/summary.json``) if it ran, else the paper's top-1."""
    f = rgb_from / "summary.json"
    if f.is_file():
        d = json.loads(f.read_text(encoding="utf-8"))
        rows = {f"RGB {k[0].lower()}{k[1:]}": dict(v, source="demo-rgb", num_classes=d.get("num_classes"))
                for k, v in d["results"].items()}
        return rows, (f"RGB rows: `make demo-rgb` ({f}; {d['dataset']}; "
                      f"{sum(d['times_s'].values()) / 60:.1f} min).")
    rows = {f"RGB {k[0].lower()}{k[1:]} - paper, full ARID": {"top1": v, "top5": None, "n": None, "source": "paper"}
            for k, v in PAPER_TOP1.items()}
    return rows, ("RGB rows: the paper's, on the full ARID (11 classes; R(2+1)D-34 IG65M + BERT, 64x112x112, "
                  "30 epochs), not run here.")


# ---------------------------------------------------------------- the RGB demo
def _rgb_config(out: Path, seed: int) -> tuple[Path, list[str], str]:
    if has_arid6():
        return REPO / "configs" / "arid6-mini.yaml", _arid6_data(), \
            f"arid6 (150 real ARID dark clips, {ARID6})"
    from dlkdd.data.synth import make_synthetic

    log.info("../shared/data/arid6 not found: generating a synthetic dark action set with dlkdd synth")
    res = make_synthetic(out / "data", seed=seed, **SYNTH)
    cfg = Path(res["config"] if isinstance(res, dict) else res[-1])
    # the synthetic clips are smaller than ARID's: keep the mini clip spec but fewer frames
    return cfg, ["clip.size=56", "clip.resize=64", "clip.frames=16", "clip.stride=2"], \
        f"synthetic (dlkdd synth: {SYNTH['classes']} classes x {SYNTH['clips_per_class']} clips; " \
        "../shared/data/arid6 absent, so the RGB pipeline: the synthetic clips have no people to pose)"


def _run_rgb(out: Path, seed: int, epochs: int | None, device: str, progress: bool, user: list[str] | None) -> dict:
    from dlkdd.config import load_config
    from dlkdd.data.manifest import manifest_from_config

    cfg_path, extra, dataset = _rgb_config(out, seed)
    overrides = RGB_OVERRIDES + extra + [f"seed={seed}", f"cache.dir={out / 'cache'}"]
    overrides += [f"train.epochs={epochs}"] if epochs is not None else []
    overrides += list(user or [])
    cfg = load_config(cfg_path, overrides)
    log.info("RGB demo on %s with %s (+ %s)", dataset, cfg_path, " ".join(overrides))
    times: dict[str, float] = {}
    runs, store = _run_stages(cfg, out, device, progress, times)
    test = manifest_from_config(cfg.data, "test")
    rows = _score_rows(runs, out, list(test.classes), list(zip(RGB_NAMES, ("baseline", "teacher", "student"))))
    inputs = {RGB_NAMES[1]: "enhanced (ZeroDCE)"}
    text = [f"# dlkdd demo: the RGB pipeline on {dataset}", "", f"config: `{cfg_path}` + `{' '.join(overrides)}`",
            f"test split: {len(test)} clips, {len(test.classes)} classes; " + _times(times), "",
            *_table(rows, inputs, len(test.classes)), "", PAPER, "",
            _rgb_meaning(rows, len(test.classes), cfg.train.epochs, real=has_arid6()), "", "Artifacts:"]
    text += [f"- {k}: `{p}`" for k, p in _artifacts(out, store)]
    return _write_summary(out, text, {"dataset": dataset, "pipeline": "rgb", "config": str(cfg_path),
                                      "overrides": overrides, "times_s": times, "results": _results(rows),
                                      "num_classes": len(test.classes), "cache": str(store)})


def _rgb_meaning(rows: dict, num_classes: int, epochs: int, real: bool) -> str:
    n = rows[next(iter(rows))]["n"]
    why = (" On arid6 RGB models are at chance whatever the budget: each training recording's scene holds one "
           "class, the held-out recordings come from scenes of other classes, so an appearance model learns the "
           "scene (3 seeds of the preset: 8.0 / 9.4 / 8.0%, BENCHMARKS.md); `make demo` runs the pose pipeline, "
           "which does not see the scene.") if real else ""
    return (f"What these numbers mean: models trained from scratch for {epochs} epochs on a small training set, scored "
            f"on {n} test clips; chance is {100.0 / num_classes:.1f}%. One seed of a demo shows that the pipeline "
            "runs, not that distillation helps: compare several seeds with `dlkdd compare` (README, \"Is my "
            f"student better?\").{why}")


# ---------------------------------------------------------------- shared by both
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


def _score_rows(runs: dict, out: Path, classes: list[str], names: list[tuple[str, str]]) -> dict[str, dict]:
    """Each run's last epoch already scored the test clips on their centred view (window), exactly what
    `dlkdd evaluate` does by default (dlkdd.pipeline.evaluate): reuse it instead of a second pass.
    ``names``: (row name, run) in the table's order."""
    from dlkdd.pipeline.evaluate import plot_confusion
    from dlkdd.utils import atomic_write_json

    rows = {}
    for name, run in names:
        ck = "teacher.pt" if run == "teacher" else "student.pt"
        m = dict(runs[run]["val"], checkpoint=str(out / run / ck), classes=classes,
                 views={"clips": 1, "crops": 1},
                 source=f"{out / run / 'metrics.json'} (the run's last-epoch evaluation)")
        atomic_write_json(out / run / "eval.json", m)
        plot_confusion(m, out / run / "confusion.png")
        rows[name] = m
    return rows


def _above_chance(m: dict, num_classes: int) -> str:
    from dlkdd.compare import binomial_above_chance

    if not m.get("n"):
        return "-"
    k = m.get("num_classes") or num_classes  # demo-rgb's rows may come from the synthetic set
    p = binomial_above_chance(int(round(m["top1"] * m["n"] / 100.0)), m["n"], k)["p_value"]
    return f"{'yes' if p < 0.05 else 'no'} (p = {p:.2g})"


def _table(rows: dict[str, dict], inputs: dict[str, str], num_classes: int,
           extra: dict[str, dict] | None = None) -> list[str]:
    """The rows run here (their input at inference from ``inputs``, else dark frames), then ``extra``
    (the RGB rows beside a pose demo: demo-rgb's on this test split, or the paper's)."""
    table = ["| Method | Input at inference | Top-1 (%) | Top-5 (%) | Above chance at 95% (exact binomial) |",
             "|---|---|---:|---:|---|"]
    for name, m in {**rows, **(extra or {})}.items():
        inp = inputs.get(name) or ("enhanced (ZeroDCE)" if "teacher" in name.lower() else "dark frames")
        top5 = "-" if m.get("top5") is None else f"{m['top5']:.2f}"
        table.append(f"| {name} | {inp} | {m['top1']:.2f} | {top5} | {_above_chance(m, num_classes)} |")
    return table


def _results(rows: dict[str, dict]) -> dict[str, dict]:
    return {k: {"top1": v["top1"], "top5": v["top5"], "n": v["n"]} for k, v in rows.items()}


def _times(times: dict[str, float]) -> str:
    return ("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
            + f" (total {sum(times.values()) / 60:.1f} min)")


def _write_summary(out: Path, text: list[str], result: dict) -> dict:
    from dlkdd.utils import atomic_write_json, atomic_write_text

    summary = "\n".join(text) + "\n"
    atomic_write_text(out / "summary.md", summary)
    atomic_write_json(out / "summary.json", result)
    print(summary)  # noqa: T201 - the demo's report to the terminal
    return result


def _artifacts(out: Path, store: Any, pose_dir: Path | None = None) -> list[tuple[str, Path]]:
    arts = [
        ("teacher checkpoint", out / "teacher" / "teacher.pt"), ("teacher curves", out / "teacher" / "curves.png"),
        ("logit cache", Path(store)), ("student checkpoint", out / "student" / "student.pt"),
        ("student curves", out / "student" / "curves.png"), ("baseline checkpoint", out / "baseline" / "student.pt"),
        ("confusion matrices", out / "*" / "confusion.png"), ("per-epoch logs", out / "*" / "log.csv"),
    ]
    if pose_dir is not None:
        arts += [("pose stores (train/test x gamma/none)", Path(pose_dir) / "*.zarr"),
                 ("pose stage logs", out / "pose-*.log")]
    return arts + [("summary", out / "summary.md")]


def main(argv: list[str] | None = None) -> None:
    from dlkdd.utils import setup_logging

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="output directory (default runs/demo, with --rgb runs/demo-rgb)")
    ap.add_argument("--rgb", action="store_true",
                    help="the RGB pipeline (ZeroDCE + R(2+1)D-BERT) instead of the pose one")
    ap.add_argument("--rgb-from", default=str(RGB_FROM),
                    help="the `make demo-rgb` output whose rows the pose demo shows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, applied last (repeatable)")
    a = ap.parse_args(argv)
    setup_logging()
    from dlkdd.errors import DlkddError

    out = a.out or ("runs/demo-rgb" if a.rgb else "runs/demo")
    try:
        run_demo(out, a.seed, a.epochs, a.device, progress=not a.no_progress, overrides=a.sets, rgb=a.rgb,
                 rgb_from=a.rgb_from)
    except DlkddError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
