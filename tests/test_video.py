"""PyAV decoding: frame counts of real ARID clips, span decoding = full decoding, bad files."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from dlkdd.data.video import VideoReader, decode, probe, truncation_tolerance
from dlkdd.errors import VideoError



def _counts():
    d = shared_path("arid6")
    rows = [ln.split("\t") for ln in (d / "frame_counts.txt").read_text().splitlines() if ln.strip()]
    return d, {k: int(v) for k, v in rows}


def test_decoded_frame_counts_match_frame_counts_txt():
    d, counts = _counts()
    assert len(counts) == 150
    keys = sorted(counts)[::37]  # 5 clips across classes
    for k in keys:
        v = decode(d / "clips" / k)
        assert v.dtype == np.uint8 and v.shape == (counts[k], 240, 320, 3), k
        info = probe(d / "clips" / k)
        assert info.num_frames == counts[k] and (info.height, info.width) == (240, 320)
        assert info.fps == pytest.approx(30.0)
    assert 1 < v.mean() < 80  # dark


def test_span_decoding_equals_full_decoding():
    d, counts = _counts()
    p = d / "clips" / "Jump/Jump_11_10.mp4"  # 65 frames, keyframes every 30, B-frames
    full = decode(p)
    for idx in ([40, 42, 44], [0], [64], [31, 33, 35, 60, 12], [5, 5, 5], list(range(30, 62, 2))):
        np.testing.assert_array_equal(decode(p, idx), full[idx])
    with VideoReader(p) as r:  # one open, several requests
        np.testing.assert_array_equal(r.get([50, 51]), full[[50, 51]])
        np.testing.assert_array_equal(r.get([2, 3]), full[[2, 3]])
    with pytest.raises(VideoError, match="frame 65 requested"):
        decode(p, [65])


@pytest.mark.parametrize("name,reason", [
    ("empty.mp4", "empty file (0 bytes)"),
    ("not_a_video.mp4", "not a video"),
    ("audio_only.mp4", "no video stream"),
    ("corrupted.mp4", "corrupted stream"),
    ("truncated.mp4", "truncated: decoded 10 of 39 frames"),
])
def test_bad_files_raise_clear_video_error(name, reason):
    p = shared_path("bad", name)
    with pytest.raises(VideoError) as ei:
        decode(p)
    e = ei.value
    assert e.path == str(p) and reason in e.reason and str(p) in str(e)
    assert "\n" not in str(e) and len(str(e)) < 300


def test_truncated_detected_on_open_and_missing_file(tmp_path):
    with pytest.raises(VideoError, match="truncated"):
        probe(shared_path("bad", "truncated.mp4"))
    with pytest.raises(VideoError, match="file not found"):
        decode(tmp_path / "nope.mp4")
    assert truncation_tolerance(39) < 39 - 10 and truncation_tolerance(100) == 5


@pytest.mark.parametrize("ext,codec", [(".avi", "mpeg4"), (".mkv", "libx264"), (".webm", "libvpx")])
def test_other_containers_count_and_span_decode(tmp_path, ext, codec):
    """.mkv/.webm headers carry no frame count: frames are counted from the packets."""
    import av

    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this FFmpeg build")
    rng = np.random.default_rng(0)
    src = (rng.integers(0, 200, (1, 32, 48, 3)) + 2 * np.arange(20)[:, None, None, None]).astype(np.uint8)
    p = tmp_path / f"v{ext}"
    with av.open(str(p), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        s.codec_context.gop_size = 8
        for f in src:
            for pk in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pk)
        for pk in s.encode(None):
            c.mux(pk)
    full = decode(p)
    assert full.shape == (20, 32, 48, 3) and probe(p).num_frames == 20
    for idx in ([12, 13, 14], [9, 17, 3], [19]):
        np.testing.assert_array_equal(decode(p, idx), full[idx])
