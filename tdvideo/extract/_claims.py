"""Dynamic balance between processes that share an output folder: claim files.

With ``--balance claim`` every process plans every video, and takes them one at a time:
it creates ``OUT/.tdvideo/claims/<key>.claim`` with ``O_CREAT | O_EXCL`` (which one process
wins, on local and NFSv3+ file systems alike), extracts the video, and removes the claim
once the output is committed. A thread touches the claims a process holds; a claim left
untouched for longer than the timeout belongs to a process that has gone, and is taken
over (renamed away first, so that one process alone takes it). A finished output is
never extracted again: it is checked before and after claiming.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..writers import RUN_DIR
from ._inputs import Job

__all__ = ["ClaimQueue", "Claims"]

log = logging.getLogger("tdvideo")


class Claims:
    """This process's claims under ``out``, kept alive by a heartbeat thread while held."""

    def __init__(self, out: Path, *, timeout: float) -> None:
        self.folder = out / RUN_DIR / "claims"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.owner = {"host": socket.gethostname(), "pid": os.getpid()}
        self._held: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="tdvideo-claims", daemon=True)
        self._beat.start()

    def path(self, job: Job, out: Path) -> Path:
        key = hashlib.sha1(job.base.relative_to(out).as_posix().encode()).hexdigest()
        return self.folder / f"{key}.claim"

    def take(self, claim: Path) -> bool:
        """Claim ``claim``: True if this process now holds it (it was free, or stale)."""
        if self._create(claim):
            return True
        try:
            age = time.time() - claim.stat().st_mtime
        except FileNotFoundError:
            return self._create(claim)  # released just now
        if age <= self.timeout:
            return False  # its owner is at work
        # Stale: rename it away first. Of several processes that saw it stale, one wins.
        grave = claim.with_name(f"{claim.name}.stale-{self.owner['host']}-{self.owner['pid']}")
        try:
            os.rename(claim, grave)
        except FileNotFoundError:
            return False
        grave.unlink(missing_ok=True)
        log.info("%s: took over a claim untouched for %.0f s", claim.name, age)
        return self._create(claim)

    def _create(self, claim: Path) -> bool:
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump({**self.owner, "since": time.time()}, fh)
        with self._lock:
            self._held.add(claim)
        return True

    def release(self, claim: Path) -> None:
        with self._lock:
            self._held.discard(claim)
        claim.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(max(0.05, self.timeout / 4)):
            with self._lock:
                held = list(self._held)
            for claim in held:
                try:
                    os.utime(claim)
                except FileNotFoundError:
                    continue  # released meanwhile, or taken over after a stall of ours

    def close(self) -> None:
        """Stop the heartbeat and release what is still held (an interrupted run)."""
        self._stop.set()
        with self._lock:
            held, self._held = list(self._held), set()
        for claim in held:
            claim.unlink(missing_ok=True)


class ClaimQueue:
    """The next video this process may extract, claimed when asked for.

    ``finished(job)`` says whether a job's output is already there; ``sweep(job)`` removes
    the leftovers of an interrupted commit of a job just claimed. :meth:`next_path`
    appends each claimed job to :attr:`claimed` (the list its index refers to) and returns
    its path, or None when no video is left to claim. :attr:`elsewhere` are the jobs
    another process finished or holds.
    """

    def __init__(
        self, jobs: Sequence[Job], out: Path, claims: Claims, *, finished: Callable[[Job], bool], sweep: Callable[[Job], object]
    ) -> None:
        self._jobs = iter(jobs)
        self.out = out
        self.claims = claims
        self.finished = finished
        self.sweep = sweep
        self.claimed: list[Job] = []
        self.paths: list[Path] = []  # the claimed jobs' videos, as the decoder indexes them
        self.elsewhere: list[Job] = []
        self._passed: list[Job] = []  # held by others on the first pass
        self._second: deque[Job] | None = None

    def next_path(self) -> Path | None:
        while (job := self._next_candidate()) is not None:
            claim = self.claims.path(job, self.out)
            if self.finished(job) or not self.claims.take(claim):
                self._pass_over(job)
                continue
            if self.finished(job):  # committed by another process between the two checks
                self.claims.release(claim)
                self._pass_over(job)
                continue
            self.sweep(job)  # leftovers of a commit its earlier claimant did not finish
            self.claimed.append(job)
            self.paths.append(job.path)
            return job.path
        return None

    def _next_candidate(self) -> Job | None:
        job = next(self._jobs, None)
        if job is not None:
            return job
        # One more look at the jobs others held: a claim that went stale meanwhile (its
        # process died) is taken over now rather than left to a rerun.
        if self._second is None:
            self._second, self._passed = deque(self._passed), []
        return self._second.popleft() if self._second else None

    def _pass_over(self, job: Job) -> None:
        (self._passed if self._second is None else self.elsewhere).append(job)

    def __iter__(self) -> Iterator[Path]:
        while (path := self.next_path()) is not None:
            yield path

    def done_with(self, job: Job) -> None:
        self.claims.release(self.claims.path(job, self.out))
