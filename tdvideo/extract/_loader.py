"""Decoding in worker processes that survive each other's deaths, and a prefetch thread.

Each worker process decodes one video at a time and hands its frames to the main process
through files in shared memory (``/dev/shm``): the worker writes a chunk once, the main
process maps it without copying. Only small messages cross the pipe. Workers import PyAV
and NumPy, never torch (this module does not import it), so one starts in a fraction of a
second and decodes while the main process loads the model.

A worker is a fresh interpreter that runs this module's entry point and nothing else. It
never imports the caller's ``__main__`` (as ``multiprocessing``'s ``spawn`` does), so a
script that uses an :class:`~tdvideo.Extractor` at its top level, without an
``if __name__ == "__main__":`` guard, is not run again in every worker.

A worker that dies - killed by the OOM killer, or a crash inside FFmpeg - takes only
its current video down. That video is decoded again after the others, alone, in a
fresh worker; if that worker dies too, the video fails with the signal named, and the
run goes on.
"""

from __future__ import annotations

import errno
import logging
import mmap
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Self

import numpy as np

from .._files import STALE_SECONDS, owner_tag, process_alive
from .._system import fix_malloc_mmap_threshold, log_to_stderr, signal_name
from ..errors import DecoderCrashError, VideoError, show_path
from ..video._reader import RawChunk, ReadOptions, read_chunks

__all__ = [
    "FLUSH", "Chunk", "Decode", "DecodePool", "Identify", "Prefetch", "StandbyWorkers", "decode_chunks", "decode_in_process",
    "prefetch", "remove_own_frame_folders", "sweep_frame_folders",
]

log = logging.getLogger(__package__)  # the public package: its modules are private

Decode = Callable[[Path, ReadOptions], Iterator[RawChunk]]
Identify = Callable[[Path], Any]


@dataclass
class Chunk:
    """One decoded chunk of video ``index``, or the end of that video.

    ``error`` ends the video as failed. ``restart`` says that the chunks of the video
    handed out so far are void: its worker died and it will be decoded again. The first
    chunk of a video carries ``source``, what ``identify(path)`` said before decoding
    began (to notice a file that changes while it is read).
    """

    index: int
    clip: RawChunk | None
    last: bool
    error: BaseException | None = None
    restart: bool = False
    source: Any = None


# Handed on in place of a chunk when no video can be started for now (claim mode waits
# for a claim): what is batched so far must go to the model, whose commits free claims.
FLUSH = Chunk(-1, None, last=False)
# How long the decoders wait before asking for a video again, when told "not now".
_POLL_SECONDS = 0.2


def decode_in_process(
    videos: Iterable[Path | None],
    options: ReadOptions,
    decode: Decode = read_chunks,
    *,
    identify: Identify | None = None,
    stop: threading.Event | None = None,
) -> Iterator[Chunk]:
    """Every video's chunks, decoded in this thread one after the other. ``videos`` may give
    None for "no video now, ask again" (claim mode): :data:`FLUSH` is handed on then. Setting
    ``stop`` ends it at the next video, or while it waits (FLUSH alone reaches no consumer
    that could stop it)."""
    stop = stop or threading.Event()
    index = 0
    for path in videos:
        if stop.is_set():
            return
        if path is None:
            yield FLUSH
            stop.wait(_POLL_SECONDS)
            continue
        yield from decode_chunks(index, path, options, decode, identify=identify)
        index += 1


def decode_chunks(
    index: int,
    path: Path,
    options: ReadOptions,
    decode: Decode = read_chunks,
    *,
    identify: Identify | None = None,
) -> Iterator[Chunk]:
    """A video's chunks; the last is flagged, and an error ends the video as one more item."""
    try:
        source = identify(path) if identify is not None else None
    except OSError:
        source = None  # decoding fails to open it too, and says why
    held: RawChunk | None = None
    try:
        for clip in decode(path, options):
            if held is not None:
                yield Chunk(index, held, last=False, source=source)
            held = clip
    except Exception as exc:  # noqa: BLE001 - any error of a video is that video's failure; the run goes on
        yield Chunk(index, None, last=True, error=exc)
        return
    yield Chunk(index, held, last=True, source=source)


# -- a background thread -------------------------------------------------------------------


_DONE = object()


class Prefetch(Iterator[Any]):
    """Runs ``items`` in a background thread from the moment it is made, ahead of the consumer.

    At most ``depth`` items, and ``max_bytes`` of them by ``weight(item)``, wait for the
    consumer (always at least one). An exception in the producer is re-raised to the
    consumer. :meth:`close` (also on garbage collection, or when the consumer leaves a
    ``for`` loop early) stops the producer at its next item and closes ``items`` from
    its thread; ``on_stop`` is called first, to wake a producer waiting for its next item.
    """

    def __init__(
        self,
        items: Iterator[Any],
        *,
        depth: int = 2,
        max_bytes: int | None = None,
        weight: Callable[[Any], int] = lambda item: 0,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self._items = items
        self._depth, self._max_bytes, self._weight = depth, max_bytes, weight
        self._on_stop = on_stop
        self._buffer: deque[Any] = deque()
        self._bytes = 0
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="tdvideo-decode", daemon=True)
        self._thread.start()

    def _full(self) -> bool:
        if not self._buffer:
            return False
        return len(self._buffer) >= self._depth or (self._max_bytes is not None and self._bytes >= self._max_bytes)

    def _put(self, item: Any) -> bool:
        """Hand ``item`` over unless the consumer has left; a full buffer never blocks for good."""
        with self._ready:
            while self._full() and not self._stop.is_set():
                self._ready.wait(timeout=0.1)
            if self._stop.is_set():
                return False
            self._buffer.append(item)
            self._bytes += self._weight(item) if item is not _DONE and not isinstance(item, BaseException) else 0
            self._ready.notify_all()
            return True

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    break
            else:
                self._put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(exc)
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def __next__(self) -> Any:
        if self._stop.is_set():
            raise StopIteration
        with self._ready:
            while not self._buffer:
                self._ready.wait()
            item = self._buffer.popleft()
            if item is not _DONE and not isinstance(item, BaseException):
                self._bytes -= self._weight(item)
            self._ready.notify_all()
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._on_stop is not None:
            self._on_stop()
        with self._ready:
            self._ready.notify_all()
        self._thread.join()

    def __del__(self) -> None:
        self.close()


def prefetch(items: Iterator[Any], depth: int = 2, *, on_stop: Callable[[], None] | None = None) -> Iterator[Any]:
    """``items`` run in a background thread, ``depth`` items ahead; closing the returned
    generator stops it (see :class:`Prefetch`)."""
    ahead = Prefetch(items, depth=depth, on_stop=on_stop)
    try:
        yield from ahead
    finally:
        ahead.close()


# -- frames across processes ---------------------------------------------------------------


@dataclass
class _Packed:
    """A chunk on its way from a worker: frames in a file (or inline), the rest as is."""

    chunk: RawChunk  # with frames emptied
    shape: tuple[int, ...]  # of the (T, H, W, C) frames
    file: str | None = None
    inline: np.ndarray | None = None


def _pack(chunk: RawChunk, file: Path) -> _Packed:
    frames = chunk.frames
    bare = replace(chunk, frames=np.empty(0, dtype=np.uint8))
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(np.ascontiguousarray(frames)).cast("B")
            written = 0
            while written < len(view):
                written += os.write(fd, view[written:])
        finally:
            os.close(fd)
    except OSError as exc:
        file.unlink(missing_ok=True)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.ENOMEM):
            raise
        # Shared memory is full (small /dev/shm in containers): send the frames inline.
        return _Packed(bare, frames.shape, inline=frames)
    return _Packed(bare, frames.shape, file=str(file))


def _unpack(packed: _Packed) -> RawChunk:
    if packed.file is None:
        assert packed.inline is not None
        return replace(packed.chunk, frames=packed.inline)
    nbytes = int(np.prod(packed.shape))
    fd = os.open(packed.file, os.O_RDONLY)
    try:
        # A private mapping: no copy, and writable for torch (writes would stay local).
        mapping = mmap.mmap(fd, nbytes, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
        os.unlink(packed.file)  # the mapping keeps the pages until it is released
    frames = np.frombuffer(mapping, dtype=np.uint8, count=nbytes).reshape(packed.shape)
    return replace(packed.chunk, frames=frames)


def _frames_root() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())


_FRAMES_PREFIX = "tdvideo-frames-"
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


_FRAMES_OWNER = re.compile(r"w(\d+)-([0-9a-f]{8})-")
_FRAMES_PID = re.compile(r"(\d+)-")  # the folders of a tdvideo that did not name its host


def remove_own_frame_folders() -> None:
    """Remove this process's frame folders: for a process about to exit on a signal, which
    may have arrived before a pool could clean up after itself (while it was starting)."""
    root = _frames_root()
    for entry in root.glob(f"{_FRAMES_PREFIX}{owner_tag()}-*"):
        shutil.rmtree(entry, onerror=_log_rmtree_error)


def sweep_frame_folders(root: Path | None = None) -> None:
    """Remove the frame folders that runs killed before they could clean up left in
    shared memory (``root``: where they are made): those of a process of this host that
    no longer exists, and those of another host (a shared ``/tmp``) older than an hour.
    Every run does this as it starts, whether or not it starts workers."""
    root = _frames_root() if root is None else root
    try:
        entries = [e for e in root.iterdir() if e.name.startswith(_FRAMES_PREFIX)]
    except OSError:
        return
    host = owner_tag().rsplit("-", 1)[1]
    for entry in entries:
        name = entry.name[len(_FRAMES_PREFIX) :]
        owned, bare = _FRAMES_OWNER.match(name), _FRAMES_PID.match(name)
        if owned is not None and owned.group(2) == host:
            gone = not process_alive(int(owned.group(1)))
        elif owned is not None:
            try:
                gone = time.time() - entry.lstat().st_mtime > STALE_SECONDS
            except FileNotFoundError:
                continue
        else:
            gone = bare is not None and not process_alive(int(bare.group(1)))
        if gone:
            shutil.rmtree(entry, onerror=_log_rmtree_error)


def _log_rmtree_error(function: Any, path: str, exc_info: Any) -> None:
    log.warning("could not remove %s: %s", path, exc_info[1])


# -- the worker process --------------------------------------------------------------------


# Bytes of frames a worker hands over before the main process has taken them: they wait in
# shared memory. Enough to go on decoding while the main process imports torch (which
# holds its GIL for seconds, so it takes nothing then), and a bound on each worker's
# memory when the model is slower than decoding. A chunk always goes, if it is the only one.
_IN_FLIGHT_BYTES = 128 * 2**20
_ACK = "ack"


class _Link:
    """A worker's end of its pipe: tasks in, chunks out, at most :data:`_IN_FLIGHT_BYTES` unacknowledged."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.in_flight: deque[int] = deque()  # bytes of each unacknowledged chunk, oldest first

    def _acknowledged(self) -> None:
        self.in_flight.popleft()

    def next_task(self) -> Any:
        while (message := self.conn.recv()) == _ACK:
            self._acknowledged()
        return message

    def send_chunk(self, message: tuple[Any, ...], nbytes: int) -> None:
        while self.in_flight and sum(self.in_flight) + nbytes > _IN_FLIGHT_BYTES:
            if self.conn.recv() != _ACK:
                raise EOFError("told to stop part-way through a video")
            self._acknowledged()
        self.conn.send(message)
        self.in_flight.append(nbytes)


def worker_entry(fd: int) -> None:
    """A decoding worker's entry point: its pipe is ``fd``; see :class:`_Process`."""
    # Ctrl-C reaches the whole process group; the main process decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked by _Process.start
    conn = Connection(fd)
    try:
        # The parent's import path first: ``decode`` may be a function of a module only it can see.
        sys.path[:] = conn.recv()
        options, decode, identify, frames_dir, log_level = conn.recv()
    except (EOFError, OSError):
        return  # the main process has gone before the worker started
    _worker_main(conn, options, decode, identify, frames_dir, log_level)


def _worker_main(
    conn: Connection, options: ReadOptions, decode: Decode, identify: Identify | None, frames_dir: str, log_level: int
) -> None:
    log_to_stderr(log_level)
    fix_malloc_mmap_threshold()
    link = _Link(conn)
    serial = 0
    try:
        while (task := link.next_task()) is not None:
            index, path = task
            for chunk in decode_chunks(index, path, options, decode, identify=identify):
                if chunk.error is not None:
                    conn.send(("error", index, _sendable(chunk.error, path)))
                    continue
                assert chunk.clip is not None
                serial += 1
                try:
                    packed = _pack(chunk.clip, Path(frames_dir) / f"{os.getpid()}-{serial}")
                except FileNotFoundError:
                    return  # the main process removed the frames folder: it is stopping, and so do we
                link.send_chunk(("chunk", index, packed, chunk.last, chunk.source), chunk.clip.frames.nbytes)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the main process has gone, or stopped us: so do we


def _sendable(exc: BaseException, path: Path) -> BaseException:
    """``exc`` if it survives pickling, else a :class:`VideoError` that says what it was."""
    try:
        multiprocessing.reduction.ForkingPickler.dumps(exc)
    except Exception:  # noqa: BLE001 - anything pickle raises: the exception is not sendable as is
        return VideoError(path, f"{type(exc).__name__}: {exc}")
    return exc


# -- the pool -------------------------------------------------------------------------------


_ENTRY = "import sys; from tdvideo.extract._loader import worker_entry; worker_entry(int(sys.argv[1]))"


class _Process:
    """A decoding worker: ``python -c`` running :func:`worker_entry`, with a pipe to it.

    Not a ``multiprocessing`` process: ``spawn`` re-imports the parent's ``__main__`` in the
    child, which runs a script's top level again (and, without a ``__main__`` guard, makes
    every worker try to start workers of its own). ``sentinel`` is a pipe that only the
    worker holds open, so it reads as ready once the worker has exited, as
    ``multiprocessing``'s sentinels do; ``exitcode`` is negative for a signal.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._popen: subprocess.Popen[bytes] | None = None
        self.sentinel = -1

    def launch(self, child: Connection) -> None:
        """Start the interpreter: it imports the decoding modules, then waits for :meth:`configure`."""
        sentinel, keep_open = os.pipe()
        try:
            with _stops_held():
                self._popen = subprocess.Popen(
                    [sys.executable, "-c", _ENTRY, str(child.fileno())],
                    pass_fds=(child.fileno(), keep_open),
                    stdin=subprocess.DEVNULL,  # the parent may be reading a list of inputs from stdin
                )
                self.sentinel = sentinel
        except BaseException:
            if self.sentinel < 0:
                os.close(sentinel)
            raise
        finally:
            os.close(keep_open)
            child.close()

    def configure(self, setup: tuple[Any, ...]) -> None:
        """Hand the launched worker its import path and :func:`_worker_main`'s arguments."""
        with _stops_held():
            try:
                self.conn.send(list(sys.path))
                self.conn.send(setup)
            except OSError:
                pass  # it has died: its sentinel tells

    @property
    def exitcode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def kill(self) -> None:
        if self.is_alive():
            assert self._popen is not None
            self._popen.kill()

    def join(self, timeout: float | None = None) -> None:
        if self._popen is not None:
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return

    def close(self) -> None:
        if self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1


def _launch() -> _Process:
    ours, theirs = multiprocessing.Pipe()
    process = _Process(ours)
    process.launch(theirs)
    return process


def _stop(process: _Process) -> None:
    process.conn.close()  # a launched process waits for its setup: end of file, and it returns
    process.kill()
    process.join()
    process.close()


class StandbyWorkers:
    """Decoding processes launched before their pool: they import PyAV and NumPy while the
    caller is still planning (listing a bucket waits on the network and the store's SDK),
    then wait. A :class:`DecodePool` given them takes what it needs as it starts and stops
    the rest; :meth:`close` (or leaving the ``with`` block) stops any not taken."""

    def __init__(self, count: int) -> None:
        self._waiting: list[_Process] = []
        try:
            for _ in range(count):
                self._waiting.append(_launch())
        except BaseException:
            self.close()
            raise

    def take(self) -> _Process | None:
        """A launched process that is still alive, or None when none is left."""
        while self._waiting:
            process = self._waiting.pop()
            if process.is_alive():
                return process
            _stop(process)  # died while it waited (the OOM killer): no video of ours to blame
        return None

    def close(self) -> None:
        """Stop the processes not taken."""
        while self._waiting:
            _stop(self._waiting.pop())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Worker:
    process: _Process
    conn: Connection
    current: int | None = None


class DecodePool:
    """Decode ``videos`` in ``workers`` processes; :meth:`chunks` yields them as they come.

    ``videos`` may be an iterator: it is advanced only when a worker is free, so that a
    video can be claimed from other processes at the moment it is started (claim mode).
    It may give None for "no video now, ask again": the free workers wait, and
    :meth:`chunks` hands on :data:`FLUSH` so that what was decoded reaches the model.

    ``options`` are :func:`~tdvideo.video.read_chunks`'s; ``decode`` replaces
    :func:`~tdvideo.video.read_chunks`, and ``identify`` is :func:`decode_chunks`'s
    (both cross to the workers by reference: module-level functions). ``standby``:
    processes launched earlier, taken first.

    Call :meth:`start` from the main thread, then iterate :meth:`chunks` anywhere (a
    prefetch thread): started from the main thread, workers ignore Ctrl-C from their
    first instruction on (see :meth:`start`). :meth:`chunks` starts them itself if needed.
    """

    def __init__(
        self,
        videos: Iterable[Path],
        options: ReadOptions,
        *,
        workers: int,
        decode: Decode = read_chunks,
        identify: Identify | None = None,
        standby: StandbyWorkers | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.videos: list[Path] = []  # as taken from ``videos``: a video's index is its place here
        self._source = iter(videos)
        self.options = options
        self.workers = workers
        self.decode = decode
        self.identify = identify
        self._standby = standby
        self._stop = threading.Event()
        self._frames_dir: Path | None = None
        self._pool: dict[int, _Worker] = {}  # by process sentinel
        self._todo: deque[int] = deque()
        self._again: deque[int] = deque()  # videos whose worker died, decoded alone at the end
        self._deaths: dict[int, str] = {}
        self._exhausted = False  # ``videos`` has ended
        self._paused = False  # ``videos`` said "not now" when last asked
        self._unflushed = False  # chunks were handed on since the last FLUSH

    def stop(self) -> None:
        """Make :meth:`chunks` end soon, from another thread; its workers are killed."""
        self._stop.set()

    def start(self) -> None:
        """Create the frames folder and start the first workers, each with its first video."""
        if self._frames_dir is not None:
            return
        root = _frames_root()
        sweep_frame_folders(root)
        self._frames_dir = Path(tempfile.mkdtemp(prefix=f"{_FRAMES_PREFIX}{owner_tag()}-", dir=root))
        self._fill()
        if self._standby is not None:
            self._standby.close()  # more than this pool wanted; a worker started later is launched then
            self._standby = None

    def _spawn(self) -> _Worker:
        process = self._standby.take() if self._standby is not None else None
        if process is None:
            process = _launch()
        process.configure((self.options, self.decode, self.identify, str(self._frames_dir), log.getEffectiveLevel()))
        worker = _Worker(process, process.conn)
        self._pool[process.sentinel] = worker
        return worker

    def _want(self) -> bool:
        """Whether a video waits for a worker, taking the next one from ``videos`` if none
        does yet: an iterator of videos is only advanced when a worker is free for one."""
        if not self._todo and not self._exhausted:
            try:
                path = next(self._source)
            except StopIteration:
                self._exhausted = True
            else:
                self._paused = path is None
                if path is not None:
                    self.videos.append(path)
                    self._todo.append(len(self.videos) - 1)
        return bool(self._todo)

    def _assign(self, worker: _Worker) -> bool:
        """Give ``worker`` its next video; False when there is none for it now."""
        if self._want():
            index = self._todo.popleft()
        elif self._again and self._exhausted and not any(w.current is not None for w in self._pool.values() if w is not worker):
            index = self._again.popleft()  # alone: no other worker is busy
        else:
            return False
        worker.current = index
        try:
            worker.conn.send((index, self.videos[index]))
        except OSError:
            pass  # it has just died: its sentinel tells, and the video is retried
        return True

    def _retire(self, worker: _Worker) -> None:
        del self._pool[worker.process.sentinel]
        worker.conn.close()
        worker.process.join()
        worker.process.close()

    def _receive(self, worker: _Worker, message: tuple[Any, ...]) -> Chunk:
        kind, index = message[0], message[1]
        if kind == "chunk":
            try:
                worker.conn.send(_ACK)  # room for one more chunk in flight
            except OSError:
                pass  # it has died: its sentinel tells
            if message[3]:
                worker.current = None
            return Chunk(index, _unpack(message[2]), last=message[3], source=message[4])
        worker.current = None
        return Chunk(index, None, last=True, error=message[2])

    def _buried(self, worker: _Worker) -> Iterator[Chunk]:
        """A worker has died: void its video's chunks, and retry it alone or fail it."""
        worker.process.join(timeout=10)
        if worker.process.is_alive():  # a closed pipe but a live process: not ours to wait for
            worker.process.kill()
        index = worker.current
        self._retire(worker)
        if index is None:
            return
        how = signal_name(worker.process.exitcode)
        yield Chunk(index, None, last=False, restart=True)
        if index in self._deaths:
            reason = f"its decoding process died twice ({self._deaths[index]}, then {how})"
            yield Chunk(index, None, last=True, error=DecoderCrashError(self.videos[index], reason))
        else:
            self._deaths[index] = how
            log.warning("%s: its decoding process died (%s); it will be retried alone", show_path(self.videos[index]), how)
            self._again.append(index)

    def _fill(self) -> None:
        """Give free workers a video, start workers while videos wait (up to :attr:`workers`),
        and let workers go once no video is left for them."""
        for worker in [w for w in self._pool.values() if w.current is None]:
            if self._assign(worker):
                continue
            if self._exhausted and not self._todo and not self._again:
                worker.conn.send(None)
                self._retire(worker)
        while len(self._pool) < self.workers and self._want():
            self._assign(self._spawn())
        if not self._pool and self._again and self._exhausted:
            self._assign(self._spawn())

    def _done(self) -> bool:
        return not self._pool and self._exhausted and not self._todo and not self._again

    def chunks(self) -> Iterator[Chunk]:
        """Every video's chunks, interleaved across videos; each video ends with a ``last`` chunk."""
        self.start()
        pool = self._pool
        try:
            while not self._stop.is_set() and not self._done():
                if self._paused and self._unflushed:
                    self._unflushed = False
                    yield FLUSH
                if not pool:
                    self._stop.wait(_POLL_SECONDS)  # told "not now": ask again soon
                    self._fill()
                    continue
                for ready in wait([*(w.conn for w in pool.values()), *pool], timeout=_POLL_SECONDS):
                    worker = pool.get(ready) if isinstance(ready, int) else _owner(pool, ready)
                    if worker is None:
                        continue  # retired earlier in this round
                    died = isinstance(ready, int)
                    # One message from a live worker; every message left in a dead one's pipe.
                    while True:
                        try:
                            if not worker.conn.poll(0 if died else None):
                                break
                            message = worker.conn.recv()
                        except (EOFError, OSError):  # its end of the pipe closed: it is gone
                            died = True
                            break
                        self._unflushed = True
                        yield self._receive(worker, message)
                        if not died:
                            break
                    if died:
                        yield from self._buried(worker)
                self._fill()
        finally:
            # Left early (an error, Ctrl-C, a consumer that stopped): workers still busy
            # hold nothing worth waiting for.
            for worker in list(pool.values()):
                worker.process.kill()
            for worker in list(pool.values()):
                self._retire(worker)
            if self._frames_dir is not None:
                shutil.rmtree(self._frames_dir, onerror=_log_rmtree_error)


@contextmanager
def _stops_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back while a worker process is created.

    A stop in the middle of handing a child its start-up data would leave it to die on a
    half-written pipe, with a traceback. The signal mask is per thread and a child inherits
    it (through ``exec`` too): the worker unblocks the signals in :func:`worker_entry`, once Ctrl-C is ignored
    there, so it never prints a KeyboardInterrupt either. Python runs its handlers in the
    main thread whichever thread the kernel picked, so there they are also replaced by ones
    that only note the signal, which is raised again afterwards.
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    caught: list[int] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in _STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if callable(handler):  # not when ignored, default, or set outside Python
                previous[signum] = signal.signal(signum, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for signum in caught:
            signal.raise_signal(signum)


def _owner(pool: dict[int, _Worker], conn: Any) -> _Worker | None:
    return next((w for w in pool.values() if w.conn is conn), None)
