"""Typed exceptions. Library code raises these; only the CLI turns them into messages and exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "DecodeError",
    "DecoderCrashError",
    "EmptyVideoError",
    "ModelError",
    "NoVideoStreamError",
    "NoVideosError",
    "OutputCollisionError",
    "OutputError",
    "TdvideoError",
    "UnsupportedVideoError",
    "UsageError",
    "VideoError",
    "VideoOpenError",
    "WeightsError",
    "first_line",
    "option",
    "show_path",
    "spelled",
]

# Set while the command line runs a command: messages then name settings as its flags.
_command_line = False


def option(name: str, value: str | bool | None = None) -> str:
    """How a message names the setting ``name`` (with an example ``value``, ``True`` for a
    switch): ``weights=PATH`` to a Python caller, ``--weights PATH`` on the command line."""
    if _command_line:
        flag = "--" + name.replace("_", "-")
        return flag if value is None or value is True else f"{flag} {value}"
    return name if value is None else f"{name}={value}"


def spelled(python: str, command_line: str) -> str:
    """``command_line`` in a message the command line shows, ``python`` in one raised to Python."""
    return command_line if _command_line else python


@contextmanager
def command_line_names() -> Iterator[None]:
    """Within this block, :func:`option` names settings as command-line flags (the CLI's)."""
    global _command_line
    before, _command_line = _command_line, True
    try:
        yield
    finally:
        _command_line = before


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (its first), or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def show_path(path: str | Path) -> str:
    """A path as it may appear in a one-line message.

    Plain names are shown as they are. A name with a newline, another control character
    or bytes that are not valid UTF-8 is shown as a quoted, escaped Python string, so it
    cannot forge a line of output or break the terminal's encoding.
    """
    text = str(path)
    if text.isprintable():  # False for control characters and for undecodable bytes (surrogates)
        return text
    return repr(text)


class TdvideoError(Exception):
    """Base class of every error tdvideo raises on purpose."""


class UsageError(TdvideoError, ValueError):
    """A bad option value or combination; the CLI exits with code 2."""


class NoVideosError(UsageError):
    """The inputs name no video files at all."""


class OutputCollisionError(UsageError):
    """Two inputs would be written to the same output path."""


class OutputError(TdvideoError):
    """An output that is missing or inconsistent, or an output folder that cannot be written
    (a full disk, a read-only file system): the run stops, since every video would fail alike."""


class VideoError(TdvideoError):
    """A problem with one input video. Carries the path so every message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{show_path(self.path)}: {reason}")

    def __reduce__(self) -> tuple:
        # Rebuild from (path, reason): errors cross from decoding worker processes.
        return (type(self), (self.path, self.reason), self.__dict__)


class VideoOpenError(VideoError):
    """The file does not exist, cannot be read, or is not a container FFmpeg understands."""


class NoVideoStreamError(VideoError):
    """The container opened but holds no video stream (audio-only, data-only)."""


class EmptyVideoError(VideoError):
    """The video stream decoded to zero frames (or zero frames matched the sampling)."""


class UnsupportedVideoError(VideoError):
    """A readable video that cannot be processed as asked: frames over the size limits,
    or a sampling that needs a duration the file does not declare."""


class DecodeError(VideoError):
    """Decoding failed part-way, or a frame was flagged corrupt."""

    def __init__(self, path: str | Path, reason: str, *, frames_decoded: int = 0) -> None:
        self.frames_decoded = frames_decoded
        super().__init__(path, reason)


class DecoderCrashError(VideoError):
    """The process decoding this video died (a crash inside FFmpeg, or the OOM killer), also when retried alone."""


class ModelError(UsageError):
    """An unknown model name or an invalid model option."""


class WeightsError(UsageError):
    """Weights that cannot be found, loaded safely, or matched to the model (a usage error: no video is at fault)."""
