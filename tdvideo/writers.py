"""Per-video feature files: formats, consistent commits, source identity, reading back.

For a video mapped to ``out/sub/clip``, the features go to ``out/sub/clip.{npy,npz,pt}``
and the metadata (including the timestamps) to ``out/sub/clip.json``.

A finished output is a *consistent pair*. The metadata is the commit marker, and it
proves what it belongs to: it records the array file's name, size and sha256, and the
identity of the source video (path, size, modification time and a fingerprint of its
first and last bytes). A commit runs in this order:

1. remove the old metadata, so that no old metadata can ever sit beside a new array;
2. write the array to a temporary file in the same folder, rename it into place;
3. write the metadata the same way.

A process killed at any point leaves either the previous finished pair, or an array
without metadata (not finished: it is redone), never new features under old metadata.
Temporary files (``.clip.npy.XXXX.tmp``) left by a kill are removed by the next run.
Files get the mode the umask gives (``0o666 & ~umask``), as any other new file would.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from ._system import file_mode, sha256_file
from ._types import Format, OutputDType
from .errors import OutputError, UsageError, show_path

__all__ = [
    "FATAL_WRITE_ERRORS",
    "FORMATS",
    "FailuresLog",
    "Features",
    "Format",
    "OutputDType",
    "SourceIdentity",
    "array_path",
    "changed_settings",
    "is_finished",
    "load",
    "metadata_path",
    "read_metadata",
    "remove_output",
    "Temporaries",
    "remove_temporaries",
    "RUN_DIR",
    "plan_path",
    "read_failures",
    "read_plan",
    "write_plan",
    "write_features",
]

FORMATS: tuple[Format, ...] = get_args(Format)
# Errors writing an output that every later output would hit too: a run stops on them.
FATAL_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


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


# -- the source's identity -------------------------------------------------------------------


_FINGERPRINT_BYTES = 64 * 1024


@dataclass(frozen=True)
class SourceIdentity:
    """What tells one source file from another: size, modification time and a fingerprint.

    The fingerprint is the sha256 of the size and the first and last 64 KiB, so a
    different file with the same size and time (another folder, a copy with ``cp -p``)
    is told apart without reading whole videos. A file edited only in its middle,
    keeping its size and time, is not.
    """

    path: str
    size: int
    mtime_ns: int
    fingerprint: str

    @classmethod
    def of(cls, path: str | Path) -> SourceIdentity:
        """Read ``path``'s identity (raises ``OSError`` when it cannot be read)."""
        with open(path, "rb") as fh:
            stat = os.fstat(fh.fileno())
            digest = hashlib.sha256(str(stat.st_size).encode())
            digest.update(fh.read(_FINGERPRINT_BYTES))
            if stat.st_size > 2 * _FINGERPRINT_BYTES:
                fh.seek(-_FINGERPRINT_BYTES, os.SEEK_END)
            digest.update(fh.read(_FINGERPRINT_BYTES))
        return cls(str(Path(path).absolute()), stat.st_size, stat.st_mtime_ns, digest.hexdigest())

    def unchanged(self) -> bool:
        """True when the file is still there with the same size and modification time."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return False
        return stat.st_size == self.size and stat.st_mtime_ns == self.mtime_ns

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mtime": self.mtime_ns / 1e9}

    def same_file(self, recorded: Mapping[str, Any]) -> bool:
        """Whether metadata's ``source`` record describes this same file (the path may differ)."""
        return (
            recorded.get("size") == self.size
            and recorded.get("mtime_ns") == self.mtime_ns
            and recorded.get("fingerprint") == self.fingerprint
        )


# -- writing ---------------------------------------------------------------------------------


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")


def metadata_path(base: Path) -> Path:
    return base.with_name(base.name + ".json")


def array_path(base: Path, fmt: Format) -> Path:
    return base.with_name(f"{base.name}.{fmt}")


class _Sink(io.RawIOBase):
    """An open file that numpy, zipfile and torch write through with plain ``write`` calls.

    Given a real file, numpy writes with ``ndarray.tofile``, whose error on a full disk
    carries no errno ("28800 requested and 19424 written"), and torch's zip writer turns a
    short write into a ``RuntimeError``. Through this object every failure is the
    ``OSError`` the system call gave, so a full disk is told apart from a bad video.
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])
        return done

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self._fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)


# Most file systems allow 255 bytes a name; a temporary name adds 14 to the final one.
_NAME_MAX = 255


def _temp_prefix(name: str) -> str:
    """The prefix of ``name``'s temporary files: ``.NAME.``, or a digest of it for long names."""
    if len(os.fsencode(name)) + len(".") + len(".XXXXXXXX.tmp") + 1 <= _NAME_MAX:
        return f".{name}."
    return f".{hashlib.sha1(os.fsencode(name)).hexdigest()[:16]}."


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write through ``write(fileobj)`` to a temporary file beside ``path``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600 files; a rename keeps the mode, so give the umask's mode now.
        os.fchmod(fd, file_mode())
        with _Sink(fd) as sink:
            write(sink)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def write_features(base: Path, features: Features, *, fmt: Format = "npy") -> Path:
    """Commit ``features`` under ``base`` (a path without extension); return the array's path.

    See the module docstring for the order of the steps and what a kill leaves.
    """
    _check_format(fmt)
    base.parent.mkdir(parents=True, exist_ok=True)
    target = array_path(base, fmt)
    array, times = features.array, features.timestamps
    metadata_path(base).unlink(missing_ok=True)
    if fmt == "npy":
        _atomic_write(target, lambda fh: np.save(fh, array, allow_pickle=False))
    elif fmt == "npz":
        _atomic_write(target, lambda fh: np.savez(fh, features=array, timestamps=times))
    else:
        _atomic_write(target, lambda fh: _torch_save(array, times, fh))
    written = target.stat()
    meta = {
        **features.metadata,
        "format": fmt,
        "file": target.name,
        "file_bytes": written.st_size,
        "file_mtime_ns": written.st_mtime_ns,
        "file_sha256": sha256_file(target),
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "timestamps": times.tolist(),
    }
    text = json.dumps(meta, indent=1).encode()
    _atomic_write(metadata_path(base), lambda fh: fh.write(text))
    # An earlier output of this video in another format is stale now.
    for other in FORMATS:
        if other != fmt:
            array_path(base, other).unlink(missing_ok=True)
    return target


def _torch_save(array: np.ndarray, times: np.ndarray, fh: Any) -> None:
    import torch  # only for this format: writing npy or npz needs no torch

    payload = {"features": torch.from_numpy(np.asarray(array)), "timestamps": torch.from_numpy(times)}
    try:
        torch.save(payload, fh)
    except RuntimeError as exc:
        # torch's zip writer, closing after a failed write, raises its own error on top
        # of the OSError that says why (a full disk): raise that one.
        cause = exc.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is None:
            raise
        raise cause from exc


def remove_output(base: Path) -> bool:
    """Remove the output at ``base`` (metadata first, so it never names a missing array); True if there was one."""
    found = False
    for path in (metadata_path(base), *(array_path(base, fmt) for fmt in FORMATS)):
        try:
            path.unlink()
            found = True
        except FileNotFoundError:
            continue
    return found


class Temporaries:
    """Temporary files that interrupted commits left in output folders.

    Each folder is listed once, so that sweeping before each of a folder's thousands of
    outputs costs one directory listing, not one per output.
    """

    def __init__(self) -> None:
        self._names: dict[Path, set[str]] = {}

    def remove(self, base: Path) -> list[Path]:
        """Remove the leftovers of an interrupted commit of ``base``; return them."""
        names = self._names.get(base.parent)
        if names is None:
            try:
                with os.scandir(base.parent) as entries:
                    names = {e.name for e in entries if e.name.startswith(".") and e.name.endswith(".tmp")}
            except FileNotFoundError:
                names = set()
            self._names[base.parent] = names
        removed = []
        for target in (metadata_path(base), *(array_path(base, fmt) for fmt in FORMATS)):
            prefix = _temp_prefix(target.name)
            # Only our own names: the prefix, mkstemp's 8 random characters, ".tmp".
            for name in [n for n in names if n.startswith(prefix) and len(n) == len(prefix) + len("XXXXXXXX.tmp")]:
                (base.parent / name).unlink(missing_ok=True)
                names.discard(name)
                removed.append(base.parent / name)
        return removed


def remove_temporaries(base: Path) -> list[Path]:
    """Remove temporary files that an interrupted commit of ``base`` left behind; return them."""
    return Temporaries().remove(base)


# -- reading ---------------------------------------------------------------------------------


def read_metadata(base: Path) -> dict[str, Any] | None:
    """The metadata of a finished output at ``base``, or None if there is none.

    Finished means: the metadata parses, and the array file it names is there with the
    size it records, and either the modification time it records too (cheap: the file was
    not touched since), or, if the time differs (a copy, or damage), the sha256 it records.
    """
    meta, _ = _finished(base, full=False)
    return meta


def _finished(base: Path, *, full: bool) -> tuple[dict[str, Any] | None, str]:
    """(metadata, "") for a finished output at ``base``, else (None, why it is not).

    ``full`` checks the array's sha256 even when its modification time is as recorded.
    """
    path = metadata_path(base)
    try:
        meta = json.loads(path.read_bytes())
    except OSError as exc:
        return None, f"no finished tdvideo output here ({path.name}: {exc.strerror or exc})"
    except ValueError:
        return None, f"no finished tdvideo output here ({path.name} is not JSON)"
    if not isinstance(meta, dict) or not isinstance(meta.get("file"), str) or Path(meta["file"]).name != meta["file"]:
        return None, f"no finished tdvideo output here ({path.name} names no array file)"
    target = base.parent / meta["file"]
    try:
        stat = target.stat()
    except OSError as exc:
        return None, f"the array file {target.name} that {path.name} names is missing ({exc.strerror or exc})"
    if meta.get("file_bytes") != stat.st_size:
        return None, f"{target.name} is {stat.st_size} bytes, not the {meta.get('file_bytes')} {path.name} was written with"
    touched = meta.get("file_mtime_ns") != stat.st_mtime_ns
    if (full or touched) and sha256_file(target) != meta.get("file_sha256"):
        return None, f"{target.name} is not the array {path.name} was written with (sha256 differs)"
    return meta, ""


def load(path: str | Path) -> Features:
    """Read an output back: pass the array file (``.npy``/``.npz``/``.pt``) or its ``.json``.

    Checks that the pair is consistent: the array file is the one the metadata was
    written with (size and sha256), and it has one row per timestamp. Raises
    :class:`~tdvideo.errors.OutputError` otherwise.
    """
    p = Path(path)
    base = p.with_suffix("") if p.suffix in (".json", ".npy", ".npz", ".pt") else p
    meta, why = _finished(base, full=True)
    if meta is None:
        raise OutputError(f"{show_path(path)}: {why}")
    target = base.parent / meta["file"]
    fmt = meta.get("format")
    if fmt == "npy":
        array = np.load(target, allow_pickle=False)
        times = np.asarray(meta["timestamps"], dtype=np.float64)
    elif fmt == "npz":
        with np.load(target, allow_pickle=False) as data:
            array, times = data["features"], data["timestamps"]
    elif fmt == "pt":
        import torch

        data = torch.load(target, map_location="cpu", weights_only=True)
        array, times = data["features"].numpy(), data["timestamps"].numpy()
    else:
        raise OutputError(f"{target}: unknown format {fmt!r}")
    # One row per timestamp; a video model's row is a window, with a row of timestamps.
    rows = times.shape[:1] if meta.get("features_per") == "window" else times.shape
    if tuple(array.shape[: len(rows)]) != tuple(rows) or list(array.shape) != meta.get("shape"):
        raise OutputError(
            f"{target}: {tuple(array.shape)} features do not match {tuple(times.shape)} timestamps "
            f"(metadata says {meta.get('shape')})"
        )
    return Features(array=array, timestamps=times, metadata=meta)


def is_finished(base: Path, fmt: Format, *, source: Path, settings: Mapping[str, Any]) -> bool:
    """True when ``base`` holds ``source``'s output in format ``fmt`` for these ``settings``.

    The output must be a consistent pair of this very source file (size, modification
    time, fingerprint) and equal ``settings`` (as stored in the metadata). Raises
    ``OSError`` when the source cannot be read.
    """
    meta = read_metadata(base)
    if meta is None or meta.get("file") != array_path(base, fmt).name:
        return False
    if not SourceIdentity.of(source).same_file(meta.get("source") or {}):
        return False
    return all(meta.get(k) == v for k, v in settings.items())


def changed_settings(base: Path, fmt: Format, *, source: Path, settings: Mapping[str, Any]) -> list[str]:
    """The settings in which the finished output of this very ``source`` at ``base`` differs
    from ``settings`` (``format`` too); empty when there is none, or it is another source's."""
    meta = read_metadata(base)
    if meta is None:
        return []
    try:
        if not SourceIdentity.of(source).same_file(meta.get("source") or {}):
            return []  # the source changed: its output is stale, not another choice of settings
    except OSError:
        return []  # the source cannot be read: the run reports that
    changed = [k for k, v in settings.items() if meta.get(k) != v]
    return changed + (["format"] if meta.get("file") != array_path(base, fmt).name else [])


class FailuresLog:
    """A run's failures: one JSON line per input, ``{"path", "error_type", "message"}``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def reset(self) -> None:
        """Remove an earlier run's log (a :class:`UsageError` when that is not possible)."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot replace the failures log {show_path(self.path)}: {exc.strerror or exc}") from None

    def append(self, path: Path, error_type: str | None, message: str | None) -> None:
        line = json.dumps({"path": str(path), "error_type": error_type, "message": message})
        try:
            with self.path.open("a") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            stopped = "; stopped" if exc.errno in FATAL_WRITE_ERRORS else ""
            raise OutputError(f"cannot write {show_path(self.path)}: {exc.strerror or exc}{stopped}") from exc


# -- run records -------------------------------------------------------------------------------

RUN_DIR = ".tdvideo"
"""The folder under ``--out`` where runs keep their plans (and, in claim mode, their claims)."""


def plan_path(out: Path) -> Path:
    """Where runs record what they set out to do: every video of the run, whatever the
    shard, so that every rank writes the same plan and ``tdvideo status`` knows the videos
    of ranks that have not started."""
    return out / RUN_DIR / "plan.json"


def write_plan(out: Path, *, fmt: Format, jobs: list[tuple[Path, Path]]) -> Path:
    """Record a run's videos and their output bases (relative to ``out``), for ``tdvideo status``."""
    path = plan_path(out)
    path.parent.mkdir(exist_ok=True)
    record = {"format": fmt, "videos": [{"source": str(src), "output": base.relative_to(out).as_posix()} for src, base in jobs]}
    data = json.dumps(record, indent=1).encode()
    _atomic_write(path, lambda fh: fh.write(data))
    return path


def read_plan(out: Path) -> dict[str, Any] | None:
    """The plan recorded under ``out``, or None when no run wrote one (or it is damaged)."""
    try:
        return json.loads(plan_path(out).read_text())
    except (OSError, ValueError):
        return None


def read_failures(out: Path) -> list[dict[str, Any]]:
    """Every failure record under ``out``, from all ranks' logs, in file order."""
    records = []
    for path in sorted(out.glob("failures*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a kill
    return records
