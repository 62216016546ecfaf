"""One record of every extraction setting: its default, type, meaning and checks.

:class:`Settings` is the single place a setting is defined. The ``tdvideo extract``
options, TOML presets (``configs/*.toml``, ``--config``), ``--print-config`` and the
:class:`~tdvideo.Extractor` keywords all derive from its fields, and every value is
checked here, with a message that names it and what it may be.

Precedence, lowest first: the defaults, a TOML file, then flags or keywords.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from ._types import Balance, Engine, Format, FpsRows, Interpolation, OnError, OutputDType, Pool, Precision, Size
from .errors import UsageError, option, show_path
from .sampling import MAX_GRID_FPS, MAX_SECONDS, Sampling

__all__ = ["SettingSpec", "Settings", "load_toml", "parse_size"]

_MAX_TOML_BYTES = 1 << 20  # a preset is a few lines; /dev/zero must not be read to the end


@dataclass(frozen=True)
class SettingSpec:
    """What the CLI, TOML and the checks need to know of one setting.

    ``toml``: the TOML value types it takes; ``choices``: the words it takes;
    ``check``: validates a value (raises :class:`UsageError`) and returns it normalized;
    ``parse``: turns a command-line string into a value (``--size 224x160``);
    ``flag``: the CLI flag(s), ``--name`` by default, ``--yes/--no`` for a switch.
    """

    help: str
    group: str
    toml: tuple[type, ...]
    choices: tuple[str, ...] | None = None
    check: Callable[[str, Any], Any] | None = None
    parse: Callable[[str, str], Any] | None = None
    flag: tuple[str, ...] = ()
    metavar: str | None = None
    unset: str | None = None  # what None means, for --help and --print-config
    repeat: bool = False


def _setting(default: Any, help: str, group: str, toml: tuple[type, ...], **spec: Any) -> Any:
    return field(default=default, metadata={"spec": SettingSpec(help=help, group=group, toml=toml, **spec)})


# -- checks -----------------------------------------------------------------------------------


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return value


def _non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{name} must be a non-negative integer, got {value!r}")
    return value


# More decoder threads than any machine's cores only cost memory: FFmpeg keeps a frame
# context per thread (100,000 took 4.6 GB and then failed every video).
MAX_THREADS = 256


def _thread_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_THREADS:
        raise UsageError(f"{name} must be an integer in [0, {MAX_THREADS}], got {value!r}")
    return value


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise UsageError(f"{name} must be a number of seconds in [0, {MAX_SECONDS:g}], got {value!r}")
    return float(value)


def _positive_seconds(name: str, value: Any) -> float:
    seconds = _seconds(name, value)
    if seconds <= 0:
        raise UsageError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name} must be a number, got {value!r}")
    return float(value)


def _size(name: str, value: Any) -> Size:
    """A size: ``S`` or ``(H, W)`` of positive ints; a TOML ``[H, W]`` list becomes a tuple."""
    if isinstance(value, list):
        value = tuple(value)
    numbers = value if isinstance(value, tuple) else (value,)
    ok = len(numbers) in (1, 2) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in numbers)
    if not ok or (isinstance(value, tuple) and len(value) != 2):
        raise UsageError(f"{name} must be a positive integer or [height, width] of positive integers, got {list(numbers)!r}")
    return value


def _text(name: str, value: Any) -> str:
    """A string, or a path given as one (``out``, ``weights``)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if not isinstance(value, str):
        raise UsageError(f"{name} must be a string, got {value!r}")
    return value


def _device(name: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise UsageError(f"{name} must be auto, cpu, cuda or cuda:N; got {value!r}")
    return value


def _shard(name: str, value: Any) -> str:
    """``I/N``: this process is shard I (from 0) of N."""
    rank, _, world = str(value).partition("/") if isinstance(value, str) else ("", "", "")
    if not (rank.isdigit() and world.isdigit() and 0 <= int(rank) < int(world)):
        raise UsageError(f"{name} must be I/N with 0 <= I < N (this process's share, e.g. 0/4), got {value!r}")
    return f"{int(rank)}/{int(world)}"


def _extensions(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) and v.strip(".") for v in value):
        raise UsageError(f"{name} must be a list of file extensions such as mp4, got {value!r}")
    return tuple(value)


def _storage_options(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
        raise UsageError(f"{name} must be a table of option names and values, got {value!r}")
    return dict(value)


def _parse_storage_option(name: str, values: Any) -> dict[str, Any]:
    """``KEY=VALUE`` options from the command line; a VALUE that reads as JSON (a number,
    true, a table) is that, else it is text."""
    options: dict[str, Any] = {}
    for text in [values] if isinstance(values, str) else values:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{name} takes KEY=VALUE, got {text!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        options[key.strip()] = value
    return options


def parse_size(name: str, text: str) -> Size:
    """``224`` (the short side) or ``224x160`` (H x W), from the command line."""
    parts = text.lower().split("x")
    try:
        numbers = tuple(int(p) for p in parts)
    except ValueError:
        numbers = ()
    if len(numbers) not in (1, 2) or any(n <= 0 for n in numbers):
        raise UsageError(f"{name} must be S or HxW with positive integers, got {text!r}")
    return numbers[0] if len(numbers) == 1 else numbers


def _choices(annotation: Any) -> tuple[str, ...]:
    return tuple(get_args(annotation))


# -- the record -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of an extraction. Build it with keywords (checked here) or from TOML.

    Unset (``None``) settings take the model's default (``size``, ``crop``,
    ``interpolation``, ``pool``, ``weights``) or mean "no such limit" (sampling).
    """

    # Output
    out: str = _setting(
        "features", "Output folder; input folder trees are mirrored under it.", "Output", (str,),
        check=_text, flag=("--out", "-o"), metavar="DIR",
    )
    format: Format = _setting("npy", "Array file format.", "Output", (str,), choices=_choices(Format))
    dtype: OutputDType = _setting("float32", "dtype of the written features.", "Output", (str,), choices=_choices(OutputDType))
    overwrite: bool = _setting(False, "Recompute finished outputs instead of skipping them.", "Output", (bool,), flag=("--overwrite/--skip-finished",))
    on_error: OnError = _setting(
        "raise",
        "A video damaged part-way: raise (it fails) or keep the frames decoded before the damage.",
        "Output",
        (str,),
        choices=_choices(OnError),
    )
    # Inputs
    ext: tuple[str, ...] | None = _setting(
        None, "Only files with these extensions inside folders (repeatable), e.g. --ext mp4.", "Inputs", (list,),
        check=_extensions, repeat=True, metavar="EXT", unset="common video extensions",
    )
    glob: str | None = _setting(None, "Only files whose path below the input folder matches this glob.", "Inputs", (str,), metavar="PATTERN", unset="all")
    stream: int = _setting(0, "Which video stream to read, counting video streams from 0 (see `tdvideo info`).", "Inputs", (int,), check=_non_negative_int, metavar="N")
    root: str | None = _setting(
        None, "Files given one by one are named by their path below DIR.", "Inputs", (str,), check=_text, metavar="DIR",
        unset="their deepest common folder",
    )
    # Model
    model: str = _setting("colorhist", "Model name (see `tdvideo models`).", "Model", (str,), metavar="NAME")
    weights: str | None = _setting(
        None, "DEFAULT, a torchvision weights name, none, or a checkpoint PATH.", "Model", (str,),
        check=_text, metavar="W", unset="the model's default",
    )
    pool: Pool | None = _setting(
        None, "avg: a vector per frame; none: spatial maps.", "Model", (str,), choices=_choices(Pool), unset="the model's default"
    )
    layer: str | None = _setting(
        None, "Features from this node of the model's graph (see `tdvideo models NAME --layers`).", "Model", (str,),
        check=_text, metavar="NODE", unset="the model's embedding",
    )
    # Sampling
    fps: float | None = _setting(None, "Keep frames on a grid of this many per second.", "Sampling", (int, float), check=_number, unset="every frame")
    fps_rows: FpsRows = _setting(
        "distinct", "With --fps: a row per distinct frame kept, or a row per grid point (a repeated frame's row copied).", "Sampling",
        (str,), choices=_choices(FpsRows),
    )
    stride: int | None = _setting(None, "Keep every N-th frame.", "Sampling", (int,), check=_positive_int, metavar="N")
    num_frames: int | None = _setting(None, "Keep N frames spread uniformly.", "Sampling", (int,), check=_positive_int, metavar="N")
    start: float | None = _setting(None, "Only frames at or after this time (seconds).", "Sampling", (int, float), check=_seconds)
    end: float | None = _setting(None, "Only frames before this time (seconds).", "Sampling", (int, float), check=_seconds)
    clip_len: int | None = _setting(None, "Group kept frames into windows of N frames.", "Sampling", (int,), check=_positive_int, metavar="N")
    clip_stride: int | None = _setting(
        None, "A new window every N kept frames.", "Sampling", (int,), check=_positive_int, metavar="N", unset="clip-len"
    )
    keyframes_only: bool = _setting(False, "Decode keyframes only.", "Sampling", (bool,), flag=("--keyframes-only/--all-frames",))
    # Frames
    size: Size | None = _setting(
        None, "Resize: S (the short side) or HxW.", "Frames", (int, list), check=_size, parse=parse_size, metavar="S|HxW", unset="the model's"
    )
    crop: Size | None = _setting(
        None, "Center crop after resizing: S or HxW.", "Frames", (int, list), check=_size, parse=parse_size, metavar="S|HxW", unset="the model's"
    )
    interpolation: Interpolation | None = _setting(
        None, "Resizing filter (swscale).", "Frames", (str,), choices=_choices(Interpolation), unset="the model's"
    )
    # Running
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N.", "Running", (str,), check=_device)
    precision: Precision = _setting("fp32", "Autocast precision on the device.", "Running", (str,), choices=_choices(Precision))
    compile: bool = _setting(False, "torch.compile the model.", "Running", (bool,), flag=("--compile/--no-compile",))
    batch_size: int = _setting(64, "Frames per forward pass (at most 64 MiB of frames).", "Running", (int,), check=_positive_int, metavar="N")
    workers: int | None = _setting(
        None, "Decoding processes (0: decode in this process); with engine ray, decoding tasks a node.", "Running", (int,), check=_non_negative_int, metavar="N", unset="by input size"
    )
    threads: int = _setting(
        0, f"FFmpeg threads per video (0: shared out over the cores; at most {MAX_THREADS}).", "Running", (int,), check=_thread_count, metavar="N"
    )
    engine: Engine = _setting(
        "local", "local: this process and its decoding workers; ray: a Ray cluster (pip install 'tdvideo[ray]').", "Running",
        (str,), choices=_choices(Engine),
    )
    ray_address: str | None = _setting(
        None, "The Ray cluster to join (ray://HOST:PORT, or auto).", "Running", (str,), check=_text, metavar="ADDR",
        unset="RAY_ADDRESS, else a local Ray instance",
    )
    balance: Balance = _setting(
        "static", "static: a fixed hash share per process; claim: processes claim videos one at a time.", "Running", (str,),
        choices=_choices(Balance),
    )
    claim_timeout: float = _setting(
        120.0, "Seconds without a heartbeat after which a claim's process counts as gone.", "Running", (int, float),
        check=_positive_seconds, metavar="S",
    )
    storage_options: dict[str, Any] | None = _setting(
        None,
        "Options for the store of URL inputs (s3://, gs://, https://, hf://): KEY=VALUE, repeatable, e.g. "
        "endpoint_url=http://host:9000; a [storage_options] table in TOML. Credentials are best left to the "
        "store's own environment variables and files.",
        "Storage", (dict,), check=_storage_options, parse=_parse_storage_option, repeat=True, metavar="KEY=VALUE",
        flag=("--storage-option",), unset="what the store's SDK reads (AWS_* variables, config files, roles)",
    )
    storage_timeout: float = _setting(
        60.0, "Seconds a store may take to connect or to answer a request; a store that leaves one unanswered is not asked again for a while.",
        "Storage", (int, float), check=_positive_seconds, metavar="S",
    )
    shard: str | None = _setting(
        None, "Take only share I of N of the videos (as RANK/WORLD_SIZE do).", "Running", (str,), check=_shard, metavar="I/N",
        unset="torchrun/SLURM environment, else all",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            checked = _check_one(f, value)
            if checked is not value:
                object.__setattr__(self, f.name, checked)
        # The sampling settings check each other; a clip_stride without clip_len waits for
        # the model, as a video model brings its own window length.
        self.sampling(clip_len=1 if self.clip_len is None and self.clip_stride is not None else None)
        if self.fps_rows == "grid" and self.fps is not None and self.fps > MAX_GRID_FPS:
            raise UsageError(
                f"{option('fps', f'{self.fps:g}')} with {option('fps_rows', 'grid')} would repeat each frame's row "
                f"thousands of times; a grid takes at most {MAX_GRID_FPS:g} rows a second"
            )

    def sampling(self, *, clip_len: int | None = None) -> Sampling:
        """The sampling settings as a :class:`Sampling`; ``clip_len`` is the window length
        when none is set (a video model's)."""
        fields = {name: getattr(self, name) for name in SAMPLING_FIELDS}
        if fields["clip_len"] is None:
            fields["clip_len"] = clip_len
        return Sampling(**fields)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (checked); unknown names are a :class:`UsageError`."""
        _check_names(changes, "keyword")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "settings") -> Settings:
        """Settings from a mapping (a TOML table): unknown names and wrong types are a :class:`UsageError`."""
        _check_names(values, source)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, value in values.items():
            if value is None and fields[name].default is None:
                continue  # from Python, None leaves an optional setting unset
            spec = _spec(fields[name])
            # From Python, a tuple does for a TOML array and a path for a string.
            allowed = spec.toml + ((tuple,) if list in spec.toml else ()) + ((os.PathLike,) if spec.check is _text else ())
            # bool is an int in Python; a TOML `true` must not pass as a number.
            if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
                names = " or ".join("array" if t is list else t.__name__ for t in allowed)
                raise UsageError(f"{source}: {name} must be {names}, got {value!r}")
        try:
            return cls(**values)
        except UsageError as exc:
            raise UsageError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> Settings:
        """Settings from a TOML preset (see ``configs/``); every problem is a :class:`UsageError` naming the file."""
        return cls.from_mapping(load_toml(path), source=show_path(Path(path)))

    def to_toml(self) -> str:
        """Every setting as TOML, grouped, each with its meaning; unset ones as commented lines."""
        lines = ["# tdvideo extract settings (tdvideo extract --config FILE)"]
        group = None
        for f in dataclasses.fields(self):
            spec = _spec(f)
            if spec.group != group:
                group = spec.group
                lines += ["", f"# -- {group}"]
            lines.append(f"# {spec.help}" + (f" Unset: {spec.unset}." if spec.unset else ""))
            value = getattr(self, f.name)
            lines.append(f"# {f.name} =" if value is None else f"{f.name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


SAMPLING_FIELDS = tuple(Sampling.__dataclass_fields__)


def _spec(f: dataclasses.Field[Any]) -> SettingSpec:
    return f.metadata["spec"]


def _check_one(f: dataclasses.Field[Any], value: Any) -> Any:
    spec = _spec(f)
    if spec.choices is not None and value not in spec.choices:
        raise UsageError(f"{f.name} must be one of {', '.join(spec.choices)}; got {value!r}")
    if spec.check is not None:
        return spec.check(f.name, value)
    if bool in spec.toml and not isinstance(value, bool):
        raise UsageError(f"{f.name} must be true or false, got {value!r}")
    if spec.toml == (str,) and not isinstance(value, str):
        raise UsageError(f"{f.name} must be a string, got {value!r}")
    return value


def _check_names(values: Mapping[str, Any], source: str) -> None:
    known = [f.name for f in dataclasses.fields(Settings)]
    unknown = [name for name in values if name not in known]
    if unknown:
        close = sorted({m for name in unknown for m in difflib.get_close_matches(name, known, n=2)})
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"{source}: unknown setting(s) {', '.join(map(repr, unknown))}{hint}; settings are {', '.join(known)}")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise UsageError(f"cannot write {type(value).__name__} to TOML")


def load_toml(path: str | Path) -> dict[str, Any]:
    """The settings of a TOML preset, as given there (checked by :meth:`Settings.from_mapping`)."""
    path = Path(path)
    shown = show_path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_TOML_BYTES + 1)
        if len(raw) > _MAX_TOML_BYTES:
            raise UsageError(f"{shown}: too large for a TOML config file (over {_MAX_TOML_BYTES // 2**20} MiB)")
        data = tomllib.loads(raw.decode("utf-8-sig"))  # a byte-order mark some editors write is fine
    except FileNotFoundError:
        raise UsageError(f"{shown}: config file not found") from None
    except IsADirectoryError:
        raise UsageError(f"{shown}: is a folder, not a TOML config file") from None
    except OSError as exc:
        raise UsageError(f"{shown}: cannot read config file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{shown}: not a TOML config file (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{shown}: not valid TOML ({exc})") from None
    Settings.from_mapping(data, source=shown)  # every value checked now, naming the file
    return data
