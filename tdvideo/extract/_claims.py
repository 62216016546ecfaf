"""Dynamic balance between processes that share an output folder: claim files.

With ``--balance claim`` every process plans every video, and takes them one at a time:
it creates ``OUT/.tdvideo/claims/<key>.claim`` with ``O_CREAT | O_EXCL`` (which one process
wins, on local and NFSv3+ file systems alike), extracts the video, and removes the claim
once the output is committed. A thread touches the claims a process holds.

A claim is taken over (renamed away first, so that one process alone takes it) when its
process has gone: at once when that process was on this host and no longer exists, else
once the claim has not been touched for the timeout. A finished output is never
extracted again: it is checked before and after claiming. A video that fails leaves a
``<key>.failed`` marker naming its file, so the other processes of the run (those started
within the claim timeout of each other) do not try it again, unless the file has changed.

A process holds at most as many claims as it decodes videos at once: a video stays
claimed from the moment it is started until it is committed, and no video is claimed
ahead. When nothing is left to claim, a process waits for the videos others hold, and
stops when each is finished, has failed, or was taken over from a process that has gone.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._files import check_inside, open_regular, owner_tag, parse_json, process_alive, publish
from ..errors import OutputError, UsageError, option
from ..storage import Url, filesystem, remove_url, stat_url
from ..writers import RUN_DIR, SourceIdentity, metadata_path
from ._inputs import Job

__all__ = ["ClaimQueue", "Claims", "Elsewhere", "StoreClaims", "open_claims"]

log = logging.getLogger("tdvideo")

_OWNER = re.compile(r"w(\d+)-([0-9a-f]{8})")
_MAX_CLAIM_BYTES = 4096


class Claims:
    """This process's claims under ``out``, kept alive by a heartbeat thread while held."""

    def __init__(self, out: Path, *, timeout: float) -> None:
        self.folder = out / RUN_DIR / "claims"
        check_inside(out, self.folder / "x.claim")  # never claims through a link out of OUT
        self.folder.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.started = time.time()
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "owner": owner_tag()}
        self._held: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="tdvideo-claims", daemon=True)
        self._beat.start()

    def path(self, job: Job, out: Path) -> Path:
        key = hashlib.sha1(job.base.relative_to(out).as_posix().encode()).hexdigest()
        return self.folder / f"{key}.claim"

    def take(self, claim: Path) -> bool:
        """Claim ``claim``: True if this process now holds it (it was free, or its holder has gone)."""
        if self._create(claim):
            return True
        try:
            info = os.lstat(claim)
        except FileNotFoundError:
            return self._create(claim)  # released just now
        age = time.time() - info.st_mtime
        junk = not stat.S_ISREG(info.st_mode)  # a link, a folder: no claim any process made
        gone = junk or self._holder_gone(claim)
        if not gone and age <= self.timeout:
            return False  # its owner is at work
        # Its process has gone: rename the claim away first. Of several processes that saw
        # it so, one wins.
        grave = claim.with_name(f"{claim.name}.stale-{owner_tag()}")
        try:
            os.rename(claim, grave)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("%s: cannot move it out of the way (%s); the video is left to a rerun", claim.name, exc.strerror or exc)
            return False
        if stat.S_ISDIR(info.st_mode):
            log.warning("%s: a folder where a claim goes; moved to %s", claim.name, grave.name)
        else:
            grave.unlink(missing_ok=True)
        why = "that was no claim" if junk else "whose process has gone" if gone else f"untouched for {age:.0f} s"
        log.info("%s: took over a claim %s", claim.name, why)
        return self._create(claim)

    def _holder_gone(self, claim: Path) -> bool:
        """Whether the claim names a process of this host that no longer exists."""
        try:
            with open_regular(claim) as fh:
                record = parse_json(fh.read(_MAX_CLAIM_BYTES), claim)
        except OutputError:
            return False  # being written, or not ours to judge: the timeout decides
        match = _OWNER.fullmatch(str(record.get("owner"))) if isinstance(record, dict) else None
        if match is None or f"w{match.group(1)}-{match.group(2)}" == owner_tag():
            return False
        same_host = match.group(2) == owner_tag().rsplit("-", 1)[1]
        return same_host and not process_alive(int(match.group(1)))

    def _create(self, claim: Path) -> bool:
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump({**self.owner, "since": time.time()}, fh)
        with self._lock:
            self._held.add(claim)
        return True

    def release(self, claim: Path, *, failed: SourceIdentity | None = None) -> None:
        """Give ``claim`` up. ``failed``: the video failed, and this was its file: leave a
        marker so that the other processes of the run do not try it again."""
        with self._lock:
            self._held.discard(claim)
        if failed is not None:
            record = json.dumps({**self.owner, "failed": time.time(), "source": failed.to_dict()}).encode()
            try:
                publish(self.failed_marker(claim), lambda fh: fh.write(record))
            except (OSError, OutputError) as exc:
                log.warning("%s: could not leave its failure marker (%s); other processes may try it again", claim.name, exc)
        self._remove(claim)

    def _remove(self, claim: Path) -> None:
        claim.unlink(missing_ok=True)

    def clear_marker(self, claim: Path) -> None:
        """Remove an earlier run's failure marker of ``claim`` (the video is tried again)."""
        self.failed_marker(claim).unlink(missing_ok=True)

    def committed_since_start(self, metadata: Path) -> bool:
        """Whether the output whose metadata is at ``metadata`` was committed after this process started."""
        try:
            return metadata.stat().st_mtime >= self.started
        except FileNotFoundError:
            return False

    @staticmethod
    def failed_marker(claim: Path) -> Path:
        return claim.with_suffix(".failed")

    def failed_in_this_run(self, claim: Path, source: Path) -> bool:
        """Whether another process of this run failed this very file: its marker is from a
        process that started no more than the claim timeout before this one, and the file has
        not changed since. A rerun later, or after the file was replaced, tries it again."""
        marker = self.failed_marker(claim)
        try:
            with open_regular(marker) as fh:
                record = parse_json(fh.read(_MAX_CLAIM_BYTES), marker)
            when = float(record["failed"])
            recorded = record["source"]
        except (OutputError, ValueError, KeyError, TypeError, OverflowError):
            return False  # none, or not a marker of ours: the video is tried
        if when < self.started - self.timeout:
            return False
        try:
            return SourceIdentity.of(source).same_file(recorded if isinstance(recorded, dict) else {})
        except OSError:
            return False  # the file is gone: trying it says so

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
            self._remove(claim)


class StoreClaims(Claims):
    """Claims in an S3 bucket: what ``O_CREAT | O_EXCL`` and ``rename`` do on a disk, done
    with the store's conditional writes. A claim is created with ``If-None-Match: *`` (one
    process wins); the heartbeat rewrites it with ``If-Match`` its own ETag, so a claim taken
    over is never written again by the process that lost it; a stale claim is taken over by
    a write ``If-Match`` the ETag that was seen stale (one process wins)."""

    def __init__(self, out: Url, *, timeout: float) -> None:
        fs, _ = filesystem(out)
        if not hasattr(fs, "call_s3"):
            raise UsageError(
                f"{option('balance', 'claim')} needs a store that creates an object only when absent (S3's "
                f"If-None-Match); {out.scheme}:// is not one: use {option('balance', 'static')} there"
            )
        self._etags: dict[Url, str] = {}
        self.folder = out / RUN_DIR / "claims"  # type: ignore[assignment]
        self.timeout = timeout
        self.started = time.time()
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "owner": owner_tag()}
        self._held = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="tdvideo-claims", daemon=True)
        self._beat.start()

    def _put(self, claim: Url, **condition: str) -> str | None:
        """Write the claim if ``condition`` holds: its new ETag, or None when it does not hold."""
        fs, path = filesystem(claim)
        bucket, key, _ = fs.split_path(path)
        body = json.dumps({**self.owner, "since": time.time()}).encode()
        try:
            response = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, **condition)
        except (FileExistsError, OSError) as exc:
            if isinstance(exc, FileExistsError) or exc.errno == errno.EINVAL or "Precondition" in str(exc):
                return None  # another process's claim: created or rewritten first
            raise
        fs.invalidate_cache(path)
        return str(response.get("ETag", "")).strip('"')

    def _create(self, claim: Path) -> bool:  # type: ignore[override]
        etag = self._put(claim, IfNoneMatch="*")  # type: ignore[arg-type]
        if etag is None:
            return False
        with self._lock:
            self._held.add(claim)
            self._etags[claim] = etag  # type: ignore[index]
        return True

    def take(self, claim: Path) -> bool:  # type: ignore[override]
        if self._create(claim):
            return True
        try:
            info = stat_url(claim)  # type: ignore[arg-type]
        except FileNotFoundError:
            return self._create(claim)  # released just now
        seen = str(info.get("ETag", "")).strip('"')
        modified = info.get("LastModified")
        age = time.time() - modified.timestamp() if hasattr(modified, "timestamp") else 0.0
        try:
            gone = self._holder_gone(claim)
        except FileNotFoundError:
            return self._create(claim)  # released between the look and the read
        if not gone and age <= self.timeout:
            return False
        etag = self._put(claim, IfMatch=seen)  # type: ignore[arg-type]
        if etag is None:
            return False  # another process took it over first, or its holder wrote meanwhile
        log.info("%s: took over a claim %s", claim.name, "whose process has gone" if gone else f"untouched for {age:.0f} s")
        with self._lock:
            self._held.add(claim)
            self._etags[claim] = etag  # type: ignore[index]
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(max(0.05, self.timeout / 4)):
            with self._lock:
                held = [(claim, self._etags.get(claim)) for claim in self._held]  # type: ignore[call-overload]
            for claim, etag in held:
                try:
                    renewed = self._put(claim, IfMatch=etag) if etag else None  # type: ignore[arg-type]
                except OSError as exc:
                    log.warning("%s: could not renew the claim (%s)", claim.name, exc)
                    continue
                with self._lock:
                    if renewed is None:
                        self._held.discard(claim)  # taken over after a stall of ours: no longer ours
                    elif claim in self._held:
                        self._etags[claim] = renewed  # type: ignore[index]

    def _remove(self, claim: Path) -> None:
        remove_url(claim)  # type: ignore[arg-type]

    def clear_marker(self, claim: Path) -> None:
        remove_url(self.failed_marker(claim))  # type: ignore[arg-type]

    def committed_since_start(self, metadata: Path) -> bool:
        try:
            modified = stat_url(metadata).get("LastModified")  # type: ignore[arg-type]
        except FileNotFoundError:
            return False
        return hasattr(modified, "timestamp") and modified.timestamp() >= self.started - 1.0  # a store's times are to the second


def open_claims(out: Path | Url, *, timeout: float) -> Claims:
    """This process's claims under ``out``: files on a disk, or objects of an S3 bucket."""
    return StoreClaims(out, timeout=timeout) if isinstance(out, Url) else Claims(out, timeout=timeout)


@dataclass(frozen=True)
class Elsewhere:
    """A video this process did not extract, and why: ``finished`` earlier (skipped), or
    ``done`` or ``failed`` by another process while this one ran."""

    job: Job
    how: str


class ClaimQueue:
    """The videos this process extracts, each claimed when a decoder is free for it.

    Iterating gives a claimed video's path, or None when none can be claimed now (this
    process holds :attr:`limit` claims already, or others hold the rest): ask again soon.
    It ends when every video is extracted here, finished, or failed. :attr:`claimed` is
    the list a video's index refers to. ``finished(job)`` says whether a job's output is
    there; ``sweep(job)`` removes leftovers of an interrupted commit of a job just claimed.
    Videos not extracted here are appended to :attr:`outcomes` as :class:`Elsewhere`.
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        out: Path,
        claims: Claims,
        *,
        finished: Callable[[Job], bool],
        sweep: Callable[[Job], object],
        limit: int = 1,
    ) -> None:
        self._first = deque(jobs)
        self.out = out
        self.claims = claims
        self.finished = finished
        self.sweep = sweep
        self.limit = limit
        self.claimed: list[Job] = []
        self.paths: list[Path] = []  # the claimed jobs' videos, as the decoder indexes them
        self.outcomes: deque[Elsewhere] = deque()
        self._held: deque[Job] = deque()  # held by others, looked at again from time to time
        self._holding = 0
        self._lock = threading.Lock()
        self._next_look = 0.0
        self.poll = min(1.0, max(0.05, claims.timeout / 4))

    def __iter__(self) -> Iterator[Path | None]:
        while True:
            with self._lock:
                full = self._holding >= self.limit
            if full:
                yield None  # a commit frees a claim
                continue
            job = self._next_claim()
            if job is not None:
                yield job.path
            elif self._first or self._held:
                yield None  # the rest are held by other processes: look again soon
            else:
                return

    def _next_claim(self) -> Job | None:
        while self._first:
            job = self._first.popleft()
            if self.finished(job):
                # Finished before this process started, or by another one since.
                self.outcomes.append(Elsewhere(job, "done" if self._committed_since_start(job) else "finished"))
                continue
            if self._try(job):
                return job
        if not self._held or time.monotonic() < self._next_look:
            return None
        self._next_look = time.monotonic() + self.poll
        for _ in range(len(self._held)):
            job = self._held.popleft()
            if self.finished(job):
                self.outcomes.append(Elsewhere(job, "done"))
                continue
            if self._try(job):
                return job
        return None

    def _committed_since_start(self, job: Job) -> bool:
        return self.claims.committed_since_start(metadata_path(job.base))

    def _try(self, job: Job) -> bool | None:
        """Claim ``job``: True when claimed; False when another process holds it (looked at
        again later); None when it needs nothing more (it failed in this run, or was just
        committed by another process)."""
        claim = self.claims.path(job, self.out)
        if self.claims.failed_in_this_run(claim, job.path):
            self.outcomes.append(Elsewhere(job, "failed"))
            return None
        if not self.claims.take(claim):
            self._held.append(job)
            return False
        if self.finished(job):  # committed by another process between the two checks
            self.claims.release(claim)
            self.outcomes.append(Elsewhere(job, "done"))
            return None
        self.claims.clear_marker(claim)  # an earlier run's: tried again now
        self.sweep(job)  # leftovers of a commit its earlier claimant did not finish
        with self._lock:
            self._holding += 1
        self.claimed.append(job)
        self.paths.append(job.path)
        return True

    def done_with(self, job: Job, *, failed: bool = False) -> None:
        """``job`` is committed (or failed): release its claim, making room for the next."""
        source = None
        if failed:
            try:
                source = SourceIdentity.of(job.path)
            except OSError:
                source = None  # no file to mark: another process finds it missing too
        self.claims.release(self.claims.path(job, self.out), failed=source)
        with self._lock:
            self._holding -= 1
