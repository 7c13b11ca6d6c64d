"""Synthetic dark dataset: decodable h264 clips, dark, ARID-format lists that load."""
from __future__ import annotations

import numpy as np
import pytest

from dlkdd.config import load_config
from dlkdd.data.manifest import manifest_from_config, read_arid
from dlkdd.data.synth import darken, make_synthetic
from dlkdd.data.video import decode, probe


def test_make_synthetic_small(tmp_path):
    p = make_synthetic(tmp_path / "s", classes=3, clips_per_class=3, frames=12, size=(48, 64), seed=1)
    m = read_arid(p["train_list"], p["mapping"], p["root"])
    te = read_arid(p["test_list"], p["mapping"], p["root"])
    assert m.classes == ["Jump", "Walk", "Wave"] and m.class_counts() == [2, 2, 2] and te.class_counts() == [1, 1, 1]
    assert "Jump/Jump_1_1.avi" in (tmp_path / "s" / "train.txt").read_text()  # ARID list style names
    lumas = []
    for e in list(m) + list(te):
        assert e.path.endswith(".mp4")
        v = decode(e.path)
        assert v.shape == (12, 48, 64, 3) and probe(e.path).num_frames == 12
        lumas.append(float((v.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).mean()))
    assert 7 <= min(lumas) and max(lumas) <= 45  # dark, ARID-like (10-40 target, codec drift)
    cfg = load_config(p["config"])  # the written config points at the data
    assert len(manifest_from_config(cfg.data, "train")) == 6
    # deterministic for a seed
    q = make_synthetic(tmp_path / "t", classes=3, clips_per_class=3, frames=12, size=(48, 64), seed=1)
    np.testing.assert_array_equal(decode(m[0].path), decode(read_arid(q["train_list"], q["mapping"], q["root"])[0].path))


def test_classes_move_differently(tmp_path):
    """Per-class motion is distinct: frame-difference energy profiles differ between Jump and Wave."""
    from dlkdd.data.synth import render_clip

    rng = np.random.default_rng(0)
    jump = render_clip("Jump", 16, (32, 48), rng)
    wave = render_clip("Wave", 16, (32, 48), rng)
    # Jump moves the whole figure vertically: the top rows change; Wave moves only the arm
    def vertical_centroid(clip):
        w = np.abs(np.diff(clip.mean(-1), axis=0)).sum(axis=(0, 2))
        return (w * np.arange(len(w))).sum() / w.sum()
    assert np.abs(np.diff(jump, axis=0)).sum() > 0 and np.abs(np.diff(wave, axis=0)).sum() > 0
    assert vertical_centroid(jump) != pytest.approx(vertical_centroid(wave), abs=0.5)


def test_darken_levels_and_args(tmp_path):
    rng = np.random.default_rng(0)
    scene = np.full((2, 16, 16, 3), 0.5, np.float32)
    out = darken(scene, rng, mean_luma=20.0)
    assert out.dtype == np.uint8 and abs(out.mean() - 20) < 1 and out.std() > 1  # noisy
    with pytest.raises(ValueError, match="even"):
        make_synthetic(tmp_path, size=(47, 64))
    with pytest.raises(ValueError, match="classes"):
        make_synthetic(tmp_path, classes=9)
