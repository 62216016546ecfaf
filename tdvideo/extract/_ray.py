"""The Ray Data engine: decoding as CPU tasks, the model in a pool of actors, on a cluster.

Used with ``engine="ray"`` (``--engine ray``), from the ``tdvideo[ray]`` extra. The flow is
the local engine's, spread out by Ray Data's own operators:

- the videos to extract become a dataset of paths, one block each;
- ``flat_map`` decodes a video into chunks in a CPU task, with the same reader, sampling
  and chunk bounds as the local engine; a video that fails to decode becomes one error row;
- ``map_batches`` with an actor pool runs the model, each actor holding it on its device
  (a GPU each where there are GPUs, else the CPU);
- the driver reassembles each video's rows in order and writes them with the same writer,
  metadata, resume checks and failure records as the local engine.

A decoding task whose process died is tried once more; a block that still fails is skipped
(``max_errored_blocks``) and its video recorded as a failure, while the rest go on. A dead
model actor is restarted by Ray Data.

A Ray this run connected to or started (``ray.init``) is shut down when the run ends, however
it ends: the CLI leaves with ``os._exit``, so Ray's own exit hook never runs, and a local
Ray's agents would outlive the command by a minute or two. Against a cluster this only
disconnects; a Ray the caller initialized is left alone. ``ray.init`` takes over SIGTERM;
the caller's handler is put back, so SIGTERM stops a Ray run as it stops a local one.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError, VideoError, first_line
from ..writers import SourceIdentity
from ._batcher import Batch, batches
from ._collect import Collector
from ._loader import Chunk, decode_chunks

if TYPE_CHECKING:
    from ..settings import Settings
    from ._extractor import Extractor

__all__ = ["ray_features"]

_RETRIES = 1
_actor_warning_spent = False  # see _spend_actor_warning


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError("--engine ray needs Ray Data: pip install 'tdvideo[ray]'") from None
    return ray


def _decode(row: dict[str, Any], *, options: Any, decode: Any) -> Iterator[dict[str, Any]]:
    """A video's chunks as rows: uint8 ``frames`` and the rest of the chunk, pickled."""
    # The video as the driver had it: a local path, or a URL with what reaches it.
    source = pickle.loads(row["source"])
    for seq, chunk in enumerate(decode_chunks(int(row["index"]), source, options, decode, identify=SourceIdentity.of)):
        frames = chunk.clip.frames if chunk.clip is not None else np.zeros((0,), np.uint8)
        rest = replace(chunk, clip=replace(chunk.clip, frames=np.zeros((0,), np.uint8))) if chunk.clip is not None else chunk
        yield {"index": chunk.index, "seq": seq, "frames": frames, "chunk": pickle.dumps(rest)}


class _Model:
    """An actor holding the model: one decoded chunk in, its features and placement out."""

    def __init__(self, settings: Settings, threads: int) -> None:
        import torch

        from ._extractor import Extractor

        # Ray sets OMP_NUM_THREADS to the actor's CPUs, rounded down (1 for a fraction): torch
        # runs on the CPUs this actor was given, rounded up.
        torch.set_num_threads(threads)
        # Built here from the settings: weights resolve on the actor's machine, as locally.
        self.extractor = Extractor(settings)
        self.runner = self.extractor._runner_now()

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunk: Chunk = pickle.loads(rows["chunk"][0])
        if chunk.clip is None:  # an error row: passed on as it is
            return {"index": rows["index"], "seq": rows["seq"], "features": np.zeros((1, 0), np.float32), "batch": rows["chunk"]}
        chunk = replace(chunk, clip=replace(chunk.clip, frames=rows["frames"][0]))
        settings = self.extractor.settings
        [batch] = batches([chunk], batch_size=max(settings.batch_size, len(chunk.clip.frames)), max_bytes=2**62)
        assert isinstance(batch, Batch)
        features = self.runner(batch)
        for piece in batch.pieces:  # the driver needs where the rows go, not the frames again
            piece.chunk = replace(piece.chunk, frames=np.zeros((0,), np.uint8))
        stub = pickle.dumps(replace(batch, frames=np.zeros((0,), np.uint8)))
        return {"index": rows["index"], "seq": rows["seq"], "features": features[None], "batch": np.array([stub], dtype=object)}


def ray_features(extractor: Extractor, paths: Sequence[Path], *, address: str | None, progress: Any = None) -> Iterator[tuple[int, Any]]:
    """:meth:`Extractor._features` on Ray Data: each video's features or error, as they finish."""
    global _started_early
    ray = _ray()
    ours = not ray.is_initialized() or _started_early
    _started_early = False
    try:
        if extractor.settings.model != extractor.backbone.name:
            raise UsageError("engine 'ray' builds the model by name on each actor: give model='NAME', not a module")
        if not paths:
            return
        if not ray.is_initialized():
            _init(ray, address)
        yield from _features(ray, extractor, paths, progress)
    finally:
        if ours:
            ray.shutdown()  # however the run ends: done, failed or interrupted


_started_early = False  # Ray was started by extractor_beside_ray, for the run to shut down


def extractor_beside_ray(settings: Settings) -> Extractor:
    """An :class:`Extractor` for ``settings``, built (torch imported, the model resolved) in
    a thread while this one starts Ray: ``ray.init`` takes seconds, mostly waiting for Ray's
    own processes, and the run that follows would otherwise start it only then. The run
    shuts that Ray down as it ends; :func:`stop_early` does where no run took it over (an
    error before it started)."""
    global _started_early
    from ._extractor import Extractor

    built: dict[str, Any] = {}

    def build() -> None:
        try:
            built["extractor"] = Extractor(settings)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            built["error"] = exc

    thread = threading.Thread(target=build, name="tdvideo-model", daemon=True)
    thread.start()
    try:
        ray = _ray()
        if not ray.is_initialized():
            _init(ray, settings.ray_address)
            _started_early = True
    finally:
        thread.join()
    if "error" in built:
        raise built["error"]
    return built["extractor"]


def stop_early() -> None:
    """Shut down a Ray that :func:`extractor_beside_ray` started and no run took over."""
    global _started_early
    if _started_early:
        _started_early = False
        _ray().shutdown()


def _init(ray: Any, address: str | None) -> None:
    """``ray.init``, with this process's SIGTERM handler as it was before."""
    # ray.init sets a SIGTERM handler that exits with status 15, and its core worker a C++
    # one that prints a stack dump before it: the caller's own handling (the CLI's: one
    # line, exit 143) would never run. signal.signal replaces both.
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except ConnectionError as exc:
        _set_sigterm(handler)
        raise UsageError(f"cannot reach the Ray cluster at {address}: {first_line(exc)}") from None
    except BaseException as exc:
        _set_sigterm(handler)
        if isinstance(exc, SystemExit) and exc.code == signal.SIGTERM and callable(handler):
            handler(signal.SIGTERM, None)  # SIGTERM while Ray started, seen by Ray's handler
        raise
    _set_sigterm(handler)


def _set_sigterm(handler: Any) -> None:
    if handler is not None:  # None: not the main thread, or a handler set outside Python
        signal.signal(signal.SIGTERM, handler)


class _Throwaway:
    """An actor that is killed as soon as it is created (see _spend_actor_warning)."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref


def _spend_actor_warning(ray: Any) -> None:
    """Use up, unseen, Ray's one error-level line per process about restartable actors whose
    constructor arguments are in the object store.

    Ray Data always creates its pool's actors that way (its function and context go by
    object reference, with ``max_restarts=-1``), so every run would print it
    (ray-project/ray#57733). What it warns of, a restart after those objects are lost
    (ray-project/ray#53727), cannot happen here: this process holds them for the whole run.
    """
    global _actor_warning_spent
    if _actor_warning_spent:
        return
    _actor_warning_spent = True
    if sys.stderr is not None:
        sys.stderr.flush()  # our own pending output goes out before stderr is pointed away
    quiet, saved = os.open(os.devnull, os.O_WRONLY), os.dup(2)
    try:
        # Ray prints it from this thread, while the actor is submitted: only that moment is quiet.
        os.dup2(quiet, 2)
        actor = ray.remote(num_cpus=0, max_restarts=1)(_Throwaway).remote(ray.put(None))
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(quiet)
    ray.kill(actor)


# What a decoding task reserves on a node without GPUs. Reservations only steer where Ray
# places work, they do not bound it: there, as in the local engine, the model's torch
# threads and the decoders share the cores, so the model actor is given all but this much
# a decoder and runs torch on every core of its node.
_DECODE_CPUS_BESIDE_MODEL = 0.25


@dataclass(frozen=True)
class _Plan:
    """How a run spends the cluster: model actors and what each reserves, decoding tasks'
    reservation (so how many run at once on a node), and threads."""

    gpus: int  # GPUs the model uses (one actor each), 0: the model on CPUs
    actors: int
    actor_cpus: float
    torch_threads: int
    decode_cpus: float
    ffmpeg_threads: int


def _resources(ray: Any, settings: Settings) -> _Plan:
    """The split of the cluster's CPUs and GPUs between decoding and the model.

    With GPUs: one model actor a GPU, with one CPU and one torch thread; every other CPU
    decodes, a video a CPU. Without: one model actor a node, torch on every core of it, and
    ``workers`` decoding tasks a node (default: one a core, as the local engine caps them)
    beside it. ``threads`` (FFmpeg's, per video) as in the local engine."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1]
    if not nodes:
        raise UsageError("the Ray cluster has no node with a CPU to decode on")
    smallest = int(min(n["CPU"] for n in nodes))
    gpus = int(ray.cluster_resources().get("GPU", 0)) if settings.device in ("auto", "cuda") else 0
    workers = max(1, settings.workers if settings.workers is not None else smallest)
    if gpus:
        return _Plan(gpus, gpus, 1.0, 1, 1.0, settings.threads or 1)
    decode = min(_DECODE_CPUS_BESIDE_MODEL, smallest / (2 * workers))
    return _Plan(0, len(nodes), smallest - decode * workers, smallest, decode, settings.threads or max(1, smallest // workers))


def _features(ray: Any, extractor: Extractor, paths: Sequence[Path], progress: Any) -> Iterator[tuple[int, Any]]:
    """:func:`ray_features` once Ray is up."""
    _spend_actor_warning(ray)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its per-dataset lines, amid our progress bars
    context = ray.data.DataContext.get_current()
    context.max_errored_blocks = -1  # a video whose task keeps failing is recorded, not fatal
    context.enable_progress_bars = False
    plan = _resources(ray, extractor.settings)
    items = [{"index": i, "source": pickle.dumps(p)} for i, p in enumerate(paths)]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # Ray Data retries a task whose process died without end by default: a video that
    # crashes its decoder every time would stall the run, so it gets _RETRIES more tries.
    with warnings.catch_warnings():
        # Ray 2.60 deprecates every task option of flat_map that is not a named parameter,
        # max_retries among them, with no replacement yet; pyproject.toml pins Ray below
        # 2.64, where they are to go.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        options = replace(extractor.read_options, threads=plan.ffmpeg_threads)
        ds = ds.flat_map(
            _decode, fn_kwargs={"options": options, "decode": extractor._decode}, num_cpus=plan.decode_cpus, max_retries=_RETRIES
        )
    ds = ds.map_batches(
        _Model,
        fn_constructor_kwargs={"settings": extractor.settings, "threads": plan.torch_threads},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.actor_cpus,
        num_gpus=1 if plan.gpus else 0,
    )
    collector = Collector(
        dtype=extractor.settings.dtype, paths=list(paths), describe=extractor._metadata, per_window=extractor.backbone.kind == "window"
    )
    pending: dict[int, dict[int, tuple[Any, np.ndarray]]] = {}  # index -> seq -> (batch or chunk, features)
    expected: dict[int, int] = {}  # index -> the seq of its last row, once seen
    finished: set[int] = set()
    for row in ds.iter_rows():
        index, seq = int(row["index"]), int(row["seq"])
        item = pickle.loads(row["batch"])
        pending.setdefault(index, {})[seq] = (item, row["features"])
        last = item if isinstance(item, Chunk) else item.pieces[-1]
        if last.last:
            expected[index] = seq
        if index not in expected or len(pending[index]) != expected[index] + 1:
            continue  # rows of one video may come back out of order: wait for all of them
        finished.add(index)
        for _, (part, features) in sorted(pending.pop(index).items()):
            if isinstance(part, Chunk):  # the video failed to decode
                collector.forget(index)
                yield index, part.error
                break
            if progress is not None:
                progress.update(part.frame_count)
            yield from collector.add(part, features)
    for index in range(len(paths)):
        if index not in finished:
            collector.forget(index)
            yield index, VideoError(paths[index], f"its Ray decoding task failed {_RETRIES + 1} times (its process died)")

