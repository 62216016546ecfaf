"""Typed exceptions. Library code raises these; only the CLI turns them into messages and exit codes."""

from __future__ import annotations

from pathlib import Path


class TdvideoError(Exception):
    """Base class of every error tdvideo raises on purpose."""


class UsageError(TdvideoError, ValueError):
    """A bad option value or combination; the CLI exits with code 2."""


class NoVideosError(UsageError):
    """The inputs name no video files at all."""


class OutputCollisionError(UsageError):
    """Two inputs would be written to the same output path."""


class VideoError(TdvideoError):
    """A problem with one input video. Carries the path so every message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:
        # Rebuild from (path, reason): errors cross from decoding worker processes.
        return (type(self), (self.path, self.reason), self.__dict__)


class VideoOpenError(VideoError):
    """The file does not exist, cannot be read, or is not a container FFmpeg understands."""


class NoVideoStreamError(VideoError):
    """The container opened but holds no video stream (audio-only, data-only)."""


class EmptyVideoError(VideoError):
    """The video stream decoded to zero frames (or zero frames matched the sampling)."""


class DecodeError(VideoError):
    """Decoding failed part-way, or a frame was flagged corrupt."""

    def __init__(self, path: str | Path, reason: str, *, frames_decoded: int = 0) -> None:
        self.frames_decoded = frames_decoded
        super().__init__(path, reason)


class ModelError(UsageError):
    """An unknown model name or an invalid model option."""


class WeightsError(UsageError):
    """Weights that cannot be found, loaded safely, or matched to the model (a usage error: no video is at fault)."""
