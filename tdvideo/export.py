"""A whole output folder as one dataset: iterate it, or export it to Parquet.

:func:`load_dir` yields each finished output under a folder as ``(relative path,
Features)``. :func:`export_parquet` writes one Arrow/Parquet table with a row per timestep
(``video``, ``timestamp``, ``feature`` as a fixed-size list of float32) and, beside it,
a small table with a row per video (``<name>.videos.parquet``). Videos are written one row
group at a time, so memory holds one video's features whatever the folder's size. pyarrow
comes with the ``tdvideo[parquet]`` extra.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._system import file_mode
from .errors import OutputError, UsageError, show_path
from .writers import RUN_DIR, Features, load, read_metadata

__all__ = ["export_parquet", "load_dir"]


def _outputs(out: Path) -> Iterator[tuple[str, Path]]:
    """Each finished output's relative name (no extension) and base path, sorted."""
    if not out.is_dir():
        raise UsageError(f"{show_path(out)}: not a folder of tdvideo outputs")
    for meta in sorted(out.rglob("*.json")):
        relative = meta.relative_to(out).with_suffix("")
        if relative.parts[0] == RUN_DIR or read_metadata(out / relative) is None:
            continue  # run records, or not a finished output (half-written, foreign JSON)
        yield relative.as_posix(), out / relative


def load_dir(out: str | Path) -> Iterator[tuple[str, Features]]:
    """Every finished output under ``out``, as ``(relative path, Features)``, in path order."""
    for name, base in _outputs(Path(out)):
        yield name, load(base.with_suffix(".json"))


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("export to Parquet needs pyarrow: pip install 'tdvideo[parquet]'") from None
    return pa, pq


def export_parquet(out: str | Path, target: str | Path) -> tuple[int, int]:
    """Write the outputs under ``out`` to ``target`` (Parquet) and ``<target stem>.videos.parquet``;
    return (videos, rows). Every video must have one feature size: a row's ``feature`` is its
    timestep's features flattened (a spatial map, or a clip window of per-frame vectors),
    and its ``timestamp`` the timestep's time (a window's: its first frame's)."""
    pa, pq = _pyarrow()
    out, target = Path(out), Path(target)
    videos_target = target.with_name(f"{target.stem}.videos.parquet")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {show_path(target)}: {exc.strerror or exc}") from exc
    rows_writer = None
    size: int | None = None
    total = 0
    per_video: list[dict[str, Any]] = []
    tmp = [_temporary(target), _temporary(videos_target)]
    try:
        for name, features in load_dir(out):
            array = np.asarray(features.array, dtype=np.float32)
            steps = len(array)
            flat = array.reshape(steps, -1)
            if size is None:
                size = flat.shape[1]
                schema = pa.schema(
                    [("video", pa.string()), ("timestamp", pa.float64()), ("feature", pa.list_(pa.float32(), size))],
                    metadata={"tdvideo": json.dumps({"feature_shape": list(array.shape[1:])})},
                )
                rows_writer = pq.ParquetWriter(tmp[0], schema)
            elif flat.shape[1] != size:
                raise UsageError(f"{name}: features of size {flat.shape[1]}, but earlier videos have {size}; export one model's outputs at a time")
            times = np.asarray(features.timestamps, dtype=np.float64).reshape(steps, -1)[:, 0]
            feature = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), type=pa.float32()), size)
            table = pa.table({"video": pa.array([name] * steps, pa.string()), "timestamp": times, "feature": feature}, schema=schema)
            rows_writer.write_table(table)  # one row group per video
            total += steps
            meta = features.metadata
            per_video.append(
                {
                    "video": name,
                    "source": (meta.get("source") or {}).get("path"),
                    "model": meta.get("model"),
                    "rows": steps,
                    "feature_shape": json.dumps(list(array.shape[1:])),
                    "metadata": json.dumps({k: v for k, v in meta.items() if k != "timestamps"}),
                }
            )
        if rows_writer is None:
            raise UsageError(f"{show_path(out)}: no finished tdvideo outputs to export")
        rows_writer.close()
        rows_writer = None
        pq.write_table(pa.Table.from_pylist(per_video), tmp[1])
        os.replace(tmp[0], target)
        os.replace(tmp[1], videos_target)
    except OSError as exc:
        raise OutputError(f"cannot write {show_path(target)}: {exc.strerror or exc}") from exc
    finally:
        if rows_writer is not None:
            rows_writer.close()
        for path in tmp:
            Path(path).unlink(missing_ok=True)
    return len(per_video), total


def _temporary(target: Path) -> str:
    fd, path = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, file_mode())  # as any new file: the umask's mode, not mkstemp's 0600
    os.close(fd)
    return path
