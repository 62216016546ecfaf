"""Per-video feature files: formats, atomic writes, metadata, reading back.

For a video mapped to ``out/sub/clip``, the features go to ``out/sub/clip.{npy,npz,pt}``
and the metadata (including the timestamps) to ``out/sub/clip.json``. Each file is
written to a temporary name in the same folder and renamed into place; the JSON is
written last, so its presence marks a finished video.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .errors import TdvideoError, UsageError

__all__ = ["FORMATS", "Features", "Format", "OutputDType", "load", "read_metadata", "write_features"]

Format = Literal["npy", "npz", "pt"]
OutputDType = Literal["float32", "float16"]
FORMATS: tuple[Format, ...] = ("npy", "npz", "pt")


@dataclass
class Features:
    """Features of one video: ``array`` with one row per timestep, ``timestamps`` in seconds.

    ``array`` is ``(T, D)`` for pooled features or ``(T, C, H, W)`` for spatial maps
    (``(B, L, ...)`` with clip windows, ``timestamps`` then ``(B, L)``).
    """

    array: np.ndarray
    timestamps: np.ndarray
    metadata: dict[str, Any]

    def __len__(self) -> int:
        return int(self.array.shape[0])


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write through ``write(fileobj)`` to a temporary file beside ``path``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def metadata_path(base: Path) -> Path:
    return base.with_name(base.name + ".json")


def array_path(base: Path, fmt: Format) -> Path:
    return base.with_name(f"{base.name}.{fmt}")


def write_features(base: Path, features: Features, *, fmt: Format = "npy") -> Path:
    """Write ``features`` under ``base`` (a path without extension); return the array's path."""
    _check_format(fmt)
    base.parent.mkdir(parents=True, exist_ok=True)
    target = array_path(base, fmt)
    array, times = features.array, features.timestamps
    meta = {
        **features.metadata,
        "format": fmt,
        "file": target.name,
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "timestamps": times.tolist(),
    }
    if fmt == "npy":
        _atomic_write(target, lambda fh: np.save(fh, array, allow_pickle=False))
    elif fmt == "npz":
        _atomic_write(target, lambda fh: np.savez(fh, features=array, timestamps=times))
    else:
        payload = {"features": torch.from_numpy(array), "timestamps": torch.from_numpy(times)}
        _atomic_write(target, lambda fh: torch.save(payload, fh))
    text = json.dumps(meta, indent=1).encode()
    _atomic_write(metadata_path(base), lambda fh: fh.write(text))
    return target


def read_metadata(base: Path) -> dict[str, Any] | None:
    """The metadata of a finished output at ``base``, or None if it is missing or unreadable."""
    path = metadata_path(base)
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not (base.parent / str(meta.get("file", ""))).is_file():
        return None
    return meta


def load(path: str | Path) -> Features:
    """Read an output back: pass the array file (``.npy``/``.npz``/``.pt``) or its ``.json``."""
    p = Path(path)
    base = p.with_suffix("") if p.suffix in (".json", ".npy", ".npz", ".pt") else p
    meta = read_metadata(base)
    if meta is None:
        raise TdvideoError(f"{path}: no finished tdvideo output here (missing or unreadable {metadata_path(base).name})")
    target = base.parent / meta["file"]
    fmt = meta.get("format", target.suffix.lstrip("."))
    if fmt == "npy":
        array = np.load(target, allow_pickle=False)
        times = np.asarray(meta["timestamps"], dtype=np.float64)
    elif fmt == "npz":
        with np.load(target, allow_pickle=False) as data:
            array, times = data["features"], data["timestamps"]
    elif fmt == "pt":
        data = torch.load(target, map_location="cpu", weights_only=True)
        array, times = data["features"].numpy(), data["timestamps"].numpy()
    else:
        raise TdvideoError(f"{target}: unknown format {fmt!r}")
    return Features(array=array, timestamps=times, metadata=meta)
