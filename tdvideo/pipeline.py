"""The extraction pipeline: paths -> decoded uint8 clips -> device -> TimeDistributed backbone -> writer.

:class:`Extractor` is the library API the CLI is built on::

    extractor = Extractor(model="resnet50", fps=1)
    feats = extractor.extract("clip.mp4")          # in memory
    for result in extractor.run(["videos/"], out="features"):
        print(result.status, result.output)

Decoding runs in worker processes (``spawn``, see :mod:`tdvideo._workers`), one video
per worker at a time, streamed in chunks. The main process batches chunks from different
videos into forward passes of up to ``batch_size`` frames, and writes each video as soon
as its last chunk has gone through the model (see :mod:`tdvideo.writers` for how).
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from ._system import available_cpus, available_memory, fix_malloc_mmap_threshold
from ._types import Interpolation, Pool, Size
from ._version import __version__
from ._workers import Chunk, Decode, DecodePool, decode_chunks, prefetch
from .backbones import DEFAULT_MODEL, Backbone, build_backbone
from .decode import (
    INTERPOLATIONS,
    MAX_WINDOW_BYTES,
    OnError,
    VideoClip,
    check_size,
    iter_video,
)
from .errors import (
    NoVideosError,
    OutputCollisionError,
    OutputError,
    TdvideoError,
    UsageError,
    VideoError,
    VideoOpenError,
    show_path,
)
from .sampling import Sampling, resolve_sampling
from .timedistributed import TimeDistributed
from .writers import (
    FORMATS,
    Features,
    Format,
    OutputDType,
    SourceIdentity,
    array_path,
    read_metadata,
    remove_output,
    remove_temporaries,
    write_features,
)

__all__ = [
    "VIDEO_EXTENSIONS",
    "Discovery",
    "Extractor",
    "InputVideo",
    "Precision",
    "RunSummary",
    "Shard",
    "Unreadable",
    "VideoResult",
    "discover_videos",
    "failures_log_name",
    "plan_outputs",
    "prepare_output",
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
    it was found in (extension dropped), or just the stem for a file given directly.
    Every part is a plain name (never empty, ``.`` or ``..``), so outputs stay inside ``--out``."""

    path: Path
    relative: PurePath


@dataclass(frozen=True)
class Unreadable:
    """Something inside an input folder that could not be looked into or read: a folder
    without permission, a broken link, a "video" that is no regular file."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover_videos` found: the videos, and what it could not read."""

    videos: list[InputVideo]
    unreadable: list[Unreadable]


def _normalize_exts(extensions: Iterable[str]) -> set[str]:
    return {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}


def _safe_part(name: str) -> str:
    # "..mp4" has the stem ".", which as a path part means the folder itself.
    return name if name not in ("", ".", "..") else name.replace(".", "_") or "_"


def _output_name(relative: PurePath) -> PurePath:
    return PurePath(*(_safe_part(part) for part in relative.parts)) if relative.parts else PurePath("_")


def discover_videos(
    inputs: Iterable[str | Path],
    *,
    extensions: Iterable[str] | None = None,
    glob: str | None = None,
) -> Discovery:
    """Expand files and folders into a deterministic list of videos.

    Folders are searched recursively (following links to folders, once each) for files
    with a video extension (``extensions``, default :data:`VIDEO_EXTENSIONS`) whose path
    below the folder matches ``glob`` (fnmatch, e.g. ``"cam1/*.mp4"``). A file named
    directly is taken whatever its extension (it fails later if it is no video).
    Subfolders that cannot be listed, broken links and non-regular files with a video
    extension are returned as :attr:`Discovery.unreadable`, never skipped silently.

    Raises :class:`UsageError` for a path that does not exist and :class:`NoVideosError`
    when a folder holds no videos at all.
    """
    exts = _normalize_exts(extensions) if extensions else set(VIDEO_EXTENSIONS)
    found: list[InputVideo] = []
    unreadable: list[Unreadable] = []
    for item in inputs:
        if str(item) == "":
            raise UsageError("an empty path was given as an input (a shell variable that was not set?)")
        root = Path(item)
        if root.is_dir():
            videos, problems = _walk(root, exts, glob)
            if not videos and not problems:
                what = f"matching {glob!r} " if glob else ""
                raise NoVideosError(f"{show_path(root)}: no video files {what}found (extensions: {' '.join(sorted(exts))})")
            found.extend(videos)
            unreadable.extend(problems)
        elif root.is_file():
            found.append(InputVideo(root, _output_name(PurePath(root.stem))))
        elif root.exists():
            raise UsageError(f"{show_path(root)}: not a regular file or folder")
        else:
            raise UsageError(f"{show_path(root)}: no such file or folder")
    if not found and not unreadable:
        raise NoVideosError("no input videos given")
    return Discovery(found, unreadable)


def _walk(root: Path, exts: set[str], pattern: str | None) -> tuple[list[InputVideo], list[Unreadable]]:
    videos: list[InputVideo] = []
    problems: list[Unreadable] = []
    real: dict[str, str] = {}  # each folder walked, resolved

    def unlistable(error: OSError) -> None:
        problems.append(Unreadable(Path(error.filename or root), f"cannot list folder ({error.strerror or error})"))

    for folder, subfolders, files in os.walk(root, onerror=unlistable, followlinks=True):
        real[folder] = os.path.realpath(folder)
        if _loops(folder, real, str(root)):  # a link back up the tree: once is enough
            subfolders.clear()
            continue
        subfolders.sort()
        for name in files:
            path = Path(folder, name)
            # The extension is the name's last dot on: a file named ".mp4" has one too
            # (pathlib would call it a hidden file without a suffix).
            suffix = name[name.rfind(".") :] if "." in name else ""
            if suffix.lower() not in exts:
                continue
            relative = path.relative_to(root)
            if pattern is not None and not fnmatch.fnmatch(relative.as_posix(), pattern):
                continue
            if path.is_file():
                videos.append(InputVideo(path, _output_name(relative.parent / name[: -len(suffix)])))
            elif path.is_symlink() and not path.exists():
                problems.append(Unreadable(path, "broken symbolic link"))
            else:
                problems.append(Unreadable(path, "not a regular file"))
    videos.sort(key=lambda v: v.path.relative_to(root).as_posix())
    return videos, problems


def _loops(folder: str, real: dict[str, str], root: str) -> bool:
    """Whether ``folder`` resolves to the same folder as one of its ancestors in the walk."""
    ancestor = folder
    while ancestor != root:
        parent = os.path.dirname(ancestor)
        if parent == ancestor:
            break
        ancestor = parent
        if real.get(ancestor) == real[folder]:
            return True
    return False


def read_list_file(path: str | Path) -> list[str]:
    """Paths from a list file, one per line (``-`` reads standard input); blank lines and ``#`` comments skipped.

    Lines are decoded as file names are (UTF-8, other bytes kept as they are), so any
    path the file system holds can be listed.
    """
    try:
        if str(path) == "-":
            data = _read_text_bytes(sys.stdin.buffer, path)
        else:
            with open(path, "rb") as fh:
                data = _read_text_bytes(fh, path)
    except IsADirectoryError:
        raise UsageError(f"{show_path(path)}: is a folder, not a list file") from None
    except OSError as exc:
        raise UsageError(f"{show_path(path)}: cannot read list file ({exc.strerror or exc})") from None
    lines = (os.fsdecode(line).strip() for line in data.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _read_text_bytes(fh: Any, path: str | Path) -> bytes:
    """All of ``fh``, read a block at a time: binary data (``/dev/zero``, a video given by
    mistake) is refused at its first NUL byte instead of being read to the end of memory."""
    blocks = []
    while block := fh.read(1 << 20):
        if b"\0" in block:
            raise UsageError(f"{show_path(path)}: not a text list of paths (it holds NUL bytes)")
        blocks.append(block)
    return b"".join(blocks)


def failures_log_name(shard: Shard | None) -> str:
    """Where a run writes its failures under ``--out``."""
    return "failures.jsonl" if shard is None else f"failures.rank{shard.rank}.jsonl"


def plan_outputs(videos: Sequence[InputVideo], out: str | Path) -> list[Path]:
    """Output base paths (no extension) for ``videos`` under ``out``; collisions are an error.

    The tree below each input folder is mirrored, so ``a/x.mp4`` and ``b/x.mp4`` never
    share an output. Two inputs that would (``x.mp4`` beside ``x.webm``, or the same
    name from two folders given as files), and a subfolder named like the failures log,
    are reported together before any work starts.
    """
    out = Path(out)
    owners: dict[Path, list[Path]] = {}
    bases = []
    lines = []
    for video in videos:
        base = out / video.relative
        owners.setdefault(base, []).append(video.path)
        bases.append(base)
        top = video.relative.parts[0]
        if len(video.relative.parts) > 1 and fnmatch.fnmatch(top, "failures*.jsonl"):
            lines.append(f"{show_path(out / top)}: a folder of outputs for {show_path(video.path)}, but also the failures log")
    clashes = {b: ps for b, ps in owners.items() if len(ps) > 1}
    lines += [f"{show_path(b)}: {', '.join(show_path(p) for p in ps)}" for b, ps in sorted(clashes.items())]
    if lines:
        raise OutputCollisionError(
            f"{len(lines)} output(s) would be written by more than one input; "
            f"rename or process them separately: {'; '.join(lines)}"
        )
    return bases


_WRITE_TEST = ".tdvideo-write-test."


def prepare_output(out: str | Path) -> Path:
    """Create the output folder if needed and check that files can be written in it.

    Raises :class:`UsageError` (before any work) when ``out`` is a file, cannot be
    created, or is not writable.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {show_path(out)} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for leftover in out.glob(f"{_WRITE_TEST}*"):  # of a run killed right here
            leftover.unlink(missing_ok=True)
        fd, probe = tempfile.mkstemp(prefix=_WRITE_TEST, dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"cannot write to --out {show_path(out)}: {exc.strerror or exc}") from None
    return out


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

    def line(self) -> str:
        """One line for a terminal: the input, and what happened to it if it failed."""
        if self.status == "failed":
            return f"failed: {show_path(self.path)}: {self.error}"
        return f"{self.status}: {show_path(self.path)}"


@dataclass
class RunSummary:
    """Counts over a run, for the end-of-run line and the exit code. ``total`` counts
    every input of this process (unreadable ones included), known once the run has planned."""

    total: int = 0
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

    @property
    def unfinished(self) -> int:
        return max(0, self.total - self.done - self.skipped - self.failed)

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
# uint8 frames in one forward pass (and one decoded chunk), whatever the batch size asks:
# with chunks in flight, float conversion and a model's activations a run holds several
# times this. 64 MiB is 440 frames at 224 x 224, more than a GPU needs to be busy.
_BATCH_BYTES = 64 * 2**20
# Memory a decoding worker may take: the interpreter with torch (about 0.6 GiB here) and
# FFmpeg's frame buffers. Workers beyond what the available memory holds are not started.
_WORKER_BYTES = 2**30
# Errors writing an output that every later video would hit too: the run stops.
_FATAL_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


@dataclass
class _Pending:
    """A video whose chunks are on their way through the model."""

    rows: _Rows
    times: list[torch.Tensor] = field(default_factory=list)
    last_clip: VideoClip | None = None
    source: SourceIdentity | None = None


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
            videos share a forward pass. A pass also holds at most 64 MiB of frames,
            so large frames make smaller passes.
        workers: decoding processes; ``None`` picks: none for small jobs (starting them
            costs more than it saves), else one per CPU core up to 8 and the number of
            videos. ``0`` decodes in a thread of this process. More workers than CPU
            cores, or than the available memory holds (about 1 GiB each), are not
            started (with a warning). Workers are started with ``spawn``, so a script
            that runs with workers needs the usual ``if __name__ == "__main__":`` guard.
        precision: ``fp32``, or ``fp16``/``bf16`` autocast.
        compile: wrap the model in ``torch.compile`` (dynamic shapes).
        size, crop, interpolation: override the model's preprocessing.
        sampling: a :class:`Sampling`, or its fields as keywords (``fps=2`` ...).
        on_error: ``"raise"``: a video that fails part-way fails; ``"keep"``: keep its
            frames decoded so far (``truncated`` in the metadata).
        dtype: dtype of the written features.
        threads: FFmpeg decoder threads per video (0: FFmpeg decides; with workers, the
            cores are shared out between them).

    Every option is checked here, before any video is touched: a bad value is a
    :class:`UsageError` naming it.
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
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise UsageError(f"threads must be a non-negative integer, got {threads!r}")
        if precision not in _AUTOCAST:
            raise UsageError(f"precision must be one of {', '.join(_AUTOCAST)}; got {precision!r}")
        if dtype not in ("float32", "float16"):
            raise UsageError(f"dtype must be float32 or float16; got {dtype!r}")
        if on_error not in ("raise", "keep"):
            raise UsageError(f"on_error must be 'raise' or 'keep'; got {on_error!r}")
        self.sampling = resolve_sampling(sampling, sampling_options)
        self.device = resolve_device(device)
        self.backbone: Backbone = build_backbone(model, weights=weights, pool=pool)
        pre = self.backbone.preprocessing
        self.size = size if size is not None else pre.size
        self.crop = crop if crop is not None else pre.crop
        self.interpolation: Interpolation = interpolation or pre.interpolation
        _check_geometry(
            self.size,
            self.crop,
            self.interpolation,
            clip_len=self.sampling.clip_len,
            size_given=size is not None,
            crop_given=crop is not None,
        )
        self.batch_size = batch_size
        self._warn_if_batch_is_capped()
        self.workers = workers
        self.precision = precision
        self.on_error = on_error
        self.dtype = dtype
        self.threads = threads
        # The decoding function (a seam for tests; module-level, as it crosses to workers).
        self._decode: Decode = iter_video
        model_ = TimeDistributed(self.backbone.frame_model()).to(self.device).eval()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            model_ = model_.to(memory_format=torch.channels_last)
        self.model: torch.nn.Module = torch.compile(model_, dynamic=True) if compile else model_
        # As stored in the metadata JSON (tuples become lists), for the resume check.
        self._stored_settings = json.loads(json.dumps(self.settings()))
        fix_malloc_mmap_threshold()

    def settings(self) -> dict[str, Any]:
        """Everything that determines the features, as stored in each output's metadata."""
        return {
            **self.backbone.metadata(),
            "sampling": self.sampling.to_dict(),
            "resize": {"size": self.size, "crop": self.crop, "interpolation": self.interpolation},
            "precision": self.precision,
            "dtype": self.dtype,
        }

    def _warn_if_batch_is_capped(self) -> None:
        box = self.crop or self.size
        if box is None:
            return
        h, w = (box, box) if isinstance(box, int) else box
        frame = h * w * 3
        if self.batch_size * frame > _BATCH_BYTES:
            size = f"at least {h}x{w}" if isinstance(box, int) and self.crop is None else f"{h}x{w}"
            warnings.warn(
                f"batch_size {self.batch_size} would hold {self.batch_size * frame / 2**30:.1f} GiB of frames of {size}; "
                f"a forward pass holds at most {_BATCH_BYTES // 2**20} MiB of frames, and at least one "
                f"({max(1, _BATCH_BYTES // frame)} of that size)"
            )

    # -- the engine ---------------------------------------------------------------------

    def _decode_options(self, threads: int) -> dict[str, Any]:
        return {
            "chunk_frames": self.batch_size,
            "chunk_bytes": _BATCH_BYTES,
            "sampling": self.sampling,
            "size": self.size,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "threads": threads,
            "on_error": self.on_error,
        }

    def _worker_count(self, videos: Sequence[Path]) -> int:
        cpus = available_cpus()
        memory = available_memory()
        by_memory = max(1, memory // _WORKER_BYTES) if memory is not None else cpus
        cap = min(cpus, by_memory)
        if self.workers is not None:
            if self.workers > cap:
                memory_text = f", {memory / 2**30:.1f} GiB of memory available" if memory is not None else ""
                warnings.warn(f"workers {self.workers} capped at {cap} ({cpus} CPU cores{memory_text})")
            return min(self.workers, cap, len(videos))
        total = 0
        for p in videos:
            try:
                total += p.stat().st_size
            except OSError:
                continue  # it fails when decoded, with its own reason
        if len(videos) < 2 or total < _WORKERS_MIN_BYTES:
            return 0
        return min(cap, 8, len(videos))

    def _chunks(self, videos: Sequence[Path]) -> Iterator[Chunk]:
        workers = self._worker_count(videos)
        pin = self.device.type == "cuda"
        log.info("decoding %d video(s) %s", len(videos), f"in {workers} worker processes" if workers else "in this process")
        if workers == 0:
            # Decode in a thread of this process (PyAV and torch release the GIL), so the
            # next chunk decodes while the model runs on this one.
            options = self._decode_options(self.threads)
            chunks: Iterator[Chunk] = (
                chunk
                for index, path in enumerate(videos)
                for chunk in decode_chunks(index, path, options, self._decode, identify=SourceIdentity.of)
            )
            yield from prefetch(chunk.pin_memory() if pin else chunk for chunk in chunks)
            return
        # Share the cores out: each worker decodes one video at a time.
        threads = self.threads or max(1, available_cpus() // workers)
        pool = DecodePool(
            videos, self._decode_options(threads), workers=workers, decode=self._decode, identify=SourceIdentity.of
        )
        pool.start()  # from this (the main) thread, so that workers ignore Ctrl-C from the start
        yield from prefetch((chunk.pin_memory() if pin else chunk for chunk in pool.chunks()), on_stop=pool.stop)

    def _forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, T, C, H, W)`` on the host to float32 features on the host."""
        x = frames.to(self.device, non_blocking=frames.is_pinned())
        autocast = _AUTOCAST[self.precision]
        # A light model on the CPU takes a fraction of a frame's decoding time: on one
        # torch thread it leaves the cores to the decoder threads.
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
        batches: dict[tuple[int, ...], list[Chunk]] = {}

        def flush(batch: list[Chunk]) -> Iterator[tuple[int, Features | BaseException]]:
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
                try:
                    yield chunk.index, self._finish(videos[chunk.index], state)
                except VideoError as exc:
                    yield chunk.index, exc

        def forget(index: int) -> None:
            pending.pop(index, None)
            for batch in batches.values():
                batch[:] = [c for c in batch if c.index != index]

        for chunk in self._chunks(videos):
            if chunk.restart or chunk.error is not None:
                forget(chunk.index)
                if chunk.error is not None:
                    yield chunk.index, chunk.error
                continue
            assert chunk.clip is not None
            state = pending.setdefault(chunk.index, _Pending(_Rows(self.dtype)))
            state.source = state.source or chunk.source
            state.last_clip = chunk.clip
            frames_in = chunk.clip.timestamps.numel()
            bytes_in = chunk.clip.frames.numel()
            batch = batches.setdefault(tuple(chunk.clip.frames.shape[1:]), [])
            if batch and (
                sum(c.clip.timestamps.numel() for c in batch) + frames_in > self.batch_size  # type: ignore[union-attr]
                or sum(c.clip.frames.numel() for c in batch) + bytes_in > _BATCH_BYTES  # type: ignore[union-attr]
            ):
                yield from flush(batch)
            batch.append(chunk)
        for batch in batches.values():
            yield from flush(batch)

    def _finish(self, path: Path, state: _Pending) -> Features:
        last = state.last_clip
        assert last is not None
        source = state.source
        if source is None or not source.unchanged():
            raise VideoError(path, "changed, moved or deleted while it was being read; rerun to extract it again")
        times = torch.cat(state.times)
        array = state.rows.array()
        meta = {
            "tdvideo_version": __version__,
            "source": source.to_dict(),
            **self.settings(),
            "video": last.info.to_dict(),
            "frames": int(times.numel()),
            "pts_synthesized": last.pts_synthesized,
            "truncated": last.truncated,
            "error": last.error,
        }
        log.debug("%s: %d frames decoded, %d kept, %d seeks", show_path(path), last.frames_decoded, times.numel(), last.seeks)
        return Features(array=array, timestamps=times.numpy(), metadata=meta)

    # -- public API ---------------------------------------------------------------------

    def extract(self, path: str | Path) -> Features:
        """Features of one video, in memory (no files written). Raises the video's error."""
        [(_, result)] = list(self._features([Path(path)]))
        if isinstance(result, BaseException):
            raise result
        return result

    def is_finished(self, video: Path, base: Path, fmt: Format) -> bool:
        """True when ``base`` holds this video's output for these exact settings.

        The output must be a consistent pair (see :mod:`tdvideo.writers`) of this very
        source file (size, modification time, fingerprint) and these settings.
        Raises ``OSError`` when the source cannot be read.
        """
        meta = read_metadata(base)
        if meta is None or meta.get("file") != array_path(base, fmt).name:
            return False
        if not SourceIdentity.of(video).same_file(meta.get("source") or {}):
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

        Before any work: inputs are discovered, outputs planned (collisions are an
        error), and ``out`` is checked to be a writable folder (:class:`UsageError`).
        Finished outputs of the same source and settings are skipped (first) unless
        ``overwrite``. A failing video never stops the run: it yields a ``failed``
        result and is appended to the failures log; if it had an older output that
        no longer matches its source or these settings, that output is removed, so
        nothing stale looks current. Folders that cannot be read fail the same way.
        A full disk or a read-only file system stops the run with :class:`OutputError`.

        ``shard``: under torchrun/SLURM (``"auto"`` reads the environment) or with an
        explicit :class:`Shard`, this process takes only its share of the videos, and
        its failures go to ``failures.rank{N}.jsonl``; ``None`` takes every video.
        """
        if fmt not in FORMATS:
            raise UsageError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
        found = discover_videos(inputs, extensions=extensions, glob=glob)
        plan_outputs(found.videos, out)  # collisions are checked over all inputs, whatever the shard
        shard = Shard.from_env() if shard == "auto" else shard
        videos = [v for v in found.videos if shard is None or shard.owns(v)]
        out = prepare_output(out)
        bases = [out / v.relative for v in videos]
        show = sys.stderr.isatty() if progress is None else progress
        summary = summary if summary is not None else RunSummary()
        summary.total = len(videos) + len(found.unreadable)
        started = time.perf_counter()
        failures_log = out / failures_log_name(shard)
        try:
            failures_log.unlink(missing_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot replace the failures log {show_path(failures_log)}: {exc.strerror or exc}") from None
        summary.failures_log = failures_log

        def record(result: VideoResult) -> VideoResult:
            if result.status == "failed":
                _append_failure(failures_log, result)
            summary.add(result)
            summary.wall = time.perf_counter() - started
            vbar.update(1)
            return result

        with (
            tqdm(total=summary.total, unit="video", disable=not show, position=0, desc="videos") as vbar,
            tqdm(unit="frame", disable=not show, position=1, desc="frames", leave=False) as fbar,
            _timed(summary, started),
        ):
            for problem in found.unreadable:
                yield record(VideoResult(problem.path, None, "failed", error_type="UnreadableInput", error=problem.reason))
            todo: list[tuple[Path, Path]] = []
            for video, base in zip(videos, bases):
                remove_temporaries(base)
                try:
                    finished = not overwrite and self.is_finished(video.path, base, fmt)
                except OSError as exc:
                    yield record(VideoResult.failure(video.path, VideoOpenError(video.path, f"cannot read: {exc.strerror or exc}")))
                    continue
                if finished:
                    log.debug("%s: finished earlier, skipped", show_path(video.path))
                    yield record(VideoResult(video.path, array_path(base, fmt), "skipped"))
                else:
                    todo.append((video.path, base))
            log.info(
                "%d video(s): %d to extract, %d finished earlier; model %s on %s",
                summary.total, len(todo), summary.skipped, self.backbone.name, self.device,
            )
            for index, result in self._features([p for p, _ in todo], progress=fbar):
                path, base = todo[index]
                if isinstance(result, BaseException):
                    failure = VideoResult.failure(path, result)
                    if self._remove_stale(path, base, fmt):
                        failure.error = f"{failure.error} (its earlier output, for another source or settings, was removed)"
                    yield record(failure)
                    continue
                try:
                    target = write_features(base, result, fmt=fmt)
                except OSError as exc:
                    if exc.errno in _FATAL_WRITE_ERRORS:
                        raise OutputError(
                            f"cannot write to {show_path(out)}: {exc.strerror}; stopped "
                            f"(finished outputs are kept; a rerun goes on from here)"
                        ) from exc
                    yield record(VideoResult.failure(path, exc))
                    continue
                log.info("%s: %d rows -> %s", show_path(path), len(result), show_path(target))
                yield record(VideoResult(path, target, "done", frames=int(result.timestamps.size)))

    def _remove_stale(self, video: Path, base: Path, fmt: Format) -> bool:
        """Remove an output at ``base`` that is not this video's for these settings; True if removed."""
        try:
            if self.is_finished(video, base, fmt):
                return False
        except OSError:
            pass  # the source is gone: whatever is at base no longer describes it
        return remove_output(base)


def _check_geometry(
    size: Size | None,
    crop: Size | None,
    interpolation: str,
    *,
    clip_len: int | None,
    size_given: bool,
    crop_given: bool,
) -> None:
    """Size and crop within the frame limits, a crop that fits the resized frame and clip
    windows within their memory limit (where the frame size is known before decoding)."""
    check_size("size", size)
    check_size("crop", crop)
    if interpolation not in INTERPOLATIONS:
        raise UsageError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}")
    if clip_len is not None:
        box = crop if crop is not None else size if isinstance(size, tuple) else None
        if box is not None:
            bh, bw = (box, box) if isinstance(box, int) else box
            if clip_len * bh * bw * 3 > MAX_WINDOW_BYTES:
                raise UsageError(
                    f"clip_len {clip_len} windows of {bh}x{bw} frames would take "
                    f"{clip_len * bh * bw * 3 / 2**30:.1f} GiB each (at most {MAX_WINDOW_BYTES / 2**30:.0f} GiB)"
                )
    if crop is None or size is None:
        return
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    # A short-side size S gives frames of at least S x S; an (H, W) size gives exactly that.
    sh, sw = (size, size) if isinstance(size, int) else size
    if ch > sh or cw > sw:
        whose_size = "" if size_given else " (the model's)"
        whose_crop = "" if crop_given else " (the model's)"
        size_text = f"short side {size}" if isinstance(size, int) else f"{sh}x{sw}"
        raise UsageError(
            f"crop {ch}x{cw}{whose_crop} does not fit in frames resized to {size_text}{whose_size}; "
            f"give a larger size or a smaller crop"
        )


@contextmanager
def _timed(summary: RunSummary, started: float) -> Iterator[None]:
    """Keep ``summary.wall`` current however the run ends (an interrupt included)."""
    try:
        yield
    finally:
        summary.wall = time.perf_counter() - started


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
    line = json.dumps({"path": str(result.path), "error_type": result.error_type, "message": result.error})
    try:
        with log_path.open("a") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        if exc.errno in _FATAL_WRITE_ERRORS:
            raise OutputError(f"cannot write {show_path(log_path)}: {exc.strerror}; stopped") from exc
        raise OutputError(f"cannot write {show_path(log_path)}: {exc.strerror or exc}") from exc
