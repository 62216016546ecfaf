"""The ``tdvideo`` command: a thin Typer layer over the library API.

Exit codes: 0 when every input succeeded; 1 when any input failed (the others are still
processed) or the run had to stop (a full disk, a read-only output folder); 2 for usage
errors, found before any work (bad option, missing path, no videos found); 128 + the
signal when interrupted (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import json
import logging
import signal
import stat
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from tqdm import tqdm

from ._system import log_to_stderr
from ._version import __version__
from .errors import TdvideoError, UsageError, show_path

if TYPE_CHECKING:
    from .pipeline import RunSummary

app = typer.Typer(
    name="tdvideo",
    help="Per-timestep video features: decode with PyAV, run a TimeDistributed backbone, write arrays.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # interrupted: 128 + the signal, as shells report it


class FormatChoice(str, Enum):
    npy = "npy"
    npz = "npz"
    pt = "pt"


class PrecisionChoice(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class DTypeChoice(str, Enum):
    float32 = "float32"
    float16 = "float16"


class PoolChoice(str, Enum):
    avg = "avg"
    none = "none"


class OnErrorChoice(str, Enum):
    fail = "raise"
    keep = "keep"


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _parse_size(value: Optional[str], name: str) -> int | tuple[int, int] | None:
    """``224`` (short side) or ``224x160`` (H x W)."""
    if value is None:
        return None
    parts = value.lower().split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or any(n <= 0 for n in numbers):
        raise UsageError(f"{name} must be S or HxW with positive integers, got {value!r}")
    return numbers[0] if len(numbers) == 1 else (numbers[0], numbers[1])


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"tdvideo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Per-timestep video features."""


@app.command()
def extract(
    inputs: Annotated[
        Optional[list[str]], typer.Argument(help="Video files or folders (searched recursively).", show_default=False)
    ] = None,
    from_list: Annotated[
        Optional[str], typer.Option("--from-list", help="Read input paths from FILE, one per line ('-': stdin).")
    ] = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="TOML preset (see configs/); flags given here override it.")
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved settings as TOML and exit.")
    ] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder; input folder trees are mirrored. [default: features]")] = None,
    ext: Annotated[Optional[list[str]], typer.Option(help="Only these extensions inside folders (repeatable), e.g. --ext mp4.")] = None,
    glob: Annotated[Optional[str], typer.Option(help="Only files whose path below the input folder matches this glob.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name (see `tdvideo models`). [default: colorhist]")] = None,
    weights: Annotated[
        Optional[str], typer.Option(help="DEFAULT, a torchvision weights name, none, or a checkpoint PATH.")
    ] = None,
    pool: Annotated[Optional[PoolChoice], typer.Option(help="avg: a vector per frame; none: spatial maps.")] = None,
    fps: Annotated[Optional[float], typer.Option(help="Sample this many frames per second.")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Keep every N-th frame.")] = None,
    num_frames: Annotated[Optional[int], typer.Option(help="Keep N frames spread uniformly.")] = None,
    start: Annotated[Optional[float], typer.Option(help="Start time in seconds.")] = None,
    end: Annotated[Optional[float], typer.Option(help="End time in seconds (exclusive).")] = None,
    clip_len: Annotated[Optional[int], typer.Option(help="Group kept frames into windows of N frames.")] = None,
    clip_stride: Annotated[Optional[int], typer.Option(help="A new window every N kept frames (default: clip-len).")] = None,
    keyframes_only: Annotated[Optional[bool], typer.Option("--keyframes-only/--all-frames", help="Decode keyframes only.", show_default=False)] = None,
    size: Annotated[Optional[str], typer.Option(help="Resize: S (short side) or HxW. Default: the model's.")] = None,
    crop: Annotated[Optional[str], typer.Option(help="Center crop after resizing: S or HxW.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N. [default: auto]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Frames per forward pass. [default: 64]")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Decoding processes (0: decode here). [default: by job size]")] = None,
    precision: Annotated[Optional[PrecisionChoice], typer.Option(help="Autocast precision on the device. [default: fp32]")] = None,
    compile_model: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model.", show_default=False)] = None,
    fmt: Annotated[Optional[FormatChoice], typer.Option("--format", help="Array file format. [default: npy]")] = None,
    dtype: Annotated[Optional[DTypeChoice], typer.Option(help="dtype of the written features. [default: float32]")] = None,
    on_error: Annotated[
        Optional[OnErrorChoice], typer.Option(help="A video failing part-way: raise (it fails) or keep the frames so far. [default: raise]")
    ] = None,
    overwrite: Annotated[Optional[bool], typer.Option("--overwrite/--skip-finished", help="Recompute finished outputs (default: skip them).", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")] = False,
    log_level: Annotated[str, typer.Option(help="Logging level: debug, info, warning, error.")] = "warning",
) -> None:
    """Extract per-timestep features from videos into OUT (one array + one JSON per video)."""
    _configure_logging(log_level)
    summary: RunSummary | None = None
    try:
        # Imported here, inside the try: Ctrl-C while torch loads is an interrupt like any other.
        from .config import load_config, resolve, to_toml
        from .pipeline import Extractor, RunSummary, read_list_file

        summary = RunSummary()
        flags = {
            "out": str(out) if out is not None else None,
            "model": model,
            "weights": weights,
            "pool": _value(pool),
            "fps": fps,
            "stride": stride,
            "num_frames": num_frames,
            "start": start,
            "end": end,
            "clip_len": clip_len,
            "clip_stride": clip_stride,
            "keyframes_only": keyframes_only,
            "size": _parse_size(size, "--size"),
            "crop": _parse_size(crop, "--crop"),
            "device": device,
            "batch_size": batch_size,
            "workers": workers,
            "precision": _value(precision),
            "compile": compile_model,
            "format": _value(fmt),
            "dtype": _value(dtype),
            "on_error": _value(on_error),
            "overwrite": overwrite,
            "ext": ext,
            "glob": glob,
        }
        settings = resolve(load_config(config) if config is not None else None, flags)
        if print_config:
            typer.echo(to_toml(settings), nl=False)
            return
        paths = [*(inputs or []), *(read_list_file(from_list) if from_list is not None else [])]
        if not paths:
            raise UsageError("no inputs: give video files or folders, or --from-list FILE")
        extractor = Extractor(
            settings["model"],
            weights=settings["weights"],
            pool=settings["pool"],
            device=settings["device"],
            batch_size=settings["batch_size"],
            workers=settings["workers"],
            precision=settings["precision"],
            compile=settings["compile"],
            size=settings["size"],
            crop=settings["crop"],
            on_error=settings["on_error"],
            dtype=settings["dtype"],
            **{k: settings[k] for k in ("fps", "stride", "num_frames", "start", "end", "clip_len", "clip_stride", "keyframes_only")},
        )
        for result in extractor.run(
            paths,
            out=settings["out"],
            fmt=settings["format"],
            overwrite=settings["overwrite"],
            extensions=settings["ext"],
            glob=settings["glob"],
            progress=False if quiet else None,
            summary=summary,
        ):
            if result.status == "failed":
                # Through tqdm, so the line lands above the progress bars instead of in them.
                tqdm.write(result.line(), file=sys.stderr)
    except UsageError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except TdvideoError as exc:
        if summary is not None and summary.total:
            typer.echo(summary.line(), err=True)
        raise _fail(str(exc), EXIT_FAILED) from None
    except KeyboardInterrupt:
        raise _interrupted(summary) from None
    assert summary is not None
    if not quiet:
        typer.echo(summary.line(), err=True)
    if summary.failed:
        typer.echo(f"{summary.failed} input(s) failed; see {show_path(summary.failures_log or '')}", err=True)
        raise typer.Exit(EXIT_FAILED)


def _interrupted(summary: RunSummary | None) -> typer.Exit:
    """One line on what an interrupted run finished, and how to go on."""
    if summary is not None and summary.total:
        what = f"{summary.line()}; {summary.unfinished} not finished"
    else:
        what = "before any video was started"
    typer.echo(f"interrupted: {what}. Run the same command again to go on (finished videos are skipped).", err=True)
    return typer.Exit(128 + _stop_signal)


def _value(choice: Optional[Enum]) -> Optional[str]:
    return choice.value if choice is not None else None


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="A video file.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a video's container, codec, size, frame rate, duration, frame count and rotation."""
    from .decode import file_kind, probe

    try:
        mode = path.stat().st_mode
    except OSError as exc:
        what = "no such file" if isinstance(exc, FileNotFoundError) else f"cannot read ({exc.strerror or exc})"
        raise _fail(f"{show_path(path)}: {what}", EXIT_USAGE) from None
    if not stat.S_ISREG(mode):
        raise _fail(f"{show_path(path)}: not a regular file (a {file_kind(mode)})", EXIT_USAGE)
    try:
        video = probe(path)
    except TdvideoError as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    data = video.to_dict()
    if as_json:
        typer.echo(json.dumps(data))
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        typer.echo(f"{key:<{width}}  {value}")


@app.command()
def models(
    pattern: Annotated[Optional[str], typer.Argument(help="Only names matching this glob, e.g. 'resnet*'.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the available models with their feature shape and whether they need weights."""
    from .backbones import describe_model, list_models

    rows = [describe_model(name) for name in list_models(pattern)]
    if not rows:
        raise _fail(f"no model matches {pattern!r}", EXIT_USAGE)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        shape = "x".join(str(d) for d in row["feature_shape"])
        weights = "needs weights" if row["needs_weights"] else "no weights"
        typer.echo(f"{row['name']:<20} {shape:<12} {weights:<14} {row['description']}")


def _configure_logging(level: str) -> None:
    levels = ("debug", "info", "warning", "error")
    if level.lower() not in levels:
        raise _fail(f"--log-level must be one of {', '.join(levels)}; got {level!r}", EXIT_USAGE)
    log_to_stderr(getattr(logging, level.upper()))

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        # One plain line per warning (random weights, ignored rotation): no source location,
        # and above the progress bars rather than inside them.
        tqdm.write(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


_stop_signal = signal.SIGINT


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (kill, a batch scheduler's preemption) stops a run the way Ctrl-C does:
    # workers are killed, finished outputs stay, and the exit code tells which signal.
    global _stop_signal
    _stop_signal = signal.Signals(signum)
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminate)
    app()
