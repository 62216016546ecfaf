"""A whole output folder as one dataset: iterate it, or export it to Parquet.

:func:`load_dir` yields each finished output under a folder as ``(relative path,
Features)``. :func:`export_parquet` writes one Arrow/Parquet table with a row per timestep
(``video``, ``timestamp``, ``feature`` as a fixed-size list of float32) and, beside it,
a small table with a row per video (``<name>.videos.parquet``). Videos are written one row
group at a time, so memory holds one video's features whatever the folder's size. pyarrow
comes with the ``tdvideo[parquet]`` extra.

The folder is read as anyone's (see :mod:`tdvideo._files`): an output that is damaged,
unfinished, crafted, a link or a FIFO is left out with its reason, never silently, and
never stops the others from being read. By default such an output is an error (nothing
is written); ``on_damaged="skip"`` leaves it out and goes on.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._files import Leftovers, rename_into_place, temporary
from ._system import file_kind
from .errors import OutputError, UsageError, show_path, spelled
from .storage import Url, is_url, location, reason, walk_url
from .writers import FORMATS, RUN_DIR, Features, load

__all__ = ["DamagedOutputsError", "ExportReport", "LeftOut", "export_parquet", "load_dir", "scan_dir"]

OnDamaged = Literal["raise", "skip"]
_SKIP_FROM_PYTHON = "on_damaged='skip'"
_SUFFIXES = (".json", *(f".{fmt}" for fmt in FORMATS))


@dataclass(frozen=True)
class LeftOut:
    """An output that could not be read, and why (one line)."""

    name: str
    reason: str

    def line(self) -> str:
        return f"left out {show_path(self.name)}: {self.reason}"


class DamagedOutputsError(OutputError):
    """Outputs under a folder could not be read; ``left_out`` names each, with its reason."""

    def __init__(self, out: Path, left_out: list[LeftOut], *, what: str) -> None:
        self.left_out = left_out
        super().__init__(
            f"{len(left_out)} output(s) under {show_path(out)} could not be read (first: {left_out[0].name}: "
            f"{left_out[0].reason}); {what} ({spelled(_SKIP_FROM_PYTHON, '--skip-damaged')} leaves them out)"
        )


def _candidates(out: Path) -> list[tuple[str, Path] | LeftOut]:
    """Each output's relative name (no extension) and base path, in name order, and what
    cannot be looked into. Run records and failures logs are not outputs; links to
    folders are not followed."""
    found: list[tuple[str, Path] | LeftOut] = []
    for folder, subfolders, files in os.walk(out, followlinks=False):
        here = Path(folder)
        relative = here.relative_to(out)
        keep = []
        for name in subfolders:
            if relative == Path(".") and name == RUN_DIR:
                continue
            if os.path.islink(here / name):
                found.append(LeftOut((relative / name).as_posix(), "a symbolic link to a folder; not followed"))
            else:
                keep.append(name)
        subfolders[:] = keep
        bases = {name[: -len(suffix)] for name in files for suffix in _SUFFIXES if name.endswith(suffix) and len(name) > len(suffix)}
        found += [((relative / base).as_posix(), here / base) for base in bases]
    return sorted(found, key=lambda item: item.name if isinstance(item, LeftOut) else item[0])


def _store_candidates(out: Url) -> list[tuple[str, Url] | LeftOut]:
    """:func:`_candidates` of a folder in a store: its objects, listed, grouped by output."""
    try:
        names = [url.relative_to(out).as_posix() for url, _ in walk_url(out)]
    except Exception as exc:  # noqa: BLE001 - a store's client raises its own types
        raise UsageError(f"{out}: cannot be listed ({reason(exc)})") from None
    bases = {
        name[: -len(suffix)]
        for name in names
        if not name.startswith(f"{RUN_DIR}/")
        for suffix in _SUFFIXES
        if name.endswith(suffix) and len(name.rsplit("/", 1)[-1]) > len(suffix)
    }
    return [(base, out / base) for base in sorted(bases)]


def scan_dir(out: str | Path | Url) -> Iterator[tuple[str, Features] | LeftOut]:
    """Every output under ``out`` in name order: ``(relative path, Features)``, or the
    :class:`LeftOut` reason it cannot be read (damaged, unfinished, not a regular file)."""
    out = location(out) if is_url(out) else Path(out)
    if isinstance(out, Url):
        candidates = _store_candidates(out)
    else:
        try:
            mode = os.stat(out).st_mode
        except OSError as exc:
            raise UsageError(f"{show_path(out)}: not a folder of tdvideo outputs ({exc.strerror or exc})") from None
        if not stat.S_ISDIR(mode):
            raise UsageError(f"{show_path(out)}: not a folder of tdvideo outputs (a {file_kind(mode)})")
        candidates = _candidates(out)
    for item in candidates:
        if isinstance(item, LeftOut):
            yield item
            continue
        name, base = item
        try:
            yield name, load(base, root=out)
        except OutputError as exc:
            yield LeftOut(name, str(exc))


def load_dir(out: str | Path | Url, *, on_damaged: OnDamaged = "raise") -> Iterator[tuple[str, Features]]:
    """Every finished output under ``out``, as ``(relative path, Features)``, in path order.

    An output that cannot be read (damaged, unfinished, a link) raises
    :class:`DamagedOutputsError` naming it, once the outputs before it are yielded; with
    ``on_damaged="skip"`` it is left out with a warning that names it and the reason."""
    import warnings

    if on_damaged not in ("raise", "skip"):
        raise UsageError(f"on_damaged must be 'raise' or 'skip', got {on_damaged!r}")
    for item in scan_dir(out):
        if isinstance(item, LeftOut):
            if on_damaged == "raise":
                raise DamagedOutputsError(Path(out), [item], what="stopped")
            warnings.warn(item.line(), stacklevel=2)
            continue
        yield item


def _utf8(name: str) -> str:
    """``name`` as Parquet's strings must be, UTF-8: a file name's undecodable bytes escaped (``\\xff``)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("export to Parquet needs pyarrow: pip install 'tdvideo[parquet]'") from None
    return pa, pq


@dataclass
class ExportReport:
    """What :func:`export_parquet` wrote, and the outputs it left out."""

    videos: int = 0
    rows: int = 0
    left_out: list[LeftOut] = field(default_factory=list)


def export_parquet(out: str | Path, target: str | Path, *, on_damaged: OnDamaged = "raise") -> ExportReport:
    """Write the outputs under ``out`` to ``target`` (Parquet) and ``<target stem>.videos.parquet``.

    Every video must have one feature size: a row's ``feature`` is its timestep's features
    flattened (a spatial map, or a clip window of per-frame vectors), and its ``timestamp``
    the timestep's time (a window's: its first frame's). Both files are written as
    temporaries and renamed at the end; temporaries of an export that was killed are
    removed. An output that cannot be read makes it write nothing and raise
    :class:`DamagedOutputsError` naming every one, unless ``on_damaged="skip"``.
    """
    if on_damaged not in ("raise", "skip"):
        raise UsageError(f"on_damaged must be 'raise' or 'skip', got {on_damaged!r}")
    pa, pq = _pyarrow()
    target = location(target) if is_url(target) else Path(target)
    videos_target = target.with_name(f"{target.stem}.videos.parquet")
    tmp: list[Path] = []
    try:
        if isinstance(target, Path):
            target.parent.mkdir(parents=True, exist_ok=True)
        Leftovers().remove(target.parent, [target.name, videos_target.name])  # of an export that was killed
        for final in (target, videos_target):
            tmp.append(temporary(final))
    except (OSError, OutputError) as exc:
        for path in tmp:
            path.unlink(missing_ok=True)
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write {show_path(target)}: {exc.strerror or exc}") from exc
    report = ExportReport()
    writer = None
    try:
        per_video: list[dict[str, Any]] = []
        size: int | None = None
        schema = None
        for item in scan_dir(out):
            if isinstance(item, LeftOut):
                report.left_out.append(item)
                continue
            name, features = item
            array = np.asarray(features.array, dtype=np.float32)
            steps = len(array)
            flat = array.reshape(steps, math.prod(array.shape[1:]))  # -1 cannot say it for zero rows
            if flat.shape[1] == 0:
                report.left_out.append(LeftOut(name, "no features (0 numbers a step)"))
                continue
            name = _utf8(name)
            if size is None:
                size = flat.shape[1]
                schema = pa.schema(
                    [("video", pa.string()), ("timestamp", pa.float64()), ("feature", pa.list_(pa.float32(), size))],
                    metadata={"tdvideo": json.dumps({"feature_shape": list(array.shape[1:])})},
                )
                writer = pq.ParquetWriter(str(tmp[0]), schema)
            elif flat.shape[1] != size:
                raise UsageError(f"{name}: features of size {flat.shape[1]}, but earlier videos have {size}; export one model's outputs at a time")
            stamps = np.asarray(features.timestamps, dtype=np.float64)
            times = stamps.reshape(steps, math.prod(stamps.shape[1:]))[:, 0] if steps else np.zeros(0)
            feature = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), type=pa.float32()), size)
            table = pa.table({"video": pa.array([name] * steps, pa.string()), "timestamp": times, "feature": feature}, schema=schema)
            writer.write_table(table)  # one row group per video
            report.rows += steps
            meta = features.metadata
            source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
            per_video.append(
                {
                    "video": name,
                    "source": _utf8(source["path"]) if isinstance(source.get("path"), str) else None,
                    "model": _utf8(meta["model"]) if isinstance(meta.get("model"), str) else None,
                    "rows": steps,
                    "feature_shape": json.dumps(list(array.shape[1:])),
                    "metadata": json.dumps({k: v for k, v in meta.items() if k != "timestamps"}),
                }
            )
        if report.left_out and on_damaged == "raise":
            raise DamagedOutputsError(out, report.left_out, what="nothing was written")
        if writer is None:
            raise UsageError(f"{show_path(out)}: no finished tdvideo outputs to export")
        writer.close()
        writer = None
        pq.write_table(pa.Table.from_pylist(per_video), str(tmp[1]))
        rename_into_place(tmp[0], target)
        rename_into_place(tmp[1], videos_target)
    except OSError as exc:
        raise OutputError(f"cannot write {show_path(target)}: {exc.strerror or exc}") from exc
    finally:
        if writer is not None:
            writer.close()
        for path in tmp:
            path.unlink(missing_ok=True)
    report.videos = len(per_video)
    return report
