"""Decoding worker processes: a dead worker takes only its own video down; the prefetch thread."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tdvideo
from tdvideo.errors import DecoderCrashError
from tdvideo.extract import _loader
from tdvideo.extract._loader import DecodePool, StandbyWorkers, prefetch
from tdvideo.video import ReadOptions, read_chunks

from .conftest import Clip, frame_indices, heavy_imports_after


def crashing_decode(path: Path, options: ReadOptions):
    """read_chunks, but the process dies (SIGKILL, as from the OOM killer) on files named *crash*:
    on every try for *crash_always*, on the first try only for *crash_once*."""
    if "crash" in path.name:
        marker = path.with_name(path.name + ".tried")
        if "always" in path.name or not marker.exists():
            marker.touch()
            chunks = read_chunks(path, options)
            yield next(chunks)  # die part-way, after a chunk was handed over
            os.kill(os.getpid(), signal.SIGKILL)
    yield from read_chunks(path, options)


@pytest.fixture()
def videos(clips: dict[str, Clip], tmp_path: Path) -> list[Path]:
    names = ["a.mp4", "crash_once.mp4", "b.mp4", "crash_always.mp4", "c.mp4"]
    for name in names:
        shutil.copy(clips["long_gop"].path, tmp_path / name)  # 200 frames: several chunks each
    return [tmp_path / n for n in names]


def _run(pool: DecodePool) -> dict[int, object]:
    """Each video's frame indices in order, or its error; restarts void what came before."""
    got: dict[int, object] = {}
    for chunk in pool.chunks():
        if chunk.restart:
            got.pop(chunk.index, None)
        elif chunk.error is not None:
            got[chunk.index] = chunk.error
        else:
            got.setdefault(chunk.index, [])
            frames = torch.from_numpy(chunk.clip.frames).permute(0, 3, 1, 2)  # type: ignore[union-attr]
            got[chunk.index] += frame_indices(frames)  # type: ignore[operator]
    return got


def test_a_dead_worker_costs_only_its_own_video(videos: list[Path]) -> None:
    options = ReadOptions(chunk_frames=50, size=(32, 48))
    pool = DecodePool(videos, options, workers=2, decode=crashing_decode)
    got = _run(pool)
    for i in (0, 1, 2, 4):  # crash_once.mp4 died once and was decoded again, alone
        assert got[i] == list(range(200)), videos[i].name
    error = got[3]
    assert isinstance(error, DecoderCrashError) and error.path == str(videos[3])
    assert "died twice (killed by SIGKILL, then killed by SIGKILL)" in str(error)
    assert not list(_loader._frames_root().glob(f"{_loader._FRAMES_PREFIX}w{os.getpid()}-*"))


def test_extractor_records_the_crash_and_goes_on(videos: list[Path], tmp_path: Path) -> None:
    extractor = tdvideo.Extractor(workers=2, batch_size=50)
    extractor._decode = crashing_decode
    results = list(extractor.run(videos, out=tmp_path / "out", progress=False))
    status = {r.path.name: (r.status, r.error_type) for r in results}
    assert status == {
        "a.mp4": ("done", None),
        "crash_once.mp4": ("done", None),
        "b.mp4": ("done", None),
        "crash_always.mp4": ("failed", "DecoderCrashError"),
        "c.mp4": ("done", None),
    }
    assert len(tdvideo.load(tmp_path / "out" / "crash_once.npy")) == 200
    log = (tmp_path / "out" / "failures.jsonl").read_text()
    assert "crash_always.mp4" in log and "SIGKILL" in log


def test_closing_early_kills_the_workers(videos: list[Path]) -> None:
    before = set(_children())  # other tests' helpers (the fuzz test's server) are not ours
    pool = DecodePool(videos, ReadOptions(chunk_frames=10), workers=2)
    chunks = prefetch(pool.chunks(), on_stop=pool.stop)
    next(chunks)
    children = [pid for pid in _children() if pid not in before]
    assert len(children) >= 2
    started = time.monotonic()
    chunks.close()
    assert time.monotonic() - started < 10
    assert not [pid for pid in children if _alive(pid)]


def test_workers_launched_ahead_are_taken_first_and_the_rest_stopped(videos: list[Path]) -> None:
    before = set(_children())
    standby = StandbyWorkers(3)
    launched = [pid for pid in _children() if pid not in before]
    assert len(launched) == 3
    pool = DecodePool([videos[0], videos[2]], ReadOptions(chunk_frames=50, size=(32, 48)), workers=2, standby=standby)
    pool.start()
    used = {w.process._popen.pid for w in pool._pool.values()}  # type: ignore[union-attr]
    assert len(used) == 2 and used <= set(launched)  # no new interpreter while launched ones wait
    assert not [pid for pid in launched if pid not in used and _alive(pid)]  # the third: stopped at once
    got = _run(pool)
    assert got == {0: list(range(200)), 1: list(range(200))}
    assert not [pid for pid in launched if _alive(pid)]


def test_a_worker_that_died_while_it_waited_is_not_handed_a_video(videos: list[Path]) -> None:
    before = set(_children())
    standby = StandbyWorkers(2)
    launched = [pid for pid in _children() if pid not in before]
    for pid in launched:
        os.kill(pid, signal.SIGKILL)
    while any(_alive(pid) for pid in launched):
        time.sleep(0.01)
    pool = DecodePool([videos[0]], ReadOptions(chunk_frames=50, size=(32, 48)), workers=1, standby=standby)
    got = _run(pool)
    assert got == {0: list(range(200))} and not pool._deaths  # decoded once, by a new worker: no death on its record
    assert not [pid for pid in launched if _alive(pid)]


def test_workers_launched_ahead_and_never_used_are_stopped() -> None:
    before = set(_children())
    with StandbyWorkers(2):
        launched = [pid for pid in _children() if pid not in before]
        assert len(launched) == 2
    assert not [pid for pid in launched if _alive(pid)]
    StandbyWorkers(0).close()


def _children() -> list[int]:
    """This process's decoding workers (not multiprocessing's long-lived resource tracker)."""
    me = str(os.getpid())
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or (entry / "stat").read_text().split(") ")[1].split()[1] != me:
                continue
            if b"resource_tracker" not in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_frames_travel_inline_when_shared_memory_is_full(clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunk = next(read_chunks(clips["h264"].path, ReadOptions(chunk_frames=8)))

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    packed = _loader._pack(chunk, tmp_path / "chunk")
    assert packed.file is None and not (tmp_path / "chunk").exists()
    monkeypatch.undo()
    np.testing.assert_array_equal(_loader._unpack(packed).frames, chunk.frames)
    through_file = _loader._pack(chunk, tmp_path / "chunk")
    assert through_file.file is not None
    back = _loader._unpack(through_file)
    np.testing.assert_array_equal(back.frames, chunk.frames)
    assert not (tmp_path / "chunk").exists()
    np.testing.assert_array_equal(back.timestamps, chunk.timestamps)


def test_workers_import_no_torch() -> None:
    """A decoding worker loads PyAV and NumPy only: it starts in a fraction of a second."""
    # What a worker unpickles: its main function, the decoder, the source fingerprint.
    script = "import tdvideo.extract._loader, tdvideo.video._reader, tdvideo.writers"
    assert heavy_imports_after(script) == []


def test_prefetch_lets_go_when_the_consumer_leaves_early() -> None:
    """The producer may be waiting to hand over its end marker into a full buffer."""
    items = prefetch(iter([0, 1]), depth=1)
    assert next(items) == 0
    time.sleep(0.3)  # the producer puts 1, then waits to put its end marker
    closer = threading.Thread(target=items.close, daemon=True)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive(), "closing the prefetching generator hung"


def test_stops_arriving_while_a_worker_is_created_come_after_it() -> None:
    # A SIGTERM in the middle of handing a child its start-up data killed that child
    # on a half-written pipe, and it printed a traceback; now the stop waits for the spawn.
    seen: list[str] = []

    def handler(signum: int, frame: object) -> None:
        seen.append("handled")
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(KeyboardInterrupt), _loader._stops_held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            seen.append("spawned")
        assert seen == ["spawned", "handled"]
    finally:
        signal.signal(signal.SIGTERM, previous)
