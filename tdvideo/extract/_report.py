"""What a run tells: a result per video, a summary, progress bars, the failures log."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from tqdm import tqdm

from ..errors import first_line, show_path
from ._records import FailuresLog

__all__ = ["DryRun", "Recorder", "RunSummary", "VideoResult", "reason_of"]


def reason_of(exc: BaseException) -> str:
    """An error's one-line reason (a :class:`~tdvideo.VideoError`'s without its path)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason
    return first_line(exc)


@dataclass
class VideoResult:
    """What happened to one input in :meth:`Extractor.run`: ``done`` here, ``skipped``
    (finished earlier), ``failed`` here, or (claim mode) done or failed by another process
    while this one ran: ``elsewhere``, with ``error`` set when it failed there."""

    path: Path
    output: Path | None
    status: Literal["done", "skipped", "failed", "elsewhere"]
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
        if self.status == "elsewhere":
            return f"{'failed' if self.error else 'done'} by another process: {show_path(self.path)}"
        return f"{self.status}: {show_path(self.path)}"


@dataclass
class RunSummary:
    """Counts over a run, for the end-of-run line and the exit code. ``total`` counts
    every input of this process (unreadable ones included), known once the run has planned."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    elsewhere: int = 0  # claim mode: done by other processes while this one ran
    failed_elsewhere: int = 0  # claim mode: failed in other processes while this one ran
    frames: int = 0
    wall: float = 0.0
    failures: list[VideoResult] = field(default_factory=list)
    failures_log: Path | None = None

    def add(self, result: VideoResult) -> None:
        status = "failed_elsewhere" if result.status == "elsewhere" and result.error else result.status
        setattr(self, status, getattr(self, status) + 1)
        self.frames += result.frames
        if result.status == "failed":
            self.failures.append(result)

    @property
    def unfinished(self) -> int:
        return max(0, self.total - self.done - self.skipped - self.failed - self.elsewhere - self.failed_elsewhere)

    @property
    def any_failed(self) -> bool:
        """Whether an input failed, here or (claim mode) in another process of the run."""
        return bool(self.failed or self.failed_elsewhere)

    def line(self, *, since_start: float | None = None) -> str:
        """The end-of-run line; ``since_start``: the process's age, said too when given."""
        rate = self.frames / self.wall if self.wall > 0 else 0.0
        total = f"; {since_start:.1f} s since the process started" if since_start is not None else ""
        others = ""
        if self.elsewhere or self.failed_elsewhere:
            failed = f" ({self.failed_elsewhere} of them failed)" if self.failed_elsewhere else ""
            others = f", {self.elsewhere + self.failed_elsewhere} by other processes{failed}"
        return (
            f"{self.done} done, {self.skipped} skipped, {self.failed} failed{others}; "
            f"{self.frames} frames in {self.wall:.1f} s ({rate:.1f} frames/s){total}"
        )


class Recorder:
    """Files results into the summary, the failures log and the progress bars; a context manager.

    The bars show on a terminal (or with ``progress=True``); ``frames`` is the frames bar,
    for the model's progress. The summary's wall time is kept current however the run
    ends, an interrupt included.
    """

    def __init__(
        self, summary: RunSummary, failures: FailuresLog, *, total: int, progress: bool | None, outputs: dict[Path, Path] | None = None
    ) -> None:
        self.summary = summary
        self.failures = failures
        self.outputs = outputs or {}  # each video's output base, which its failure record names
        summary.total = total
        summary.failures_log = failures.path
        show = sys.stderr.isatty() if progress is None else progress
        self._started = time.perf_counter()
        self._videos = tqdm(total=total, unit="video", disable=not show, position=0, desc="videos")
        self.frames = tqdm(unit="frame", disable=not show, position=1, desc="frames", leave=False)
        self._estimates: dict[Path, int] = {}  # each video's expected frames, until it ends
        self._ended: set[Path] = set()
        self._estimates_lock = threading.Lock()

    def estimate_frames(self, paths: Sequence[Path], count: Callable[[Path], int | None], *, limit: int = 2000) -> None:
        """Give the frames bar a total, and so an ETA: ``count(path)`` (a header read) for each
        video, summed in a background thread as they come. Not for more than ``limit``
        videos: reading every header of a huge run would cost more than the bar is worth."""
        if self.frames.disable or not paths or len(paths) > limit:
            return

        def run() -> None:
            for path in paths:
                try:
                    expected = count(path) or 0
                except Exception:  # noqa: BLE001, S112 - an estimate only: a video that cannot be read fails in the run, with its reason
                    continue
                with self._estimates_lock:
                    if path in self._ended:
                        continue  # it ended first: the total holds its real count already
                    self._estimates[path] = expected
                    self._set_total(expected)

        threading.Thread(target=run, name="tdvideo-estimate", daemon=True).start()

    def _set_total(self, change: int) -> None:
        self.frames.total = (self.frames.total or 0) + change
        self.frames.refresh()

    def _ended_with(self, path: Path, frames: int) -> None:
        """A video ended: its frames replace its header's estimate in the bar's total."""
        if self.frames.disable:
            return
        with self._estimates_lock:
            self._ended.add(path)
            self._set_total(frames - self._estimates.pop(path, 0))

    def __call__(self, result: VideoResult) -> VideoResult:
        if result.status == "failed":
            self.failures.append(result.path, result.error_type, result.error, output=self.outputs.get(result.path))
        if result.status in ("done", "failed"):
            self._ended_with(result.path, result.frames)
        self.summary.add(result)
        self.summary.wall = time.perf_counter() - self._started
        self._videos.update(1)
        return result

    def __enter__(self) -> Self:
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
