"""Fuzzing the decoder: damaged clips give frames or a typed error, never a crash, hang or memory blow-up.

Small valid clips of several codecs and containers are damaged by Hypothesis (bytes
overwritten, size fields set to extremes, the file cut, bytes inserted, deleted or
duplicated) and read with :func:`tdvideo.probe`, :func:`tdvideo.read_video` or
:func:`tdvideo.iter_video` under drawn read options. Every case must end in a
:class:`tdvideo.VideoClip` (or :class:`tdvideo.VideoInfo`) or a :class:`tdvideo.TdvideoError`.

The cases run in one long-lived child process, because what is looked for cannot be
caught inside the process that suffers it: a hang in FFmpeg's C code ignores Python
signals, and a runaway allocation can take the machine down. The parent kills the child
when a case runs past ``TDVIDEO_FUZZ_TIMEOUT`` seconds (a hang) or its resident memory
grows more than ``TDVIDEO_FUZZ_MEMORY_MB`` above its size after imports (memory), and
starts a new child for the next case (forked from a server that imported torch once,
so that costs milliseconds). The bound is on resident memory, polled from outside and
checked against the child's own high-water mark after each case, not on address space:
importing torch already maps gigabytes it never touches, and under an address-space
limit a refused allocation inside FFmpeg comes back as ``av.MemoryError``, an
``av.FFmpegError`` that tdvideo rightly turns into a DecodeError, so the blow-up would
pass unnoticed.

``TDVIDEO_FUZZ_EXAMPLES`` sets the number of cases (default 60, a few seconds); run
thousands by setting it. A failing case's bytes and a reproduction note are saved under
``TDVIDEO_FUZZ_FAILURES`` (default: a pytest temp folder); the assertion names the path.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tdvideo
from tdvideo.synthetic import index_frame, write_clip

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the memory watchdog reads /proc/<pid>/status"
)

EXAMPLES = int(os.environ.get("TDVIDEO_FUZZ_EXAMPLES", "60"))
TIMEOUT_S = float(os.environ.get("TDVIDEO_FUZZ_TIMEOUT", "20"))
MEMORY_LIMIT_MIB = int(os.environ.get("TDVIDEO_FUZZ_MEMORY_MB", "2048"))
# The first child waits for the fork server to import torch: seconds, more on a loaded machine.
_STARTUP_TIMEOUT_S = 300.0
_POLL_S = 0.01

# Seed clips: file name -> (encoder, write_clip options). 40 frames with a keyframe every
# 20 so that start= and sparse fps= make the reader seek. Encoders missing from this
# FFmpeg build are skipped.
_SEEDS: dict[str, tuple[str, dict[str, Any]]] = {
    "h264.mp4": ("libx264", {}),
    "h264.mkv": ("libx264", {}),
    "hevc.mp4": ("libx265", {"options": {"x265-params": "log-level=none"}}),
    "vp9.webm": ("libvpx-vp9", {}),
    "av1.mkv": ("libsvtav1", {}),
    "mpeg4.avi": ("mpeg4", {}),
    "mpeg2.ts": ("mpeg2video", {}),
    "mjpeg.avi": ("mjpeg", {"pix_fmt": "yuvj420p"}),
}
_SEED_FRAMES, _SEED_GOP, _SEED_HEIGHT, _SEED_WIDTH = 40, 20, 48, 64

# Values that container and codec size/count fields choke on.
_INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2**64 - 1)


# -- the child process -----------------------------------------------------------------


def _status_kib(field: str, pid: int | str = "self") -> int | None:
    """A ``Vm*`` line of /proc/<pid>/status in KiB; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next reading is this case's peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class BadResult(Exception):
    """A reader returned something other than a VideoClip/VideoInfo of uint8 frames with matching timestamps."""


def _call(path: Path, call: dict[str, Any]) -> str:
    """Run one read; return a short description of a valid result, or raise BadResult."""
    fn, options = call["fn"], call["options"]
    if fn == "probe":
        info = tdvideo.probe(path)
        if not isinstance(info, tdvideo.VideoInfo):
            raise BadResult(f"probe returned {type(info).__name__}, not VideoInfo")
        return f"info {info.codec} {info.width}x{info.height}"
    clips = [tdvideo.read_video(path, **options)] if fn == "read_video" else list(tdvideo.iter_video(path, **options))
    for clip in clips:
        if not isinstance(clip, tdvideo.VideoClip):
            raise BadResult(f"{fn} gave {type(clip).__name__}, not VideoClip")
        frames, times = clip.frames, clip.timestamps
        want_dims = 5 if options.get("clip_len") else 4
        if frames.dtype != torch.uint8 or frames.dim() != want_dims or tuple(times.shape) != tuple(frames.shape[:want_dims - 3]):
            raise BadResult(f"{fn} gave frames {frames.dtype} {tuple(frames.shape)} with timestamps {tuple(times.shape)}")
    return f"{sum(len(c) for c in clips)} frames in {len(clips)} clip(s), truncated={clips[-1].truncated}"


def _selftest(action: str) -> str:
    """Deliberate faults, for checking the watchdog itself (never drawn by the fuzzer)."""
    if action == "sleep":
        time.sleep(3600)
    if action == "allocate":
        import numpy as np

        block = np.ones(4 << 30, dtype=np.uint8)  # 4 GiB, every page touched
        return f"allocated {block.nbytes} bytes"
    if action == "abort":
        os.abort()
    raise AssertionError(action)


def _child_main(conn: multiprocessing.connection.Connection, workdir: str) -> None:
    """Receive ``(data, suffix, call)``, write the bytes to a file, read it, send back the outcome."""
    warnings.simplefilter("ignore")
    conn.send(("ready", _status_kib("VmRSS"), tdvideo.__file__))
    path_base = Path(workdir)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        data, suffix, call = message
        path = path_base / f"case{suffix}"
        path.write_bytes(data)
        _reset_peak_rss()
        try:
            if call["fn"].startswith("selftest:"):
                detail = _selftest(call["fn"].split(":", 1)[1])
            else:
                detail = _call(path, call)
            result = ("ok", detail, "")
        except tdvideo.TdvideoError as exc:
            result = ("typed-error", f"{type(exc).__name__}: {exc}", "")
        except BadResult as exc:
            result = ("bad-result", str(exc), "")
        except BaseException as exc:  # noqa: BLE001 - anything else is the finding
            result = ("untyped-error", f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}", traceback.format_exc())
        conn.send((*result, _status_kib("VmHWM")))


# -- the parent side -------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one case ended. ``kind``: ok, typed-error, untyped-error, bad-result, hang, memory or crash."""

    kind: str
    detail: str
    traceback: str = ""
    peak_mib: float | None = None  # resident memory above the child's baseline

    @property
    def passed(self) -> bool:
        return self.kind in ("ok", "typed-error")


class Worker:
    """A long-lived child process that runs cases, killed and restarted when one hangs or blows up."""

    def __init__(self, workdir: Path) -> None:
        # A fork server that has imported tdvideo (and torch) once makes a new child cheap,
        # so a killed child costs milliseconds to replace, not seconds (and shrinking a
        # hang or blow-up found by Hypothesis stays affordable). Children are forked from
        # that clean server, never from pytest's process.
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["tdvideo", __name__])
        self._workdir = workdir
        self._proc: Any = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._baseline_kib = 0
        self.starts = 0

    def start(self) -> None:
        """Start a child; it says it is ready (with its resident memory) before its first case."""
        self.close()
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_child_main, args=(child, str(self._workdir)), daemon=True)
        self._proc.start()
        child.close()
        self._conn, self._baseline_kib = parent, -1
        self.starts += 1

    def _ready(self) -> multiprocessing.connection.Connection:
        if self._proc is None or not self._proc.is_alive():
            self.start()
        assert self._conn is not None
        if self._baseline_kib < 0:
            if not self._conn.poll(_STARTUP_TIMEOUT_S):
                raise RuntimeError(f"fuzz worker did not start within {_STARTUP_TIMEOUT_S:.0f} s")
            try:
                tag, rss, where = self._conn.recv()
            except EOFError:
                raise RuntimeError(f"fuzz worker died while starting (exit code {self._proc.exitcode})") from None
            assert tag == "ready" and rss is not None
            # The fork server imports tdvideo by its own sys.path: make sure it is this checkout's.
            if Path(where).resolve() != Path(tdvideo.__file__).resolve():
                raise RuntimeError(f"fuzz worker imported tdvideo from {where}, not {tdvideo.__file__}")
            self._baseline_kib = rss
        return self._conn

    def run(self, data: bytes, suffix: str, call: dict[str, Any], *, timeout_s: float, memory_limit_mib: int) -> Outcome:
        """Run one case in the child, watching its time and resident memory from outside."""
        conn = self._ready()
        limit_kib = memory_limit_mib * 1024
        conn.send((data, suffix, call))
        started = time.monotonic()
        peak_kib = 0
        while not conn.poll(_POLL_S):
            rss = _status_kib("VmRSS", self._proc.pid)
            if rss is None or not self._proc.is_alive():
                break
            peak_kib = max(peak_kib, rss - self._baseline_kib)
            if peak_kib > limit_kib:
                self._kill()
                return Outcome("memory", f"resident memory grew {peak_kib / 1024:.0f} MiB above the child's baseline "
                               f"(limit {memory_limit_mib} MiB); child killed", peak_mib=peak_kib / 1024)
            if time.monotonic() - started > timeout_s:
                self._kill()
                return Outcome("hang", f"no result after {timeout_s:g} s; child killed", peak_mib=peak_kib / 1024)
        try:
            kind, detail, tb, hwm_kib = conn.recv()
        except (EOFError, OSError):
            self._proc.join(5)
            code = self._proc.exitcode
            self._kill()
            return Outcome("crash", f"child died (exit code {code}) during the case", peak_mib=peak_kib / 1024)
        peak_kib = max(peak_kib, (hwm_kib or 0) - self._baseline_kib)
        if peak_kib > limit_kib:
            # A spike between two polls: the child's own high-water mark still shows it.
            return Outcome("memory", f"peak resident memory {peak_kib / 1024:.0f} MiB above the child's baseline "
                           f"(limit {memory_limit_mib} MiB); result was {kind}: {detail}", tb, peak_kib / 1024)
        return Outcome(kind, detail, tb, peak_kib / 1024)

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.join(10)
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None

    def close(self) -> None:
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._proc.join(5)
        self._kill()


@dataclass(frozen=True)
class Seed:
    """A valid clip the mutations start from."""

    name: str
    codec: str
    data: bytes = field(repr=False)

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints failing examples with this; the default would include every byte.
        printer.text(repr(self))


@pytest.fixture(scope="session")
def fuzz_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    worker = Worker(tmp_path_factory.mktemp("fuzz-worker"))
    worker.start()
    yield worker
    worker.close()


@pytest.fixture(scope="session")
def seeds(fuzz_worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> list[Seed]:
    """The seed clips: tiny, so one case decodes in milliseconds."""
    d = tmp_path_factory.mktemp("fuzz-seeds")
    out = []
    for name, (codec, options) in _SEEDS.items():
        try:
            av.Codec(codec, "w")
        except (av.FFmpegError, ValueError):
            continue  # encoder not in this FFmpeg build
        path = write_clip(
            d / name,
            _SEED_FRAMES,
            make_frame=lambda i: index_frame(i, _SEED_HEIGHT, _SEED_WIDTH),
            codec=codec,
            gop=_SEED_GOP,
            **options,
        )
        out.append(Seed(name, codec, path.read_bytes()))
    assert len(out) >= 4, f"too few seed encoders available: {[s.name for s in out]}"
    return out


@pytest.fixture(scope="session")
def failures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("TDVIDEO_FUZZ_FAILURES")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        return Path(where)
    return tmp_path_factory.mktemp("fuzz-failures")


# -- drawing cases ---------------------------------------------------------------------


def _offset(n: int) -> st.SearchStrategy[int]:
    """An offset into ``n`` bytes, often in the first or last KiB, where headers and indexes live."""
    return st.one_of(st.integers(0, min(n, 1024) - 1), st.integers(max(0, n - 1024), n - 1), st.integers(0, n - 1))


def draw_mutations(data: st.DataObject, blob: bytes) -> tuple[bytes, list[str]]:
    """Apply 1-4 drawn mutations to ``blob``; return the damaged bytes and a description of each step."""
    buf = bytearray(blob)
    steps = []
    for _ in range(data.draw(st.integers(1, 4), label="number of mutations")):
        n = len(buf)
        kind = data.draw(st.sampled_from(["overwrite", "integer", "truncate", "insert", "delete", "duplicate"]), label="mutation")
        if kind == "overwrite":
            at, new = data.draw(_offset(n), label="at"), data.draw(st.binary(min_size=1, max_size=8), label="bytes")
            buf[at : at + len(new)] = new
            steps.append(f"overwrite at {at} with {new.hex()}")
        elif kind == "integer":
            width = data.draw(st.sampled_from([1, 2, 4, 8]), label="width")
            value = data.draw(st.one_of(st.sampled_from(_INTERESTING), st.integers(0, 2 ** (8 * width) - 1)), label="value")
            order = data.draw(st.sampled_from(["big", "little"]), label="byte order")
            at = data.draw(_offset(n), label="at")
            buf[at : at + width] = (value % 2 ** (8 * width)).to_bytes(width, order)  # type: ignore[arg-type]
            steps.append(f"set {width}-byte {order}-endian integer at {at} to {value % 2 ** (8 * width):#x}")
        elif kind == "truncate" and n > 1:
            at = data.draw(st.integers(1, n - 1), label="keep")
            del buf[at:]
            steps.append(f"truncate to {at} bytes")
        elif kind == "insert":
            at, new = data.draw(st.integers(0, n), label="at"), data.draw(st.binary(min_size=1, max_size=64), label="bytes")
            buf[at:at] = new
            steps.append(f"insert {new.hex()} at {at}")
        elif kind == "delete" and n > 1:
            at = data.draw(st.integers(0, n - 2), label="at")
            length = data.draw(st.integers(1, min(256, n - 1 - at)), label="length")
            del buf[at : at + length]
            steps.append(f"delete {length} bytes at {at}")
        elif kind == "duplicate":
            src = data.draw(_offset(n), label="from")
            length = data.draw(st.integers(1, min(512, n - src)), label="length")
            dst = data.draw(st.integers(0, n), label="to")
            buf[dst:dst] = buf[src : src + length]
            steps.append(f"copy {length} bytes from {src} to {dst}")
    return bytes(buf), steps


def draw_call(data: st.DataObject) -> dict[str, Any]:
    """Which reader to call and with which options (always valid ones: the file is under test)."""
    fn = data.draw(st.sampled_from(["read_video", "iter_video", "probe"]), label="reader")
    options: dict[str, Any] = {}
    if fn == "probe":
        return {"fn": fn, "options": options}
    mode = data.draw(st.sampled_from(["all", "fps", "stride", "num_frames"]), label="sampling")
    if mode == "fps":
        options["fps"] = data.draw(st.sampled_from([0.5, 1.0, 3.0, 7.5, 60.0]), label="fps")
    elif mode == "stride":
        options["stride"] = data.draw(st.integers(1, 5), label="stride")
    elif mode == "num_frames":
        options["num_frames"] = data.draw(st.integers(1, 10), label="num_frames")
    if data.draw(st.booleans(), label="with start/end"):
        start = data.draw(st.sampled_from([None, 0.3, 0.9, 1.2]), label="start")
        end = data.draw(st.sampled_from([None, 0.5, 1.0, 5.0]), label="end")
        if start is not None:
            options["start"] = start
        if end is not None and end > (start or 0.0):
            options["end"] = end
    # Each option's first choice is its default, left out of the call.
    for name, choices in (
        ("size", [None, 32, (24, 40)]),
        ("crop", [None, 16]),
        ("keyframes_only", [False, False, True]),
        ("on_error", ["raise", "keep"]),
        ("threads", [0, 1]),
        ("clip_len", [None, None, 2, 3]),
    ):
        value = data.draw(st.sampled_from(choices), label=name)
        if value != choices[0]:
            options[name] = value
    if fn == "iter_video":
        options["chunk_frames"] = data.draw(st.integers(1, 8), label="chunk_frames")
    return {"fn": fn, "options": options}


def describe_call(call: dict[str, Any], path: str = "path") -> str:
    args = "".join(f", {k}={v!r}" for k, v in call["options"].items())
    fn = call["fn"]
    text = f"tdvideo.{fn}({path!r}{args})"
    return f"list({text})" if fn == "iter_video" else text


class FuzzFailure(AssertionError):
    """A case that did not end in frames or a TdvideoError. One subclass per kind, so that
    Hypothesis tells the kinds apart: it shrinks and reports each separately instead of
    letting a hang shrink into an unrelated exception."""


class UntypedError(FuzzFailure):
    pass


class BadResultFailure(FuzzFailure):
    pass


class Hang(FuzzFailure):
    pass


class MemoryBlowup(FuzzFailure):
    pass


class Crash(FuzzFailure):
    pass


_FAILURES: dict[str, type[FuzzFailure]] = {
    "untyped-error": UntypedError,
    "bad-result": BadResultFailure,
    "hang": Hang,
    "memory": MemoryBlowup,
    "crash": Crash,
}


def _failure_label(outcome: Outcome) -> str:
    """The kind, and for an untyped error the exception's class name (``untyped-AttributeError``)."""
    if outcome.kind != "untyped-error":
        return outcome.kind
    return "untyped-" + outcome.detail.split(":", 1)[0].rsplit(".", 1)[-1]


def _failure_class(outcome: Outcome) -> type[FuzzFailure]:
    """One class per failure label: an AttributeError and a PermissionError are two bugs to Hypothesis."""
    label = _failure_label(outcome)
    if label not in _FAILURES:
        _FAILURES[label] = type(label.replace("-", "_"), (UntypedError,), {"__module__": __name__})
    return _FAILURES[label]


def save_failure(where: Path, seed: Seed, steps: list[str], call: dict[str, Any], data: bytes, outcome: Outcome) -> Path:
    """Save the damaged bytes and a note on how to reproduce; return the bytes' path.

    One file per failure label and seed, overwritten while Hypothesis shrinks: what is left
    is its final, smallest example, the one the assertion reports.
    """
    path = where / f"{_failure_label(outcome)}-{seed.name.replace('.', '-')}{seed.suffix}"
    path.write_bytes(data)
    note = "\n".join([
        f"seed: {seed.name} ({seed.codec}), {len(seed.data)} bytes -> {len(data)} bytes",
        "mutations: " + "; ".join(steps),
        f"call: {describe_call(call, str(path))}",
        f"outcome: {outcome.kind}: {outcome.detail}",
        outcome.traceback,
    ])
    path.with_suffix(path.suffix + ".txt").write_text(note)
    return path


def check_case(worker: Worker, seed: Seed, steps: list[str], call: dict[str, Any], data: bytes, failures: Path) -> Outcome:
    """Run one case; fail with everything needed to reproduce it unless it gave frames or a typed error."""
    __tracebackhide__ = True
    outcome = worker.run(data, seed.suffix, call, timeout_s=TIMEOUT_S, memory_limit_mib=MEMORY_LIMIT_MIB)
    if not outcome.passed:
        saved = save_failure(failures, seed, steps, call, data, outcome)
        tb_tail = "\n".join(outcome.traceback.strip().splitlines()[-12:])
        raise _failure_class(outcome)(
            f"{outcome.kind} reading a damaged {seed.name} ({seed.codec})\n"
            f"  mutations: {'; '.join(steps)}\n"
            f"  call: {describe_call(call)}\n"
            f"  outcome: {outcome.detail}\n"
            f"  saved: {saved} (+ .txt note)\n{tb_tail}"
        )
    return outcome


# -- tests -----------------------------------------------------------------------------


@settings(
    max_examples=EXAMPLES,
    deadline=None,  # decode time varies with the damage and the machine; hangs are the watchdog's job
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_damaged_clips_give_frames_or_typed_errors(
    data: st.DataObject, fuzz_worker: Worker, seeds: list[Seed], failures_dir: Path
) -> None:
    """Whatever the damage, readers return frames or raise a TdvideoError, in bounded time and memory.

    Callers (the CLI, the pipeline's per-video error handling) rely on catching
    TdvideoError for bad inputs; any other exception, a hang or a blow-up stops a
    whole batch of videos over one damaged file.
    """
    seed = data.draw(st.sampled_from(seeds), label="seed")
    damaged, steps = draw_mutations(data, seed.data)
    call = draw_call(data)
    check_case(fuzz_worker, seed, steps, call, damaged, failures_dir)


def test_watchdog_reports_hangs_and_memory_blowups(fuzz_worker: Worker) -> None:
    """The fuzz test is only as good as its watchdog: a hang and a 4 GiB allocation must be caught, not waited out."""
    hang = fuzz_worker.run(b"x", ".mp4", {"fn": "selftest:sleep", "options": {}}, timeout_s=2, memory_limit_mib=MEMORY_LIMIT_MIB)
    assert hang.kind == "hang", hang
    memory = fuzz_worker.run(b"x", ".mp4", {"fn": "selftest:allocate", "options": {}}, timeout_s=60, memory_limit_mib=512)
    assert memory.kind == "memory" and memory.peak_mib is not None and memory.peak_mib > 512, memory
    ok = fuzz_worker.run(b"x", ".mp4", {"fn": "probe", "options": {}}, timeout_s=TIMEOUT_S, memory_limit_mib=MEMORY_LIMIT_MIB)
    assert ok.kind == "typed-error" and "VideoOpenError" in ok.detail, ok  # a fresh child took over
