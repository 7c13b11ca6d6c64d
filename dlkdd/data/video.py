"""Video decoding with PyAV (FFmpeg): ``(T,H,W,3)`` uint8 RGB frames.

* :func:`probe` -> :class:`VideoInfo` ``(num_frames, fps, height, width, duration_s, rotation)``.
* :func:`decode` -> ``np.ndarray uint8 (T,H,W,3)``, all frames or those at ``indices``.
* :class:`VideoReader` opens a file once and serves several frame requests from it.

How it works: the video stream's packets are demuxed once (cheap: no decoding) to get every
frame's presentation timestamp and the keyframes. ``num_frames`` is the packet count, which
for the codecs in ARID/Dark-48 (h264, mpeg4) equals the decoded frame count - the header's
``nb_frames`` is only used to detect truncation, and is missing for .mkv/.webm. A request for
frames ``[lo, hi]`` decodes from the last keyframe at or before ``lo`` up to ``hi`` and keeps the
frames whose timestamps are asked for; frames are converted to RGB only when kept. Starting at
a keyframe gives bit-identical frames to decoding from the start of the file.

Rotation: a clip whose container carries a display rotation (the MP4 display matrix a phone
writes for a portrait recording; see :mod:`dlkdd.data.rotation`) is returned as a player shows
it: every frame is turned by ``np.rot90`` and ``height``/``width`` are the displayed ones, so
crops, views and ``dlkdd enhance`` all see upright frames. Without a rotation nothing changes.

Errors: a missing, empty, non-video, audio-only, corrupted or truncated file raises
:class:`dlkdd.errors.VideoError` ``(path, one-line reason)``. Containers are always closed.
The decoder never uses FRAME threading (FFmpeg frame threads can deadlock in forked
DataLoader workers); slice threading, single thread.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dlkdd.data.rotation import display_rotation, upright
from dlkdd.errors import VideoError

log = logging.getLogger(__name__)

# display rotation per (path, mtime_ns, size), see VideoReader._read_rotation
_ROTATION_CACHE: dict[tuple, int] = {}
_ROTATION_CACHE_MAX = 200_000

__all__ = ["VideoInfo", "VideoReader", "probe", "decode", "truncation_tolerance"]


def truncation_tolerance(header_frames: int) -> int:
    """How many frames fewer than the header's count a stream may hold and still be whole.

    Muxers round ``nb_frames`` and some encoders drop a frame or two at the end, so a
    difference of ``max(2, 5%)`` frames is accepted (the 150 arid6 clips match exactly; the
    truncated test file holds 10 of 39).
    """
    return max(2, int(round(0.05 * header_frames)))


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` reports. ``num_frames``: frames in the stream (packet count).

    ``height``/``width``: as displayed (after ``rotation``); ``rotation``: counter-clockwise
    degrees (0, 90, 180 or 270) the stored frames are turned by to display them upright.
    """

    num_frames: int
    fps: float
    height: int
    width: int
    duration_s: float
    rotation: int = 0


def _av():
    import av

    return av


def unreadable_parent(path: str | os.PathLike) -> str | None:
    """The first directory above ``path`` that this process may not enter (permissions), or None."""
    p = os.path.abspath(os.fspath(path))
    parents = []
    while True:
        parent = os.path.dirname(p)
        if parent == p:
            break
        parents.append(parent)
        p = parent
    for d in reversed(parents):  # from the root down
        if os.path.isdir(d) and not os.access(d, os.X_OK):
            return d
    return None


def _check_file(path: str) -> None:
    try:
        os.stat(path)
    except PermissionError:
        d = unreadable_parent(path)
        raise VideoError(path, f"permission denied: cannot enter directory {d or os.path.dirname(path)} "
                               "(fix its permissions, e.g. chmod a+rx)") from None
    except FileNotFoundError:
        d = unreadable_parent(path)
        if d is not None:
            raise VideoError(path, f"permission denied: cannot enter directory {d} "
                                   "(fix its permissions, e.g. chmod a+rx)") from None
        raise VideoError(path, "file not found (check data.root and the list)") from None
    except OSError as e:
        raise VideoError(path, f"cannot access ({_short(e)})") from None
    if not os.access(path, os.R_OK):
        raise VideoError(path, "permission denied: the file is not readable (fix its permissions)")
    if os.path.isdir(path):
        raise VideoError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoError(path, "empty file (0 bytes); re-copy or re-download it")


def _short(e: BaseException) -> str:
    """A short reason from an FFmpeg error: its message without errno and file name."""
    msg = getattr(e, "strerror", None) or str(e)
    msg = re.sub(r"^\[Errno -?\d+\]\s*", "", str(msg).replace("\n", " ").strip())
    return msg[:160] or type(e).__name__


class VideoReader:
    """An open video: ``num_frames``, ``info``, ``get(indices)``; use as a context manager.

    ``with VideoReader(path) as r: frames = r.get([0, 2, 4])``
    """

    def __init__(self, path: str | os.PathLike):
        av = _av()
        self.path = str(path)
        _check_file(self.path)
        try:
            self._container = av.open(self.path, mode="r")
        except av.FFmpegError as e:
            raise VideoError(self.path, f"not a video or unreadable container ({_short(e)})") from None
        except OSError as e:
            raise VideoError(self.path, f"cannot open ({_short(e)})") from None
        try:
            self._index()
        except BaseException:
            self.close()
            raise

    # -------------------------------------------------------------------------------- set-up
    def _index(self) -> None:
        av = _av()
        c = self._container
        if not c.streams.video:
            kinds = ", ".join(sorted({s.type for s in c.streams})) or "none"
            raise VideoError(self.path, f"no video stream (streams: {kinds})")
        s = c.streams.video[0]
        s.thread_type = "SLICE"
        s.thread_count = 1
        self._stream = s
        self.header_frames = int(s.frames or 0)
        packets = []
        try:
            for p in c.demux(s):
                if p.size > 0:
                    packets.append(p)
        except av.FFmpegError as e:
            if not packets:
                raise VideoError(self.path, f"corrupted stream: cannot read packets ({_short(e)})") from None
            log.debug("%s: demuxing stopped early: %s", self.path, e)
        if not packets:
            raise VideoError(self.path, "video stream holds no frames")
        self._packets = packets  # decode order
        pts = [p.pts for p in packets]
        self._has_pts = all(t is not None for t in pts) and len(set(pts)) == len(pts)
        if self._has_pts:
            order = sorted(range(len(pts)), key=lambda i: pts[i])  # display order
            self._pts_to_index = {pts[i]: k for k, i in enumerate(order)}
            # for each packet (decode order): its display index; keyframe packets are restart points
            self._display_of_packet = [self._pts_to_index[t] for t in pts]
        self.num_frames = len(packets)
        if self.header_frames and self.num_frames < self.header_frames - truncation_tolerance(self.header_frames):
            decoded = self._count_decodable()
            raise VideoError(self.path, f"truncated: decoded {decoded} of {self.header_frames} frames its header "
                                        f"announces (incomplete copy or download? re-copy the file)")
        cc = s.codec_context
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate else 0.0
        if s.duration is not None and s.time_base:
            dur = float(s.duration * s.time_base)
        elif fps > 0:
            dur = self.num_frames / fps
        else:
            dur = 0.0
        h, w = int(cc.height or 0), int(cc.width or 0)
        self.rotation = self._read_rotation()
        if self.rotation in (90, 270):
            h, w = w, h
        self.info = VideoInfo(self.num_frames, fps, h, w, dur, self.rotation)

    def _read_rotation(self) -> int:
        """The display rotation (ccw degrees, 0/90/180/270), from the first decoded frame's
        display matrix or else the stream's legacy ``rotate`` tag; 0 if the stream cannot decode.

        Read once per file and process (keyed by path, mtime and size): a training run opens the
        same clips every epoch, and the answer needs a decoded frame."""
        try:
            st = os.stat(self.path)
            key: tuple | None = (os.path.abspath(self.path), st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if key is not None and key in _ROTATION_CACHE:
            return _ROTATION_CACHE[key]
        ccw = 0.0
        try:
            gen = self._decode_frames(0)
            try:
                for _, fr in gen:
                    ccw = float(getattr(fr, "rotation", 0) or 0)
                    break
            finally:
                gen.close()
        except VideoError as e:
            log.debug("%s: rotation not read: %s", self.path, e)
        rotation = display_rotation(ccw, self._stream.metadata.get("rotate"), self.path)
        if key is not None:
            if len(_ROTATION_CACHE) >= _ROTATION_CACHE_MAX:
                _ROTATION_CACHE.clear()
            _ROTATION_CACHE[key] = rotation
        return rotation

    def _count_decodable(self) -> int:
        n = 0
        try:
            for _ in self._decode_frames(0):
                n += 1
        except VideoError:
            pass
        return n

    # -------------------------------------------------------------------------------- life cycle
    def close(self) -> None:
        c = getattr(self, "_container", None)
        if c is not None:
            self._packets = []
            c.close()
            self._container = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------------------------- decoding
    def _decode_frames(self, start_packet: int):
        """Feed packets from ``start_packet`` on (then flush); yield ``(display_index, frame)``.

        The caller stops iterating once it has what it needs (the generator is then closed).
        """
        av = _av()
        ctx = self._stream.codec_context
        ctx.flush_buffers()  # a fresh start for each request (also after an earlier EOF flush)
        seq = 0  # sequential display counter (fallback for streams without timestamps)
        for pi in range(start_packet, len(self._packets)):
            try:
                frames = ctx.decode(self._packets[pi])
            except av.FFmpegError as e:
                raise VideoError(self.path, f"corrupted stream: decoding failed near frame {seq} "
                                            f"({_short(e)})") from None
            for fr in frames:
                idx = self._frame_index(fr, seq)
                seq += 1
                if idx is not None:
                    yield idx, fr
        try:
            frames = ctx.decode(None)  # drain the reorder buffer
        except av.FFmpegError as e:
            raise VideoError(self.path, f"corrupted stream at the end ({_short(e)})") from None
        for fr in frames:
            idx = self._frame_index(fr, seq)
            seq += 1
            if idx is not None:
                yield idx, fr

    def _frame_index(self, fr, seq: int):
        if not self._has_pts:
            return seq
        t = fr.pts
        if t is None:
            return None
        return self._pts_to_index.get(t)

    def _start_packet(self, lo: int) -> int:
        """The keyframe packet (decode order) to start from so that frame ``lo`` decodes correctly."""
        if not self._has_pts or lo <= 0:
            return 0
        best = 0
        for pi, pkt in enumerate(self._packets):
            if pkt.is_keyframe and self._display_of_packet[pi] <= lo:
                best = pi
        return best

    def get(self, indices: Sequence[int] | None = None, verify_all: bool = False) -> np.ndarray:
        """Frames at ``indices`` (display order, repeats allowed) as uint8 ``(T,H,W,3)``; None: all.

        ``verify_all``: decode the whole stream (converting only the requested frames) and raise
        if any frame fails or the stream is short; ``decoded_frames`` then holds the count.
        """
        n = self.num_frames
        if indices is None:
            wanted = list(range(n))
        else:
            wanted = [int(i) for i in indices]
            if not wanted:
                raise ValueError("no frame indices requested")
            bad = [i for i in wanted if not 0 <= i < n]
            if bad:
                raise VideoError(self.path, f"frame {bad[0]} requested but the video has {n} frames")
        need = set(wanted)
        start = 0 if verify_all else self._start_packet(min(need))
        got: dict[int, np.ndarray] = {}
        seen: set[int] = set()
        for idx, fr in self._decode_frames(start):
            seen.add(idx)
            if idx in need and idx not in got:
                got[idx] = upright(fr.to_ndarray(format="rgb24"), self.rotation)
                if len(got) == len(need) and not verify_all:
                    break
        if verify_all:
            self.decoded_frames = len(seen)
            if len(seen) < n:
                missing = sorted(set(range(n)) - seen)
                if missing[0] > max(seen, default=-1):
                    raise VideoError(self.path, f"truncated: decoded {len(seen)} of {max(n, self.header_frames)} "
                                                f"frames (the stream ends early; re-copy the file)")
                raise VideoError(self.path, f"corrupted stream: frame {missing[0]} of {n} could not be decoded")
        if len(got) < len(need):
            missing = sorted(need - set(got))
            if indices is None or missing[0] > max(got, default=-1):
                ref = max(n, self.header_frames)
                raise VideoError(self.path, f"truncated: decoded {max(got, default=-1) + 1} of {ref} frames "
                                            f"(the stream ends early; re-copy the file)")
            raise VideoError(self.path, f"corrupted stream: frame {missing[0]} of {n} could not be decoded")
        return np.stack([got[i] for i in wanted])


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps and size of a video, without decoding it (demuxes packets only)."""
    with VideoReader(path) as r:
        return r.info


def decode(path: str | os.PathLike, indices: Sequence[int] | None = None) -> np.ndarray:
    """Decode ``path`` to uint8 ``(T,H,W,3)`` RGB: every frame, or those at ``indices``.

    ``indices`` are display-order frame numbers in ``[0, num_frames)``; repeats allowed,
    order kept. Only the span from the last keyframe before ``min(indices)`` to
    ``max(indices)`` is decoded. Raises :class:`VideoError` for bad files.
    """
    with VideoReader(path) as r:
        return r.get(indices)
