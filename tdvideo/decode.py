"""Probe and decode videos with PyAV into uint8 ``(T, C, H, W)`` tensors with exact timestamps.

Frames are streamed: :func:`iter_video` yields chunks, so memory does not grow with the
video's length. Timestamps come from each frame's own pts. Frames that the sampling
drops are never converted; kept ones are converted and resized in one swscale call.
When the container's keyframe index shows a keyframe between the current frame and the
next wanted one, the reader seeks to it instead of decoding everything in between.
"""

from __future__ import annotations

import bisect
import logging
import math
import stat
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import torch

from ._integrity import shortfall
from ._types import Interpolation, Size
from .errors import (
    DecodeError,
    EmptyVideoError,
    NoVideoStreamError,
    UnsupportedVideoError,
    UsageError,
    VideoOpenError,
    show_path,
)
from .sampling import _EPS, FrameSelector, Sampling, resolve_sampling, windows

__all__ = [
    "INTERPOLATIONS",
    "CODED_LIMIT",
    "MAX_WINDOW_BYTES",
    "OUTPUT_LIMIT",
    "FrameLimit",
    "Interpolation",
    "OnError",
    "VideoClip",
    "VideoInfo",
    "check_size",
    "iter_video",
    "probe",
    "read_video",
    "resolve_size",
]

log = logging.getLogger(__name__)

OnError = Literal["raise", "keep"]
DurationSource = Literal["stream", "tag", "container"]

@dataclass(frozen=True)
class FrameLimit:
    """The largest frame allowed: at most ``pixels`` in all and ``side`` pixels a side."""

    pixels: int
    side: int

    def allows(self, height: int, width: int) -> bool:
        return max(height, width) <= self.side and height * width <= self.pixels

    def __str__(self) -> str:
        return f"at most {self.side} px a side and {self.pixels / 1e6:.1f} Mpx"


# A few bytes of header can claim any frame size, and a short-side resize of a 2 x 4096
# video would be 112 x 229376: without limits a tiny file takes gigabytes. Decoded frames
# may be 8192 x 8192 (8K UHD and 8192 x 4096 panoramas fit); frames for the model, RGB,
# 4096 x 4096 (48 MiB each; models take far less).
CODED_LIMIT = FrameLimit(pixels=8192 * 8192, side=16384)
OUTPUT_LIMIT = FrameLimit(pixels=4096 * 4096, side=8192)
# A clip window is one piece of memory; more than this is refused.
MAX_WINDOW_BYTES = 2**30

_SWS_INTERPOLATION: dict[str, str] = {
    "bilinear": "BILINEAR",
    "bicubic": "BICUBIC",
    "area": "AREA",
    "nearest": "POINT",
    "lanczos": "LANCZOS",
    "fast_bilinear": "FAST_BILINEAR",
}
INTERPOLATIONS: tuple[str, ...] = tuple(_SWS_INTERPOLATION)


@dataclass(frozen=True)
class VideoInfo:
    """What the container header (and the first frame, for rotation) says about a video.

    ``width``/``height`` are as displayed, after rotation; ``raw_width``/``raw_height``
    are the coded frame size. ``frames`` is the header's count, ``None`` when unknown.
    ``duration`` is the video stream's, from its first frame; ``duration_source`` says
    where it was read: the stream's own header (``"stream"``), a per-stream ``DURATION``
    tag (Matroska, ``"tag"``), or the whole container (``"container"``, which may
    include longer audio).
    """

    path: str
    container: str
    codec: str
    width: int
    height: int
    raw_width: int
    raw_height: int
    rotation: int
    fps: float | None
    guessed_fps: float | None
    duration: float | None
    frames: int | None
    start_time: float
    has_audio: bool
    pix_fmt: str | None
    sample_aspect_ratio: float
    keyframe_interval: float | None = None
    duration_source: DurationSource | None = None
    other_streams: int = 0

    def rotated(self, rotation: int) -> VideoInfo:
        """This info for a display rotation of ``rotation`` degrees (0/90/180/270)."""
        swap = rotation in (90, 270)
        return replace(
            self,
            rotation=rotation,
            width=self.raw_height if swap else self.raw_width,
            height=self.raw_width if swap else self.raw_height,
        )

    @property
    def end_time(self) -> float | None:
        """When the stream ends (start time + duration), if the header says."""
        return None if self.duration is None else self.start_time + self.duration

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VideoClip:
    """Decoded frames of one video, or one chunk of them.

    ``frames`` is uint8 ``(T, C, H, W)`` (channels_last in memory), or ``(B, L, C, H, W)``
    with clip windows; ``timestamps`` is float64 ``(T,)`` or ``(B, L)`` seconds.
    ``pts_synthesized`` is set when some frames had no pts and their times were derived
    from the frame rate; ``truncated``/``error`` when decoding failed part-way and the
    caller asked to keep the frames decoded so far (``on_error="keep"``).
    ``frames_decoded`` and ``seeks`` count the decoder's work up to this chunk.
    """

    frames: torch.Tensor
    timestamps: torch.Tensor
    info: VideoInfo
    pts_synthesized: bool = False
    truncated: bool = False
    error: str | None = None
    frames_decoded: int = 0
    seeks: int = 0

    def __len__(self) -> int:
        return int(self.frames.shape[0])


# -- opening and probing ---------------------------------------------------------------


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    try:
        mode = p.stat()
    except FileNotFoundError:
        raise VideoOpenError(p, "no such file") from None
    except OSError as exc:
        raise VideoOpenError(p, f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode.st_mode):
        raise VideoOpenError(p, "is a directory, not a video file")
    if not stat.S_ISREG(mode.st_mode):
        # A FIFO would block FFmpeg until a writer comes; a device is no file to seek in.
        raise VideoOpenError(p, f"not a regular file (a {file_kind(mode.st_mode)})")
    if mode.st_size == 0:
        raise VideoOpenError(p, "empty file (0 bytes)")
    try:
        # Metadata that is not UTF-8 (damaged, or written by a broken muxer) must not stop the video.
        return av.open(str(p), mode="r", metadata_errors="replace")
    except av.FFmpegError as exc:
        raise VideoOpenError(p, f"not a video FFmpeg can open ({_ffmpeg_reason(exc)})") from exc
    except OSError as exc:
        raise VideoOpenError(p, f"cannot read: {exc.strerror or exc}") from exc


def file_kind(mode: int) -> str:
    """What kind of file system entry ``st_mode`` describes, in words."""
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "directory"),
    ):
        if test(mode):
            return name
    return "special file"


def _ffmpeg_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _video_stream(container: av.container.InputContainer, path: str | Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise NoVideoStreamError(path, f"no video stream (has: {', '.join(kinds)})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise NoVideoStreamError(path, "no decodable video stream (its codec is unknown to FFmpeg, or its header is damaged)")
    return stream


def _keyframe_times(stream: av.video.stream.VideoStream) -> list[float]:
    """Presentation times (seconds) of the keyframes in the container's index, sorted.

    Some indexes (MP4) hold decode times, which run ahead of presentation times by the
    B-frame delay; the shift between the first index entry and the stream's start time
    maps them back. Empty without an index.
    """
    entries = stream.index_entries or []
    if stream.time_base is None or not entries:
        return []
    tb = float(stream.time_base)
    shift = 0.0
    if stream.start_time is not None:
        shift = max(0.0, (stream.start_time - min(e.timestamp for e in entries)) * tb)
    return sorted(e.timestamp * tb + shift for e in entries if e.flags & 1)


def _keyframe_interval(keyframes: list[float]) -> float | None:
    """Longest gap between keyframes; None with fewer than two."""
    return max(b - a for a, b in zip(keyframes, keyframes[1:])) if len(keyframes) >= 2 else None


_SEEK_MIN_FRAMES = 16


# Demuxers (FFmpeg names) whose keyframe index comes from the file's own index: sample
# tables, cues, idx1, keyframe metadata. MPEG-PS and -TS indexes are only what probing saw.
_INDEXED_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi", "flv"})


def _has_seek_index(format_name: str) -> bool:
    return bool(_INDEXED_FORMATS & set(format_name.split(",")))


def _seek_pays(t: float, wanted: float, keyframes: list[float], frame: float) -> bool:
    """Whether seeking to the keyframe before ``wanted`` skips decoding work from time ``t``.

    From the container's keyframe index: a keyframe lies ahead of ``t`` and at or before
    ``wanted``, with enough frames in between to pay for the seek (with frame-threaded
    decoding a seek cost about as much as decoding 15 frames when this was measured,
    benchmarks/bench_decode.py).
    """
    i = bisect.bisect_right(keyframes, t + _EPS)
    return i < len(keyframes) and keyframes[i] <= wanted + _EPS and keyframes[i] - t > _SEEK_MIN_FRAMES * frame


def _normalize_rotation(path: str | Path, rotation: float | int | None) -> int:
    """The frame's counter-clockwise display rotation as one of 0/90/180/270; else 0 with a warning."""
    if rotation is None or rotation == 0:
        return 0
    if rotation % 90 != 0:
        warnings.warn(f"{show_path(path)}: ignoring display rotation of {rotation} degrees (not a multiple of 90)")
        return 0
    return int(rotation) % 360


def _header_info(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    path: str | Path,
    keyframes: list[float],
) -> VideoInfo:
    """What the header says, with rotation 0 (the rotation is only known from a frame)."""
    ctx = stream.codec_context
    tb = stream.time_base
    start = float(stream.start_time * tb) if stream.start_time is not None and tb is not None else 0.0
    duration, source = _stream_duration(container, stream, start)
    sar = stream.sample_aspect_ratio or ctx.sample_aspect_ratio
    sar_f = float(sar) if sar else 1.0
    if not 1 / _MAX_SAR <= sar_f <= _MAX_SAR:
        # Real anamorphic video stays within 4:1 or so; 1:129 is a damaged header, and
        # honouring it would squeeze a 64-pixel-wide frame to nothing.
        warnings.warn(f"{show_path(path)}: ignoring sample aspect ratio {sar} (outside 1:{_MAX_SAR:g} to {_MAX_SAR:g}:1)")
        sar_f = 1.0
    return VideoInfo(
        path=str(path),
        container=container.format.name,
        codec=ctx.name,
        width=ctx.width,
        height=ctx.height,
        raw_width=ctx.width,
        raw_height=ctx.height,
        rotation=0,
        fps=_to_float(stream.average_rate),
        guessed_fps=_to_float(stream.guessed_rate),
        duration=duration,
        frames=stream.frames or None,
        start_time=start,
        has_audio=bool(container.streams.audio),
        pix_fmt=ctx.pix_fmt,
        sample_aspect_ratio=sar_f,
        keyframe_interval=_keyframe_interval(keyframes),
        duration_source=source,
        other_streams=len(container.streams) - 1,
    )


def _stream_duration(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, start: float
) -> tuple[float | None, DurationSource | None]:
    """The video stream's duration from its start, and where it was read.

    Matroska and FLV declare one duration for the whole file, counted from time 0: a
    Matroska file cut with stream copy that starts at 2 s and ends at 6 s says 6 s (an
    FLV whose B-frames start it at 0.08 s likewise), and FFmpeg reports it as is. So for
    them a declared duration longer than the start time is taken as the end time (a
    lower bound of the end, whichever way the writer meant it).
    """
    tb = stream.time_base
    declared: float | None = None
    source: DurationSource | None = None
    if stream.duration is not None and tb is not None:
        declared, source = float(stream.duration * tb), "stream"
    elif (tag := _duration_tag(stream)) is not None:
        declared, source = tag, "tag"
    elif container.duration is not None:
        declared, source = container.duration / av.time_base, "container"
    if declared is None:
        return None, None
    counts_from_zero = bool({"matroska", "webm", "flv"} & set(container.format.name.split(",")))
    if counts_from_zero and source != "stream" and declared > start:
        return declared - start, source
    return declared, source


def _duration_tag(stream: av.video.stream.VideoStream) -> float | None:
    """A Matroska per-stream ``DURATION`` tag (``HH:MM:SS.nnnnnnnnn``) in seconds."""
    for key, value in stream.metadata.items():
        if key.upper().startswith("DURATION"):
            hours, _, rest = value.partition(":")
            minutes, _, seconds = rest.partition(":")
            try:
                total = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            except ValueError:
                return None
            return total if math.isfinite(total) and total >= 0 else None
    return None


_MAX_SAR = 16.0


def _to_float(value: Fraction | None) -> float | None:
    return float(value) if value else None


def probe(path: str | Path) -> VideoInfo:
    """Read a video's header (and its first frame, for the display rotation).

    Raises:
        VideoOpenError: missing, empty or unreadable file.
        NoVideoStreamError: no video stream.
        DecodeError: the first frame cannot be decoded.
    """
    with _open(path) as container:
        stream = _video_stream(container, path)
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise DecodeError(path, f"cannot decode the first frame ({_ffmpeg_reason(exc)})") from exc
        rotation = _normalize_rotation(path, first.rotation if first is not None else 0)
        return _header_info(container, stream, path, _keyframe_times(stream)).rotated(rotation)


# -- geometry --------------------------------------------------------------------------


def resolve_size(size: Size | None, *, height: int, width: int) -> tuple[int, int]:
    """Output (H, W) for a displayed frame of ``height`` x ``width``.

    ``size=S`` scales the short side to ``S`` keeping the aspect ratio; ``(H, W)`` is
    taken as is; ``None`` keeps the frame's size.
    """
    if size is None:
        return height, width
    if isinstance(size, int):
        scale = size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    return size


def check_size(name: str, value: Size | None) -> None:
    """Validate a ``size``/``crop`` value: a positive int or an (H, W) pair, within the frame limits."""
    if value is None:
        return
    ok = (isinstance(value, int) and not isinstance(value, bool) and value > 0) or (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )
    if not ok:
        raise UsageError(f"{name} must be a positive int or an (H, W) pair of positive ints, got {value!r}")
    h, w = (value, value) if isinstance(value, int) else value
    if not OUTPUT_LIMIT.allows(h, w):
        raise UsageError(f"{name} {h}x{w} is over the frame limits ({OUTPUT_LIMIT})")


@dataclass(frozen=True)
class _Geometry:
    """How to turn a decoded frame into an output frame: one swscale call, then rot90 and crop."""

    sws_width: int
    sws_height: int
    rot90: int  # counter-clockwise quarter turns
    crop: tuple[int, int, int, int] | None  # top, left, height, width in the rotated frame

    @property
    def out_shape(self) -> tuple[int, int]:
        """(H, W) of the output frames."""
        if self.crop is not None:
            return self.crop[2], self.crop[3]
        turned = self.rot90 % 2 == 1
        return (self.sws_width, self.sws_height) if turned else (self.sws_height, self.sws_width)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one output RGB frame."""
        h, w = self.out_shape
        return h * w * 3

    @classmethod
    def plan(cls, info: VideoInfo, size: Size | None, crop: Size | None) -> _Geometry:
        rotated = info.rotation in (90, 270)
        # Display size honours the sample aspect ratio (a 2:1 SAR frame shows twice as wide).
        disp_w = info.raw_width * info.sample_aspect_ratio
        disp_h = float(info.raw_height)
        if rotated:
            disp_w, disp_h = disp_h, disp_w
        if size is None:
            out_h, out_w = info.height, info.width
        else:
            out_h, out_w = resolve_size(size, height=max(1, round(disp_h)), width=max(1, round(disp_w)))
        if not OUTPUT_LIMIT.allows(out_h, out_w):
            raise UnsupportedVideoError(
                info.path,
                f"frames resized to {out_h}x{out_w} would be over the frame limits ({OUTPUT_LIMIT}); "
                f"the video is {info.width}x{info.height}: give --size HxW or a smaller size",
            )
        # Always an explicit output size: a stream whose frame size changes part-way
        # still gives frames of one size (swscale does no scaling when sizes match).
        sws = (out_h, out_w) if not rotated else (out_w, out_h)
        box = None
        if crop is not None:
            ch, cw = (crop, crop) if isinstance(crop, int) else crop
            if ch > out_h or cw > out_w:
                raise DecodeError(info.path, f"crop {ch}x{cw} is larger than the frame {out_h}x{out_w}")
            box = ((out_h - ch) // 2, (out_w - cw) // 2, ch, cw)
        return cls(
            sws_width=sws[1],
            sws_height=sws[0],
            rot90=info.rotation // 90,
            crop=box,
        )

    def apply(self, frame: av.VideoFrame, interpolation: str, threads: int) -> np.ndarray:
        """The output frame (H, W, 3), uint8. Raises ``av.FFmpegError`` if swscale cannot convert it."""
        options = {"width": self.sws_width, "height": self.sws_height, "format": "rgb24", "interpolation": interpolation}
        try:
            arr = frame.to_ndarray(**options, threads=threads)
        except av.FFmpegError:
            # Damaged colour tags (a colour space of 243) make swscale refuse the frame:
            # convert it as untagged, as FFmpeg treats unknown tags elsewhere.
            frame.colorspace = frame.color_primaries = frame.color_trc = _UNSPECIFIED
            arr = frame.to_ndarray(**options, threads=threads)
        if self.rot90:
            arr = np.rot90(arr, self.rot90, axes=(0, 1))
        if self.crop is not None:
            top, left, h, w = self.crop
            arr = arr[top : top + h, left : left + w]
        return arr


_UNSPECIFIED = 2  # AVCOL_SPC_UNSPECIFIED, AVCOL_PRI_UNSPECIFIED and AVCOL_TRC_UNSPECIFIED alike


# -- decoding --------------------------------------------------------------------------


@dataclass
class _Report:
    """What happened while decoding one video."""

    frames_decoded: int = 0
    packets: int = 0
    pts_synthesized: bool = False
    truncated: bool = False
    error: str | None = None
    seeks: int = 0
    rotation: int | None = None
    dropped_timestamps: int = 0
    notes: list[str] = field(default_factory=list)


def _kept_frames(
    path: str | Path,
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    header: VideoInfo,
    keyframes: list[float],
    selector: FrameSelector[av.VideoFrame],
    report: _Report,
    on_error: OnError,
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decode ``stream`` and yield the (time, frame) pairs the selector keeps, unconverted.

    The reader seeks only with the keyframe index of a container that has one (MP4/MOV,
    Matroska/WebM, AVI, FLV): it knows where every seek lands. Others (MPEG-TS, MPEG-PS,
    raw streams) are decoded straight through: FFmpeg seeks in them by timestamp search,
    which can land past the last keyframe (no frames at all) or give other timestamps
    than a straight decode does. Each seek is checked: landing after the wanted time, or
    finding no frame at all, rewinds and decodes straight through.
    """
    tb = stream.time_base
    tb_seconds = float(tb) if tb is not None else 0.0
    rate = header.fps or header.guessed_fps or 25.0
    seeking = bool(keyframes) and tb is not None and _has_seek_index(header.container)
    last_t: float | None = None
    last_duration = 1.0 / rate
    start = selector.sampling.start
    seek_to: float | None = start if seeking and start is not None and start > header.start_time else None
    last_seek = -math.inf
    reached_eof = False
    # Skipping frames needs their times; keyframes_only already skips everything else.
    skip_ahead = selector.next_wanted if tb is not None and not selector.sampling.keyframes_only else None
    while True:
        landing_check: float | None = None
        seeked = seek_to is not None
        if seek_to is not None:
            # Land on the keyframe at or before the wanted time, then decode forward.
            report.seeks += 1
            try:
                container.seek(max(0, round(seek_to / tb)), stream=stream, backward=True)
                landing_check = seek_to if seek_to > 0 else None
            except av.FFmpegError as exc:
                # A damaged index can make the demuxer refuse to seek: decode on from here
                # (earlier frames are dropped by time), and seek no more in this file.
                report.notes.append(f"seek refused ({_ffmpeg_reason(exc)}); decoding without seeking")
                seeking = seeked = False
            last_seek, seek_to = seek_to, None
        frames_since_seek = 0
        try:
            for frame in _decode_counting(container, stream, report, skip_ahead):
                report.frames_decoded += 1
                frames_since_seek += 1
                if frame.is_corrupt:
                    raise DecodeError(path, f"corrupt frame after {report.frames_decoded - 1} frames")
                if report.rotation is None:
                    report.rotation = _normalize_rotation(path, frame.rotation)
                if frame.pts is None or tb is None:
                    report.pts_synthesized = True
                    seeking = False
                    t = header.start_time if last_t is None else last_t + 1.0 / rate
                else:
                    t = frame.time
                if landing_check is not None:
                    skipped = last_t is None or t > last_t + last_duration + _EPS
                    if t > landing_check + _EPS and skipped:
                        # The demuxer landed after the wanted time: seeking is inexact in
                        # this file, so rewind and decode straight through instead.
                        report.notes.append("inexact seek; decoding without seeking")
                        seeking, seek_to = False, 0.0
                        break
                    landing_check = None
                if last_t is not None and t <= last_t + _EPS:
                    # Re-decoded after a seek, or a repeated pts: time never goes backwards.
                    report.dropped_timestamps += 1
                    continue
                if frame.duration and tb is not None:
                    last_duration = frame.duration * tb_seconds
                last_t = t
                if selector.past_end(t):
                    break
                yield from selector.push(t, frame)
                if selector.done:
                    break
                wanted = selector.next_wanted()
                if seeking and wanted is not None and wanted > last_seek and _seek_pays(t, wanted, keyframes, last_duration):
                    seek_to = wanted
                    break
            else:
                if seeked and seeking and frames_since_seek == 0:
                    # The seek landed where nothing decodes (past the last keyframe, say):
                    # rewind and decode straight through instead.
                    report.notes.append("no frame after a seek; decoding without seeking")
                    seeking, seek_to = False, 0.0
                else:
                    reached_eof = True
        except (av.FFmpegError, DecodeError) as exc:
            if isinstance(exc, DecodeError):
                reason = exc.reason
            else:
                reason = f"decode error after {report.frames_decoded} frames ({_ffmpeg_reason(exc)})"
            # A cut-off file often ends in a damaged packet: say that it was cut off.
            cut = shortfall(header.path, header.container)
            reason = f"{cut}; {reason}" if cut is not None else reason
            if on_error == "raise":
                raise DecodeError(path, reason, frames_decoded=report.frames_decoded) from exc
            report.truncated, report.error = True, reason
        if seek_to is None or report.truncated:
            break
    if reached_eof and last_t is not None and not selector.sampling.keyframes_only:
        reason = _silent_loss(header, report, last_t + last_duration, _frame_interval(header, last_duration))
        if reason is not None:
            if on_error == "raise":
                raise DecodeError(path, reason, frames_decoded=report.frames_decoded)
            report.truncated, report.error = True, reason
    if last_t is not None:
        yield from selector.finish(last_t + last_duration)


# Packets looked at ahead of the one being decoded, to know which frames come after it.
# Covers the reordering of B-frame pyramids (FFmpeg's has_b_frames is at most a few).
_LOOKAHEAD = 6


def _planned_seeks(sampling: Sampling, header: VideoInfo, keyframes: list[float]) -> int:
    """How many seeks a grid sampling (``fps``/``num_frames``) will make, from the keyframe index.

    Walks the grid and applies :func:`_seek_pays` from each grid point to the next, as
    the reader will (approximately: it decides from the frame it is on).
    """
    if not keyframes or not _has_seek_index(header.container) or (sampling.fps is None and sampling.num_frames is None):
        return 0
    start = max(sampling.start or 0.0, header.start_time)
    ends = [e for e in (sampling.end, header.end_time) if e is not None]
    end = min(ends) if ends else keyframes[-1]
    if sampling.fps is not None:
        step = 1.0 / sampling.fps
    else:
        assert sampling.num_frames is not None
        step = (end - start) / sampling.num_frames
    frame = 1.0 / (header.fps or header.guessed_fps or 25.0)
    if step <= _SEEK_MIN_FRAMES * frame:
        return 0  # a seek can never skip enough between grid points this close
    # Past the last keyframe no seek can pay; stopping there also bounds the walk when a
    # damaged header claims a duration of years.
    end = min(end, keyframes[-1] + step)
    points = [start + k * step for k in range(max(0, math.ceil((end - start) / step - _EPS)))]
    return sum(_seek_pays(a, b, keyframes, frame) for a, b in zip(points, points[1:]))


class _PacketLedger:
    """Counts the packets that must each give a frame, for the lost-packets check.

    Packets that decode to no frame by design are left out: those the container marks
    as discarded (an MP4 edit list trims the frames before a stream-copy cut point),
    those before the first keyframe (a capture that starts part-way into a GOP: the
    decoder cannot start there), and those shown before the first frame that came out
    (leading pictures of an open GOP that reference frames before the file's start).
    Plain FFmpeg decoding gives no frame for any of them either.
    """

    def __init__(self) -> None:
        self.packets = 0
        self._keyframe_seen = False
        self._first_time: float | None = None
        self._first_out = False
        self._waiting: list[float | None] = []  # packet times until the first frame is out

    def sent(self, packet: av.Packet, t: float | None) -> None:
        """A packet decoded in normal mode (not skipped)."""
        self._keyframe_seen = self._keyframe_seen or packet.is_keyframe
        if not packet.size or packet.is_discard or not self._keyframe_seen:
            return
        if not self._first_out:
            self._waiting.append(t)
        elif self._counts(t):
            self.packets += 1

    def frame_out(self, frame: av.VideoFrame) -> None:
        if self._first_out:
            return
        self._first_out = True
        self._first_time = frame.time
        self.packets += sum(1 for t in self._waiting if self._counts(t))
        self._waiting.clear()

    def _counts(self, t: float | None) -> bool:
        return t is None or self._first_time is None or t >= self._first_time - _EPS


def _decode_counting(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    report: _Report,
    wanted: Callable[[], float | None] | None,
) -> Iterator[av.VideoFrame]:
    """``container.decode(stream)``, skipping frames that cannot matter to the sampling.

    With ``wanted`` (the earliest time a kept frame can have), a packet is decoded in
    FFmpeg's ``skip_frame=NONREF`` mode when another packet - already sent or in a short
    look-ahead - shows a frame after it and still before the wanted time: then this
    frame can neither be kept nor decide which frame is kept, and if no other frame
    references it the decoder drops it unseen. The frame that will be kept always has
    no such successor, so it is always decoded.

    Counts the packets that must give a frame in ``report.packets`` (see
    :class:`_PacketLedger`), for the lost-packets check.
    """
    ctx = stream.codec_context
    tb = float(stream.time_base) if stream.time_base is not None else None
    pending: deque[tuple[av.Packet, float | None]] = deque()  # with each packet's time
    sent: deque[float] = deque(maxlen=_LOOKAHEAD)
    ledger = _PacketLedger()
    mode = "DEFAULT"
    if wanted is not None:
        ctx.skip_frame = mode  # whatever an abandoned earlier pass left set

    def decode(packet: av.Packet, t: float | None) -> list[av.VideoFrame]:
        nonlocal mode
        want = wanted() if wanted is not None else None
        skip = False
        if want is not None and t is not None and not packet.is_keyframe:
            later = (u for _, u in pending if u is not None)
            skip = any(t < u <= want - _EPS for u in (*sent, *later))
        if t is not None:
            sent.append(t)
        new_mode = "NONREF" if skip else "DEFAULT"
        if new_mode != mode:
            ctx.skip_frame = mode = new_mode
        if not skip:
            ledger.sent(packet, t)
        frames = packet.decode()
        if frames:
            ledger.frame_out(frames[0])
        report.packets = ledger.packets
        return frames

    try:
        for packet in container.demux(stream):
            pending.append((packet, packet.pts * tb if packet.pts is not None and tb is not None else None))
            if len(pending) > _LOOKAHEAD:
                yield from decode(*pending.popleft())
        while pending:
            yield from decode(*pending.popleft())
    finally:
        # Also when the caller leaves early to seek: the next pass must start decoding
        # every frame, or it silently loses the non-reference frames after the seek.
        if mode != "DEFAULT":
            ctx.skip_frame = "DEFAULT"


def _frame_interval(header: VideoInfo, last_duration: float) -> float:
    rate = header.fps or header.guessed_fps
    return max(last_duration, 1.0 / rate if rate else 0.0)


def _silent_loss(header: VideoInfo, report: _Report, shown_until: float, frame: float) -> str | None:
    """Why a stream that decoded to its end without an error still lost frames, if it did.

    FFmpeg drops damaged packets and ends cut-off files quietly. Three checks catch that:
    packets that produced no frame (only meaningful without seeks, where every packet
    was decoded once), a file shorter than its container declares
    (:func:`tdvideo._integrity.shortfall`), and frames ending more than two frame
    intervals before the video stream's declared end. The last check is skipped when
    the only duration known is the container's and other streams (longer audio) may
    account for it.
    """
    cut = shortfall(header.path, header.container)
    if cut is not None:
        return cut
    if report.seeks == 0 and report.packets > report.frames_decoded:
        lost = report.packets - report.frames_decoded
        return f"{lost} of {report.packets} packets decoded to no frame (damaged data)"
    expected = header.end_time
    own = header.duration_source in ("stream", "tag") or not header.other_streams
    if expected is not None and own and shown_until < expected - max(2 * frame, 0.05) - _EPS:
        return f"frames end at {shown_until:.3f} s but the stream's header says {expected:.3f} s (truncated file?)"
    return None


def iter_video(
    path: str | Path,
    *,
    chunk_frames: int = 64,
    chunk_bytes: int | None = None,
    sampling: Sampling | None = None,
    size: Size | None = None,
    crop: Size | None = None,
    interpolation: Interpolation = "bilinear",
    threads: int = 0,
    on_error: OnError = "raise",
    **sampling_options: Any,
) -> Iterator[VideoClip]:
    """Stream a video as :class:`VideoClip` chunks of at most ``chunk_frames`` frames.

    Memory stays bounded by one chunk (plus the decoder's own buffers) whatever the
    video's length. With clip windows (``clip_len``) each chunk holds whole windows:
    ``frames`` is ``(B, L, C, H, W)``.

    Args:
        path: the video file.
        chunk_frames: frames per yielded chunk (at least one window with clip windows).
        chunk_bytes: also at most this many bytes of frames per chunk (at least one
            frame or window), so that large frames make smaller chunks.
        sampling: a :class:`Sampling`; or pass its fields as keywords
            (``fps=``, ``stride=``, ``num_frames=``, ``start=``, ``end=``, ``clip_len=``,
            ``clip_stride=``, ``keyframes_only=``).
        size: ``S`` scales the short side to S; ``(H, W)`` resizes to exactly that.
        crop: center crop ``S`` or ``(H, W)`` after resizing.
        interpolation: swscale algorithm, one of bilinear, bicubic, area, nearest,
            lanczos, fast_bilinear.
        threads: FFmpeg decoder threads (``0``: FFmpeg picks). Scaling uses one thread,
            which is fastest for small output frames.
        on_error: ``"raise"`` a :class:`DecodeError` when decoding fails part-way, or
            ``"keep"`` the frames decoded so far and mark the clip ``truncated``.

    Raises:
        VideoOpenError, NoVideoStreamError, DecodeError, EmptyVideoError, UsageError.
    """
    sampling = resolve_sampling(sampling, sampling_options)
    check_size("size", size)
    check_size("crop", crop)
    if interpolation not in _SWS_INTERPOLATION:
        raise UsageError(f"interpolation must be one of {', '.join(_SWS_INTERPOLATION)}; got {interpolation!r}")
    if on_error not in ("raise", "keep"):
        raise UsageError(f"on_error must be 'raise' or 'keep', got {on_error!r}")
    if not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise UsageError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    if chunk_bytes is not None and (not isinstance(chunk_bytes, int) or chunk_bytes < 1):
        raise UsageError(f"chunk_bytes must be a positive integer, got {chunk_bytes!r}")
    sws_interp = _SWS_INTERPOLATION[interpolation]

    with _open(path) as container:
        stream = _video_stream(container, path)
        keyframes = _keyframe_times(stream)
        header = _header_info(container, stream, path, keyframes)
        # Frame threading makes every seek wait for its pipeline to drain and refill;
        # when the sampling will seek again and again, slice threading is faster. Files
        # that declare no length (MPEG-TS, MPEG-PS, raw streams) show a cut only as a
        # damaged last frame, and with frame threads FFmpeg flags that frame only some of
        # the time (7 runs in 12 here); slice threading flags it every time.
        seeky = _planned_seeks(sampling, header, keyframes) >= 2
        stream.thread_type = "SLICE" if seeky or not _has_seek_index(header.container) else "AUTO"
        stream.codec_context.thread_count = threads
        if not CODED_LIMIT.allows(header.raw_height, header.raw_width):
            raise UnsupportedVideoError(
                path, f"coded frames of {header.raw_width}x{header.raw_height} are over the frame limits ({CODED_LIMIT})"
            )
        # The decoder refuses frames over the limit too, should the size change part-way.
        stream.codec_context.options = {"max_pixels": str(CODED_LIMIT.pixels)}
        if sampling.keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        if sampling.num_frames is not None and sampling.end is None and header.end_time is None:
            raise UnsupportedVideoError(path, "num_frames needs the video's duration, which its header does not give; set an end time")
        selector: FrameSelector[av.VideoFrame] = FrameSelector(sampling, stream_end=header.end_time)
        report = _Report()
        kept = _kept_frames(path, container, stream, header, keyframes, selector, report, on_error)

        geometry: _Geometry | None = None
        info = header

        def converted() -> Iterator[tuple[float, np.ndarray]]:
            nonlocal geometry, info
            for t, frame in kept:
                if geometry is None:
                    # Rotation is only known once a frame is decoded, and the frame's own
                    # size is the one to trust (a damaged header may say 0 x 0).
                    info = replace(header, raw_width=frame.width, raw_height=frame.height).rotated(report.rotation or 0)
                    geometry = _Geometry.plan(info, size, crop)
                    window = (sampling.clip_len or 1) * geometry.frame_bytes
                    if window > MAX_WINDOW_BYTES:
                        raise UnsupportedVideoError(
                            path,
                            f"a window of {sampling.clip_len} frames of {'x'.join(map(str, geometry.out_shape))} "
                            f"would take {window / 2**30:.1f} GiB "
                            f"(at most {MAX_WINDOW_BYTES / 2**30:.0f} GiB); give a smaller size or clip_len",
                        )
                try:
                    array = geometry.apply(frame, sws_interp, 1)
                except av.FFmpegError as exc:
                    reason = f"cannot convert frame at {t:.3f} s to RGB ({_ffmpeg_reason(exc)})"
                    if on_error == "raise":
                        raise DecodeError(path, reason, frames_decoded=report.frames_decoded) from exc
                    report.truncated, report.error = True, reason
                    return
                yield t, array

        def per_chunk() -> int:
            frames = chunk_frames
            if chunk_bytes is not None and geometry is not None:
                frames = min(frames, max(1, chunk_bytes // geometry.frame_bytes))
            if sampling.clip_len is not None:
                frames = max(1, frames // sampling.clip_len) * sampling.clip_len
            return frames

        if sampling.windowed:
            assert sampling.clip_len is not None
            items: Iterator[tuple[float, np.ndarray]] = (
                item
                for window in windows(converted(), clip_len=sampling.clip_len, clip_stride=sampling.clip_stride)
                for item in window
            )
        else:
            items = converted()

        emitted = 0
        for batch, is_last in _batched_hold_last(items, per_chunk):
            stacked = np.stack([a for _, a in batch])  # (T, H, W, C): the one copy per frame
            frames = torch.from_numpy(stacked).permute(0, 3, 1, 2)  # (T, C, H, W), channels_last
            times = torch.tensor([t for t, _ in batch], dtype=torch.float64)
            if sampling.clip_len is not None:
                frames = frames.unflatten(0, (-1, sampling.clip_len))
                times = times.unflatten(0, (-1, sampling.clip_len))
            emitted += len(batch)
            # Truncation is only known at the end, so the last chunk is held back until then.
            yield VideoClip(
                frames,
                times,
                info,
                pts_synthesized=report.pts_synthesized,
                truncated=is_last and report.truncated,
                error=report.error if is_last else None,
                frames_decoded=report.frames_decoded,
                seeks=report.seeks,
            )
        if report.dropped_timestamps:
            report.notes.append(f"{report.dropped_timestamps} frames dropped for repeating an earlier time")
        if report.notes:
            log.debug("%s: %s", path, "; ".join(report.notes))
        if emitted == 0:
            if report.truncated:
                raise DecodeError(path, report.error or "decode error", frames_decoded=report.frames_decoded)
            if report.frames_decoded == 0:
                cut = shortfall(header.path, header.container)
                if cut is not None:
                    raise DecodeError(path, f"{cut}; no frames could be decoded")
                raise EmptyVideoError(path, "no frames could be decoded")
            raise EmptyVideoError(
                path,
                f"sampling {sampling.to_dict() or 'all frames'} kept no frames "
                f"out of {report.frames_decoded} decoded",
            )


def _batched_hold_last(items: Iterator[Any], size: Callable[[], int]) -> Iterator[tuple[list[Any], bool]]:
    """Batches of ``size()`` items, each with a flag telling whether it is the last one.

    ``size`` is asked again for each batch (it may only be known once items flow). A full
    batch is held until the next item arrives, so the flag is known when it is yielded;
    memory stays at most one batch plus one item.
    """
    batch: list[Any] = []
    for item in items:
        if len(batch) >= size():
            yield batch, False
            batch = []
        batch.append(item)
    if batch:
        yield batch, True


def read_video(path: str | Path, **options: Any) -> VideoClip:
    """Decode a whole video (after sampling) into one :class:`VideoClip`.

    Takes the same keyword options as :func:`iter_video`. For long videos prefer
    :func:`iter_video`: this holds every kept frame in memory at once.
    """
    # One chunk: the frames are stacked once, with no concatenation afterwards.
    options.setdefault("chunk_frames", sys.maxsize)
    chunks = list(iter_video(path, **options))
    first, last = chunks[0], chunks[-1]
    return VideoClip(
        frames=torch.cat([c.frames for c in chunks]) if len(chunks) > 1 else first.frames,
        timestamps=torch.cat([c.timestamps for c in chunks]),
        info=first.info,
        pts_synthesized=any(c.pts_synthesized for c in chunks),
        truncated=last.truncated,
        error=last.error,
        frames_decoded=last.frames_decoded,
        seeks=last.seeks,
    )
