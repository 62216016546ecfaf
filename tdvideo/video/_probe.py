"""Opening a video file and reading what its header says.

Durations are the video stream's own where the file has them: a container's duration
may be that of a longer audio stream. Matroska and FLV declare one duration counted from
time 0, which FFmpeg reports as is, and FFmpeg gives a fragmented MP4 track's as where its
last fragment ends; see :func:`stream_duration`.
"""

from __future__ import annotations

import copy
import math
import os
import stat
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, Literal

import av

from .._system import file_kind
from ..errors import DecodeError, NoVideoStreamError, VideoOpenError, show_path
from ..storage import TarMember, Url, location, open_read, reason
from ._geometry import displayed
from ._index import keyframe_interval, keyframe_times

__all__ = ["DurationSource", "VideoInfo", "ffmpeg_reason", "file_kind", "header_info", "open_video", "probe", "video_stream"]

DurationSource = Literal["stream", "tag", "container"]

# MP4 boxes read at most looking for the first fragment's decode time: it comes right
# after the moov in a fragmented file; the bound keeps a hostile file from costing more.
_MAX_BOXES = 4096

# Real anamorphic video stays within 4:1 or so; 1:129 is a damaged header, and honouring it
# would squeeze a 64-pixel-wide frame to nothing.
_MAX_SAR = 16.0


@dataclass(frozen=True)
class VideoInfo:
    """What the container header (and the first frame, for rotation) says about a video.

    ``width``/``height`` are as displayed, after rotation; ``raw_width``/``raw_height``
    are the coded frame size. ``frames`` is the header's count, ``None`` when unknown.
    ``duration`` is the video stream's, from its first frame; ``duration_source`` says
    where it was read: the stream's own header (``"stream"``), a per-stream ``DURATION``
    tag (Matroska, ``"tag"``), or the whole container (``"container"``, which may
    include longer audio). ``stream`` is the video stream read (counting video streams
    only); ``video_streams`` lists every one: index, codec, size, frame rate, frames.
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
    stream: int = 0
    video_streams: list[dict[str, Any]] = field(default_factory=list)
    # Where it was read from, to read it again (a URL keeps its query string and options):
    # not part of what is recorded.
    source: Any = field(default=None, repr=False, compare=False)

    def rotated(self, rotation: int) -> VideoInfo:
        """This info for a display rotation of ``rotation`` degrees (0/90/180/270)."""
        width, height = displayed(self.raw_width, self.raw_height, rotation)
        return replace(self, rotation=rotation, width=width, height=height)

    @property
    def end_time(self) -> float | None:
        """When the stream ends (start time + duration), if the header says."""
        return None if self.duration is None else self.start_time + self.duration

    @property
    def frame_interval(self) -> float:
        """Seconds between frames by the header's frame rate (25 fps when it gives none)."""
        return 1.0 / (self.fps or self.guessed_fps or 25.0)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "source"}


def ffmpeg_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


@contextmanager
def open_video(path: str | Path | Url) -> Iterator[av.container.InputContainer]:
    """Open a video for reading, a local file or a store's object (a :class:`~tdvideo.storage.Url`,
    read through range requests); a missing, empty, special or unreadable one is a
    :class:`VideoOpenError`."""
    source = location(path)
    if isinstance(source, (Url, TarMember)):
        with _open_object(source) as container:
            yield container
        return
    p = source
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
        container = av.open(str(p), mode="r", metadata_errors="replace")
    except av.FFmpegError as exc:
        raise VideoOpenError(p, f"not a video FFmpeg can open ({ffmpeg_reason(exc)})") from exc
    except OSError as exc:
        raise VideoOpenError(p, f"cannot read: {exc.strerror or exc}") from exc
    with container:
        yield container


@contextmanager
def _open_object(url: Url | TarMember) -> Iterator[av.container.InputContainer]:
    """A store's object (or a tar member) opened for FFmpeg through a file object that reads
    it by ranges."""
    if isinstance(url, TarMember) and url.size == 0:
        raise VideoOpenError(url, "empty member (0 bytes)")
    try:
        fh = open_read(url)  # one request for what the store says of it, as it opens
    except FileNotFoundError:
        raise VideoOpenError(url, "no such object") from None
    except PermissionError as exc:
        raise VideoOpenError(url, f"access denied ({reason(exc)})") from None
    except (OSError, RuntimeError, ValueError) as exc:  # what fsspec's stores raise for a failed request
        raise VideoOpenError(url, f"cannot read: {reason(exc).removeprefix(f'{url}: ')}") from None
    with fh:
        if isinstance(url, Url):
            if fh.raw.info.get("type") == "directory":  # type: ignore[attr-defined]
                raise VideoOpenError(url, "is a folder (a prefix), not a video file")
            if not fh.raw.size:  # type: ignore[attr-defined]
                raise VideoOpenError(url, "empty object (0 bytes)")
        try:
            container = av.open(fh, mode="r", metadata_errors="replace")
        except av.FFmpegError as exc:
            raise VideoOpenError(url, f"not a video FFmpeg can open ({ffmpeg_reason(exc)})") from exc
        except OSError as exc:
            raise VideoOpenError(url, f"cannot read: {reason(exc).removeprefix(f'{url}: ')}") from exc
        with container:
            yield container


def video_stream(container: av.container.InputContainer, path: str | Path, index: int = 0) -> av.video.stream.VideoStream:
    """Video stream ``index`` (counting video streams only), with a decoder;
    :class:`NoVideoStreamError` otherwise."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise NoVideoStreamError(path, f"no video stream (has: {', '.join(kinds)})")
    if index >= len(container.streams.video):
        raise NoVideoStreamError(path, f"no video stream {index} (it has {len(container.streams.video)}, from 0)")
    stream = container.streams.video[index]
    if stream.codec_context is None:
        raise NoVideoStreamError(path, "no decodable video stream (its codec is unknown to FFmpeg, or its header is damaged)")
    return stream


def normalize_rotation(path: str | Path, rotation: float | None) -> int:
    """The frame's counter-clockwise display rotation as one of 0/90/180/270; else 0 with a warning."""
    if rotation is None or rotation == 0:
        return 0
    if rotation % 90 != 0:
        warnings.warn(f"{show_path(path)}: ignoring display rotation of {rotation} degrees (not a multiple of 90)")
        return 0
    return int(rotation) % 360


def header_info(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    path: str | Path,
    keyframes: list[float],
) -> VideoInfo:
    """What the header says, with rotation 0 (the rotation is only known from a frame)."""
    ctx = stream.codec_context
    tb = stream.time_base
    start = float(stream.start_time * tb) if stream.start_time is not None and tb is not None else 0.0
    duration, source = stream_duration(container, stream, start, media_start=fragments_start(container, stream, path))
    sar = stream.sample_aspect_ratio or ctx.sample_aspect_ratio
    sar_f = float(sar) if sar else 1.0
    if not 1 / _MAX_SAR <= sar_f <= _MAX_SAR:
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
        keyframe_interval=keyframe_interval(keyframes),
        duration_source=source,
        other_streams=len(container.streams) - 1,
        stream=list(container.streams.video).index(stream),
        video_streams=[
            {"index": i, "codec": v.codec_context.name if v.codec_context else None, "width": v.width, "height": v.height,
             "fps": _to_float(v.average_rate), "frames": v.frames or None}
            for i, v in enumerate(container.streams.video)
        ],
        source=location(path),
    )


def stream_duration(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, start: float, *, media_start: float = 0.0
) -> tuple[float | None, DurationSource | None]:
    """The video stream's duration from its start, and where it was read.

    Matroska and FLV declare one duration for the whole file, counted from time 0: a
    Matroska file cut with stream copy that starts at 2 s and ends at 6 s says 6 s (an
    FLV whose B-frames start it at 0.08 s likewise), and FFmpeg reports it as is. So for
    them a declared duration longer than the start time is taken as the end time (a
    lower bound of the end, whichever way the writer meant it).

    For a fragmented MP4 FFmpeg gives as the stream's duration where the last fragment
    ends on the track's media timeline, counted from 0; the media may start later, at
    the first fragment's decode time (``media_start``, see :func:`fragments_start`), and
    that part is no duration.
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
    if source == "stream" and 0 < media_start < declared:
        return declared - media_start, source
    return declared, source


def fragments_start(container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: str | Path) -> float:
    """Seconds into its media timeline where a fragmented MP4 track starts: the decode
    time (``tfdt``) of its first fragment; 0 for other files.

    A track whose sample table in the ``moov`` holds samples starts at 0 (the first
    fragment's decode time follows those samples), so only one whose samples are all in
    fragments (FFmpeg counts no frames in its header) can start later.
    """
    names = set(container.format.name.split(","))
    if not names & {"mov", "mp4"} or stream.frames or stream.time_base is None:
        return 0.0
    try:
        with open_read(location(path)) as fh:
            ticks = _first_tfdt(fh, fh.seek(0, os.SEEK_END), stream.id)
    except OSError:
        return 0.0  # only sharpens the header's duration; reading the file fails later with its own message
    return float(ticks * stream.time_base) if ticks else 0.0


def _boxes(fh: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, where its body starts, where it ends) of each ISO BMFF box between ``start`` and ``end``."""
    offset = start
    while offset + 8 <= end:
        fh.seek(offset)
        size, kind = struct.unpack(">I4s", fh.read(8))
        header = 8
        if size == 1:
            large = fh.read(8)
            if len(large) < 8:
                return
            size, header = struct.unpack(">Q", large)[0], 16
        elif size == 0:
            size = end - offset  # "extends to the end"
        if size < header:
            return  # not a box structure to follow
        yield kind, min(offset + header, end), min(offset + size, end)
        offset += size


def _first_tfdt(fh: BinaryIO, size: int, track_id: int) -> int | None:
    """The base decode time (``tfdt``) of track ``track_id``'s first fragment, in its timescale."""
    budget = _MAX_BOXES

    def boxes(start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
        nonlocal budget
        for box in _boxes(fh, start, end):
            budget -= 1
            if budget < 0:
                return
            yield box

    for kind, start, end in boxes(0, size):
        if kind != b"moof":
            continue
        for kind, traf_start, traf_end in boxes(start, end):
            if kind != b"traf":
                continue
            track: int | None = None
            base: int | None = None
            for kind, body_start, body_end in boxes(traf_start, traf_end):
                fh.seek(body_start)
                body = fh.read(min(body_end - body_start, 12))  # version and flags, then the field
                if kind == b"tfhd" and len(body) >= 8:
                    track = int.from_bytes(body[4:8], "big")
                elif kind == b"tfdt" and len(body) >= (12 if body[0] == 1 else 8):
                    base = int.from_bytes(body[4:12] if body[0] == 1 else body[4:8], "big")  # version 1: 64 bits
            if track == track_id:
                return base
    return None


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


def _to_float(value: Fraction | None) -> float | None:
    return float(value) if value else None


def header_counts(path: str | Path, *, stream: int = 0) -> tuple[float | None, int | None, float | None]:
    """Duration, frame count and frame rate as the header says, without decoding a frame."""
    path = location(path)
    with open_video(path) as container:
        chosen = video_stream(container, path, stream)
        tb = chosen.time_base
        start = float(chosen.start_time * tb) if chosen.start_time is not None and tb is not None else 0.0
        duration, _ = stream_duration(container, chosen, start, media_start=fragments_start(container, chosen, path))
        return duration, chosen.frames or None, _to_float(chosen.average_rate)


def probe(path: str | Path | Url, *, stream: int = 0) -> VideoInfo:
    """Read a video's header (and its first frame, for the display rotation), for its video
    stream ``stream``.

    Raises:
        VideoOpenError: missing, empty or unreadable file.
        NoVideoStreamError: no video stream.
        DecodeError: the first frame cannot be decoded.
    """
    path = location(path)
    with open_video(path) as container:
        chosen = video_stream(container, path, stream)
        try:
            first = next(container.decode(chosen), None)
        except av.FFmpegError as exc:
            raise DecodeError(path, f"cannot decode the first frame ({ffmpeg_reason(exc)})") from exc
        rotation = normalize_rotation(path, first.rotation if first is not None else 0)
        return header_info(container, chosen, path, keyframe_times(chosen)).rotated(rotation)
