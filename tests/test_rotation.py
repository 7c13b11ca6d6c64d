"""Display rotation (issue 16): a portrait phone clip decodes upright, probe reports the
displayed size, and ``dlkdd enhance`` writes it upright."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from dlkdd.cli import main
from dlkdd.data.rotation import display_rotation, upright
from dlkdd.data.video import VideoReader, decode, probe

H, W = 32, 48  # stored frame size; the bright block is the stored top-left quadrant


def _stored_frames(t: int = 4) -> np.ndarray:
    f = np.full((t, H, W, 3), 20, np.uint8)
    f[:, : H // 2, : W // 2] = 230
    return f


def _write_rotated(path, ccw_degrees: int):
    """An MP4 whose display matrix says: turn the stored frames ``ccw_degrees`` counter-clockwise."""
    av = pytest.importorskip("av")
    vs = getattr(av.video.stream.VideoStream, "set_display_rotation", None)
    if vs is None:
        pytest.skip(f"PyAV {av.__version__} cannot write a display matrix (no set_display_rotation)")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.set_display_rotation(ccw_degrees)
        for arr in _stored_frames():
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(path)) as c:  # a fresh container: is the rotation really in the file?
        fr = next(c.decode(video=0))
        if int(round(fr.rotation)) % 360 != ccw_degrees % 360:
            pytest.skip(f"this FFmpeg build did not keep the display matrix (read back {fr.rotation})")
    return path


def _bright_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of the bright pixels of one frame."""
    rows, cols = np.nonzero(frame.mean(axis=-1) > 128)
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


# where a player shows the stored top-left quadrant, in the displayed (rows, cols) frame
CASES = [
    (-90, (W, H), (0, W // 2, H // 2, H)),       # phone portrait: turned clockwise -> top-right
    (90, (W, H), (W // 2, W, 0, H // 2)),        # counter-clockwise -> bottom-left
    (180, (H, W), (H // 2, H, W // 2, W)),       # upside down -> bottom-right
]


@pytest.mark.parametrize("ccw,shape,box", CASES)
def test_rotated_clip_decodes_as_displayed(tmp_path, ccw, shape, box):
    p = _write_rotated(tmp_path / "phone.mp4", ccw)
    info = probe(p)
    assert (info.height, info.width) == shape
    assert info.rotation == ccw % 360
    v = decode(p)
    assert v.shape == (4, *shape, 3) and v.flags["C_CONTIGUOUS"]
    for frame in v:
        assert _bright_box(frame) == box
    with VideoReader(p) as r:  # span requests see the same upright frames
        np.testing.assert_array_equal(r.get([2, 3]), v[[2, 3]])


def test_unrotated_clip_is_untouched(tmp_path):
    from dlkdd.data.writer import write_video

    p = write_video(tmp_path / "plain.mp4", _stored_frames(), fps=10)
    info = probe(p)
    assert (info.height, info.width, info.rotation) == (H, W, 0)
    assert _bright_box(decode(p)[0]) == (0, H // 2, 0, W // 2)


def test_enhance_keeps_a_portrait_clip_upright(tmp_path):
    src = _write_rotated(tmp_path / "phone.mp4", -90)
    out = tmp_path / "out.mp4"
    res = CliRunner().invoke(main, ["enhance", str(src), str(out), "--kind", "gamma", "--gamma", "1.5",
                                    "--batch", "4"])
    assert res.exit_code == 0, res.output
    info = probe(out)
    assert (info.height, info.width, info.rotation) == (W, H, 0)  # upright pixels, no tag left to apply
    for frame in decode(out):
        assert _bright_box(frame) == (0, W // 2, H // 2, H)


def test_display_rotation_sources():
    assert display_rotation(0.0) == 0
    assert display_rotation(-90.0) == 270          # matrix: turn clockwise
    assert display_rotation(90.0) == 90
    assert display_rotation(-180.0) == 180
    assert display_rotation(0.0, "90") == 270      # legacy tag: clockwise degrees
    assert display_rotation(0.0, "270") == 90
    assert display_rotation(90.0, "90") == 90      # the matrix wins over the tag
    assert display_rotation(0.0, "sideways") == 0  # unreadable tag ignored
    assert display_rotation(88.0) == 90            # rounded to a quarter turn


def test_upright_turns_counter_clockwise():
    a = np.arange(6).reshape(2, 3)[..., None]      # [[0 1 2], [3 4 5]]
    assert upright(a, 0) is a
    np.testing.assert_array_equal(upright(a, 90)[..., 0], [[2, 5], [1, 4], [0, 3]])
    np.testing.assert_array_equal(upright(a, 270)[..., 0], [[3, 0], [4, 1], [5, 2]])
    np.testing.assert_array_equal(upright(a[None], 180)[0, ..., 0], [[5, 4, 3], [2, 1, 0]])
