"""Decoded chunks of many videos into ``(B, T, C, H, W)`` batches for the model.

Each chunk of frames is one row of a batch: rows of different videos never mix along
time, and shorter rows are padded, with their ``lengths``, so that ``TimeDistributed``
runs the model on the valid steps only. With clip windows each window is a row:
``(B, L, C, H, W)``, nothing padded. A batch holds at most ``batch_size`` frame slots
(padding included) and ``max_bytes`` of frames; frames of different sizes go to
different batches.

The stream also passes on what happened to videos (:class:`Restart`, :class:`Failure`),
after dropping the parts of that video still waiting here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..video._reader import RawChunk
from ._loader import FLUSH, Chunk

__all__ = ["Batch", "Failure", "Piece", "Restart", "batches"]


@dataclass
class Piece:
    """One chunk's place in a batch: rows ``row`` to ``row + rows`` (one row of ``steps``
    frames, or ``rows`` windows), of video ``index``."""

    index: int
    row: int
    rows: int
    steps: int
    chunk: RawChunk
    last: bool
    source: object = None


@dataclass
class Batch:
    """uint8 ``frames`` ``(B, T, H, W, C)`` (the model gets them as ``(B, T, C, H, W)``);
    ``lengths`` ``(B,)`` when rows are padded, else None; ``pieces`` say whose rows they are."""

    frames: np.ndarray
    lengths: np.ndarray | None
    pieces: list[Piece]

    @property
    def frame_count(self) -> int:
        """Valid frames in the batch (padding not counted)."""
        return sum(p.rows * p.steps for p in self.pieces)


@dataclass
class Restart:
    """The rows of video ``index`` handed out so far are void: it is decoded again."""

    index: int


@dataclass
class Failure:
    """Video ``index`` failed with ``error``; no more of it comes."""

    index: int
    error: BaseException


@dataclass
class _Open:
    """A batch being filled: its chunks, and the (rows, steps) its padded shape has so far."""

    chunks: list[Chunk] = field(default_factory=list)
    rows: int = 0
    steps: int = 0

    def fits(self, rows: int, steps: int, frame_bytes: int, batch_size: int, max_bytes: int) -> bool:
        slots = (self.rows + rows) * max(self.steps, steps)
        return not self.chunks or (slots <= batch_size and slots * frame_bytes <= max_bytes)


def _shape(chunk: RawChunk) -> tuple[int, int]:
    """(rows, steps) of a chunk: one row of T frames, or one row per window."""
    frames = len(chunk.frames)
    if chunk.clip_len is not None:
        return frames // chunk.clip_len, chunk.clip_len
    return 1, frames


def batches(chunks: Iterable[Chunk], *, batch_size: int, max_bytes: int) -> Iterator[Batch | Restart | Failure]:
    """Batches of ``chunks`` as they fill up, in between the videos' restarts and failures;
    :data:`~._loader.FLUSH` hands on what is batched so far, full or not."""
    open_batches: dict[tuple[int, ...], _Open] = {}  # by frame shape (H, W, C)
    for chunk in chunks:
        if chunk is FLUSH:
            for key, batch in list(open_batches.items()):
                if batch.chunks:
                    yield _assemble(batch.chunks)
                open_batches[key] = _Open()
            continue
        if chunk.restart or chunk.error is not None:
            for batch in open_batches.values():
                batch.chunks = [c for c in batch.chunks if c.index != chunk.index]
                batch.rows, batch.steps = _extent(batch.chunks)
            yield Failure(chunk.index, chunk.error) if chunk.error is not None else Restart(chunk.index)
            continue
        assert chunk.clip is not None
        frames = chunk.clip.frames
        key = frames.shape[1:]
        rows, steps = _shape(chunk.clip)
        batch = open_batches.setdefault(key, _Open())
        if not batch.fits(rows, steps, int(np.prod(key)), batch_size, max_bytes):
            yield _assemble(batch.chunks)
            batch = open_batches[key] = _Open()
        batch.chunks.append(chunk)
        batch.rows, batch.steps = batch.rows + rows, max(batch.steps, steps)
    for batch in open_batches.values():
        if batch.chunks:
            yield _assemble(batch.chunks)


def _extent(chunks: list[Chunk]) -> tuple[int, int]:
    shapes = [_shape(c.clip) for c in chunks if c.clip is not None]
    return sum(r for r, _ in shapes), max((s for _, s in shapes), default=0)


def _assemble(chunks: list[Chunk]) -> Batch:
    """Stack ``chunks`` into one batch array: one copy at most (none for a lone chunk)."""
    pieces: list[Piece] = []
    row = 0
    for chunk in chunks:
        assert chunk.clip is not None
        rows, steps = _shape(chunk.clip)
        pieces.append(Piece(chunk.index, row, rows, steps, chunk.clip, chunk.last, chunk.source))
        row += rows
    steps = max(p.steps for p in pieces)
    frame_shape = pieces[0].chunk.frames.shape[1:]
    if len(pieces) == 1:
        frames = pieces[0].chunk.frames.reshape(row, steps, *frame_shape)
    else:
        # Padding stays unwritten: TimeDistributed runs the model on the valid steps only.
        frames = np.empty((row, steps, *frame_shape), dtype=np.uint8)
        for piece in pieces:
            frames[piece.row : piece.row + piece.rows, : piece.steps] = piece.chunk.frames.reshape(piece.rows, piece.steps, *frame_shape)
    padded = any(p.steps < steps for p in pieces)
    lengths = np.array([p.steps for p in pieces]) if padded else None
    return Batch(frames, lengths, pieces)
