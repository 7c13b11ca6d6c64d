"""The students of issues 22 and 24 on arid6's group-disjoint split: video students of the pose teacher
(RGB and frame differences, the pose + RGB ensemble) and the lightweight EfficientNet-Lite0 student from
the RGB teacher's cache, the pose teacher's cache and without distillation; and (``pose``) the pose preset's
teacher / dark-pose student / dark-pose baseline on both folds of the recording-disjoint cross-validation. Resumable, as
:mod:`experiments.study` (the same runner: one ``dlkdd`` process per run, ``O_EXCL`` claims, two workers)::

    OMP_NUM_THREADS=1 python -m experiments students --out runs/students --worker 0 &
    OMP_NUM_THREADS=1 python -m experiments students --out runs/students --worker 1 &
    python -m experiments students --out runs/students --report      # -> video.{txt,json,png}, light.{...}

Needs the arid6 pose stores first (``make pose-env && .venv-pose/bin/dlkdd pose --config
configs/arid6-pose.yaml``). The clip specs, chosen for 2 CPU cores (BENCHMARKS.md, "Students of the pose
teacher"):

- the pose teacher (``pose8-teacher``) is the preset's skeleton network on windows of **8** posed frames
  every 4th video frame (the preset has 16): the video students' own temporal sampling, so its cached
  windows are views they can replay;
- the video students are ``configs/arid6-mini.yaml`` (8x56x56, every 4th frame, 10 epochs) with
  ``VIDEO_NET``; their pose cache is that teacher's logits at the mini clip spec (``cache-pose8-56``);
- the RGB teacher (``rgb-teacher``, ZeroDCE + the same network, seed 0 only: every student seed shares its
  cache) teaches the ensemble (``--cache`` pose + ``--cache`` RGB, equal weights; its cache scores the pose
  cache's windows, ``cache-logits --views-from``) and the light students;
- the light students are ``configs/arid6-light.yaml`` at 8x112x112 every 4th frame (the preset has 16
  frames every 2nd: the same 1 s span, half the frames), 6 epochs; from the pose cache logits only (the
  skeleton network stores no features), from the RGB cache logits + the feature term.
"""
from __future__ import annotations

from pathlib import Path

from experiments.study import Run, parse_args, report, work

POSE, MINI, LIGHT = "configs/arid6-pose.yaml", "configs/arid6-mini.yaml", "configs/arid6-light.yaml"
W8 = ["clip.frames=8"]                                    # the pose preset's stride (4) is the mini preset's
S56 = ["clip.size=56", "clip.resize=64"]                  # the mini clip spec's crop
L8 = ["clip.frames=8", "clip.stride=4"]                   # the light preset at the mini preset's sampling
VIDEO_NET = ["model.backbone=r2plus1d_tiny"]              # R(2+1)D-10 at quarter width + BERT (2-core budget)
RGB_SEED = 0

#: (stem, arms in order, arms every later one is compared with) for ``--report``
REPORTS = [
    ("video", ["rgb-baseline", "rgb-pose", "rgb-ens", "diff-baseline", "diff-pose"], ["rgb-baseline", "diff-baseline"]),
    ("pose8", ["pose8-teacher"], []),  # scored on whole frames: not on the video students' test crops
    ("light", ["light-baseline", "light-rgb", "light-pose"], ["light-baseline"]),
    ("pose", ["pose-baseline", "pose-student", "pose-teacher"], ["pose-baseline"]),
    ("poseB", ["poseB-baseline", "poseB-student", "poseB-teacher"], ["poseB-baseline"]),
]
ARMS = ["video", "light", "pose"]
LISTS = "../shared/data/arid6"
#: fold B of the 2-fold recording-disjoint cross-validation: the lists swapped
FOLD_B = [f"data.train_list={LISTS}/arid6_test.txt", f"data.test_list={LISTS}/arid6_train.txt"]


def _run(kind: str, config: str, name: str, sets: list[str], seed: int, out: Path, extra: list[str] | None = None,
         needs: list[str] | None = None) -> Run:
    argv = [kind, "--config", config, "--out", str(out / name), "--no-progress", "--set", f"seed={seed}"]
    for s in sets:
        argv += ["--set", s]
    return Run(name, argv + list(extra or []), "teacher.pt" if kind == "teacher" else "student.pt", list(needs or []))


def _cache(config: str, name: str, sets: list[str], teacher: str, out: Path, views_from: str | None = None) -> Run:
    argv = ["cache-logits", "--config", config, "--teacher", str(out / teacher / "teacher.pt"),
            "--out", str(out / name / "store.zarr"), "--path-file", str(out / name / "path.txt"), "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    if views_from:  # score the windows another store holds (an ensemble needs the same views in every cache)
        argv += ["--views-from", str(out / views_from / "store.zarr")]
    return Run(name, argv, "path.txt", [teacher] + ([views_from] if views_from else []), resumable=False)


def plan(arms: list[str], seeds: list[int], out: Path) -> list[Run]:
    """The runs in priority order: the cheap pose teachers and their caches, the shared RGB teacher, then
    seed by seed the students."""
    video, light = "video" in arms, "light" in arms
    store = lambda name: str(out / name / "store.zarr")  # noqa: E731
    runs: list[Run] = []
    for fold, sets in (("pose", []), ("poseB", FOLD_B)) if "pose" in arms else ():  # the preset, both folds
        for s in seeds:
            runs.append(_run("teacher", POSE, f"{fold}-teacher-s{s}", sets, s, out))
            runs.append(_cache(POSE, f"cache-{fold}-s{s}", sets, f"{fold}-teacher-s{s}", out))
            runs.append(_run("student", POSE, f"{fold}-student-s{s}", sets, s, out,
                             ["--cache", store(f"cache-{fold}-s{s}")], [f"cache-{fold}-s{s}"]))
            runs.append(_run("student", POSE, f"{fold}-baseline-s{s}", sets, s, out, ["--no-kd"]))
    for s in seeds:
        runs.append(_run("teacher", POSE, f"pose8-teacher-s{s}", W8, s, out))
        if video:
            runs.append(_cache(POSE, f"cache-pose8-56-s{s}", W8 + S56, f"pose8-teacher-s{s}", out))
        if light:
            runs.append(_cache(POSE, f"cache-pose8-112-s{s}", W8, f"pose8-teacher-s{s}", out))
    rgb = f"rgb-teacher-s{RGB_SEED}"
    runs.append(_run("teacher", MINI, rgb, VIDEO_NET, RGB_SEED, out))
    if video:
        runs.append(_cache(MINI, "cache-rgb-56", VIDEO_NET, rgb, out))
        # the RGB teacher on the pose teacher's windows (posed-frame starts, whole frame; the same for every
        # pose seed: they come from cache.seed), so the two caches can teach one student
        runs.append(_cache(MINI, "cache-rgb-56-posewin", VIDEO_NET, rgb, out, f"cache-pose8-56-s{seeds[0]}"))
    if light:
        runs.append(_cache(MINI, "cache-rgb-112", VIDEO_NET + ["clip.size=112", "clip.resize=128",
                                                                 "cache.features=true"], rgb, out))
    for s in seeds:
        if light:
            runs.append(_run("student", LIGHT, f"light-baseline-s{s}", L8, s, out, ["--no-kd"]))
            runs.append(_run("student", LIGHT, f"light-pose-s{s}", L8 + ["kd.feature_weight=0"], s, out,
                             ["--cache", store(f"cache-pose8-112-s{s}")], [f"cache-pose8-112-s{s}"]))
            runs.append(_run("student", LIGHT, f"light-rgb-s{s}", L8, s, out, ["--cache", store("cache-rgb-112")],
                             ["cache-rgb-112"]))
        if video:
            pose = ["--cache", store(f"cache-pose8-56-s{s}")]
            runs.append(_run("student", MINI, f"rgb-baseline-s{s}", VIDEO_NET, s, out, ["--no-kd"]))
            runs.append(_run("student", MINI, f"rgb-pose-s{s}", VIDEO_NET, s, out, pose, [f"cache-pose8-56-s{s}"]))
            runs.append(_run("student", MINI, f"diff-baseline-s{s}", VIDEO_NET + ["model.input=diff"], s, out,
                             ["--no-kd"]))
            runs.append(_run("student", MINI, f"diff-pose-s{s}", VIDEO_NET + ["model.input=diff"], s, out, pose,
                             [f"cache-pose8-56-s{s}"]))
            runs.append(_run("student", MINI, f"rgb-ens-s{s}", VIDEO_NET, s, out,
                             pose + ["--cache", store("cache-rgb-56-posewin")],
                             [f"cache-pose8-56-s{s}", "cache-rgb-56-posewin"]))
    return runs


def main(argv: list[str] | None = None) -> None:
    a = parse_args("students", __doc__, ARMS, argv, "run nothing: `dlkdd compare` of the finished runs")
    out = Path(a.out)
    runs = plan(a.arms, a.seeds, out)
    finished = [r for r in runs if (out / r.name / r.done_file).exists()]
    if a.report:
        report(out, finished, REPORTS)
    elif a.list:
        for r in runs:
            state = "done" if r in finished else ("partial" if (out / r.name).exists() else "todo")
            print(f"{state:8s} {r.name}")  # noqa: T201
    else:
        work(runs, out)


if __name__ == "__main__":
    main()
