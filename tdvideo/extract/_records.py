"""What runs record in an output folder, beside the outputs: their plans and their failures.

Records only grow: a run adds its plan and its failures and never removes another run's.

- **Plans** (``OUT/.tdvideo/plans/<id>.json``): every video a run set out to do, whatever
  its shard, with the output each goes to, and the inputs it could not read. The id is a
  digest of all that, so every rank of one run shares one plan. ``tdvideo status`` covers
  every plan, except that of two plans made from the same inputs the newer counts: a
  rerun after videos were added or removed supersedes the earlier plan of those inputs,
  while a run over other inputs adds to what is counted.
- **Failures** (``OUT/failures*.jsonl``, one log per process or rank): a journal, one JSON
  line per failure, ``{"path", "output", "error_type", "message", "time"}``. A video's
  failure stands until its output is finished; a later failure of it replaces it.

Both are read as anyone's files (:mod:`tdvideo._files`): a record that is damaged, crafted,
a FIFO or a link is named in a problem line and left out, and the others are read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .._files import check_inside, open_regular, parse_json, publish, read_bytes
from .._system import file_kind
from ..errors import OutputError, UsageError, show_path
from ..storage import Url, exists_url, glob_url, is_url, location, put_bytes, reason
from ..writers import FATAL_WRITE_ERRORS, RUN_DIR

__all__ = ["FailuresLog", "Plan", "RunRecords", "plan_folder", "read_records", "write_plan"]

# A plan lists every video of a run, a hundred bytes or more each: a million videos fit.
# Parsed JSON takes several times its size in memory: the bound is on that too.
MAX_PLAN_BYTES = 256 * 2**20
# A failure line is a path and a one-line message; anything longer is not one of ours.
MAX_FAILURE_LINE = 64 * 1024
# A failures log holds a line per failure: a million fit. A larger one is not read.
MAX_FAILURES_BYTES = 256 * 2**20


def plan_folder(out: Path) -> Path:
    return out / RUN_DIR / "plans"


@dataclass(frozen=True)
class Plan:
    """One run's plan: where it came from, its format, its videos (output -> source) and the
    inputs it could not read (path -> reason). ``inputs_key`` identifies its inputs."""

    path: Path
    format: str
    created: float | None
    inputs: list[str]
    inputs_key: str
    videos: dict[str, str]
    unreadable: dict[str, str]

    @property
    def name(self) -> str:
        return self.path.stem if self.path.parent.name == "plans" else self.path.name

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.created)) if self.created else "an earlier tdvideo"
        inputs = ", ".join(show_path(i) for i in self.inputs[:3]) + (", ..." if len(self.inputs) > 3 else "")
        return f"plan {self.name} ({when}{': ' + inputs if inputs else ''})"


# Inputs shown in a plan's description; all of them are in its inputs key.
_SHOWN_INPUTS = 10


def write_plan(
    out: Path, *, fmt: str, jobs: list[tuple[Path, Path]], inputs: list[str], unreadable: list[tuple[Path, str]]
) -> Path:
    """Record a run's videos and their output bases (relative to ``out``), and the inputs it
    could not read; return the plan's path. The same plan is written once."""
    videos = [{"source": str(src), "output": base.relative_to(out).as_posix()} for src, base in jobs]
    problems = [{"path": str(path), "reason": reason} for path, reason in unreadable]
    # A URL without its query string (a signed URL's signature is a credential), a path made absolute.
    given = sorted({str(location(i)) if is_url(i) else os.path.abspath(i) for i in inputs})
    inputs_key = hashlib.sha1("\0".join(given).encode(errors="surrogateescape")).hexdigest()[:16]
    content = {"format": fmt, "inputs_key": inputs_key, "videos": videos, "unreadable": problems}
    key = hashlib.sha1(json.dumps(content, sort_keys=True).encode(errors="surrogateescape")).hexdigest()[:16]
    folder = plan_folder(out)
    path = folder / f"{key}.json"
    check_inside(out, path)  # never written through a link out of OUT
    try:
        if isinstance(path, Url):
            if exists_url(path):
                return path  # this very plan is recorded already (another rank, or an earlier run)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            if path.is_file() and not path.is_symlink():
                return path
        record = {"created": time.time(), "inputs": given[:_SHOWN_INPUTS], "inputs_count": len(given), **content}
        data = json.dumps(record, indent=1, ensure_ascii=True).encode()
        publish(path, lambda fh: fh.write(data))
    except OSError as exc:
        stopped = "; stopped" if exc.errno in FATAL_WRITE_ERRORS else ""
        raise OutputError(f"cannot write to {show_path(out)}: {exc.strerror or exc}{stopped} (the run's plan)") from None
    return path


def _relative_output(value: Any) -> str | None:
    """``value`` if it is an output name inside the folder (relative, no ``..``), else None."""
    if not isinstance(value, str) or not value or "\0" in value or "\\" in value:
        return None
    name = PurePosixPath(value)
    if name.is_absolute() or any(part in ("", ".", "..") for part in value.split("/")) or name.parts[0] == RUN_DIR:
        return None
    return value


def _read_plan(path: Path, root: Path, problems: list[str]) -> Plan | None:
    try:
        record = parse_json(read_bytes(path, limit=MAX_PLAN_BYTES, root=root), path)
    except OutputError as exc:
        problems.append(f"{exc}; this plan is left out")
        return None
    if not isinstance(record, dict) or not isinstance(record.get("videos"), list):
        problems.append(f"{show_path(path)}: not a tdvideo plan (no list of videos); left out")
        return None
    videos: dict[str, str] = {}
    bad = 0
    for entry in record["videos"]:
        output = _relative_output(entry.get("output")) if isinstance(entry, dict) else None
        source = entry.get("source") if isinstance(entry, dict) else None
        if output is None or not isinstance(source, str):
            bad += 1
            continue
        videos[output] = source
    unreadable: dict[str, str] = {}
    listed = record.get("unreadable")
    for entry in listed if isinstance(listed, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("reason"), str):
            unreadable[entry["path"]] = entry["reason"]
        else:
            bad += 1
    if listed is not None and not isinstance(listed, list):
        bad += 1
    if bad:
        problems.append(f"{show_path(path)}: {bad} entr{'y' if bad == 1 else 'ies'} without a source and an output inside the folder; left out")
    inputs = record.get("inputs")
    key = record.get("inputs_key")
    return Plan(
        path=path,
        format=str(record.get("format")),
        created=_time(record.get("created")),
        inputs=[i for i in inputs if isinstance(i, str)] if isinstance(inputs, list) else [],
        inputs_key=key if isinstance(key, str) else f"plan:{path.name}",  # unknown inputs: a group of its own
        videos=videos,
        unreadable=unreadable,
    )


class FailuresLog:
    """A process's failures journal: one JSON line per failed input, appended, never erased.

    In a store, where an object cannot be appended to, each process's log is an object of
    its own (its name says which process: see :func:`~._inputs.failures_log_name`), written
    whole again with each failure."""

    def __init__(self, path: Path | Url, *, out: Path | Url | None = None) -> None:
        self.path = path
        self.out = out
        self._lines: list[str] = []  # a store's log: what this process wrote so far

    def check(self) -> None:
        """A :class:`UsageError` before any work when the log is there but no regular file
        (a folder, a FIFO, a link): failures could not be recorded."""
        if isinstance(self.path, Url):
            return
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISREG(mode):
            raise UsageError(f"the failures log {show_path(self.path)} is a {file_kind(mode)}, not a regular file; failures could not be recorded")

    def append(self, path: Path, error_type: str | None, message: str | None, *, output: Path | None = None) -> None:
        record: dict[str, Any] = {"path": str(path), "error_type": error_type, "message": message, "time": time.time()}
        if output is not None and self.out is not None:
            record["output"] = output.relative_to(self.out).as_posix()
        line = json.dumps(record) + "\n"
        if isinstance(self.path, Url):
            self._lines.append(line)
            try:
                put_bytes(self.path, "".join(self._lines).encode())
            except OSError as exc:
                raise self._error(exc) from exc
            return
        try:
            # O_APPEND: lines of processes sharing a log never overwrite each other; O_NOFOLLOW
            # and the type check: never written through a link or into a FIFO.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise self._error(exc) from exc
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise OutputError(f"cannot write {show_path(self.path)}: a {file_kind(mode)}, not a regular file")
            os.write(fd, line.encode())
        except OSError as exc:
            raise self._error(exc) from exc
        finally:
            os.close(fd)

    def _error(self, exc: OSError) -> OutputError:
        stopped = "; stopped" if exc.errno in FATAL_WRITE_ERRORS else ""
        return OutputError(f"cannot write {show_path(self.path)}: {str(exc.strerror or exc).removeprefix(f'{self.path}: ')}{stopped}")


def _failure_record(line: bytes, path: Path) -> dict[str, Any] | None:
    """A failure record as tdvideo writes it, from one line, else None."""
    try:
        record = parse_json(line, path)
    except OutputError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("path"), str):
        return None
    if any(k in record and not isinstance(record[k], (str, type(None))) for k in ("output", "error_type", "message")):
        return None
    if "time" in record and _time(record["time"]) is None:
        return None
    return record


def _failure_lines(path: Path, root: Path, problems: list[str]) -> Iterator[dict[str, Any]]:
    """The failure records of one log, in file order; lines that are not records are counted."""
    try:
        fh = open_regular(path, root=root)
    except OutputError as exc:
        problems.append(f"{exc}; its failures are left out")
        return
    bad = 0
    with fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(0)
        if size > MAX_FAILURES_BYTES:
            problems.append(f"{show_path(path)}: {size} bytes, more than a failures log may hold ({MAX_FAILURES_BYTES}); its failures are left out")
            return
        while line := fh.readline(MAX_FAILURE_LINE + 1):
            if len(line) > MAX_FAILURE_LINE:  # no line of ours: skip the rest of it
                while line and not line.endswith(b"\n"):
                    line = fh.readline(MAX_FAILURE_LINE + 1)
                bad += 1
                continue
            record = _failure_record(line, path)
            if record is None and not line.endswith(b"\n") and fh.tell() == size:
                continue  # the last line, cut short by a kill: not a record, and not damage
            if record is None:
                bad += 1
                continue
            yield record
    if bad:
        problems.append(f"{show_path(path)}: {bad} line(s) that are not failure records; left out")


@dataclass
class RunRecords:
    """Every plan and every failure record of an output folder, and what could not be read."""

    plans: list[Plan] = field(default_factory=list)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)  # the last failure of each source path
    problems: list[str] = field(default_factory=list)


def read_records(out: Path | Url) -> RunRecords:
    """The plans and failures under ``out`` (:class:`UsageError` when ``out`` is no folder)."""
    if isinstance(out, Url):
        return _read_store_records(out)
    if not out.is_dir():
        raise UsageError(f"{show_path(out)}: {'not a folder' if out.exists() else 'no such folder'}")
    records = RunRecords()
    folder = plan_folder(out)
    paths: list[Path] = []
    try:
        check_inside(out, folder / "x.json")
        paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    except OutputError as exc:
        records.problems.append(f"{exc}; its plans are left out")
    old = out / RUN_DIR / "plan.json"  # the one plan tdvideo kept before plans were added up
    if os.path.lexists(old):
        paths.append(old)
    for path in paths:
        plan = _read_plan(path, out, records.problems)
        if plan is not None:
            records.plans.append(plan)
    for path in sorted(out.glob("failures*.jsonl")):
        _add_failures(records, _failure_lines(path, out, records.problems))
    return records


def _read_store_records(out: Url) -> RunRecords:
    """:func:`read_records` of a folder in a store."""
    records = RunRecords()
    try:
        plans = glob_url(plan_folder(out), "*.json")
        logs = glob_url(out, "failures*.jsonl")
    except Exception as exc:  # noqa: BLE001 - a store's client raises its own types
        raise UsageError(f"{out}: cannot be listed ({reason(exc)})") from None
    for path in plans:
        plan = _read_plan(path, out, records.problems)
        if plan is not None:
            records.plans.append(plan)
    for path in logs:
        _add_failures(records, _failure_lines(path, out, records.problems))
    return records


def _add_failures(records: RunRecords, lines: Iterator[dict[str, Any]]) -> None:
    """Keep the last failure of each source path."""
    for record in lines:
        earlier = records.failures.get(record["path"])
        if earlier is None or _when(record) >= _when(earlier):
            records.failures[record["path"]] = record


def _time(value: Any) -> float | None:
    """A record's time, seconds since the epoch, if it is one (finite, from 1970 to 5138)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) and 0 <= seconds < 1e11 else None


def _when(record: dict[str, Any]) -> float:
    return _time(record.get("time")) or 0.0
