"""The extraction pipeline: paths -> decoded uint8 clips -> device -> TimeDistributed backbone -> writer.

:class:`Extractor` is the library API the CLI is built on::

    extractor = Extractor(model="colorhist", fps=2)
    feats = extractor.extract("clip.mp4")          # in memory
    for result in extractor.run(["videos/"], out="features"):
        print(result.status, result.output)
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from ._types import Interpolation, Size
from ._version import __version__
from ._types import Pool
from .backbones import DEFAULT_MODEL, Backbone, build_backbone
from .decode import OnError, iter_video
from .errors import NoVideosError, OutputCollisionError, TdvideoError, UsageError
from .sampling import Sampling
from .timedistributed import TimeDistributed
from .writers import Features, Format, OutputDType, array_path, read_metadata, write_features

__all__ = [
    "VIDEO_EXTENSIONS",
    "Extractor",
    "InputVideo",
    "Precision",
    "VideoResult",
    "discover_videos",
    "plan_outputs",
    "resolve_device",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .mts .m2ts .3gp .flv .wmv .ogv .mxf".split()
)
Precision = Literal["fp32", "fp16", "bf16"]
_AUTOCAST: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


# -- inputs and outputs ----------------------------------------------------------------


@dataclass(frozen=True)
class InputVideo:
    """One video to process. ``relative`` is its output name: the path below the folder
    it was found in (extension dropped), or just the stem for a file given directly."""

    path: Path
    relative: PurePath


def discover_videos(inputs: Iterable[str | Path], *, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[InputVideo]:
    """Expand files and folders (recursively, video extensions only) into a sorted list.

    A file named directly is taken whatever its extension (it fails later if it is no
    video). Raises :class:`UsageError` for a path that does not exist and
    :class:`NoVideosError` when nothing is found.
    """
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found: list[InputVideo] = []
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            videos = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
            if not videos:
                raise NoVideosError(f"{root}: no video files found (extensions: {' '.join(sorted(exts))})")
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


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
    seconds: float = 0.0
    error_type: str | None = None
    error: str | None = None


@dataclass
class RunSummary:
    """Counts over a run, for the end-of-run line and the exit code."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    wall: float = 0.0
    failures: list[VideoResult] = field(default_factory=list)

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


class Extractor:
    """Extract per-timestep features from videos with a :class:`TimeDistributed` backbone.

    Args:
        model: a registered model name (see :func:`tdvideo.list_models`).
        weights: ``None``/``"DEFAULT"``, ``"none"``, or a checkpoint path (see
            :func:`tdvideo.build_backbone`).
        pool: ``"avg"`` or ``"none"`` (spatial maps); ``None`` for the model's default.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: frames per forward pass (and per decoded chunk).
        precision: ``fp32``, or ``fp16``/``bf16`` autocast.
        size, crop, interpolation: override the model's preprocessing.
        sampling: a :class:`Sampling`, or its fields as keywords (``fps=2`` ...).
        on_error: ``"raise"`` on a video that fails part-way, or ``"keep"`` its frames
            decoded so far (recorded as ``truncated`` in the metadata).
        dtype: dtype of the written features.
        threads: FFmpeg decoder threads per video (0: FFmpeg decides).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        weights: str | Path | None = None,
        pool: Pool | None = None,
        device: str = "auto",
        batch_size: int = 64,
        precision: Precision = "fp32",
        size: Size | None = None,
        crop: Size | None = None,
        interpolation: Interpolation | None = None,
        sampling: Sampling | None = None,
        on_error: OnError = "raise",
        dtype: OutputDType = "float32",
        threads: int = 0,
        **sampling_options: Any,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
        if precision not in _AUTOCAST:
            raise UsageError(f"precision must be one of {', '.join(_AUTOCAST)}; got {precision!r}")
        if dtype not in ("float32", "float16"):
            raise UsageError(f"dtype must be float32 or float16; got {dtype!r}")
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
        self.precision = precision
        self.on_error = on_error
        self.dtype = dtype
        self.threads = threads
        self.model = TimeDistributed(self.backbone.frame_model()).to(self.device).eval()

    # -- one video, in memory ---------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """Everything that determines the features, as stored in each output's metadata."""
        return {
            **self.backbone.metadata(),
            "sampling": self.sampling.to_dict(),
            "resize": {"size": self.size, "crop": self.crop, "interpolation": self.interpolation},
            "precision": self.precision,
            "dtype": self.dtype,
        }

    def _forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, T, C, H, W)`` on the host to float32 features on the host."""
        pin = self.device.type == "cuda"
        x = (frames.pin_memory() if pin else frames).to(self.device, non_blocking=pin)
        autocast = _AUTOCAST[self.precision]
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=autocast, enabled=autocast is not None):
            y = self.model(x)
        return y.float().cpu()

    def extract(self, path: str | Path, *, progress: tqdm | None = None) -> Features:
        """Features of one video, in memory (no files written)."""
        path = Path(path)
        stat = path.stat() if path.exists() else None
        rows: list[torch.Tensor] = []
        times: list[torch.Tensor] = []
        last = None
        for clip in iter_video(
            path,
            chunk_frames=self.batch_size,
            sampling=self.sampling,
            size=self.size,
            crop=self.crop,
            interpolation=self.interpolation,
            threads=self.threads,
            on_error=self.on_error,
        ):
            windowed = self.sampling.windowed
            y = self._forward(clip.frames if windowed else clip.frames.unsqueeze(0))
            rows.append(y if windowed else y[0])
            times.append(clip.timestamps)
            if progress is not None:
                progress.update(clip.timestamps.numel())
            last = clip
        assert last is not None  # iter_video raises rather than yield nothing
        array = torch.cat(rows).numpy().astype(np.dtype(self.dtype), copy=False)
        meta = {
            "tdvideo_version": __version__,
            "source": {
                "path": str(path),
                "size": stat.st_size if stat else None,
                "mtime": stat.st_mtime if stat else None,
            },
            **self.settings(),
            "video": last.info.to_dict(),
            "frames": int(torch.cat(times).numel()),
            "pts_synthesized": last.pts_synthesized,
            "truncated": last.truncated,
            "error": last.error,
        }
        return Features(array=array, timestamps=torch.cat(times).numpy(), metadata=meta)

    # -- many videos, to disk ---------------------------------------------------------

    def is_finished(self, video: Path, base: Path, fmt: Format) -> bool:
        """True when ``base`` holds this video's output for these exact settings."""
        meta = read_metadata(base)
        if meta is None or meta.get("file") != array_path(base, fmt).name:
            return False
        stat = video.stat()
        source = meta.get("source", {})
        if source.get("size") != stat.st_size or source.get("mtime") != stat.st_mtime:
            return False
        settings = json.loads(json.dumps(self.settings()))  # tuples -> lists, as stored
        return all(meta.get(k) == v for k, v in settings.items())

    def run(
        self,
        inputs: Iterable[str | Path],
        *,
        out: str | Path = "features",
        fmt: Format = "npy",
        overwrite: bool = False,
        progress: bool | None = None,
        summary: RunSummary | None = None,
    ) -> Iterator[VideoResult]:
        """Extract every video under ``inputs`` to ``out``, yielding a result per video.

        Finished outputs with the same source and settings are skipped unless
        ``overwrite``. A failing video never stops the run: it yields a ``failed``
        result and is appended to ``out/failures.jsonl``. Input discovery and output
        collisions are checked before any work starts (:class:`UsageError`).
        """
        videos = discover_videos(inputs)
        bases = plan_outputs(videos, out)
        out = Path(out)
        show = sys.stderr.isatty() if progress is None else progress
        summary = summary if summary is not None else RunSummary()
        started = time.perf_counter()
        failures_log = out / "failures.jsonl"
        failures_log.unlink(missing_ok=True)
        with (
            tqdm(total=len(videos), unit="video", disable=not show, position=0, desc="videos") as vbar,
            tqdm(unit="frame", disable=not show, position=1, desc="frames", leave=False) as fbar,
        ):
            for video, base in zip(videos, bases):
                result = self._run_one(video.path, base, fmt, overwrite, fbar)
                if result.status == "failed":
                    _append_failure(failures_log, result)
                summary.add(result)
                summary.wall = time.perf_counter() - started
                vbar.update(1)
                yield result

    def _run_one(self, video: Path, base: Path, fmt: Format, overwrite: bool, fbar: tqdm) -> VideoResult:
        t0 = time.perf_counter()
        try:
            if not overwrite and self.is_finished(video, base, fmt):
                return VideoResult(video, array_path(base, fmt), "skipped")
            features = self.extract(video, progress=fbar)
            target = write_features(base, features, fmt=fmt)
        except (TdvideoError, OSError, RuntimeError, ValueError) as exc:
            # One bad video must not stop a batch: record it and move on.
            reason = exc.reason if hasattr(exc, "reason") else str(exc).strip().splitlines()[0]
            return VideoResult(video, None, "failed", error_type=type(exc).__name__, error=reason, seconds=time.perf_counter() - t0)
        return VideoResult(video, target, "done", frames=len(features.timestamps.reshape(-1)), seconds=time.perf_counter() - t0)


def _append_failure(log_path: Path, result: VideoResult) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"path": str(result.path), "error_type": result.error_type, "message": result.error})
    with log_path.open("a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
