"""The Ray engine as a command: what it prints, how a signal stops it, what it leaves behind.

Each test runs ``tdvideo extract --engine ray`` as its own process, as a user would, and
follows every process it starts (its descendants, read from /proc while it runs).
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tdvideo.synthetic import index_frame, write_clip
from tdvideo.video._reader import RawChunk, ReadOptions, read_chunks

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra"),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="follows processes through /proc"),
]

ROOT = Path(__file__).resolve().parents[1]
# A line of Ray's C++ logging: "[2026-01-02 03:04:05,678 E 123 456] file.cc:78: ...".
RAY_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\]", re.MULTILINE)
# The command, with held_chunks as its decoder: Ray's workers import it from this file.
HELD = (
    "import tdvideo.extract._extractor as e, tests.test_ray_engine as t; e.read_chunks = t.held_chunks;"
    " import tdvideo.cli as c; c.main()"
)


def held_chunks(path: Path, options: ReadOptions) -> Iterator[RawChunk]:
    """read_chunks, but a video named *held* says it has started, then waits to be stopped."""
    if "held" in path.name:
        path.with_name(path.name + ".started").touch()
        time.sleep(300)
    yield from read_chunks(path, options)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("videos")
    for name, n in (("a.mp4", 5), ("b.mp4", 8)):
        write_clip(src / name, n, make_frame=lambda i: index_frame(i, 32, 48))
    return src


def _processes() -> dict[int, tuple[int, str, str]]:
    """Every process: pid -> (parent pid, start time, name)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # it ended while we looked
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), fields[19], name)
    return table


def _descendants(root: int) -> set[tuple[int, str, str]]:
    """(pid, start time, name) of each process below ``root``: the start time tells a reused pid."""
    table, below = _processes(), {root}
    grew = True
    while grew:
        grew = False
        for pid, (parent, _, _) in table.items():
            if parent in below and pid not in below:
                below.add(pid)
                grew = True
    below.discard(root)
    return {(pid, table[pid][1], table[pid][2]) for pid in below if pid in table}


def _alive(seen: set[tuple[int, str, str]]) -> set[tuple[int, str]]:
    """(pid, name now) of those of ``seen`` that still run."""
    table = _processes()
    return {(pid, table[pid][2]) for pid, start, _ in seen if pid in table and table[pid][1] == start}


def _run(
    args: list[str], tmp_path: Path, *, stop: tuple[Path, signal.Signals] | None = None
) -> tuple[int, str, set[tuple[int, str]]]:
    """Run a command to its end, sending ``stop``'s signal once its file exists.

    Returns the exit code, stderr, and the processes it started that are still alive a few
    seconds after it ended (killed then, so that a failure leaves nothing behind)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    with open(tmp_path / "stderr", "w+") as err:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        seen: set[tuple[int, str, str]] = set()
        deadline = time.monotonic() + 120
        try:
            while proc.poll() is None:
                assert time.monotonic() < deadline, "the command did not end"
                seen |= _descendants(proc.pid)
                if stop is not None and stop[0].exists():
                    proc.send_signal(stop[1])
                    stop = None
                time.sleep(0.1)
            after = time.monotonic() + 10  # Ray's workers may take a moment to go
            while _alive(seen) and time.monotonic() < after:
                time.sleep(0.2)
            left = _alive(seen)
        finally:
            proc.kill()
            proc.wait()
            for pid, _ in _alive(seen):
                os.kill(pid, signal.SIGKILL)
        err.seek(0)
        return proc.returncode, err.read(), left


def test_a_ray_run_prints_nothing_of_rays_and_leaves_no_process(videos: Path, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "tdvideo", "extract", str(videos), "-o", str(tmp_path / "out"), "--engine", "ray"]
    code, err, left = _run(args, tmp_path)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == ["a.npy", "b.npy"]
    assert "deprecated" not in err.lower(), err
    assert "constructor arguments in the object store" not in err, err
    assert not RAY_LOG.search(err), err
    assert not left, f"still running after the command ended: {left}"


def test_a_ray_started_before_planning_goes_when_planning_fails(tmp_path: Path) -> None:
    """The CLI starts Ray while the model resolves, before the inputs are looked at: an input
    that is not there is one line, and that Ray does not outlive the command."""
    missing = tmp_path / "missing.mp4"
    args = [sys.executable, "-m", "tdvideo", "extract", str(missing), "-o", str(tmp_path / "out"), "--engine", "ray"]
    code, err, left = _run(args, tmp_path)
    assert code == 2 and err.strip().startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "missing.mp4" in err
    assert not left, f"still running after the command ended: {left}"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_ray_run_with_one_line(videos: Path, tmp_path: Path, signum: signal.Signals) -> None:
    """Like the local engine: one "interrupted" line, 128 + the signal, and Ray's processes gone."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "held.mp4").write_bytes((videos / "b.mp4").read_bytes())
    args = [sys.executable, "-c", HELD, "extract", str(src), "-o", str(tmp_path / "out"), "--engine", "ray", "-q"]
    code, err, left = _run(args, tmp_path, stop=(src / "held.mp4.started", signum))
    assert code == 128 + signum, err
    assert "SIGTERM received" not in err, err  # Ray's C++ stack dump
    assert err.startswith("interrupted: ") and len(err.splitlines()) == 1, err
    assert not left, f"still running after the command ended: {left}"


def test_a_ray_the_caller_started_is_left_up(videos: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """From Python, with the caller's own Ray: it stays up for them, and the run warns of nothing."""
    import ray

    from tdvideo import Extractor

    handler = signal.getsignal(signal.SIGTERM)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = list(Extractor().run([videos], out=tmp_path / "out", engine="ray", progress=False))
        assert sorted(r.status for r in results) == ["done", "done"]
        ours = [str(w.message) for w in caught if "ray_remote_args" in str(w.message)]  # Ray's own are its business
        assert not ours, ours
        assert "constructor arguments in the object store" not in capfd.readouterr().err
        assert ray.is_initialized() and ray.get(ray.put(1)) == 1
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, handler)  # ray.init took it over
