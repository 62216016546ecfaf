"""The ``tdvideo`` command: a thin Typer layer over the library API.

``extract``'s options are made from :class:`~tdvideo.settings.Settings`, the one record
of every setting; the command only adds what belongs to a command line (inputs, a list
file, a preset, quiet, the log level) and turns errors into messages and exit codes.

Exit codes: 0 when every input succeeded; 1 when any input failed (the others are still
processed) or the run had to stop (a full disk, a read-only output folder); 2 for usage
errors, found before any work (bad option, missing path, no videos found); 128 + the
signal when interrupted (130 for Ctrl-C, 143 for SIGTERM).

Nothing here imports torch until a command needs it: ``tdvideo --help`` answers at once.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import re
import signal
import stat
import sys
import threading
import warnings
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from tqdm import tqdm

from ._system import fix_malloc_mmap_threshold, log_to_stderr, process_age
from ._version import __version__
from .errors import TdvideoError, UsageError, command_line_names, show_path
from .settings import Settings

if TYPE_CHECKING:
    from .extract._report import RunSummary

# A flag takes no value: no metavar in --help (Typer would print "<bool>").
_FLAG = ""


def _plain_flags(params: list[Any]) -> list[Any]:
    """The parameters as --help shows them: no metavar for flags (--help and Typer's
    completion options too), and ``<path>`` rather than ``<list[Path]>`` for repeated ones."""
    for param in params:
        if getattr(param, "is_flag", False) and not param.metavar:
            param.metavar = _FLAG
        if not getattr(param, "_tdvideo_plain", False) and hasattr(param, "display_type_rich"):
            shown = param.display_type_rich

            def display(ctx: Any, shown: Any = shown) -> Any:
                text = shown(ctx=ctx)
                return re.sub(r"<list\[(.+)\]>", lambda m: f"<{m.group(1).lower()}>", text) if isinstance(text, str) else text

            param.display_type_rich = display
            param._tdvideo_plain = True
    return params


class _Command(typer.core.TyperCommand):
    """A command whose flags show no "<bool>" metavar in --help."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))


class _Group(typer.core.TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))


app = typer.Typer(
    cls=_Group,
    name="tdvideo",
    help="Per-timestep video features: decode with PyAV, run a TimeDistributed backbone, write arrays.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # interrupted: 128 + the signal, as shells report it


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"tdvideo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.", metavar=_FLAG)
    ] = False,
) -> None:
    """Per-timestep video features."""
    # Library messages name settings as this command line spells them (--weights PATH).
    ctx.with_resource(command_line_names())


# -- extract: options made from the settings record -------------------------------------------


def _setting_option(f: dataclasses.Field[Any]) -> tuple[Any, typer.models.OptionInfo]:
    """The Typer type and option of one setting: every default shown, every choice listed."""
    spec = f.metadata["spec"]
    flags = spec.flag or (f"--{f.name.replace('_', '-')}",)
    if f.default is None:
        shown: str | bool = spec.unset or False
    elif isinstance(f.default, bool):
        shown = flags[0].split("/")[1 if not f.default else 0].lstrip("-") if "/" in flags[0] else str(f.default)
    else:
        shown = str(f.default)
    common: dict[str, Any] = {"help": _plain_text(spec.help), "show_default": shown, "rich_help_panel": spec.group}
    if spec.choices is not None:
        return Literal[spec.choices] | None, typer.Option(*flags, **common)
    if spec.repeat:
        return list[str] | None, typer.Option(*flags, metavar=spec.metavar, **common)
    if bool in spec.toml:
        return bool | None, typer.Option(*flags, metavar=_FLAG, **common)
    kind = str if spec.parse is not None else float if float in spec.toml else int if int in spec.toml else str
    return kind | None, typer.Option(*flags, metavar=spec.metavar, **common)


def _plain_text(text: str) -> str:
    """``text`` as --help must print it: square brackets escaped from rich's markup, which
    would take ``[ray]`` in ``tdvideo[ray]`` for a style and drop it (rich.markup.escape's rule)."""
    return re.sub(r"(\\*)(\[[a-z#/@][^[]*?])", lambda m: f"{m.group(1)}{m.group(1)}\\{m.group(2)}", text)


def _extract(**params: Any) -> None:
    """Extract per-timestep features from videos into OUT (one array + one JSON per video)."""
    inputs, from_list, config = params.pop("inputs"), params.pop("from_list"), params.pop("config")
    print_config, quiet, log_level = params.pop("print_config"), params.pop("quiet"), params.pop("log_level")
    dry_run = params.pop("dry_run")
    _configure_logging(log_level)
    summary: RunSummary | None = None
    results: Generator[Any, None, None] | None = None
    early_ray = False
    try:
        flags = _parse_flags(params)
        from .settings import load_toml

        values = {**(load_toml(config) if config is not None else {}), **flags}
        settings = Settings.from_mapping(values, source="options")
        if print_config:
            typer.echo(settings.to_toml(), nl=False)
            return
        # Imported here, inside the try: Ctrl-C while these load is an interrupt like any other.
        from .extract import Extractor, RunSummary, read_list_file

        paths = [*(inputs or []), *(read_list_file(from_list) if from_list is not None else [])]
        if not paths:
            raise UsageError("no inputs: give video files or folders, or --from-list FILE")
        if settings.engine == "ray" and not dry_run:
            from .extract._ray import extractor_beside_ray

            early_ray = True
            extractor = extractor_beside_ray(settings)  # Ray starts while the model resolves
        else:
            extractor = Extractor(settings)
        if dry_run:
            _print_dry_run(extractor.dry_run(paths))
            return
        summary = RunSummary()
        results = extractor.run(paths, progress=False if quiet else None, summary=summary)
        for result in results:
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
        if results is not None:
            # Stopped outside the run's own code (writing a line, drawing a bar): close it, so
            # that its workers go and its shared-memory folder is removed before the exit.
            results.close()
            from .extract._loader import remove_own_frame_folders

            remove_own_frame_folders()  # a signal while the workers started comes before any cleanup
        raise _interrupted(summary) from None
    finally:
        if early_ray:  # a Ray started for a run that never took it over (a planning error)
            from .extract._ray import stop_early

            stop_early()
    assert summary is not None
    if not quiet:
        # As the user waited: from the process's start, imports and model loading included.
        typer.echo(summary.line(since_start=process_age()), err=True)
    if summary.failed:
        typer.echo(f"{summary.failed} input(s) failed; see {show_path(summary.failures_log or '')}", err=True)
    if summary.failed_elsewhere:
        typer.echo(f"{summary.failed_elsewhere} input(s) failed in other processes; see tdvideo status", err=True)
    if summary.any_failed:
        raise typer.Exit(EXIT_FAILED)


def _print_dry_run(report: Any) -> None:
    """One line per video on stdout (what would happen to it), the counts on stderr."""
    for path in report.todo:
        typer.echo(f"extract  {show_path(path)}")
    for path in report.skipped:
        typer.echo(f"skip     {show_path(path)}")
    for path, reason in report.refused:
        typer.echo(f"refuse   {show_path(path)}: {reason}")
    typer.echo(report.line(), err=True)
    if report.stop:
        raise typer.Exit(EXIT_USAGE)


def _parse_flags(params: dict[str, Any]) -> dict[str, Any]:
    """The settings given as flags (unset ones left out), command-line strings parsed."""
    specs = {f.name: f.metadata["spec"] for f in dataclasses.fields(Settings)}
    flags = {}
    for name, value in params.items():
        if value is None:
            continue
        parse = specs[name].parse
        flags[name] = parse(f"--{name.replace('_', '-')}", value) if parse is not None else value
    return flags


def _extract_signature() -> tuple[inspect.Signature, dict[str, Any]]:
    """``extract``'s parameters: the command line's own, then one per setting."""
    own: list[tuple[str, Any, Any]] = [
        ("inputs", list[str] | None, typer.Argument(help="Video files or folders (searched recursively).", show_default=False)),
        ("from_list", str | None, typer.Option("--from-list", help="Read input paths from FILE, one per line ('-': stdin).", metavar="FILE")),
        ("config", Path | None, typer.Option("--config", help="TOML preset (see configs/); options given here override it.", metavar="FILE")),
        ("print_config", bool, typer.Option("--print-config", help="Print every setting as TOML (a preset to edit) and exit.", metavar=_FLAG)),
        ("dry_run", bool, typer.Option("--dry-run", help="Print what would be extracted, skipped and refused, and exit; runs no model.", metavar=_FLAG)),
        ("quiet", bool, typer.Option("--quiet", "-q", help="No progress bars or summary.", metavar=_FLAG)),
        ("log_level", Literal["debug", "info", "warning", "error"], typer.Option(help="Logging level.")),
    ]
    defaults = {
        "inputs": None, "from_list": None, "config": None, "print_config": False, "dry_run": False, "quiet": False, "log_level": "warning",
    }
    params = []
    annotations: dict[str, Any] = {}
    for name, kind, info in own:
        annotations[name] = Annotated[kind, info]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name], annotation=annotations[name]))
    for f in dataclasses.fields(Settings):
        kind, info = _setting_option(f)
        annotations[f.name] = Annotated[kind, info]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotations[f.name]))
    annotations["return"] = None
    return inspect.Signature(params, return_annotation=None), annotations


_extract.__signature__, _extract.__annotations__ = _extract_signature()  # type: ignore[attr-defined]
app.command("extract", cls=_Command, context_settings={"max_content_width": 120})(_extract)


def _interrupted(summary: RunSummary | None) -> typer.Exit:
    """One line on what an interrupted run finished, and how to go on."""
    if summary is not None and summary.total:
        what = f"{summary.line()}; {summary.unfinished} not finished"
    else:
        what = "before any video was started"
    typer.echo(f"interrupted: {what}. Run the same command again to go on (finished videos are skipped).", err=True)
    return typer.Exit(128 + _stop_signal)


# -- info and models ---------------------------------------------------------------------------


@app.command(cls=_Command)
def info(
    paths: Annotated[
        list[str], typer.Argument(help="Video files or URLs, or folders or prefixes (searched recursively).", show_default=False)
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: one object (one per line for several videos).", metavar=_FLAG)] = False,
    storage_option: Annotated[
        list[str] | None, typer.Option("--storage-option", help="KEY=VALUE for the store of URLs (as extract takes it).", metavar="KEY=VALUE")
    ] = None,
) -> None:
    """Show videos' container, codec, size, frame rate, duration, frame count and rotation.

    One file: every field, one per line. Several files or a folder: a table, one row each.
    """
    from .settings import Settings
    from .storage import is_url
    from .video import file_kind, probe

    try:
        options = Settings(storage_options=_parse_flags({"storage_options": storage_option}).get("storage_options")).storage_options
    except UsageError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    from .extract import is_shard

    if len(paths) == 1 and not is_url(paths[0]) and not is_shard(paths[0]) and not Path(paths[0]).is_dir():
        path = Path(paths[0])
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            what = "no such file" if isinstance(exc, FileNotFoundError) else f"cannot read ({exc.strerror or exc})"
            raise _fail(f"{show_path(path)}: {what}", EXIT_USAGE) from None
        if not stat.S_ISREG(mode):
            raise _fail(f"{show_path(path)}: not a regular file (a {file_kind(mode)})", EXIT_USAGE)
        _print_one(probe, path, as_json)
        return
    from .extract import discover_videos
    from .storage import location

    try:
        found = discover_videos(paths, storage_options=options)
    except TdvideoError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    if len(paths) == 1 and len(found.videos) == 1 and str(found.videos[0].path) == str(location(paths[0])):
        _print_one(probe, found.videos[0].path, as_json)  # one object of a store, named by its URL
        return
    failed = [f"failed: {show_path(u.path)}: {u.reason}" for u in found.unreadable]
    rows = []
    for video in found.videos:
        try:
            rows.append(probe(video.path).to_dict())
        except TdvideoError as exc:
            failed.append(f"failed: {exc}")
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
    elif rows:
        table = [
            (show_path(r["path"]), r["codec"], f"{r['width']}x{r['height']}", f"{r['fps']:g}" if r["fps"] else "?",
             f"{r['duration']:.2f}" if r["duration"] is not None else "?", str(r["frames"] or "?"), str(r["rotation"]))
            for r in rows
        ]
        _echo_table(("path", "codec", "size", "fps", "seconds", "frames", "rotation"), table)
    for line in failed:
        typer.echo(line, err=True)
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _print_one(probe: Any, path: Any, as_json: bool) -> None:
    """Every field of one video's probe, one per line (or one JSON object)."""
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
        typer.echo(f"{key:<{width}}  {_shown(value)}")


@app.command(cls=_Command)
def models(
    pattern: Annotated[
        str | None, typer.Argument(help="Only names matching this glob, e.g. 'resnet*'; timm's models with 'timm:*clip*'.")
    ] = None,
    layers: Annotated[bool, typer.Option("--layers", help="List the node names --layer takes for the model PATTERN names.", metavar=_FLAG)] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.", metavar=_FLAG)] = False,
) -> None:
    """List the available models with their feature shape and whether they need weights."""
    from .models import describe_model, list_models

    if layers:
        if pattern is None:
            raise _fail("--layers needs a model name: tdvideo models NAME --layers", EXIT_USAGE)
        from .models import layer_names

        try:
            names = layer_names(pattern)
        except TdvideoError as exc:
            raise _fail(str(exc), EXIT_USAGE) from None
        typer.echo(json.dumps(names) if as_json else "\n".join(names))
        return
    try:
        names = list_models(pattern)
    except TdvideoError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    if not names:
        raise _fail(f"no model matches {pattern!r}", EXIT_USAGE)
    from .models._catalog import save_descriptions

    # timm's shapes are computed on the meta device the first time (0.1-0.5 s a model), then
    # cached, also when the listing is stopped part-way.
    slow = pattern is not None and pattern.startswith("timm:") and len(names) > 10 and sys.stderr.isatty()
    rows = []
    try:
        for name in tqdm(names, desc="describing", unit="model", disable=not slow, leave=False):
            try:
                rows.append(describe_model(name))
            except TdvideoError as exc:  # a broken plugin: named, and the others still listed
                typer.echo(f"warning: {exc}", err=True)
    finally:
        save_descriptions()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = []
    for row in rows:
        shape = "x".join(str(d) for d in row["feature_shape"]) if row["feature_shape"] is not None else "?"
        if row.get("kind") == "window":
            shape += f" per {row['clip_len']} frames"
        description = row["description"] + (f" (no feature vector: {row['reason']})" if row.get("reason") else "")
        table.append((row["name"], shape, "needs weights" if row["needs_weights"] else "no weights", description))
    _echo_table(("name", "features", "weights", "description"), table)
    if len(rows) == 1 and rows[0].get("input_sizes"):
        typer.echo(f"input: {rows[0]['input_sizes']}")


def _echo_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Rows under a header, each column as wide as its widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    for line in (header, *rows):
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


_StorageOption = Annotated[
    list[str] | None, typer.Option("--storage-option", help="KEY=VALUE for the store of URLs (as extract takes it).", metavar="KEY=VALUE")
]


def _place(text: str, storage_option: list[str] | None) -> Any:
    """A path as given, or a URL with the storage options given (a usage error when they are
    not KEY=VALUE)."""
    from .settings import Settings
    from .storage import is_url, location

    if not is_url(text):
        return text
    try:
        options = Settings(storage_options=_parse_flags({"storage_options": storage_option}).get("storage_options")).storage_options
    except UsageError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    return location(text, options)


@app.command(cls=_Command)
def status(
    out: Annotated[str, typer.Argument(help="The output folder of one or more runs (every rank's); a URL for a store's.", metavar="OUT")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.", metavar=_FLAG)] = False,
    storage_option: _StorageOption = None,
) -> None:
    """Where the runs writing into OUT stand: done, failed, not yet done, and the failures.

    Every run's plan counts (of two runs over the same inputs, the later). Exit code 0 when
    every planned video is done and every record could be read, 1 otherwise.
    """
    from .extract import run_status

    try:
        report = run_status(_place(out, storage_option))
    except TdvideoError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    for problem in report.problems:
        typer.echo(f"warning: {problem}", err=True)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        for record in report.failures:
            typer.echo(f"failed: {_one_line(record.get('path'))}: {_one_line(record.get('error_type'))}: {_one_line(record.get('message'))}")
        for conflict in report.conflicts:
            typer.echo(f"conflict: {conflict}")
        plans = len(report.plans)
        typer.echo(
            f"{report.done} done, {report.failed} failed, {report.pending} not yet done "
            f"({report.total} videos, {plans} plan{'s' if plans != 1 else ''})"
        )
    if not report.complete:
        raise typer.Exit(EXIT_FAILED)


def _shown(value: object) -> str:
    """A probe's value as ``info`` prints it: numbers to 6 significant digits (a keyframe
    interval of 1.0000000000000002 is 1), video streams one short phrase each."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return "; ".join(
            f"#{v.get('index')} {v.get('codec')} {v.get('width')}x{v.get('height')}"
            + (f" {v['fps']:.6g} fps" if isinstance(v.get("fps"), float) else "")
            + (f" {v['frames']} frames" if v.get("frames") else "")
            for v in value
        )
    return show_path(str(value)) if isinstance(value, str) else str(value)


def _one_line(text: object) -> str:
    """A recorded message as one line of output, whoever wrote the record."""
    return show_path(str(text)) if text is not None else "?"


@app.command(cls=_Command)
def show(
    features: Annotated[str, typer.Argument(help="An output: OUT/clip, or its .npy/.npz/.pt/.json (a URL for a store's).", metavar="FEATURES")],
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="The PNG to write, or a folder to write it in (default: beside the features).", metavar="FILE")
    ] = None,
    query: Annotated[
        str | None, typer.Option("--query", help="Also plot each step's similarity to this sentence, as search ranks it.", metavar="TEXT")
    ] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Also plot each step's similarity to this picture.", metavar="PATH")] = None,
    k: Annotated[int, typer.Option("-k", "--top", help="How many of the query's best moments to mark.", metavar="K")] = 5,
    storage_option: _StorageOption = None,
) -> None:
    """Draw an output's features to a PNG: thumbnails, self-similarity, PCA timeline, cuts
    (and, with --query or --image, the best moments for it)."""
    from .show import plot

    try:
        where = _place(output, storage_option) if output is not None else None
        path = plot(_place(features, storage_option), where, query=query, image=image, k=k)
    except UsageError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except TdvideoError as exc:  # a damaged or hostile output, a PNG that cannot be written
        raise _fail(str(exc), EXIT_FAILED) from None
    typer.echo(show_path(path))


@app.command(cls=_Command)
def search(
    out: Annotated[str, typer.Argument(help="The output folder to search (a URL for a store's).", metavar="OUT")],
    query: Annotated[str | None, typer.Argument(help="What to look for, in words.", metavar="TEXT")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Look for what this picture shows instead.", metavar="PATH")] = None,
    k: Annotated[int, typer.Option("-k", "--top", help="How many moments to print.", metavar="K")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.", metavar=_FLAG)] = False,
    skip_damaged: Annotated[
        bool, typer.Option("--skip-damaged", help="Leave out outputs that cannot be read (each is named) and search the others.", metavar=_FLAG)
    ] = False,
    storage_option: _StorageOption = None,
) -> None:
    """The moments under OUT most like TEXT (or --image), best first: video, time, score.

    A sentence is encoded with the text tower of the features' own image-text model (hf:
    CLIP, SigLIP, X-CLIP; timm's OpenAI CLIP tags); an image with the features' model and
    preprocessing, whatever it is. Scores are cosine similarities.
    """
    from .moments import search as find

    try:
        moments = find(_place(out, storage_option), query, image=image, k=k, on_damaged="skip" if skip_damaged else "raise")
    except UsageError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except TdvideoError as exc:  # an output that cannot be read: named
        raise _fail(str(exc), EXIT_FAILED) from None
    if as_json:
        typer.echo(json.dumps([m.to_dict() for m in moments]))
        return
    rows = [
        (str(rank), _one_line(m.video), f"{m.time:.2f}" + (f"-{m.end:.2f}" if m.end is not None else ""), f"{m.score:.4f}")
        for rank, m in enumerate(moments, 1)
    ]
    _echo_table(("rank", "video", "time (s)", "score"), rows)


@app.command(cls=_Command)
def export(
    out: Annotated[str, typer.Argument(help="The output folder of a run (a URL for a store's).", metavar="OUT")],
    to: Annotated[str, typer.Option("--to", help="The Parquet file to write (and TO's stem + .videos.parquet).", metavar="FILE")],
    skip_damaged: Annotated[
        bool, typer.Option("--skip-damaged", help="Leave out outputs that cannot be read (each is named) and export the others.", metavar=_FLAG)
    ] = False,
    storage_option: _StorageOption = None,
) -> None:
    """Write every finished output under OUT as one Parquet table: a row per timestep.

    An output that cannot be read (damaged, unfinished, a link) is named with its reason;
    then nothing is written and the exit code is 1, unless --skip-damaged.
    """
    from .export import DamagedOutputsError, export_parquet

    try:
        target = _place(to, storage_option)
        target = Path(target) if isinstance(target, str) else target
        report = export_parquet(_place(out, storage_option), target, on_damaged="skip" if skip_damaged else "raise")
    except DamagedOutputsError as exc:
        for left in exc.left_out:
            typer.echo(left.line(), err=True)
        raise _fail(str(exc), EXIT_FAILED) from None
    except UsageError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except TdvideoError as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    for left in report.left_out:
        typer.echo(f"warning: {left.line()}", err=True)
    videos = f"{report.videos} video{'s' if report.videos != 1 else ''}"
    skipped = f", {len(report.left_out)} left out" if report.left_out else ""
    typer.echo(f"{videos}, {report.rows} rows{skipped} -> {show_path(target)} (+ {show_path(target.with_name(target.stem + '.videos.parquet'))})", err=True)


# -- the process -------------------------------------------------------------------------------


def _configure_logging(level: str) -> None:
    log_to_stderr(getattr(logging, level.upper()))

    def show(message, category, filename, lineno, file=None, line=None) -> None:
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


def _stop_again(unraisable: Any) -> None:
    """A stop that Python dropped is delivered again.

    A signal handler's ``KeyboardInterrupt`` raised while a finalizer runs (a ``__del__``,
    a weakref callback: the garbage collector runs them between any two instructions, and
    importing torch makes many) is printed as "Exception ignored" and dropped, and the run
    went on to the end. The signal is sent again a moment later from a thread, so that its
    handler runs once this hook has returned, in the code the finalizer interrupted."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        again = threading.Timer(0.05, os.kill, args=(os.getpid(), _stop_signal))
        again.daemon = True
        again.start()
        return
    sys.__unraisablehook__(unraisable)


def main() -> NoReturn:
    """Console-script entry point: process-wide settings belong here, not in the library."""
    signal.signal(signal.SIGTERM, _terminate)
    sys.unraisablehook = _stop_again
    fix_malloc_mmap_threshold()
    try:
        app()
    except SystemExit as exc:
        _exit_now(exc.code)
    _exit_now(EXIT_OK)


def _exit_now(code: int | str | None) -> NoReturn:
    """Exit without the interpreter's teardown, which spends tenths of a second freeing
    torch's modules one by one (benchmarks/RESULTS.md). When a command returns, its
    outputs are complete: written, renamed, and its workers and temporary files gone."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = EXIT_FAILED
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            continue  # the reader went away (tdvideo models | head), or the stream was closed
    os._exit(code or EXIT_OK)
