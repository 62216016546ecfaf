"""What a run tells: a result per video, a summary, progress bars, the failures log."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from tqdm import tqdm

from ..errors import first_line, show_path
from ..writers import FailuresLog

__all__ = ["DryRun", "Recorder", "RunSummary", "VideoResult", "reason_of"]


def reason_of(exc: BaseException) -> str:
    """An error's one-line reason (a :class:`~tdvideo.VideoError`'s without its path)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason
    return first_line(exc)


@dataclass
class VideoResult:
    """What happened to one input in :meth:`Extractor.run`."""

    path: Path
    output: Path | None
    status: Literal["done", "skipped", "failed"]
    frames: int = 0
    error_type: str | None = None
    error: str | None = None

    @classmethod
    def failure(cls, path: Path, exc: BaseException) -> VideoResult:
        return cls(path, None, "failed", error_type=type(exc).__name__, error=reason_of(exc))

    def line(self) -> str:
        """One line for a terminal: the input, and what happened to it if it failed."""
        if self.status == "failed":
            return f"failed: {show_path(self.path)}: {self.error}"
        return f"{self.status}: {show_path(self.path)}"


@dataclass
class RunSummary:
    """Counts over a run, for the end-of-run line and the exit code. ``total`` counts
    every input of this process (unreadable ones included), known once the run has planned."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    wall: float = 0.0
    failures: list[VideoResult] = field(default_factory=list)
    failures_log: Path | None = None

    def add(self, result: VideoResult) -> None:
        setattr(self, result.status, getattr(self, result.status) + 1)
        self.frames += result.frames
        if result.status == "failed":
            self.failures.append(result)

    @property
    def unfinished(self) -> int:
        return max(0, self.total - self.done - self.skipped - self.failed)

    def line(self, *, since_start: float | None = None) -> str:
        """The end-of-run line; ``since_start``: the process's age, said too when given."""
        rate = self.frames / self.wall if self.wall > 0 else 0.0
        total = f"; {since_start:.1f} s since the process started" if since_start is not None else ""
        return (
            f"{self.done} done, {self.skipped} skipped, {self.failed} failed; "
            f"{self.frames} frames in {self.wall:.1f} s ({rate:.1f} frames/s){total}"
        )


class Recorder:
    """Files results into the summary, the failures log and the progress bars; a context manager.

    The bars show on a terminal (or with ``progress=True``); ``frames`` is the frames bar,
    for the model's progress. The summary's wall time is kept current however the run
    ends, an interrupt included.
    """

    def __init__(self, summary: RunSummary, failures: FailuresLog, *, total: int, progress: bool | None) -> None:
        self.summary = summary
        self.failures = failures
        summary.total = total
        summary.failures_log = failures.path
        show = sys.stderr.isatty() if progress is None else progress
        self._started = time.perf_counter()
        self._videos = tqdm(total=total, unit="video", disable=not show, position=0, desc="videos")
        self.frames = tqdm(unit="frame", disable=not show, position=1, desc="frames", leave=False)

    def estimate_frames(self, paths: Sequence[Path], count: Callable[[Path], int | None], *, limit: int = 2000) -> None:
        """Give the frames bar a total, and so an ETA: ``count(path)`` (a header read) for each
        video, summed in a background thread as they come. Not for more than ``limit``
        videos: reading every header of a huge run would cost more than the bar is worth."""
        if self.frames.disable or not paths or len(paths) > limit:
            return

        def run() -> None:
            total = 0
            for path in paths:
                try:
                    total += count(path) or 0
                except Exception:  # noqa: BLE001 - an estimate only: a video that cannot be read fails in the run, with its reason
                    continue
                self.frames.total = total
                self.frames.refresh()

        threading.Thread(target=run, name="tdvideo-estimate", daemon=True).start()

    def __call__(self, result: VideoResult) -> VideoResult:
        if result.status == "failed":
            self.failures.append(result.path, result.error_type, result.error)
        self.summary.add(result)
        self.summary.wall = time.perf_counter() - self._started
        self._videos.update(1)
        return result

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.summary.wall = time.perf_counter() - self._started
        self.frames.close()
        self._videos.close()


@dataclass
class DryRun:
    """What a run would do (:meth:`Extractor.dry_run`): videos to extract, finished ones it
    would skip, inputs it would refuse with why, and ``stop``: why the whole run would stop
    before any work (colliding outputs, finished outputs made with other settings)."""

    todo: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    stop: str | None = None

    def line(self) -> str:
        counts = f"{len(self.todo)} to extract, {len(self.skipped)} finished (skipped), {len(self.refused)} refused"
        return f"dry run: {counts}; {'the run would stop: ' + self.stop if self.stop else 'nothing was written, no model was run'}"
