"""The public decoding API: :func:`iter_video` and :func:`read_video`, in torch tensors.

Frames are streamed: :func:`iter_video` yields chunks, so memory does not grow with the
video's length. Timestamps come from each frame's own pts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._types import Interpolation, Size
from ..sampling import Sampling, resolve_sampling
from ._probe import VideoInfo
from ._reader import OnError, RawChunk, ReadOptions, read_chunks

__all__ = ["VideoClip", "iter_video", "read_video", "to_clip"]


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


def to_clip(chunk: RawChunk) -> VideoClip:
    """A :class:`RawChunk` as a :class:`VideoClip`, without copying the frames."""
    frames = torch.from_numpy(chunk.frames).permute(0, 3, 1, 2)  # (T, C, H, W), channels_last
    times = torch.from_numpy(chunk.timestamps)
    if chunk.clip_len is not None:
        frames = frames.unflatten(0, (-1, chunk.clip_len))
        times = times.unflatten(0, (-1, chunk.clip_len))
    return VideoClip(
        frames,
        times,
        chunk.info,
        pts_synthesized=chunk.pts_synthesized,
        truncated=chunk.truncated,
        error=chunk.error,
        frames_decoded=chunk.frames_decoded,
        seeks=chunk.seeks,
    )


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
    stream: int = 0,
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
        stream: which video stream to read, counting video streams only (0: the first).

    Raises:
        VideoOpenError, NoVideoStreamError, DecodeError, EmptyVideoError,
        UnsupportedVideoError, UsageError.
    """
    options = ReadOptions(
        sampling=resolve_sampling(sampling, sampling_options),
        chunk_frames=chunk_frames,
        chunk_bytes=chunk_bytes,
        size=size,
        crop=crop,
        interpolation=interpolation,
        threads=threads,
        on_error=on_error,
        stream=stream,
    )
    chunks = read_chunks(path, options)
    for chunk in chunks:
        yield to_clip(chunk)


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
