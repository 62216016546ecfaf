"""The container's keyframe index, and when a seek pays.

The reader seeks only in containers whose index comes from the file itself (sample tables,
cues, idx1, keyframe metadata): there it knows where a seek lands. MPEG-PS and -TS
indexes hold only what probing saw, and FFmpeg seeks in them by timestamp search.
"""

from __future__ import annotations

import bisect
import itertools

import av

from ..sampling import EPS, Sampling

__all__ = ["SEEK_MIN_FRAMES", "has_seek_index", "keyframe_interval", "keyframe_times", "planned_seeks", "seek_pays"]

# A seek skips at least this many frames to pay for itself: with frame-threaded decoding a
# seek cost about as much as decoding 15 frames (benchmarks/RESULTS.md, decoding section).
SEEK_MIN_FRAMES = 16

# Demuxers (FFmpeg's names) whose keyframe index comes from the file's own index.
_INDEXED_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi", "flv"})


def has_seek_index(format_name: str) -> bool:
    """Whether the demuxer ``format_name`` (``container.format.name``) reads a real index."""
    return bool(_INDEXED_FORMATS & set(format_name.split(",")))


def keyframe_times(stream: av.video.stream.VideoStream) -> list[float]:
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


def keyframe_interval(keyframes: list[float]) -> float | None:
    """Longest gap between keyframes; None with fewer than two."""
    # To the nanosecond: a difference of float times has noise below (1.0000000000000002).
    return round(max(b - a for a, b in itertools.pairwise(keyframes)), 9) if len(keyframes) >= 2 else None


def seek_pays(t: float, wanted: float, keyframes: list[float], frame: float) -> bool:
    """Whether seeking to the keyframe before ``wanted`` skips decoding work from time ``t``:
    a keyframe lies ahead of ``t``, at or before ``wanted``, more than
    :data:`SEEK_MIN_FRAMES` frame intervals (``frame`` seconds each) away."""
    i = bisect.bisect_right(keyframes, t + EPS)
    return i < len(keyframes) and keyframes[i] <= wanted + EPS and keyframes[i] - t > SEEK_MIN_FRAMES * frame


def planned_seeks(sampling: Sampling, *, start: float, end: float | None, keyframes: list[float], frame: float) -> int:
    """How many seeks a grid sampling will make between ``start`` and ``end``.

    Walks :meth:`Sampling.grid` and applies :func:`seek_pays` from each grid point to the
    next, as the reader will (approximately: it decides from the frame it is on). Past the
    last keyframe no seek can pay; stopping there also bounds the walk when a damaged
    header claims a duration of years.
    """
    if not keyframes or not sampling.gridded:
        return 0
    end = keyframes[-1] if end is None else end
    step = sampling.grid_step(start, end)
    assert step is not None
    if step <= SEEK_MIN_FRAMES * frame:
        return 0  # a seek can never skip enough between grid points this close
    points = list(sampling.grid(start, min(end, keyframes[-1] + step)))
    return sum(seek_pays(a, b, keyframes, frame) for a, b in itertools.pairwise(points))
