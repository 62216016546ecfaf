"""What the machine and the process allow: cores, memory, umask, malloc tuning, signal names."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "available_cpus",
    "available_memory",
    "file_kind",
    "file_mode",
    "fix_malloc_mmap_threshold",
    "log_to_stderr",
    "measure_command",
    "sha256_file",
    "signal_name",
]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as taskset and cgroup cpusets set it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available for new work (``MemAvailable``, or a cgroup limit if lower), or None."""
    available: int | None = None
    try:
        with open("/proc/meminfo") as fh:
            match = re.search(r"^MemAvailable:\s+(\d+) kB", fh.read(), re.MULTILINE)
        if match:
            available = int(match.group(1)) * 1024
    except OSError:
        return None
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            with open(limit_file) as fh:
                limit_text = fh.read().strip()
            with open(usage_file) as fh:
                usage = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if limit_text.isdigit() and int(limit_text) < 1 << 60:
            room = max(0, int(limit_text) - usage)
            available = room if available is None else min(available, room)
        break
    return available


def _umask() -> int:
    try:
        with open("/proc/self/status") as fh:
            match = re.search(r"^Umask:\s+([0-7]+)", fh.read(), re.MULTILINE)
        if match:
            return int(match.group(1), 8)
    except OSError:
        pass
    # No /proc: read it by setting it and back (not thread-safe, hence only as a fallback).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_kind(mode: int) -> str:
    """What kind of file system entry ``st_mode`` describes, in words ("FIFO", "directory")."""
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return "special file"


def file_mode() -> int:
    """The mode a new file gets under this process's umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


_MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def fix_malloc_mmap_threshold() -> None:
    """Give large allocations back to the OS as soon as they are freed (glibc only).

    glibc raises its mmap threshold each time a large block is freed, after which
    blocks of that size come from the heap. With frame buffers, float batches and
    FFmpeg's own buffers freed in interleaved order, the heap can then fragment so that
    RSS grows with every batch (it did with the first pipeline: benchmarks/RESULTS.md).
    A fixed threshold keeps every block of 1 MiB or more in its own mapping. The command
    line and the decoding workers set it; a library never changes its host's allocator.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...): nothing to tune
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def signal_name(exitcode: int | None) -> str:
    """How a child process ended, from its ``exitcode`` (negative: killed by that signal)."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class _StderrHandler(logging.Handler):
    """Log records as lines on whatever ``sys.stderr`` is when they come, above any
    progress bars (through ``tqdm.write``, which clears and redraws them)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm  # tqdm is light; imported here to keep this module bare

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's contract: a failing handler reports, never raises
            self.handleError(record)


def log_to_stderr(level: int) -> None:
    """Send tdvideo's log records of ``level`` and above to stderr, one line each.

    Only the ``tdvideo`` logger is set, so ``--log-level debug`` does not turn on other
    libraries' debug output; calling it again replaces the earlier setting.
    """
    logger = logging.getLogger("tdvideo")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def process_age() -> float | None:
    """Seconds since this process started (Linux: from /proc), or None where unknown."""
    try:
        with open("/proc/self/stat") as fh:
            started = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: start time, in clock ticks
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started / os.sysconf("SC_CLK_TCK"))


@dataclass(frozen=True)
class Measured:
    """How a command went: its exit code, its output, its own peak RSS (bytes) and wall time."""

    code: int
    stdout: str
    stderr: str
    peak_rss: int
    seconds: float


# Forks ARGV from this small interpreter and writes the child's peak RSS and exit code to a
# file: a child's peak RSS counts the memory of the process it was forked from, so a command
# started straight from a large process (pytest) would report that process's peak.
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def measure_command(argv: Sequence[str], *, cwd: str | Path | None = None, timeout: float | None = None) -> Measured:
    """Run ``argv`` as a whole process and measure it, for benchmarks and tests. A command
    still running after ``timeout`` seconds is killed with all it started, and
    ``subprocess.TimeoutExpired`` raised."""
    with tempfile.TemporaryDirectory(prefix="tdvideo-measure-") as folder:
        report = Path(folder) / "rusage"
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _MEASURE, str(report), *map(str, argv)], cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        seconds = time.perf_counter() - start
        peak, code = (int(n) for n in report.read_text().split())
    return Measured(code, stdout.decode(errors="replace"), stderr.decode(errors="replace"), peak * 1024, seconds)
