"""``predict`` and ``evaluate``: a long video scored over its whole length, an unavailable device, the
hostile-pickle message, several videos with a bad one, a negative window stride, CSV lists without a class
table and ``--set clip.*`` overrides, the default enhancer weights found outside the project, a URL refused,
a video shorter than the model's clip noted."""
from __future__ import annotations

from pathlib import Path
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import faults
from dlkdd.cli import main
from faults import assert_clean_error, cli, count, sets

report = pytest.fixture(scope="module", autouse=True)(faults.report_faults)

ONE_EPOCH = ["train.epochs=1"]


def _invoke(args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def test_window_starts_cover_the_whole_video():
    from dlkdd.pipeline.evaluate import window_starts

    s = window_starts(1800, 31, 15, max_windows=64)
    assert len(s) <= 64 and s[0] == 0 and s[-1] == 1800 - 31
    s = window_starts(100, 31, 15)
    assert s[-1] == 100 - 31 and all(b - a <= 15 for a, b in zip(s, s[1:]))


def test_predict_scores_a_long_video_to_its_end(work, ckpt):
    from dlkdd.data.writer import write_video

    rng = np.random.default_rng(0)
    frames = (rng.random((400, 32, 48, 3)) * 60).astype(np.uint8)  # 400 frames at 30 fps: 13.3 s
    long = write_video(work / "long.mp4", frames, fps=30)
    count("bad input")
    r = _invoke(["predict", ckpt, long, "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)[0]
    assert res["windows"][-1]["end_s"] == pytest.approx(400 / 30, abs=0.05)
    assert res["scored"]["windows"] == len(res["windows"]) <= 64
    assert res["scored"]["end_s"] == pytest.approx(res["scored"]["duration_s"], abs=0.05)
    r = _invoke(["predict", ckpt, long])
    assert "scored" in r.output and "spread over" in r.output


def test_unavailable_device_is_one_line(ckpt, clip):
    count("bad input", 2)
    assert_clean_error(_invoke(["--device", "tpu", "predict", ckpt, clip]), "--device tpu", "available here: cpu")
    bad = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    assert_clean_error(_invoke(["--device", bad, "predict", ckpt, clip]), f"--device {bad}", "not available")


def test_hostile_pickle_message_gives_no_unsafe_advice(work, clip):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    evil = work / "evil.pt"
    torch.save({"schema_version": 1, "dlkdd_version": "0", "x": Evil()}, evil)
    count("hostile checkpoint")
    err = assert_clean_error(_invoke(["predict", evil, clip]), str(evil), "cannot be loaded safely")
    assert "weights_only" not in err and "False" not in err and "system" in err


def test_predict_scores_the_good_videos_and_fails(work, ckpt, clip):
    missing = work / "missing.mp4"
    count("bad input")
    r = _invoke(["predict", ckpt, clip, missing, clip])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert r.output.count(str(clip)) == 2 and str(missing) in r.output and "1 of 3 videos" in r.output


def test_negative_window_stride_refused(ckpt, clip):
    count("bad input")
    r = _invoke(["predict", ckpt, clip, "--window-stride", "-5"])
    assert r.exit_code == 2 and "--window-stride" in r.output


def test_evaluate_csv_without_mapping_and_clip_overrides(work, tiny, ckpt, cfg):
    from dlkdd.data.manifest import read_arid

    test = read_arid(tiny / "test.txt", tiny / "mapping_table.txt", tiny / "clips")
    csv = work / "test.csv"
    csv.write_text("path,label\n" + "".join(f"{e.path},{test.classes[e.label]}\n" for e in test.entries))
    count("bad input", 2)
    r = _invoke(["evaluate", ckpt, "--list", csv, "--format", "csv", "--workers", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert f"(n={len(test)}" in r.output
    r = _invoke(["evaluate", ckpt, "--config", cfg, "--set", "clip.frames=2", "--workers", "0", "--no-progress"])
    assert r.exit_code == 0 and "clip settings changed by --set clip.frames=2" in r.output


def test_default_enhancer_weights_found_outside_the_project(tmp_path, clip):
    from conftest import shared_path

    shared_path("zerodce", "Epoch99.pth")
    count("bad input")
    r = cli(["enhance", clip, "out.mp4", "--max-frames", "2"], cwd=tmp_path)  # default --kind zerodce
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "out.mp4").is_file()


def test_predict_refuses_a_url(ckpt):
    count("bad input")
    assert_clean_error(_invoke(["predict", ckpt, "https://example.com/v.mp4"]), "a URL", "download it first")


def test_a_video_shorter_than_the_clip_is_noted(work, ckpt):
    import numpy as np

    from dlkdd.data.synth import _encode

    one = work / "one_frame.mp4"
    _encode(one, np.zeros((1, 32, 48, 3), dtype=np.uint8))
    r = _invoke(["predict", ckpt, one])
    assert r.exit_code == 0, r.output
    assert "note: the video has 1 frame(s), the model's clips span 7" in r.output
