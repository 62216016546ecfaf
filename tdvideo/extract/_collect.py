"""Per-video feature rows, as batches come back from the model; a finished video becomes :class:`Features`.

Pooled features are a few KB per frame and stay in memory. Spatial maps of long videos
would not fit (resnet50 with ``pool="none"``: 400 KB per frame), so past
:data:`SPILL_BYTES` a video's rows go to an anonymous temporary file (in ``TMPDIR``;
gone when closed, even after a crash) and come back as a read-only memmap.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UnsupportedVideoError, VideoError
from ..storage import reason
from ..video._reader import RawChunk
from ..writers import Features, SourceIdentity
from ._batcher import Batch

__all__ = ["SPILL_BYTES", "Collector", "take_rows"]

SPILL_BYTES = 512 * 2**20


class _Rows:
    """A video's feature rows in the output dtype, in memory or spilled to a file."""

    def __init__(self, dtype: str) -> None:
        self.dtype = np.dtype(dtype)
        self.parts: list[np.ndarray] = []
        self.nbytes = 0
        self.count = 0
        self.row_shape: tuple[int, ...] = ()
        self.spill: Any = None

    def append(self, rows: np.ndarray) -> None:
        array = rows.astype(self.dtype, copy=False)
        self.row_shape = array.shape[1:]
        self.count += len(array)
        if self.spill is None and self.nbytes + array.nbytes <= SPILL_BYTES:
            self.parts.append(array)
            self.nbytes += array.nbytes
            return
        if self.spill is None:
            self.spill = tempfile.TemporaryFile()  # noqa: SIM115 - open across appends; closed by array()
            for part in self.parts:
                np.ascontiguousarray(part).tofile(self.spill)
            self.parts.clear()
        np.ascontiguousarray(array).tofile(self.spill)

    def array(self) -> np.ndarray:
        if self.spill is None:
            return self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts)
        self.spill.flush()
        mapped = np.memmap(self.spill, dtype=self.dtype, mode="r", shape=(self.count, *self.row_shape))
        self.spill.close()  # the mapping keeps the data
        return mapped


# Rows copied at a time by take_rows: a bounded slice of a possibly memory-mapped array.
_TAKE_ROWS = 1 << 16


def take_rows(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``array[index]`` assembled a slice at a time, past :data:`SPILL_BYTES` in a temporary
    file (a read-only memmap), so that repeating rows never holds the result in memory."""
    rows = _Rows(str(array.dtype))
    for start in range(0, len(index), _TAKE_ROWS):
        rows.append(np.asarray(array[index[start : start + _TAKE_ROWS]]))
    if rows.count == 0:
        return np.asarray(array)[index]
    return rows.array()


@dataclass
class _Video:
    """A video whose rows are on their way through the model."""

    rows: _Rows
    times: list[np.ndarray] = field(default_factory=list)
    last: RawChunk | None = None
    source: SourceIdentity | None = None


Describe = Callable[[RawChunk, SourceIdentity, int], dict[str, Any]]


class Collector:
    """Gathers each video's rows; :meth:`add` yields videos as their last rows come in.

    ``describe(last_chunk, source, frames)`` gives a finished video's metadata.
    """

    def __init__(self, *, dtype: str, paths: list[Any], describe: Describe, per_window: bool = False) -> None:
        self.dtype = dtype
        self.paths = paths
        self.describe = describe
        self.per_window = per_window
        self._videos: dict[int, _Video] = {}

    def forget(self, index: int) -> None:
        """Drop what came of video ``index`` so far (it failed, or is decoded again)."""
        self._videos.pop(index, None)

    def add(self, batch: Batch, features: np.ndarray) -> Iterator[tuple[int, Features | VideoError]]:
        """File ``features`` (``(B, T, ...)``, one row per batch row) under their videos."""
        for piece in batch.pieces:
            video = self._videos.setdefault(piece.index, _Video(_Rows(self.dtype)))
            video.source = video.source or piece.source  # type: ignore[assignment]
            times = piece.chunk.timestamps
            if self.per_window:
                rows = features[piece.row : piece.row + piece.rows]  # one output per window: (W, ...)
            else:
                rows = features[piece.row : piece.row + piece.rows, : piece.steps]
            if piece.chunk.clip_len is None:
                rows = rows[0]  # one row of frames: (T, ...)
            else:
                times = times.reshape(piece.rows, piece.steps)
            video.rows.append(rows)
            video.times.append(times)
            video.last = piece.chunk
            if piece.last:
                yield piece.index, self._finish(piece.index)

    def _finish(self, index: int) -> Features | VideoError:
        video = self._videos.pop(index)
        assert video.last is not None
        source = video.source
        try:
            unchanged = source is not None and source.unchanged()
        except OSError as exc:  # its store did not answer: the features may be right, but cannot be vouched for
            why = reason(exc).removeprefix(f"{self.paths[index]}: ")
            return VideoError(self.paths[index], f"could not be checked for changes once read ({why}); rerun to extract it again")
        if not unchanged:
            return VideoError(self.paths[index], "changed, moved or deleted while it was being read; rerun to extract it again")
        try:
            times = np.concatenate(video.times)
            array = video.rows.array()
        except MemoryError:  # this video's alone: the others go on
            return UnsupportedVideoError(self.paths[index], "ran out of memory for its features; nothing written")
        return Features(array=array, timestamps=times, metadata=self.describe(video.last, source, int(times.size)))
