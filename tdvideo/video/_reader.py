"""Decoding one video into chunks of uint8 frames, in NumPy (no torch: decoding workers use this).

:func:`read_chunks` opens a video, plans how to read it, and streams :class:`RawChunk`s.
The decoding state lives in a :class:`Reader`: where it is, what it has kept, whether
it still seeks, and what it has seen that a damage check needs. Frames that the sampling
drops are never converted; kept ones are converted and resized in one swscale call.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import av
import numpy as np

from .._types import Interpolation, OnError, Size
from ..errors import DecodeError, EmptyVideoError, UnsupportedVideoError, UsageError, show_path
from ..sampling import EPS, FrameSelector, Sampling, windows
from ..storage import Url, location
from ._geometry import CODED_LIMIT, INTERPOLATIONS, MAX_WINDOW_BYTES, Geometry, check_size
from ._index import has_seek_index, keyframe_times, planned_seeks, seek_pays
from ._integrity import check_length, shortfall
from ._probe import VideoInfo, ffmpeg_reason, header_info, normalize_rotation, open_video, video_stream

__all__ = ["OnError", "RawChunk", "ReadOptions", "Reader", "read_chunks"]

log = logging.getLogger(__package__)  # the public package: its modules are private

# Packets looked at ahead of the one being decoded, to know which frames come after it.
# Covers the reordering of B-frame pyramids (FFmpeg's has_b_frames is at most a few).
_LOOKAHEAD = 6


@dataclass
class RawChunk:
    """Decoded frames of one video, or one chunk of them, as NumPy arrays.

    ``frames`` is uint8 ``(T, H, W, 3)`` (``T`` = windows x ``clip_len`` with clip
    windows); ``timestamps`` float64 ``(T,)`` seconds. The flags are those of
    :class:`tdvideo.VideoClip`.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    info: VideoInfo
    clip_len: int | None = None
    pts_synthesized: bool = False
    truncated: bool = False
    error: str | None = None
    frames_decoded: int = 0
    seeks: int = 0


@dataclass
class Report:
    """What happened while decoding one video."""

    frames_decoded: int = 0
    packets: int = 0  # packets that had to give a frame (see _PacketLedger)
    pts_synthesized: bool = False
    truncated: bool = False
    error: str | None = None
    seeks: int = 0
    rotation: int | None = None
    dropped_timestamps: int = 0
    notes: list[str] = field(default_factory=list)


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
        return t is None or self._first_time is None or t >= self._first_time - EPS


def _decode_packets(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    report: Report,
    wanted: Callable[[], float | None] | None,
) -> Iterator[av.VideoFrame]:
    """``container.decode(stream)``, skipping frames that cannot matter to the sampling.

    With ``wanted`` (the earliest time a kept frame can have), a packet is decoded in
    FFmpeg's ``skip_frame=NONREF`` mode when another packet - already sent or in a short
    look-ahead - shows a frame after it and still before the wanted time: then this
    frame can neither be kept nor decide which frame is kept, and if no other frame
    references it the decoder drops it unseen. The frame that will be kept always has
    no such successor, so it is always decoded.
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
            skip = any(t < u <= want - EPS for u in (*sent, *later))
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


class Reader:
    """One video's decoding state; :meth:`frames` yields the (time, frame) pairs the sampling keeps.

    The reader seeks only with the keyframe index of a container that has one (MP4/MOV,
    Matroska/WebM, AVI, FLV): it knows where every seek lands. Others (MPEG-TS, MPEG-PS,
    raw streams) are decoded straight through: FFmpeg seeks in them by timestamp search,
    which can land past the last keyframe (no frames at all) or give other timestamps
    than a straight decode does. Each seek is checked: landing after the wanted time, or
    finding no frame at all, rewinds and decodes straight through.
    """

    def __init__(
        self,
        path: str | Path,
        container: av.container.InputContainer,
        stream: av.video.stream.VideoStream,
        header: VideoInfo,
        keyframes: list[float],
        sampling: Sampling,
        on_error: OnError,
    ) -> None:
        self.path = path
        self.container = container
        self.stream = stream
        self.header = header
        self.keyframes = keyframes
        self.selector: FrameSelector[av.VideoFrame] = FrameSelector(sampling, stream_end=header.end_time)
        self.on_error = on_error
        self.report = Report()
        self.tb = stream.time_base
        self.seeking = bool(keyframes) and self.tb is not None and has_seek_index(header.container)
        self.last_t: float | None = None  # the last frame's time
        self.last_duration = header.frame_interval  # how long it is shown
        self.last_seek = -math.inf
        self.reached_eof = False
        # Skipping frames needs their times; keyframes_only already skips everything else.
        keyframes_only = sampling.keyframes_only
        self._wanted = self.selector.next_wanted if self.tb is not None and not keyframes_only else None

    def frames(self) -> Iterator[tuple[float, av.VideoFrame]]:
        start = self.selector.sampling.start
        seek_to = start if self.seeking and start is not None and start > self.header.start_time else None
        while True:
            seek_to = yield from self._pass(seek_to)
            if seek_to is None or self.report.truncated:
                break
        if self.reached_eof and self.last_t is not None and not self.selector.sampling.keyframes_only:
            reason = self._silent_loss()
            if reason is not None:
                self._fail(reason)
        if self.last_t is not None:
            yield from self.selector.finish(self.last_t + self.last_duration)

    def _pass(self, seek_to: float | None) -> Iterator[tuple[float, av.VideoFrame]]:
        """Seek (if asked), then decode until the sampling is done, a seek pays, or the end.

        Returns where to seek next, or None to stop.
        """
        landing: float | None = None
        seeked = seek_to is not None
        if seek_to is not None:
            landing = self._seek(seek_to)
            seeked = self.seeking
        frames_since_seek = 0
        try:
            for frame in _decode_packets(self.container, self.stream, self.report, self._wanted):
                frames_since_seek += 1
                t = self._time_of(frame)
                if landing is not None:
                    if t > landing + EPS and (self.last_t is None or t > self.last_t + self.last_duration + EPS):
                        # The demuxer landed after the wanted time: seeking is inexact in
                        # this file, so rewind and decode straight through instead.
                        return self._stop_seeking("inexact seek")
                    landing = None
                if self.last_t is not None and t <= self.last_t + EPS:
                    # Re-decoded after a seek, or a repeated pts: time never goes backwards.
                    self.report.dropped_timestamps += 1
                    continue
                if frame.duration and self.tb is not None:
                    self.last_duration = frame.duration * float(self.tb)
                self.last_t = t
                if self.selector.past_end(t):
                    return None
                yield from self.selector.push(t, frame)
                if self.selector.done:
                    return None
                wanted = self.selector.next_wanted()
                if (
                    self.seeking
                    and wanted is not None
                    and wanted > self.last_seek
                    and seek_pays(t, wanted, self.keyframes, self.last_duration)
                ):
                    return wanted
        except (av.FFmpegError, DecodeError) as exc:
            reason = exc.reason if isinstance(exc, DecodeError) else (
                f"decode error after {self.report.frames_decoded} frames ({ffmpeg_reason(exc)})"
            )
            # A cut-off file often ends in a damaged packet: say that it was cut off.
            cut = shortfall(self.header.source or self.header.path, self.header.container)
            self._fail(f"{cut}; {reason}" if cut is not None else reason, exc)
            return None
        if seeked and self.seeking and frames_since_seek == 0:
            # The seek landed where nothing decodes (past the last keyframe, say).
            return self._stop_seeking("no frame after a seek")
        self.reached_eof = True
        return None

    def _seek(self, target: float) -> float | None:
        """Seek to the keyframe at or before ``target``; the time the landing must be checked against."""
        self.report.seeks += 1
        self.last_seek = target
        try:
            self.container.seek(max(0, round(target / self.tb)), stream=self.stream, backward=True)
        except av.FFmpegError as exc:
            # A damaged index can make the demuxer refuse to seek: decode on from here
            # (earlier frames are dropped by time), and seek no more in this file.
            self.report.notes.append(f"seek refused ({ffmpeg_reason(exc)}); decoding without seeking")
            self.seeking = False
            return None
        return target if target > 0 else None

    def _stop_seeking(self, why: str) -> float:
        self.report.notes.append(f"{why}; decoding without seeking")
        self.seeking = False
        return 0.0

    def _time_of(self, frame: av.VideoFrame) -> float:
        """The frame's presentation time; checks it is not corrupt, and learns the rotation."""
        report = self.report
        report.frames_decoded += 1
        if frame.is_corrupt:
            raise DecodeError(self.path, f"corrupt frame after {report.frames_decoded - 1} frames")
        if report.rotation is None:
            report.rotation = normalize_rotation(self.path, frame.rotation)
        if frame.pts is None or self.tb is None:
            report.pts_synthesized = True
            self.seeking = False
            if self.last_t is None:
                return self.header.start_time
            return self.last_t + self.header.frame_interval
        return frame.time

    def _fail(self, reason: str, cause: BaseException | None = None) -> None:
        if self.on_error == "raise":
            raise DecodeError(self.path, reason, frames_decoded=self.report.frames_decoded) from cause
        self.report.truncated, self.report.error = True, reason

    def _silent_loss(self) -> str | None:
        """Why a stream that decoded to its end without an error still lost frames, if it did."""
        assert self.last_t is not None
        frame = max(self.last_duration, self.header.frame_interval)
        return silent_loss(self.header, self.report, self.last_t + self.last_duration, frame)


def silent_loss(header: VideoInfo, report: Report, shown_until: float, frame: float) -> str | None:
    """Why a stream that decoded to its end without an error still lost frames, if it did.

    FFmpeg drops damaged packets and ends cut-off files quietly. Three checks catch that:
    a file shorter than its container declares (:func:`~tdvideo.video._integrity.check_length`),
    packets that produced no frame (only meaningful without seeks, where every packet was
    decoded once), and frames ending more than two frame intervals (``frame`` seconds)
    before the video stream's declared end. The last check is skipped when the only
    duration known is the container's and other streams (longer audio) may account for it,
    and when the first two show that nothing is missing: the container declares its
    length and the file holds all of it, and every packet gave its frame.
    """
    length = check_length(header.source or header.path, header.container)
    if length.short is not None:
        return length.short
    if report.seeks == 0 and report.packets > report.frames_decoded:
        lost = report.packets - report.frames_decoded
        return f"{lost} of {report.packets} packets decoded to no frame (damaged data)"
    if length.whole and report.seeks == 0:
        # Nothing is missing, so a declared end past the frames is the header's arithmetic
        # (as with FFmpeg's durations of fragmented MP4: see _probe.stream_duration), not a
        # loss; the header is no better evidence than the file it describes.
        return None
    expected = header.end_time
    own = header.duration_source in ("stream", "tag") or not header.other_streams
    if expected is not None and own and shown_until < expected - max(2 * frame, 0.05) - EPS:
        return f"frames end at {shown_until:.3f} s but the stream's header says {expected:.3f} s (truncated file?)"
    return None


def _hold_last(items: Iterator[Any], size: Callable[[], int]) -> Iterator[tuple[list[Any], bool]]:
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


@dataclass(frozen=True, kw_only=True)
class ReadOptions:
    """How :func:`read_chunks` decodes a video: :func:`tdvideo.iter_video`'s arguments.

    Checked when made (:class:`UsageError` naming the bad value), so a bad option fails
    before any video is opened, and a worker receives options that are known to be good.
    """

    sampling: Sampling = field(default_factory=Sampling)
    chunk_frames: int = 64
    chunk_bytes: int | None = None
    size: Size | None = None
    crop: Size | None = None
    interpolation: Interpolation = "bilinear"
    threads: int = 0
    on_error: OnError = "raise"
    stream: int = 0

    def __post_init__(self) -> None:
        check_size("size", self.size)
        check_size("crop", self.crop)
        if self.interpolation not in INTERPOLATIONS:
            raise UsageError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {self.interpolation!r}")
        if self.on_error not in ("raise", "keep"):
            raise UsageError(f"on_error must be 'raise' or 'keep', got {self.on_error!r}")
        for name, least in (("chunk_frames", 1), ("chunk_bytes", 1), ("threads", 0), ("stream", 0)):
            value = getattr(self, name)
            if value is None and name == "chunk_bytes":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UsageError(f"{name} must be an integer of at least {least}, got {value!r}")


def read_chunks(path: str | Path | Url, options: ReadOptions) -> Iterator[RawChunk]:
    """Stream a video as :class:`RawChunk`s.

    Raises:
        VideoOpenError, NoVideoStreamError, DecodeError, EmptyVideoError,
        UnsupportedVideoError.
    """
    path = location(path)  # a URL's query string and options stay with it, out of messages
    sampling, size, crop = options.sampling, options.size, options.crop
    interpolation, on_error = options.interpolation, options.on_error
    chunk_frames, chunk_bytes = options.chunk_frames, options.chunk_bytes
    with open_video(path) as container:
        stream = video_stream(container, path, options.stream)
        keyframes = keyframe_times(stream)
        header = header_info(container, stream, path, keyframes)
        _configure_decoder(stream, header, sampling, keyframes, options.threads)
        if sampling.num_frames is not None and sampling.end is None and header.end_time is None:
            raise UnsupportedVideoError(path, "num_frames needs the video's duration, which its header does not give; set an end time")
        reader = Reader(path, container, stream, header, keyframes, sampling, on_error)
        report = reader.report
        geometry: Geometry | None = None
        info = header

        kept = 0  # counted before windowing: too few kept for one window needs its own message

        def converted() -> Iterator[tuple[float, np.ndarray]]:
            nonlocal geometry, info, kept
            for t, frame in reader.frames():
                kept += 1
                if geometry is None:
                    # Rotation is only known once a frame is decoded, and the frame's own
                    # size is the one to trust (a damaged header may say 0 x 0).
                    info = replace(header, raw_width=frame.width, raw_height=frame.height).rotated(report.rotation or 0)
                    geometry = _plan(info, size, crop, sampling.clip_len)
                try:
                    array = geometry.apply(frame, interpolation)
                except av.FFmpegError as exc:
                    reason = f"cannot convert frame at {t:.3f} s to RGB ({ffmpeg_reason(exc)})"
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

        items: Iterator[tuple[float, np.ndarray]] = converted()
        if sampling.clip_len is not None:
            items = (item for window in windows(items, clip_len=sampling.clip_len, clip_stride=sampling.clip_stride) for item in window)
        emitted = 0
        for batch, is_last in _hold_last(items, per_chunk):
            emitted += len(batch)
            # Truncation is only known at the end, so the last chunk is held back until then.
            yield RawChunk(
                frames=np.stack([a for _, a in batch]),  # the one copy of each kept frame
                timestamps=np.array([t for t, _ in batch], dtype=np.float64),
                info=info,
                clip_len=sampling.clip_len,
                pts_synthesized=report.pts_synthesized,
                truncated=is_last and report.truncated,
                error=report.error if is_last else None,
                frames_decoded=report.frames_decoded,
                seeks=report.seeks,
            )
        if report.dropped_timestamps:
            report.notes.append(f"{report.dropped_timestamps} frames dropped for repeating an earlier time")
        if report.notes:
            log.debug("%s: %s", show_path(path), "; ".join(report.notes))
        if emitted == 0:
            _raise_empty(path, header, sampling, report, kept)


def _configure_decoder(
    stream: av.video.stream.VideoStream, header: VideoInfo, sampling: Sampling, keyframes: list[float], threads: int
) -> None:
    """Threading, frame-size limit and keyframe skipping, set before the first packet is decoded."""
    # Frame threading makes every seek wait for its pipeline to drain and refill; when the
    # sampling will seek again and again, slice threading is faster. Files that declare no
    # length (MPEG-TS, MPEG-PS, raw streams) show a cut only as a damaged last frame, and
    # with frame threads FFmpeg flags that frame only some of the time; slice threading
    # flags it every time (benchmarks/RESULTS.md has both figures).
    start = max(sampling.start or 0.0, header.start_time)
    end = min((e for e in (sampling.end, header.end_time) if e is not None), default=None)
    seeky = has_seek_index(header.container) and (
        planned_seeks(sampling, start=start, end=end, keyframes=keyframes, frame=header.frame_interval) >= 2
    )
    stream.thread_type = "SLICE" if seeky or not has_seek_index(header.container) else "AUTO"
    stream.codec_context.thread_count = threads
    if not CODED_LIMIT.allows(header.raw_height, header.raw_width):
        raise UnsupportedVideoError(
            header.path, f"coded frames of {header.raw_width}x{header.raw_height} are over the frame limits ({CODED_LIMIT})"
        )
    # The decoder refuses frames over the limit too, should the size change part-way.
    stream.codec_context.options = {"max_pixels": str(CODED_LIMIT.pixels)}
    if sampling.keyframes_only:
        stream.codec_context.skip_frame = "NONKEY"


def _plan(info: VideoInfo, size: Size | None, crop: Size | None, clip_len: int | None) -> Geometry:
    geometry = Geometry.plan(
        info.path,
        coded_width=info.raw_width,
        coded_height=info.raw_height,
        sample_aspect_ratio=info.sample_aspect_ratio,
        rotation=info.rotation,
        size=size,
        crop=crop,
    )
    window = (clip_len or 1) * geometry.frame_bytes
    if window > MAX_WINDOW_BYTES:
        raise UnsupportedVideoError(
            info.path,
            f"a window of {clip_len} frames of {'x'.join(map(str, geometry.out_shape))} would take "
            f"{window / 2**30:.1f} GiB (at most {MAX_WINDOW_BYTES / 2**30:.0f} GiB); give a smaller size or clip_len",
        )
    return geometry


def _raise_empty(path: str | Path, header: VideoInfo, sampling: Sampling, report: Report, kept: int) -> None:
    if report.truncated:
        raise DecodeError(path, report.error or "decode error", frames_decoded=report.frames_decoded)
    if report.frames_decoded == 0:
        cut = shortfall(header.source or header.path, header.container)
        if cut is not None:
            raise DecodeError(path, f"{cut}; no frames could be decoded")
        raise EmptyVideoError(path, "no frames could be decoded")
    if kept and sampling.clip_len is not None:
        # The sampling did keep frames: what is short is the video, not the sampling's reach.
        of = "" if kept == report.frames_decoded else f" of {report.frames_decoded} decoded"
        raise EmptyVideoError(
            path, f"{kept} frames kept{of}, fewer than one window of {sampling.clip_len} frames (clip_len)"
        )
    raise EmptyVideoError(
        path, f"sampling {sampling.to_dict() or 'all frames'} kept no frames out of {report.frames_decoded} decoded"
    )
