"""Which frames to keep: pure timestamp arithmetic, testable without a video.

Every mode is expressed as a streaming :class:`FrameSelector`: frames are pushed in
presentation order with their timestamps, and the selector says which to keep. The
decoder uses the same object, so the selection tested here on bare timestamps is exactly
the selection a video gets.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from .errors import UsageError

__all__ = [
    "EPS", "MAX_FPS", "MAX_GRID_FPS", "MAX_GRID_ROWS", "MAX_SECONDS", "FrameSelector", "Sampling", "grid_count", "grid_rows",
    "resolve_sampling", "select_indices", "windows",
]

P = TypeVar("P")

# Timestamps are floats from pts * time_base; a grid point within this distance of a
# frame's time counts as that frame's time.
EPS = 1e-6
# Times past about 31 years are no video's; bounding them keeps every seek target and
# grid index a representable integer (a start of 1e300 s would overflow the seek).
MAX_SECONDS = 1e9
MAX_FPS = 1e6
# Rows on a fixed grid (``fps_rows="grid"``) repeat frames, so unlike frames they are not
# bounded by the file: a row per millisecond at most, and about 4 million rows a video
# (11 hours at 100 per second; a few hundred MB of timestamps in the metadata).
MAX_GRID_FPS = 1000.0
MAX_GRID_ROWS = 2**22


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Sampling:
    """Which frames of a video to keep. All fields optional; the default keeps every frame.

    Attributes:
        fps: keep frames on a grid of ``fps`` points per second starting at the first
            frame; each grid point takes the last frame shown at or before it. A frame
            is kept once even when several grid points fall on it, so there are never
            more rows than source frames.
        stride: keep every ``stride``-th frame.
        num_frames: keep ``num_frames`` frames spread uniformly over the range.
        start, end: only frames with ``start <= t < end`` (seconds).
        clip_len, clip_stride: group the kept frames into windows of ``clip_len`` frames,
            a new window every ``clip_stride`` kept frames (default ``clip_len``);
            an incomplete last window is dropped.
        keyframes_only: decode keyframes only (fast, coarse); other modes apply on top.
    """

    fps: float | None = None
    stride: int | None = None
    num_frames: int | None = None
    start: float | None = None
    end: float | None = None
    clip_len: int | None = None
    clip_stride: int | None = None
    keyframes_only: bool = False

    def __post_init__(self) -> None:
        chosen = [n for n in ("fps", "stride", "num_frames") if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise UsageError(f"choose one of fps, stride, num_frames; got {', '.join(chosen)}")
        if self.fps is not None and not (_is_number(self.fps) and 1 / MAX_SECONDS <= self.fps <= MAX_FPS):
            raise UsageError(f"fps must be a number in [{1 / MAX_SECONDS:g}, {MAX_FPS:g}], got {self.fps!r}")
        for name in ("stride", "num_frames", "clip_len", "clip_stride"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and 0 <= value <= MAX_SECONDS):
                raise UsageError(f"{name} must be a number of seconds in [0, {MAX_SECONDS:g}], got {value!r}")
        if self.end is not None and self.end <= (self.start or 0.0):
            raise UsageError(f"end ({self.end}) must be after start ({self.start or 0.0})")
        if self.clip_stride is not None and self.clip_len is None:
            raise UsageError("clip_stride needs clip_len")

    @property
    def windowed(self) -> bool:
        return self.clip_len is not None

    @property
    def gridded(self) -> bool:
        """Whether frames are kept on a time grid (``fps`` or ``num_frames``)."""
        return self.fps is not None or self.num_frames is not None

    def grid_step(self, first: float, end: float | None) -> float | None:
        """Seconds between grid points for a range starting at ``first`` and ending at ``end``.

        None without a grid. ``num_frames`` needs ``end``.
        """
        if self.fps is not None:
            return 1.0 / self.fps
        if self.num_frames is not None:
            if end is None:
                raise UsageError("num_frames needs the video's duration or an explicit end time")
            return max(end - first, EPS) / self.num_frames
        return None

    def grid(self, first: float, end: float) -> Iterator[float]:
        """The grid points in ``[first, end)``: where :class:`FrameSelector` keeps frames,
        given a first frame at ``first`` (the reader plans its seeks from these)."""
        step = self.grid_step(first, end)
        if step is None:
            return
        count = max(0, math.ceil((end - first) / step - EPS))
        if self.num_frames is not None:
            count = min(count, self.num_frames)
        for k in range(count):
            yield first + k * step

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that were set, for metadata and cache keys."""
        return {k: v for k, v in asdict(self).items() if v not in (None, False)}


def resolve_sampling(sampling: Sampling | None, options: Mapping[str, Any]) -> Sampling:
    """``sampling``, or a :class:`Sampling` made of its fields given as keywords (not both).

    An unknown keyword is a :class:`UsageError` naming it and the sampling options.
    """
    if sampling is not None and options:
        raise UsageError(f"pass sampling= or sampling keywords, not both (got {', '.join(options)})")
    if sampling is not None:
        return sampling
    fields = list(Sampling.__dataclass_fields__)
    unknown = [key for key in options if key not in fields]
    if unknown:
        close = sorted({m for key in unknown for m in difflib.get_close_matches(key, fields, n=2)})
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"unknown option(s) {', '.join(unknown)}{hint}; sampling options are {', '.join(fields)}")
    return Sampling(**options)


@dataclass
class FrameSelector(Generic[P]):
    """Streaming selection of frames by timestamp.

    ``push(t, payload)`` returns the payloads decided so far (possibly the previous
    frame's: fps and num_frames need one frame of look-ahead to know whether a grid
    point falls before the next frame); ``finish(stop)`` flushes the last one.
    ``stop`` is when the last frame stops being shown (end of stream).

    ``num_frames`` needs the end of the range up front: pass ``stream_end``.
    """

    sampling: Sampling
    stream_end: float | None = None

    def __post_init__(self) -> None:
        s = self.sampling
        self._in_range = 0
        self._pending: tuple[float, P] | None = None
        self._step: float | None = 1.0 / s.fps if s.fps is not None else None
        self._grid_origin: float | None = None
        self._grid_index = 0
        self._max_points: int | None = s.num_frames
        if s.num_frames is not None and self._range_end is None:
            raise UsageError("num_frames needs the video's duration or an explicit end time")

    @property
    def _range_end(self) -> float | None:
        ends = [e for e in (self.sampling.end, self.stream_end) if e is not None]
        return min(ends) if ends else None

    def _grid_point(self) -> float | None:
        """The next grid time not yet assigned a frame, or None when the grid is exhausted."""
        if self._grid_origin is None or self._step is None:
            return None
        if self._max_points is not None and self._grid_index >= self._max_points:
            return None
        return self._grid_origin + self._grid_index * self._step

    def next_wanted(self) -> float | None:
        """Earliest time a future frame could be kept at, or None if any frame could be.

        The decoder seeks ahead when this lies far beyond the current frame.
        """
        start = self.sampling.start
        if self._grid_origin is None:
            return start
        return self._grid_point()

    @property
    def done(self) -> bool:
        """True when no later frame can be kept (past ``end`` or the grid is used up)."""
        return self._grid_origin is not None and self._step is not None and self._grid_point() is None

    def past_end(self, t: float) -> bool:
        end = self.sampling.end
        return end is not None and t >= end - EPS

    def push(self, t: float, payload: P) -> list[tuple[float, P]]:
        s = self.sampling
        if (s.start is not None and t < s.start - EPS) or self.past_end(t):
            return []
        index = self._in_range
        self._in_range += 1
        if self._grid_origin is None:
            self._grid_origin = t
            if s.num_frames is not None:
                self._step = s.grid_step(t, self._range_end)
        if self._step is None:
            stride = s.stride or 1
            return [(t, payload)] if index % stride == 0 else []
        out = self._resolve_pending(t)
        self._pending = (t, payload)
        return out

    def _resolve_pending(self, next_t: float) -> list[tuple[float, P]]:
        """Keep the pending frame if a grid point falls in [its time, next_t)."""
        if self._pending is None:
            return []
        grid = self._grid_point()
        if grid is None or grid >= next_t - EPS:
            return []
        # Skip every grid point that this frame covers: one row per frame at most.
        assert self._step is not None and self._grid_origin is not None
        self._grid_index = max(
            self._grid_index + 1,
            math.ceil((next_t - EPS - self._grid_origin) / self._step),
        )
        return [self._pending]

    def finish(self, stop: float | None = None) -> list[tuple[float, P]]:
        """Flush the last pending frame; ``stop`` is when it stops being shown."""
        if self._pending is None:
            return []
        ends = [e for e in (stop, self._range_end) if e is not None]
        last_t = self._pending[0]
        # Unknown end of display: the last frame covers the grid point at its own time only.
        stop_t = min(ends) if ends else last_t + EPS * 2
        out = self._resolve_pending(max(stop_t, last_t + EPS * 2))
        self._pending = None
        return out


def expected_rows(sampling: Sampling, *, duration: float | None, frames: int | None, fps: float | None) -> int | None:
    """About how many frames ``sampling`` keeps of a video of this header (None: unknown),
    for a progress bar's total: a header's counts are estimates, and VFR is not foreseen."""
    if duration is None and frames is None:
        return None
    start = sampling.start or 0.0
    end = min(e for e in (sampling.end, duration) if e is not None) if (sampling.end or duration) is not None else None
    span = max(0.0, end - start) if end is not None else None
    rate = fps or ((frames / duration) if frames and duration else None)
    if sampling.num_frames is not None:
        kept = sampling.num_frames
    elif sampling.fps is not None and span is not None:
        kept = math.ceil(span * min(sampling.fps, rate or sampling.fps) - EPS)
    elif span is not None and rate is not None:
        kept = -(-round(span * rate) // (sampling.stride or 1))  # every stride-th, the first included
    elif frames is not None and not sampling.start and not sampling.end:
        kept = -(-frames // (sampling.stride or 1))
    else:
        return None
    if sampling.keyframes_only or sampling.clip_len is not None:
        return None
    return max(0, kept)


def grid_count(first: float, last: float, *, step: float, end: float | None) -> int:
    """How many rows :func:`grid_rows` gives for kept frames from ``first`` to ``last``:
    known before a row is made, so that a grid too large for memory is refused first."""
    stop = end if end is not None and end > last else last + 2 * EPS
    return max(0, math.ceil((stop - EPS - first) / step))


def grid_rows(times: Iterable[float], *, step: float, end: float | None) -> tuple[np.ndarray, np.ndarray]:
    """One row per point of an fps grid, for rows kept at distinct frame ``times``.

    The grid starts at the first kept frame (as :class:`FrameSelector`'s does) and runs
    while points fall before ``end`` (when the last frame stops being shown; unknown: the
    last frame covers its own time only). Returns the grid times and, for each, the index
    of the row shown at that time: the last kept frame at or before it (a frame the
    selector kept for several grid points is repeated).
    """
    kept = np.maximum.accumulate(np.asarray(list(times), dtype=np.float64))  # presentation order, never back
    if len(kept) == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    grid = kept[0] + np.arange(grid_count(float(kept[0]), float(kept[-1]), step=step, end=end)) * step
    rows = np.searchsorted(kept, grid + EPS, side="right") - 1  # the last frame at or before each point
    return grid, np.maximum(rows, 0)


def select_indices(
    timestamps: Iterable[float], sampling: Sampling, *, stop: float | None = None
) -> list[int]:
    """Indices of ``timestamps`` that ``sampling`` keeps (windows not applied).

    ``stop`` is the end of the stream (when the last frame stops being shown); it
    defaults to one median frame interval past the last timestamp.
    """
    times = list(timestamps)
    if stop is None and times:
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        stop = times[-1] + (gaps[len(gaps) // 2] if gaps else EPS * 2)
    selector: FrameSelector[int] = FrameSelector(sampling, stream_end=stop)
    kept: list[int] = []
    for i, t in enumerate(times):
        kept.extend(p for _, p in selector.push(t, i))
    kept.extend(p for _, p in selector.finish(stop))
    return kept


def windows(items: Iterable[P], *, clip_len: int, clip_stride: int | None = None) -> Iterator[list[P]]:
    """Group a stream into windows of ``clip_len`` items, one every ``clip_stride`` items.

    Holds at most ``max(clip_len, clip_stride)`` items; an incomplete last window is dropped.
    """
    stride = clip_stride or clip_len
    buffer: list[P] = []
    skip = 0
    for item in items:
        if skip:
            skip -= 1
            continue
        buffer.append(item)
        if len(buffer) == clip_len:
            yield list(buffer)
            if stride >= clip_len:
                buffer.clear()
                skip = stride - clip_len
            else:
                del buffer[:stride]
