"""The extraction pipeline: paths -> decoded uint8 clips -> device -> TimeDistributed backbone -> writer.

:class:`Extractor` is the library API the CLI is built on::

    extractor = Extractor(model="resnet50", fps=1)
    feats = extractor.extract("clip.mp4")          # in memory
    for result in extractor.run(["videos/"], out="features"):
        print(result.status, result.output)

Decoding runs in DataLoader worker processes (``spawn``), one video per worker at a
time, streamed in chunks. The main process batches chunks from different videos into
forward passes of up to ``batch_size`` frames, and writes each video as soon as its last
chunk has gone through the model.
"""

from __future__ import annotations

import ctypes
import fnmatch
import hashlib
import json
import logging
import os
import queue
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from ._types import Interpolation, Pool, Size
from ._version import __version__
from .backbones import DEFAULT_MODEL, Backbone, build_backbone
from .decode import OnError, VideoClip, iter_video
from .errors import NoVideosError, OutputCollisionError, TdvideoError, UsageError
from .sampling import Sampling
from .timedistributed import TimeDistributed
from .writers import Features, Format, OutputDType, array_path, read_metadata, write_features

__all__ = [
    "VIDEO_EXTENSIONS",
    "Extractor",
    "InputVideo",
    "Precision",
    "RunSummary",
    "Shard",
    "VideoResult",
    "discover_videos",
    "plan_outputs",
    "read_list_file",
    "resolve_device",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .mts .m2ts .3gp .flv .wmv .ogv .mxf".split()
)
Precision = Literal["fp32", "fp16", "bf16"]
_AUTOCAST: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
# Below this much input, starting decoding worker processes costs more than it saves.
_WORKERS_MIN_BYTES = 32 * 2**20


# -- inputs and outputs ----------------------------------------------------------------


@dataclass(frozen=True)
class InputVideo:
    """One video to process. ``relative`` is its output name: the path below the folder
    it was found in (extension dropped), or just the stem for a file given directly."""

    path: Path
    relative: PurePath


def _normalize_exts(extensions: Iterable[str]) -> set[str]:
    return {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}


def discover_videos(
    inputs: Iterable[str | Path],
    *,
    extensions: Iterable[str] | None = None,
    glob: str | None = None,
) -> list[InputVideo]:
    """Expand files and folders into a deterministic list of videos.

    Folders are searched recursively for files with a video extension (``extensions``,
    default :data:`VIDEO_EXTENSIONS`) whose path below the folder matches ``glob``
    (fnmatch, e.g. ``"cam1/*.mp4"``). A file named directly is taken whatever its
    extension (it fails later if it is no video). Raises :class:`UsageError` for a path
    that does not exist and :class:`NoVideosError` when nothing is found.
    """
    exts = _normalize_exts(extensions) if extensions else set(VIDEO_EXTENSIONS)
    found: list[InputVideo] = []
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            videos = sorted(
                p
                for p in root.rglob("*")
                if p.suffix.lower() in exts and p.is_file() and (glob is None or fnmatch.fnmatch(p.relative_to(root).as_posix(), glob))
            )
            if not videos:
                what = f"matching {glob!r} " if glob else ""
                raise NoVideosError(f"{root}: no video files {what}found (extensions: {' '.join(sorted(exts))})")
            found.extend(InputVideo(p, p.relative_to(root).with_suffix("")) for p in videos)
        elif root.is_file():
            found.append(InputVideo(root, PurePath(root.stem)))
        elif root.exists():
            raise UsageError(f"{root}: not a regular file or folder")
        else:
            raise UsageError(f"{root}: no such file or folder")
    if not found:
        raise NoVideosError("no input videos given")
    return found


def read_list_file(path: str | Path) -> list[str]:
    """Paths from a list file, one per line (``-`` reads standard input); blank lines and ``#`` comments skipped."""
    if str(path) == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read list file ({exc.strerror or exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def plan_outputs(videos: Sequence[InputVideo], out: str | Path) -> list[Path]:
    """Output base paths (no extension) for ``videos`` under ``out``; collisions are an error.

    The tree below each input folder is mirrored, so ``a/x.mp4`` and ``b/x.mp4`` never
    share an output. Two inputs that would (``x.mp4`` beside ``x.webm``, or the same
    name from two folders given as files) are reported together before any work starts.
    """
    out = Path(out)
    owners: dict[Path, list[Path]] = {}
    bases = []
    for video in videos:
        base = out / video.relative
        owners.setdefault(base, []).append(video.path)
        bases.append(base)
    clashes = {b: ps for b, ps in owners.items() if len(ps) > 1}
    if clashes:
        lines = [f"{b}: {', '.join(str(p) for p in ps)}" for b, ps in sorted(clashes.items())]
        raise OutputCollisionError(
            f"{len(clashes)} output(s) would be written by more than one input; "
            f"rename or process them separately: {'; '.join(lines)}"
        )
    return bases


@dataclass(frozen=True)
class Shard:
    """This process's share of the videos: those whose output name hashes to ``rank`` mod ``world``."""

    rank: int
    world: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise UsageError(f"shard rank must be in [0, {self.world}), got {self.rank}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Shard | None:
        """From torchrun (``RANK``/``WORLD_SIZE``) or SLURM (``SLURM_PROCID``/``SLURM_NTASKS``); None if alone."""
        for rank_key, world_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
            if rank_key in environ and world_key in environ:
                try:
                    shard = cls(int(environ[rank_key]), int(environ[world_key]))
                except ValueError:
                    raise UsageError(f"{rank_key}={environ[rank_key]!r}, {world_key}={environ[world_key]!r} are not a valid shard") from None
                return shard if shard.world > 1 else None
        return None

    def owns(self, video: InputVideo) -> bool:
        # A stable hash of the output name: every process agrees without talking, and a
        # rerun with the same world size gives each process the same videos.
        digest = hashlib.sha1(video.relative.as_posix().encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.world == self.rank


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Under torchrun or SLURM, ``auto`` takes the GPU of the local rank (``LOCAL_RANK``,
    ``SLURM_LOCALID``), so each process of a node uses its own.
    """
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local = os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID"))
        index = int(local) % torch.cuda.device_count() if local is not None and local.isdigit() else 0
        return torch.device("cuda", index)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise UsageError(f"device must be auto, cpu, cuda or cuda:N; got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} asked for, but CUDA is not available on this machine")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return torch.device(device)


# -- decoding in worker processes ------------------------------------------------------


@dataclass
class _Chunk:
    """One decoded chunk of video ``index``, or the error that ended that video."""

    index: int
    clip: VideoClip | None
    last: bool
    error: BaseException | None = None

    def pin_memory(self) -> _Chunk:
        # Called by the DataLoader's pinning thread, off the main thread's critical path.
        if self.clip is not None:
            self.clip.frames = self.clip.frames.pin_memory()
        return self


def _decode_one(index: int, path: Path, options: dict[str, Any]) -> Iterator[_Chunk]:
    """A video's chunks; the last is flagged, and an error ends the video as one more item."""
    held: VideoClip | None = None
    try:
        for clip in iter_video(path, **options):
            if held is not None:
                yield _Chunk(index, held, last=False)
            held = clip
    except Exception as exc:  # handed to the main process, which records it per video
        yield _Chunk(index, None, last=True, error=exc)
        return
    yield _Chunk(index, held, last=True)


_DONE = object()


def _prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``items`` in a background thread, ``depth`` items ahead of the consumer.

    An exception in the producer is re-raised here; closing this generator early stops
    the producer at its next item.
    """
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        """Hand ``item`` over unless the consumer has left; a full buffer never blocks for good."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    thread = threading.Thread(target=produce, name="tdvideo-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class _DecodeJob(IterableDataset):
    """Videos to decode; each DataLoader worker takes every n-th one."""

    def __init__(self, videos: Sequence[Path], options: dict[str, Any]) -> None:
        self.videos = list(videos)
        self.options = options

    def __iter__(self) -> Iterator[_Chunk]:
        worker = get_worker_info()
        first, step = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for index in range(first, len(self.videos), step):
            yield from _decode_one(index, self.videos[index], self.options)


def _init_worker(_: int) -> None:
    # Workers only decode; torch threads there would compete with FFmpeg's.
    torch.set_num_threads(1)
    _fix_malloc_mmap_threshold()


_MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def _fix_malloc_mmap_threshold() -> None:
    """Give large allocations back to the OS as soon as they are freed (glibc only).

    glibc raises its mmap threshold each time a large block is freed, after which
    blocks of that size come from the heap. With frame buffers, float batches and
    FFmpeg's own buffers freed in interleaved order, the heap then fragments and RSS
    grows with every batch: about 24 MiB per forward pass here, 5.6 GiB over a 10 min
    video. A fixed threshold keeps every block of 1 MiB or more in its own mapping.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...): nothing to tune
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


# -- extraction ------------------------------------------------------------------------


@dataclass
class VideoResult:
    """What happened to one input in :meth:`Extractor.run`."""

    path: Path
    output: Path | None
    status: Literal["done", "skipped", "failed"]
    frames: int = 0
    error_type: str | None = None
    error: str | None = None

    @classmethod
    def failure(cls, path: Path, exc: BaseException) -> VideoResult:
        return cls(path, None, "failed", error_type=type(exc).__name__, error=_reason(exc))


@dataclass
class RunSummary:
    """Counts over a run, for the end-of-run line and the exit code."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    wall: float = 0.0
    failures: list[VideoResult] = field(default_factory=list)
    failures_log: Path | None = None

    def add(self, result: VideoResult) -> None:
        setattr(self, result.status, getattr(self, result.status) + 1)
        self.frames += result.frames
        if result.status == "failed":
            self.failures.append(result)

    def line(self) -> str:
        rate = self.frames / self.wall if self.wall > 0 else 0.0
        return (
            f"{self.done} done, {self.skipped} skipped, {self.failed} failed; "
            f"{self.frames} frames in {self.wall:.1f} s ({rate:.1f} frames/s)"
        )


class _Rows:
    """A video's feature rows as they come out of the model, in the output dtype.

    Pooled features are a few KB per frame and stay in memory. Spatial maps of long
    videos would not fit (resnet50 with ``pool="none"``: 400 KB per frame), so past
    :data:`_SPILL_BYTES` the rows go to an anonymous temporary file (in ``TMPDIR``; gone
    when closed, even after a crash) and come back as a read-only memmap.
    """

    def __init__(self, dtype: str) -> None:
        self.dtype = np.dtype(dtype)
        self.parts: list[np.ndarray] = []
        self.nbytes = 0
        self.count = 0
        self.row_shape: tuple[int, ...] = ()
        self.spill: Any = None

    def append(self, rows: torch.Tensor) -> None:
        array = rows.numpy().astype(self.dtype, copy=False)
        self.row_shape = array.shape[1:]
        self.count += len(array)
        if self.spill is None and self.nbytes + array.nbytes <= _SPILL_BYTES:
            self.parts.append(array)
            self.nbytes += array.nbytes
            return
        if self.spill is None:
            self.spill = tempfile.TemporaryFile()
            for part in self.parts:
                np.ascontiguousarray(part).tofile(self.spill)
            self.parts.clear()
        np.ascontiguousarray(array).tofile(self.spill)

    def array(self) -> np.ndarray:
        if self.spill is None:
            return self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts)
        self.spill.flush()
        mapped = np.memmap(self.spill, dtype=self.dtype, mode="r", shape=(self.count, *self.row_shape))
        self.spill.close()  # the mapping keeps the data
        return mapped


_SPILL_BYTES = 512 * 2**20


@dataclass
class _Pending:
    """A video whose chunks are on their way through the model."""

    rows: _Rows
    times: list[torch.Tensor] = field(default_factory=list)
    last_clip: VideoClip | None = None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Extractor:
    """Extract per-timestep features from videos with a :class:`TimeDistributed` backbone.

    Args:
        model: a registered model name (see :func:`tdvideo.list_models`).
        weights: ``None`` (the model's default), ``"DEFAULT"``, a torchvision weights
            name, ``"none"``, or a checkpoint path (see :func:`tdvideo.build_backbone`).
        pool: ``"avg"`` or ``"none"`` (spatial maps); ``None`` for the model's default.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: frames per forward pass (and per decoded chunk). Chunks of different
            videos share a forward pass.
        workers: decoding processes; ``None`` picks: none for small jobs (starting them
            costs more than it saves), else one per CPU core up to 8 and the number of
            videos. ``0`` decodes in a thread of this process. Workers are started with
            ``spawn``, so a script that runs with workers needs the usual
            ``if __name__ == "__main__":`` guard.
        precision: ``fp32``, or ``fp16``/``bf16`` autocast.
        compile: wrap the model in ``torch.compile`` (dynamic shapes).
        size, crop, interpolation: override the model's preprocessing.
        sampling: a :class:`Sampling`, or its fields as keywords (``fps=2`` ...).
        on_error: ``"raise"``: a video that fails part-way fails; ``"keep"``: keep its
            frames decoded so far (``truncated`` in the metadata).
        dtype: dtype of the written features.
        threads: FFmpeg decoder threads per video (0: FFmpeg decides; with workers, the
            cores are shared out between them).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        weights: str | Path | None = None,
        pool: Pool | None = None,
        device: str = "auto",
        batch_size: int = 64,
        workers: int | None = None,
        precision: Precision = "fp32",
        compile: bool = False,
        size: Size | None = None,
        crop: Size | None = None,
        interpolation: Interpolation | None = None,
        sampling: Sampling | None = None,
        on_error: OnError = "raise",
        dtype: OutputDType = "float32",
        threads: int = 0,
        **sampling_options: Any,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise UsageError(f"workers must be a non-negative integer, got {workers!r}")
        if precision not in _AUTOCAST:
            raise UsageError(f"precision must be one of {', '.join(_AUTOCAST)}; got {precision!r}")
        if dtype not in ("float32", "float16"):
            raise UsageError(f"dtype must be float32 or float16; got {dtype!r}")
        if on_error not in ("raise", "keep"):
            raise UsageError(f"on_error must be 'raise' or 'keep'; got {on_error!r}")
        if sampling is not None and sampling_options:
            raise UsageError("pass sampling= or sampling keywords, not both")
        self.sampling = sampling or Sampling(**sampling_options)
        self.device = resolve_device(device)
        self.backbone: Backbone = build_backbone(model, weights=weights, pool=pool)
        pre = self.backbone.preprocessing
        self.size = size if size is not None else pre.size
        self.crop = crop if crop is not None else pre.crop
        self.interpolation: Interpolation = interpolation or pre.interpolation
        self.batch_size = batch_size
        self.workers = workers
        self.precision = precision
        self.on_error = on_error
        self.dtype = dtype
        self.threads = threads
        model_ = TimeDistributed(self.backbone.frame_model()).to(self.device).eval()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            model_ = model_.to(memory_format=torch.channels_last)
        self.model: torch.nn.Module = torch.compile(model_, dynamic=True) if compile else model_
        # As stored in the metadata JSON (tuples become lists), for the resume check.
        self._stored_settings = json.loads(json.dumps(self.settings()))
        _fix_malloc_mmap_threshold()

    def settings(self) -> dict[str, Any]:
        """Everything that determines the features, as stored in each output's metadata."""
        return {
            **self.backbone.metadata(),
            "sampling": self.sampling.to_dict(),
            "resize": {"size": self.size, "crop": self.crop, "interpolation": self.interpolation},
            "precision": self.precision,
            "dtype": self.dtype,
        }

    # -- the engine ---------------------------------------------------------------------

    def _decode_options(self, threads: int) -> dict[str, Any]:
        return {
            "chunk_frames": self.batch_size,
            "sampling": self.sampling,
            "size": self.size,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "threads": threads,
            "on_error": self.on_error,
        }

    def _worker_count(self, videos: Sequence[Path]) -> int:
        if self.workers is not None:
            return min(self.workers, len(videos))
        total = sum(p.stat().st_size for p in videos if p.is_file())
        if len(videos) < 2 or total < _WORKERS_MIN_BYTES:
            return 0
        return min(os.cpu_count() or 1, 8, len(videos))

    def _chunks(self, videos: Sequence[Path]) -> Iterator[_Chunk]:
        workers = self._worker_count(videos)
        if workers == 0:
            # Decode in a thread of this process (PyAV and torch release the GIL), so the
            # next chunk decodes while the model runs on this one.
            job = _DecodeJob(videos, self._decode_options(self.threads))
            pin = self.device.type == "cuda"
            yield from _prefetch(chunk.pin_memory() if pin else chunk for chunk in job)
            return
        # Share the cores out: each worker decodes one video at a time.
        threads = self.threads or max(1, (os.cpu_count() or 1) // workers)
        loader = DataLoader(
            _DecodeJob(videos, self._decode_options(threads)),
            batch_size=None,
            num_workers=workers,
            multiprocessing_context="spawn",
            worker_init_fn=_init_worker,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=2,
        )
        yield from loader

    def _forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, T, C, H, W)`` on the host to float32 features on the host."""
        x = frames.to(self.device, non_blocking=frames.is_pinned())
        autocast = _AUTOCAST[self.precision]
        # A light model on the CPU takes a fraction of a frame's decoding time: on one
        # torch thread it leaves the cores to the decoder threads (a folder of 8 clips ran
        # at 0.98x of a bare decode loop, against 0.84x on two torch threads, 2 cores).
        threads = 1 if self.backbone.light and self.device.type == "cpu" else None
        try:
            with (
                _torch_threads(threads),
                torch.inference_mode(),
                torch.autocast(self.device.type, dtype=autocast, enabled=autocast is not None),
            ):
                y = self.model(x)
        except RuntimeError as exc:
            raise TdvideoError(
                f"model {self.backbone.name} failed on frames of shape {tuple(frames.shape)}: {_reason(exc)}"
            ) from exc
        return y.float().cpu()

    def _features(self, videos: Sequence[Path], progress: tqdm | None = None) -> Iterator[tuple[int, Features | BaseException]]:
        """Features of each video (or the error that failed it), in the order they finish."""
        windowed = self.sampling.windowed
        pending: dict[int, _Pending] = {}
        # Chunks wait here, grouped by frame shape, until a forward pass is full.
        batches: dict[tuple[int, ...], list[_Chunk]] = {}

        def flush(batch: list[_Chunk]) -> Iterator[tuple[int, Features]]:
            if not batch:
                return
            parts = [c.clip.frames for c in batch]  # type: ignore[union-attr]
            frames = parts[0] if len(parts) == 1 else torch.cat(parts)
            out = self._forward(frames if windowed else frames.unsqueeze(0))
            rows = out if windowed else out[0]
            sizes = [c.clip.frames.shape[0] for c in batch]  # type: ignore[union-attr]
            done = [c for c in batch if c.last]
            for chunk, part in zip(batch, rows.split(sizes)):
                state = pending[chunk.index]
                state.rows.append(part)
                state.times.append(chunk.clip.timestamps)  # type: ignore[union-attr]
            if progress is not None:
                progress.update(sum(sizes) * (frames.shape[1] if windowed else 1))
            batch.clear()
            for chunk in done:
                state = pending.pop(chunk.index)
                yield chunk.index, self._finish(videos[chunk.index], state)

        for chunk in self._chunks(videos):
            if chunk.error is not None:
                pending.pop(chunk.index, None)
                for batch in batches.values():
                    batch[:] = [c for c in batch if c.index != chunk.index]
                yield chunk.index, chunk.error
                continue
            assert chunk.clip is not None
            state = pending.setdefault(chunk.index, _Pending(_Rows(self.dtype)))
            state.last_clip = chunk.clip
            frames_in = chunk.clip.timestamps.numel()
            batch = batches.setdefault(tuple(chunk.clip.frames.shape[1:]), [])
            if batch and sum(c.clip.timestamps.numel() for c in batch) + frames_in > self.batch_size:  # type: ignore[union-attr]
                yield from flush(batch)
            batch.append(chunk)
        for batch in batches.values():
            yield from flush(batch)

    def _finish(self, path: Path, state: _Pending) -> Features:
        last = state.last_clip
        assert last is not None
        times = torch.cat(state.times)
        array = state.rows.array()
        stat = path.stat()
        meta = {
            "tdvideo_version": __version__,
            "source": {"path": str(path), "size": stat.st_size, "mtime": stat.st_mtime},
            **self.settings(),
            "video": last.info.to_dict(),
            "frames": int(times.numel()),
            "pts_synthesized": last.pts_synthesized,
            "truncated": last.truncated,
            "error": last.error,
        }
        return Features(array=array, timestamps=times.numpy(), metadata=meta)

    # -- public API ---------------------------------------------------------------------

    def extract(self, path: str | Path) -> Features:
        """Features of one video, in memory (no files written). Raises the video's error."""
        [(_, result)] = list(self._features([Path(path)]))
        if isinstance(result, BaseException):
            raise result
        return result

    def is_finished(self, video: Path, base: Path, fmt: Format) -> bool:
        """True when ``base`` holds this video's output for these exact settings."""
        meta = read_metadata(base)
        if meta is None or meta.get("file") != array_path(base, fmt).name:
            return False
        stat = video.stat()
        source = meta.get("source", {})
        if source.get("size") != stat.st_size or source.get("mtime") != stat.st_mtime:
            return False
        return all(meta.get(k) == v for k, v in self._stored_settings.items())

    def run(
        self,
        inputs: Iterable[str | Path],
        *,
        out: str | Path = "features",
        fmt: Format = "npy",
        overwrite: bool = False,
        extensions: Iterable[str] | None = None,
        glob: str | None = None,
        shard: Shard | Literal["auto"] | None = "auto",
        progress: bool | None = None,
        summary: RunSummary | None = None,
    ) -> Iterator[VideoResult]:
        """Extract every video under ``inputs`` to ``out``, yielding a result per video as it finishes.

        Finished outputs with the same source and settings are skipped (first) unless
        ``overwrite``. A failing video never stops the run: it yields a ``failed``
        result and is appended to the failures log. Input discovery and output
        collisions are checked before any work starts (:class:`UsageError`).

        ``shard``: under torchrun/SLURM (``"auto"`` reads the environment) or with an
        explicit :class:`Shard`, this process takes only its share of the videos, and
        its failures go to ``failures.rank{N}.jsonl``; ``None`` takes every video.
        """
        videos = discover_videos(inputs, extensions=extensions, glob=glob)
        plan_outputs(videos, out)  # collisions are checked over all inputs, whatever the shard
        shard = Shard.from_env() if shard == "auto" else shard
        if shard is not None:
            videos = [v for v in videos if shard.owns(v)]
        bases = [Path(out) / v.relative for v in videos]
        out = Path(out)
        show = sys.stderr.isatty() if progress is None else progress
        summary = summary if summary is not None else RunSummary()
        started = time.perf_counter()
        failures_log = out / ("failures.jsonl" if shard is None else f"failures.rank{shard.rank}.jsonl")
        failures_log.unlink(missing_ok=True)
        summary.failures_log = failures_log

        def record(result: VideoResult) -> VideoResult:
            if result.status == "failed":
                _append_failure(failures_log, result)
            summary.add(result)
            summary.wall = time.perf_counter() - started
            vbar.update(1)
            return result

        with (
            tqdm(total=len(videos), unit="video", disable=not show, position=0, desc="videos") as vbar,
            tqdm(unit="frame", disable=not show, position=1, desc="frames", leave=False) as fbar,
        ):
            todo: list[tuple[Path, Path]] = []
            for video, base in zip(videos, bases):
                try:
                    finished = not overwrite and self.is_finished(video.path, base, fmt)
                except OSError as exc:
                    yield record(VideoResult.failure(video.path, exc))
                    continue
                if finished:
                    yield record(VideoResult(video.path, array_path(base, fmt), "skipped"))
                else:
                    todo.append((video.path, base))
            for index, result in self._features([p for p, _ in todo], progress=fbar):
                path, base = todo[index]
                if isinstance(result, BaseException):
                    yield record(VideoResult.failure(path, result))
                    continue
                try:
                    target = write_features(base, result, fmt=fmt)
                except OSError as exc:
                    yield record(VideoResult.failure(path, exc))
                    continue
                yield record(VideoResult(path, target, "done", frames=int(result.timestamps.size)))


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Run with ``count`` torch intra-op threads (None: unchanged), restoring the setting after."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _append_failure(log_path: Path, result: VideoResult) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"path": str(result.path), "error_type": result.error_type, "message": result.error})
    with log_path.open("a") as fh:
        fh.write(line + "\n")
