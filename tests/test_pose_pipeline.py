"""The pose family end to end from pose stores: teacher -> cache-logits -> student / baseline -> evaluate,
with mediapipe blocked (``sys.modules["mediapipe"] = None``) and every video open counted (none allowed):
the list's files do not even exist. Synthetic skeletons: class 0 raises its arms, class 1 stands still;
one test clip has nobody in it, one is shorter than a window."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from pathlib import Path
import torch

from dlkdd.cache.store import LogitStore
from dlkdd.config import load_config
from dlkdd.data.manifest import manifest_from_config
from dlkdd.errors import CacheError, DlkddError
from dlkdd.pose.extract import enhancer_of_spec, store_dir
from dlkdd.pose.store import PoseStore, pose_spec, store_path
from dlkdd.train.checkpoint import load_checkpoint

SHA = "cd" * 32


def _skeleton(label: int, t: int, rng) -> np.ndarray:
    from tests.test_pose_features import _frame

    kp = np.repeat(_frame().numpy()[None], t, 0)
    kp[..., :2] += rng.normal(0, 0.005, kp[..., :2].shape)
    if label == 0:  # wrists and elbows swing up and down
        kp[:, [13, 14, 15, 16], 1] -= (0.2 * np.sin(np.arange(t) / 2))[:, None]
    return kp.astype(np.float32)


def _write_list(path, names):
    path.write_text("".join(f"{i}\t{y}\t{c}/{n}.avi\n" for i, (c, n, y) in enumerate(names)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("posepipe")
    (d / "map.txt").write_text("0\tUp\n1\tStill\n")
    train = [("Up" if y == 0 else "Still", f"{'Up' if y == 0 else 'Still'}_1_{i}", y) for i in range(8) for y in (i % 2,)]
    test = [("Up", "Up_9_1", 0), ("Still", "Still_9_1", 1), ("Up", "Up_9_2", 0), ("Still", "Still_9_2", 1)]
    _write_list(d / "train.txt", train)
    _write_list(d / "test.txt", test)
    cfg = load_config("configs/arid6-pose.yaml", [
        f"data.root={d / 'clips'}", f"data.train_list={d / 'train.txt'}", f"data.test_list={d / 'test.txt'}",
        f"data.mapping={d / 'map.txt'}", f"cache.dir={d / 'cache'}", "train.epochs=1", "train.eval_every=1",
        "train.batch_size=4", "cache.views=3", "pose.width=8", "clip.frames=8"])
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        man = manifest_from_config(cfg.data, split, check_files=False)
        for kind in ("gamma", "none"):
            spec = pose_spec(cfg.pose, enhancer_of_spec(cfg, kind), SHA)
            with PoseStore.create(store_path(store_dir(cfg), man.sha256(), spec), man.keys(), cfg.pose.max_frames,
                                  {"spec": spec, "manifest_sha256": man.sha256(), "classes": man.classes}) as s:
                for i, e in enumerate(man):
                    frames = 5 if e.key == "Up/Up_9_2" else 40  # 3 rows: shorter than a window of 8
                    r = -(-frames // cfg.pose.stride)
                    kp, mask = _skeleton(e.label, r, rng), np.ones(r, bool)
                    if e.key == "Still/Still_9_2" or (kind == "none" and i % 3 == 0):
                        mask[:] = False  # nobody found (in the dark, often)
                    s.write(i, kp, mask, frames)
                s.set_meta(complete=True)
    return d, cfg


@pytest.fixture
def no_video_no_mediapipe(monkeypatch):
    """Block ``import mediapipe`` and count every attempt to open a video (the test asserts none)."""
    from dlkdd.data import video

    opened = []

    def refuse(self, path, *a, **k):
        opened.append(str(path))
        raise AssertionError(f"a pose stage decoded {path}")

    monkeypatch.setitem(sys.modules, "mediapipe", None)
    monkeypatch.setattr(video.VideoReader, "__init__", refuse)
    with pytest.raises(ImportError):
        import mediapipe  # noqa: F401
    yield opened


def test_teacher_cache_student_baseline_evaluate_from_stores(setup, no_video_no_mediapipe):
    from dlkdd.pipeline.cache_logits import precompute_logits
    from dlkdd.pipeline.evaluate import evaluate_checkpoint
    from dlkdd.pipeline.student import train_student
    from dlkdd.pipeline.teacher import train_teacher

    d, cfg = setup
    res = train_teacher(cfg, d / "T", device="cpu", progress=False)
    ck = load_checkpoint(d / "T" / "teacher.pt")
    assert ck["kind"] == "teacher" and ck["arch"]["family"] == "pose" and ck["arch"]["enhancer"]["kind"] == "gamma"
    assert res["val"]["n"] == 4 and (d / "T" / "predictions.jsonl").exists()

    store = precompute_logits(cfg, d / "T" / "teacher.pt", out=d / "C.zarr", progress=False)
    with LogitStore.open(store) as s:
        logits, views = s.read_all()
        assert s.is_complete and logits.shape == (8, 3, 2) and s.meta["family"] == "pose"
        assert np.isfinite(logits).all() and (views[..., 0] % cfg.pose.stride == 0).all()  # windows on posed rows
        assert (views[..., 1] == 4).all() and (views[..., 5:7] == 1).all()  # stride clip.stride, whole frame

    stu = train_student(cfg, d / "S", cache=str(store), device="cpu", progress=False)
    base = train_student(cfg, d / "B", no_kd=True, device="cpu", progress=False)
    sk, bk = load_checkpoint(d / "S" / "student.pt"), load_checkpoint(d / "B" / "student.pt")
    assert sk["kind"] == "student" and bk["kind"] == "baseline" and sk["arch"]["enhancer"]["kind"] == "none"
    assert sk["extra"]["cache"] == str(store) and "kd_loss" in sk["history"][-1] or "train_kd_loss" in sk["history"][-1]
    assert stu["val"]["n"] == base["val"]["n"] == 4

    m = evaluate_checkpoint(d / "S" / "student.pt", manifest_from_config(cfg.data, "test", check_files=False),
                            device="cpu", clips=3, progress=False)
    assert m["n"] == 4 and len(m["predictions"]) == 4 and all(np.isfinite(p["probs"]).all() for p in m["predictions"])
    assert no_video_no_mediapipe == []


def test_distillation_replays_the_stored_window_with_its_logits(setup):
    """The student sample's keypoints are the stored view's rows of the dark store, its target that view's logits."""
    from dlkdd.cache.reader import StoreRows
    from dlkdd.data.views import StoredView, View
    from dlkdd.pose.dataset import PoseDataset
    from dlkdd.pose.stages import find_poses

    d, cfg = setup
    if not (d / "C.zarr").exists():
        pytest.skip("needs the store of the end-to-end test")
    man = manifest_from_config(cfg.data, "train", check_files=False)
    dark = find_poses(cfg, man, "none", "train")
    rows = StoreRows(man, d / "C.zarr")
    ds = PoseDataset(man, dark, cfg.clip, StoredView(rows, seed=0))
    for i in (0, 5):
        s = ds[i]
        logits, views = rows.read(i)
        v = [j for j in range(3) if np.array_equal(views[j], s["view"].numpy())]
        assert v and torch.allclose(s["teacher_logits"], torch.from_numpy(logits[v[0]].astype(np.float32)))
        assert torch.equal(s["video"], ds.window(i, View.from_array(views[v[0]])))


def test_evaluate_a_list_without_poses_and_without_the_pose_env_says_how(setup, monkeypatch, tmp_path):
    from dlkdd.data.manifest import Manifest
    from dlkdd.pipeline.evaluate import evaluate_checkpoint

    d, cfg = setup
    if not (d / "T" / "teacher.pt").exists():
        pytest.skip("needs the teacher of the end-to-end test")
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    monkeypatch.setenv("DLKDD_POSE_PYTHON", str(tmp_path / "no-such-python"))
    from dlkdd.data.manifest import Entry

    man = manifest_from_config(cfg.data, "test", check_files=False)
    part = Manifest(man.entries[:2], man.classes, man.root)  # a subset of a posed list: its store serves
    assert evaluate_checkpoint(d / "T" / "teacher.pt", part, device="cpu", progress=False)["n"] == 2
    other = Manifest(man.entries[:1] + [Entry("Up/Up_99_1", str(d / "Up_99_1.mp4"), 0)], man.classes, man.root)
    with pytest.raises(CacheError, match="make pose-env"):  # a clip nobody posed, and no pose environment
        evaluate_checkpoint(d / "T" / "teacher.pt", other, device="cpu", progress=False)


def test_a_pose_student_without_its_poses_names_the_command(setup, tmp_path):
    from dlkdd.pipeline.student import train_student

    d, cfg = setup
    bare = load_config("configs/arid6-pose.yaml", [f"cache.dir={tmp_path}", f"data.train_list={d / 'train.txt'}",
                                                   f"data.test_list={d / 'test.txt'}", f"data.mapping={d / 'map.txt'}",
                                                   f"data.root={d}"])
    with pytest.raises(DlkddError, match="dlkdd pose"):
        train_student(bare, tmp_path / "S", no_kd=True, device="cpu", progress=False)


def test_predict_names_a_missing_video_in_one_line(setup, tmp_path):
    """Predict on a pose checkpoint probes the video before posing it (tests/test_pose_predict.py: the rest)."""
    from dlkdd.pipeline.evaluate import load_model, predict_video

    d, _ = setup
    if not (d / "T" / "teacher.pt").exists():
        pytest.skip("needs the teacher of the end-to-end test")
    model, ckpt = load_model(d / "T" / "teacher.pt")
    with pytest.raises(DlkddError, match="any.mp4"):
        predict_video(model, ckpt, tmp_path / "any.mp4", "cpu")


def test_the_default_logit_store_is_reused_and_keyed_by_the_windows(setup):
    from dlkdd.pipeline.cache_logits import precompute_logits

    d, cfg = setup
    if not (d / "T" / "teacher.pt").exists():
        pytest.skip("needs the teacher of the end-to-end test")
    a = precompute_logits(cfg, d / "T" / "teacher.pt", progress=False)
    with LogitStore.open(a) as s:
        first = s.read_all()[0]
    assert precompute_logits(cfg, d / "T" / "teacher.pt", progress=False) == a  # reused
    b = precompute_logits(cfg.replace(**{"cache.seed": 1}), d / "T" / "teacher.pt", progress=False)
    assert b != a
    with LogitStore.open(a) as s:
        assert np.array_equal(s.read_all()[0], first)


def test_the_family_gives_each_stage_the_poses_of_its_enhancer_as_windows(setup):
    """POSE.dataset: the teacher's input is the enhanced poses, a student's / baseline's the dark ones; the
    common stages' view policies become windows of stored rows."""
    from dlkdd.data.views import CacheViews, CenterView, RandomView
    from dlkdd.models.families import family
    from dlkdd.pose.dataset import CacheWindows, CenterWindow, RandomWindow
    from dlkdd.pose.stages import find_poses

    d, cfg = setup
    fam = family("pose")
    man = manifest_from_config(cfg.data, "train", check_files=False)
    gamma, dark = find_poses(cfg, man, "gamma", "train").path, find_poses(cfg, man, "none", "train").path
    assert gamma != dark
    assert fam.dataset(cfg, man, RandomView(cfg.clip, seed=3), "teacher").poses.path == gamma
    for kind in ("student", "baseline"):
        assert fam.dataset(cfg, man, RandomView(cfg.clip, seed=3), kind).poses.path == dark
    ds = fam.dataset(cfg, man, RandomView(cfg.clip, seed=3), "teacher")
    assert isinstance(ds.policy, RandomWindow) and ds.policy.seed == 3
    assert isinstance(fam.dataset(cfg, man, CenterView(cfg.clip), "teacher").policy, CenterWindow)
    assert isinstance(fam.dataset(cfg, man, CacheViews(cfg.clip, 3, seed=1), "teacher").policy, CacheWindows)
    assert fam.prepare_data(cfg).train.keys() == man.keys()  # the lists as listed: no clip is opened


def test_a_pose_student_refuses_a_store_it_cannot_replay():
    from types import SimpleNamespace

    from dlkdd.pose.stages import check_stored_windows

    poses = SimpleNamespace(stride=2)

    def rows(meta):
        return SimpleNamespace(store=SimpleNamespace(meta=meta), path="C.zarr")

    check_stored_windows(rows({"family": "pose", "pose_spec": {"stride": 2}}), poses)  # fine
    with pytest.raises(CacheError, match="not a pose-teacher logit store"):
        check_stored_windows(rows({"family": "dlkdd"}), poses)
    with pytest.raises(CacheError, match="pose.stride 4"):
        check_stored_windows(rows({"family": "pose", "pose_spec": {"stride": 4}}), poses)


def test_pretrain_refuses_a_pose_config_in_one_line(tmp_path):
    """InfoNCE pre-training is for video students: a pose config is refused before any work (was an
    IndexError traceback from feeding video to the skeleton network)."""
    from dlkdd.config import load_config
    from dlkdd.errors import DataError
    from dlkdd.pipeline.pretrain import pretrain_student

    cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "arid6-pose.yaml"))
    with pytest.raises(DataError, match="pre-training"):
        pretrain_student(cfg, tmp_path / "pt")
    assert not (tmp_path / "pt").exists()



def _posed_synthetic_set(tmp_path: Path, seed: int) -> tuple:
    """A synthetic 2-class set, posed by a stand-in (no mediapipe): its four pose stores complete. Returns the pose
    preset's config for it and the data / clip overrides (``key=value``) a video config of the same set needs."""
    from dlkdd.data.synth import make_synthetic

    paths = make_synthetic(tmp_path / "syn", classes=2, clips_per_class=4, frames=24, size=(48, 64))
    data = [f"data.root={paths['root']}", f"data.train_list={paths['train_list']}",
            f"data.test_list={paths['test_list']}", f"data.mapping={paths['mapping']}", f"cache.dir={tmp_path / 'c'}"]
    clip = ["clip.frames=4", "clip.stride=2", "clip.size=32", "clip.resize=40", "train.epochs=1", "train.batch_size=2",
            "train.workers=0", "cache.views=2", "train.amp=fp32"]
    pose = load_config("configs/arid6-pose.yaml", [*data, *clip, "pose.width=8", "pose.stride=2"])
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        man = manifest_from_config(pose.data, split)
        for kind in ("gamma", "none"):
            spec = pose_spec(pose.pose, enhancer_of_spec(pose, kind), SHA)
            with PoseStore.create(store_path(store_dir(pose), man.sha256(), spec), man.keys(), pose.pose.max_frames,
                                  {"spec": spec, "manifest_sha256": man.sha256(), "classes": man.classes}) as s:
                for i, e in enumerate(man):
                    s.write(i, _skeleton(e.label, 12, rng), np.ones(12, bool), 24)
                s.set_meta(complete=True)
    return pose, data, clip

def test_a_video_student_distils_the_pose_teacher_cross_modal(tmp_path, monkeypatch):
    """DL-KDD across modalities: the pose teacher's cached logits (one per stored window, a ``View`` of the
    video) teach an R(2+1)D student that sees the dark RGB frames of exactly those windows - one epoch on a
    synthetic set posed by a stand-in (no mediapipe)."""
    from dlkdd.pipeline.cache_logits import precompute_logits
    from dlkdd.pipeline.student import train_student
    from dlkdd.pipeline.teacher import train_teacher

    monkeypatch.setitem(sys.modules, "mediapipe", None)
    pose, data, clip = _posed_synthetic_set(tmp_path, seed=0)
    train_teacher(pose, tmp_path / "T", device="cpu", progress=False)
    store = precompute_logits(pose, tmp_path / "T" / "teacher.pt", out=tmp_path / "C.zarr", progress=False)

    video = load_config("configs/arid6-mini.yaml", [*data, *clip, "model.backbone=r2plus1d_tiny",
                                                   "model.normalize=kinetics"])
    res = train_student(video, tmp_path / "S", cache=str(store), device="cpu", progress=False)
    ck = load_checkpoint(tmp_path / "S" / "student.pt")
    assert ck["arch"]["backbone"] == "r2plus1d_tiny" and ck["arch"].get("family", "dlkdd") == "dlkdd"
    assert ck["extra"]["cache"] == str(store) and np.isfinite(res["train"]["kd_loss"])


def test_an_rgb_teacher_scores_the_pose_windows_and_both_caches_teach_one_student(tmp_path, monkeypatch):
    """The pose + RGB ensemble: ``cache-logits --views-from`` makes an RGB teacher score exactly the pose
    teacher's stored windows (posed-frame starts, whole frames), so ``student --cache POSE --cache RGB`` takes
    both; without it the two caches' views differ and the student refuses them."""
    from dlkdd.pipeline.cache_logits import precompute_logits
    from dlkdd.pipeline.student import train_student
    from dlkdd.pipeline.teacher import train_teacher

    monkeypatch.setitem(sys.modules, "mediapipe", None)
    pose, data, clip = _posed_synthetic_set(tmp_path, seed=1)
    train_teacher(pose, tmp_path / "PT", device="cpu", progress=False)
    pose_store = precompute_logits(pose, tmp_path / "PT" / "teacher.pt", out=tmp_path / "P.zarr", progress=False)

    video = load_config("configs/arid6-mini.yaml", [*data, *clip, "model.backbone=r2plus1d_tiny", "enhancer.kind=gamma",
                                                   "model.normalize=kinetics"])
    train_teacher(video, tmp_path / "RT", device="cpu", progress=False)
    own = precompute_logits(video, tmp_path / "RT" / "teacher.pt", out=tmp_path / "R.zarr", progress=False)
    with pytest.raises(Exception, match="other views"):  # the RGB teacher's own views are not the pose windows
        train_student(video, tmp_path / "S0", cache=[str(pose_store), str(own)], device="cpu", progress=False)

    rgb = precompute_logits(video, tmp_path / "RT" / "teacher.pt", out=tmp_path / "RW.zarr", progress=False,
                            views_from=pose_store)
    with LogitStore.open(pose_store) as p, LogitStore.open(rgb) as r:
        assert np.array_equal(p.read_all()[1], r.read_all()[1])  # the very same windows
        assert r.meta["views_from"] == str(pose_store)
        assert not np.allclose(p.read_all()[0], r.read_all()[0])  # scored by another teacher
    res = train_student(video, tmp_path / "S", cache=[str(pose_store), str(rgb)], device="cpu", progress=False)
    assert np.isfinite(res["train"]["kd_loss"])
    with pytest.raises(CacheError, match="views-from"):  # the source store cannot be overwritten by itself
        precompute_logits(video, tmp_path / "RT" / "teacher.pt", out=pose_store, progress=False, views_from=pose_store)
