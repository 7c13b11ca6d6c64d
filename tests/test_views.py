"""Views: frame indices, random/centred views, apply_view, exact replay, load_clips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_path
from dlkdd.config import ClipConfig
from dlkdd.data.views import (VIEW_PARAMS, View, apply_view, center_view, crop_box, frame_indices, load_clip,
                              load_clips, random_view)

CLIP = ClipConfig(frames=4, stride=2, size=32, resize=40, min_scale=0.8, max_scale=1.0, flip=True)


def test_frame_indices_loop_short_videos():
    v = View(3, 2, 4, 0.0, 0.0, 1.0, 1.0, False)
    assert frame_indices(v, 100) == [3, 5, 7, 9]
    assert frame_indices(v, 6) == [3, 5, 1, 3]


def test_center_view():
    v = center_view(67, CLIP, 240, 320)
    assert (v.start, v.stride, v.frames, v.flip) == ((67 - 7) // 2, 2, 4, False)
    top, left, h, w = crop_box(v, 240, 320)
    assert h == w == 192 and top == 24 and left == 64  # side = 240*32/40, centred
    assert center_view(5, CLIP).start == 0


def test_random_view_bounds_and_reproducible():
    views = [random_view(30, CLIP, np.random.default_rng(s), 240, 320) for s in range(200)]
    for v in views:
        assert 0 <= v.start <= 30 - 7 and v.stride == 2 and v.frames == 4
        top, left, h, w = crop_box(v, 240, 320)
        assert abs(h - w) <= 1 and 0.8 * 192 - 1 <= h <= 192 + 1  # square, scale jitter of size/resize
        assert top >= 0 and left >= 0 and top + h <= 240 and left + w <= 320
    assert any(v.flip for v in views) and not all(v.flip for v in views)
    assert len({v.start for v in views}) > 10
    assert random_view(30, CLIP, np.random.default_rng(7)) == random_view(30, CLIP, np.random.default_rng(7))
    noflip = ClipConfig(frames=4, stride=2, size=32, resize=40, flip=False)
    assert not any(random_view(30, noflip, np.random.default_rng(s)).flip for s in range(20))


def test_apply_view_shape_range_flip_and_roundtrip():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(4, 24, 36, 3), dtype=np.uint8)
    v = View(0, 1, 4, 0.1, 0.2, 0.5, 0.4, False)
    x = apply_view(frames, v, 16)
    assert x.shape == (3, 4, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    xf = apply_view(frames, View(0, 1, 4, 0.1, 0.2, 0.5, 0.4, True), 16)
    assert torch.equal(xf, x.flip(-1))
    a = v.to_array()
    assert a.dtype == np.float64 and a.shape == (VIEW_PARAMS,)
    assert View.from_array(a) == v and torch.equal(apply_view(frames, View.from_array(a), 16), x)
    # no resize when the crop already has the size: exact pixels
    full = View(0, 1, 4, 0.0, 0.0, 1.0, 1.0, False)
    sq = frames[:, :16, :16]
    assert torch.equal(apply_view(sq, full, 16), torch.from_numpy(sq).permute(3, 0, 1, 2).float() / 255)


def test_replay_on_real_clip_is_bit_identical_and_load_clips_shares_decode():
    p = shared_path("arid6", "clips", "Walk", "Walk_10_1.mp4")
    views = [random_view(60, CLIP, np.random.default_rng(s), 240, 320) for s in range(3)]
    a = load_clip(p, views[0], CLIP.size)
    b = load_clip(p, View.from_array(torch.from_numpy(views[0].to_array()).numpy()), CLIP.size)
    assert a.shape == (3, 4, 32, 32) and torch.equal(a, b)
    many = load_clips(p, views, CLIP.size)
    for v, m in zip(views, many):
        assert torch.equal(m, load_clip(p, v, CLIP.size))
    assert not torch.equal(many[0], many[1])


def test_bad_view_array():
    with pytest.raises(ValueError, match="8 parameters"):
        View.from_array(np.zeros(5))
