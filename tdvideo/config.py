"""Extraction settings: defaults, TOML presets (``configs/*.toml``) and command-line overrides.

Precedence, lowest first: :data:`DEFAULTS`, the ``--config`` file, flags given on the
command line. :func:`to_toml` writes the resolved settings back out (``--print-config``),
and reading that output again gives the same settings.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import UsageError, show_path

__all__ = ["DEFAULTS", "load_config", "resolve", "to_toml"]

DEFAULTS: dict[str, Any] = {
    "out": "features",
    "model": "colorhist",
    "weights": None,
    "pool": None,
    "fps": None,
    "stride": None,
    "num_frames": None,
    "start": None,
    "end": None,
    "clip_len": None,
    "clip_stride": None,
    "keyframes_only": False,
    "size": None,
    "crop": None,
    "device": "auto",
    "batch_size": 64,
    "workers": None,
    "precision": "fp32",
    "compile": False,
    "format": "npy",
    "dtype": "float32",
    "on_error": "raise",
    "overwrite": False,
    "ext": None,
    "glob": None,
}

# What each key may hold in a TOML file (None is never written: the key is left out).
_TYPES: dict[str, tuple[type, ...]] = {
    "out": (str,),
    "model": (str,),
    "weights": (str,),
    "pool": (str,),
    "fps": (int, float),
    "stride": (int,),
    "num_frames": (int,),
    "start": (int, float),
    "end": (int, float),
    "clip_len": (int,),
    "clip_stride": (int,),
    "keyframes_only": (bool,),
    "size": (int, list),
    "crop": (int, list),
    "device": (str,),
    "batch_size": (int,),
    "workers": (int,),
    "precision": (str,),
    "compile": (bool,),
    "format": (str,),
    "dtype": (str,),
    "on_error": (str,),
    "overwrite": (bool,),
    "ext": (list,),
    "glob": (str,),
}


# Settings that take one of a few words (validated here so a preset fails before any work).
_CHOICES: dict[str, tuple[str, ...]] = {
    "pool": ("avg", "none"),
    "precision": ("fp32", "fp16", "bf16"),
    "format": ("npy", "npz", "pt"),
    "dtype": ("float32", "float16"),
    "on_error": ("raise", "keep"),
}


def _check(key: str, value: Any, source: str) -> Any:
    if key not in _TYPES:
        raise UsageError(f"{source}: unknown setting {key!r}; settings are {', '.join(_TYPES)}")
    allowed = _TYPES[key]
    # bool is an int in Python; a TOML `true` must not pass as a number.
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        names = " or ".join("array" if t is list else t.__name__ for t in allowed)
        raise UsageError(f"{source}: {key} must be {names}, got {value!r}")
    if key in ("size", "crop"):
        numbers = value if isinstance(value, list) else [value]
        positive = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in numbers)
        if not positive or isinstance(value, list) and len(value) != 2:
            raise UsageError(f"{source}: {key} must be a positive integer or [height, width] of positive integers, got {value!r}")
        return (value[0], value[1]) if isinstance(value, list) else value
    if key in _CHOICES and value not in _CHOICES[key]:
        raise UsageError(f"{source}: {key} must be one of {', '.join(_CHOICES[key])}; got {value!r}")
    if key in ("stride", "num_frames", "clip_len", "clip_stride", "batch_size") and value < 1:
        raise UsageError(f"{source}: {key} must be a positive integer, got {value!r}")
    if key == "workers" and value < 0:
        raise UsageError(f"{source}: workers must be a non-negative integer, got {value!r}")
    if key == "ext" and not all(isinstance(v, str) for v in value):
        raise UsageError(f"{source}: ext must be an array of strings, got {value!r}")
    return value


_MAX_CONFIG_BYTES = 1 << 20  # /dev/zero is no config, and must not be read to the end


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML preset; unknown keys and wrongly typed values are a :class:`UsageError`."""
    path = Path(path)
    shown = show_path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_CONFIG_BYTES + 1)
        if len(raw) > _MAX_CONFIG_BYTES:
            raise UsageError(f"{shown}: too large for a TOML config file (over {_MAX_CONFIG_BYTES // 2**20} MiB)")
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
    return {key: _check(key, value, shown) for key, value in data.items()}


def resolve(config: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then ``config``, then the ``overrides`` that are not None."""
    settings = dict(DEFAULTS)
    settings.update(config or {})
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return settings


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"cannot write {value!r} to TOML")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise UsageError(f"cannot write {type(value).__name__} to TOML")


def to_toml(settings: Mapping[str, Any]) -> str:
    """The settings as a TOML document, in :data:`DEFAULTS` order; unset (None) keys are left out."""
    lines = ["# tdvideo extract settings (tdvideo extract --config FILE)"]
    for key in DEFAULTS:
        value = settings.get(key)
        if value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
