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
Temporary files (``.clip.npy.w<pid>-<host>.XXXX.tmp``) left by a kill are removed by the
next run, once their writer is gone. Files get the mode the umask gives (``0o666 & ~umask``),
as any other new file would.

Reading treats the folder as anyone's: only regular files, never through a symbolic link,
metadata of bounded size, arrays whose headers must agree with their file's size and the
metadata, no pickles (see :mod:`tdvideo._files`). A bad file is an
:class:`~tdvideo.OutputError` naming it, never a hang or a traceback.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import math
import os
import pickle
import stat
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, get_args

import numpy as np

from ._files import Leftovers, open_regular, parse_json, publish, read_bytes, rename_into_place, temporary, writable_target
from ._system import sha256_file
from ._types import Format, OutputDType
from .errors import OutputError, UsageError, first_line, show_path
from .sampling import MAX_SECONDS
from .storage import TarMember, Url, location, open_read, reason, remove_url, stat_url

__all__ = [
    "FATAL_WRITE_ERRORS",
    "FORMATS",
    "MAX_METADATA_BYTES",
    "RUN_DIR",
    "Features",
    "Format",
    "OutputDType",
    "SourceIdentity",
    "Temporaries",
    "array_path",
    "changed_settings",
    "is_finished",
    "load",
    "metadata_path",
    "output_names",
    "read_metadata",
    "remove_output",
    "remove_temporaries",
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
    # A store's object or a tar member, to look at again (a URL keeps the options to reach
    # it): not recorded.
    url: Url | TarMember | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, path: str | Path | Url) -> SourceIdentity:
        """Read ``path``'s identity (raises ``OSError`` when it cannot be read).

        A store's object is identified by what the store says: its size, modification
        time, and ETag or version as the fingerprint (the first and last 64 KiB, read by
        range, where it gives neither)."""
        source = location(path)
        if isinstance(source, Url):
            return cls._of_url(source)
        if isinstance(source, TarMember):
            # A member of a shard: its own size and edges, and the shard's time.
            shard = cls.of(source.shard)
            with open_read(source) as fh:
                return cls(str(source), source.size, shard.mtime_ns, _edges(fh, source.size), source)
        # Not blocking: a FIFO would hold the open until a writer came (the video is then
        # refused by the decoder, which says why).
        with os.fdopen(os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(source))
            os.set_blocking(fh.fileno(), True)
            digest = _edges(fh, info.st_size)
        return cls(str(source.absolute()), info.st_size, info.st_mtime_ns, digest)

    @classmethod
    def before_reading(cls, path: str | Path | Url) -> SourceIdentity:
        """:meth:`of`, for a video this process decodes next: a store's object read by its
        direct address is identified from its first block, which the decoder then starts
        from (one request, not two, and the very version it decodes)."""
        source = location(path)
        return cls._of_url(source, ahead=True) if isinstance(source, Url) else cls.of(source)

    @classmethod
    def _of_url(cls, url: Url, *, ahead: bool = False) -> SourceIdentity:
        try:
            info = stat_url(url, ahead=ahead)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - a store's client raises its own types: here all mean "cannot be read"
            raise OSError(f"{url}: {reason(exc)}") from None
        size = int(info.get("size") or 0)
        tag = info.get("ETag") or info.get("etag") or info.get("VersionId") or info.get("version_id") or info.get("md5Hash")
        if tag:
            fingerprint = f"etag:{str(tag).strip(chr(34))}"
        else:
            with open_read(url) as fh:
                fingerprint = _edges(fh, size)
        return cls(str(url), size, _mtime_ns(info), fingerprint, url)

    def unchanged(self) -> bool:
        """True when the file is still there with the same size and modification time (an
        object: the same size, time and ETag). For an object, raises ``OSError`` when its
        store cannot be asked (unreachable, refusing): not the same as "changed"."""
        if self.url is not None:
            try:
                return self.same_file(SourceIdentity.of(self.url).to_dict())
            except FileNotFoundError:
                return False
        try:
            stat = os.stat(self.path)
        except OSError:
            return False
        return stat.st_size == self.size and stat.st_mtime_ns == self.mtime_ns

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns, "fingerprint": self.fingerprint, "mtime": self.mtime_ns / 1e9}

    def same_file(self, recorded: Mapping[str, Any]) -> bool:
        """Whether metadata's ``source`` record describes this same file (the path may differ)."""
        return (
            recorded.get("size") == self.size
            and recorded.get("mtime_ns") == self.mtime_ns
            and recorded.get("fingerprint") == self.fingerprint
        )


def _edges(fh: Any, size: int) -> str:
    """sha256 of the size and the first and last 64 KiB of an open file."""
    digest = hashlib.sha256(str(size).encode())
    digest.update(fh.read(_FINGERPRINT_BYTES))
    if size > 2 * _FINGERPRINT_BYTES:
        fh.seek(-_FINGERPRINT_BYTES, os.SEEK_END)
    digest.update(fh.read(_FINGERPRINT_BYTES))
    return digest.hexdigest()


def _mtime_ns(info: Mapping[str, Any]) -> int:
    """A store's modification time of an object, in ns (0 when it gives none)."""
    value = info.get("LastModified") or info.get("last_modified") or info.get("mtime") or info.get("updated")
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1e9)
    if isinstance(value, (int, float)):
        return int(value * 1e9)
    if isinstance(value, str):
        try:
            return int(datetime.datetime.fromisoformat(value).timestamp() * 1e9)
        except ValueError:
            return 0
    return 0


# -- writing ---------------------------------------------------------------------------------


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")


def metadata_path(base: Path) -> Path:
    return base.with_name(base.name + ".json")


def array_path(base: Path, fmt: Format) -> Path:
    return base.with_name(f"{base.name}.{fmt}")


def write_features(base: Path, features: Features, *, fmt: Format = "npy") -> Path:
    """Commit ``features`` under ``base`` (a path without extension); return the array's path.

    See the module docstring for the order of the steps and what a kill leaves.
    """
    _check_format(fmt)
    if isinstance(base, Path):
        base.parent.mkdir(parents=True, exist_ok=True)
    target = array_path(base, fmt)
    for name in (metadata_path(base), target):  # a link, a FIFO, a folder: refused before anything is touched
        writable_target(name)
    array, times = features.array, features.timestamps
    _remove_files([metadata_path(base)])
    if fmt == "npy":
        written = _write_array(target, lambda fh: np.save(fh, array, allow_pickle=False))
    elif fmt == "npz":
        written = _write_array(target, lambda fh: np.savez(fh, features=array, timestamps=times))
    else:
        written = _write_array(target, lambda fh: _torch_save(array, times, fh))
    meta = {
        **features.metadata,
        "format": fmt,
        "file": target.name,
        **written,
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "timestamps": times,
    }
    publish(metadata_path(base), lambda fh: _write_metadata(fh, meta, metadata_path(base)))
    # An earlier output of this video in another format is stale now.
    _remove_files([array_path(base, other) for other in FORMATS if other != fmt])
    return target


def _write_array(target: Path | Url, write: Callable[[Any], object]) -> dict[str, Any]:
    """Write the array file ``target`` and return what the metadata records of it: its size,
    sha256, and what tells it was not touched since (the file's modification time; an
    object's ETag, which the store changes with every write)."""
    if isinstance(target, Path):
        publish(target, write)
        stat = target.stat()
        return {"file_bytes": stat.st_size, "file_mtime_ns": stat.st_mtime_ns, "file_sha256": sha256_file(target)}
    tmp = temporary(target)  # a local file: hashed, then uploaded whole
    try:
        publish(tmp, write)
        size, digest = tmp.stat().st_size, sha256_file(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    rename_into_place(tmp, target)
    return {"file_bytes": size, "file_etag": _etag(stat_url(target)), "file_sha256": digest}


def _etag(info: Mapping[str, Any]) -> str | None:
    tag = info.get("ETag") or info.get("etag") or info.get("VersionId") or info.get("md5Hash")
    return str(tag).strip('"') if tag else None


# Rows of a long list written at a time: the metadata of millions of rows is never one string.
_JSON_ROWS = 1 << 16


def _write_metadata(fh: Any, meta: dict[str, Any], path: Path) -> None:
    """``meta`` as JSON, its long lists (timestamps, ``frame_pts``) written a slice at a time;
    more than :data:`MAX_METADATA_BYTES` is an :class:`OutputError` (readers refuse it)."""
    lists = {k: v for k, v in meta.items() if isinstance(v, (list, np.ndarray)) and len(v) > _JSON_ROWS}
    head = json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in meta.items() if k not in lists}, indent=1)
    parts = [head[: head.rindex("}")].rstrip()]
    written = 0

    def put(text: str) -> None:
        nonlocal written
        data = text.encode()
        written += len(data)
        if written > MAX_METADATA_BYTES:
            raise OutputError(f"{show_path(path)}: more than {MAX_METADATA_BYTES} bytes of metadata (too many rows)")
        fh.write(data)

    put(parts[0])
    for number, (key, values) in enumerate(lists.items()):
        put(("," if number or head.strip() != "{}" else "") + f"\n {json.dumps(key)}: [")
        for start in range(0, len(values), _JSON_ROWS):
            part = values[start : start + _JSON_ROWS]
            put(("," if start else "") + json.dumps(part.tolist() if isinstance(part, np.ndarray) else part)[1:-1])
        put("]")
    put("\n}")


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
    return _remove_files([metadata_path(base), *(array_path(base, fmt) for fmt in FORMATS)])


def _remove_files(paths: list[Path] | list[Path | Url]) -> bool:
    """Remove those of ``paths`` that are files or links (a folder of that name is left
    alone: not an output), or objects of a store; True if any was there."""
    found = False
    for path in paths:
        if isinstance(path, Url):
            found = remove_url(path) or found
            continue
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                continue
            path.unlink()
            found = True
        except FileNotFoundError:
            continue
    return found


def output_names(base: Path) -> list[str]:
    """The names of every file an output at ``base`` may have: its metadata and arrays."""
    return [metadata_path(base).name, *(array_path(base, fmt).name for fmt in FORMATS)]


class Temporaries:
    """Temporary files that interrupted commits of outputs left (see :class:`~tdvideo._files.Leftovers`:
    only those whose writer is gone). Each folder is listed once, however many outputs it holds."""

    def __init__(self) -> None:
        self._leftovers = Leftovers()

    def remove(self, base: Path) -> list[Path]:
        """Remove the leftovers of an interrupted commit of ``base``; return them."""
        return self._leftovers.remove(base.parent, output_names(base))


def remove_temporaries(base: Path) -> list[Path]:
    """Remove temporary files that an interrupted commit of ``base`` left behind; return them."""
    return Temporaries().remove(base)


# -- reading ---------------------------------------------------------------------------------

# Metadata holds a timestamp or two per row (about 20 bytes each): this is ten million rows
# and more, and a bound on what a crafted "metadata" file makes any command read and parse
# (parsed, JSON takes several times its size in memory).
MAX_METADATA_BYTES = 256 * 2**20
# numpy's own bound on a .npy header, which is a Python literal (np.lib.format).
_MAX_HEADER_BYTES = 10_000


def read_metadata(base: Path, *, root: Path | None = None) -> dict[str, Any] | None:
    """The metadata of a finished output at ``base``, or None if there is none.

    Finished means: the metadata parses, and the array file it names is there with the
    size it records, and either the modification time it records too (cheap: the file was
    not touched since), or, if the time differs (a copy, or damage), the sha256 it records.
    Files that are not regular, or are reached through a link below ``root``, are never
    opened (see :mod:`tdvideo._files`).
    """
    meta, _ = finished_output(base, root=root)
    return meta


def finished_output(base: Path, *, full: bool = False, root: Path | None = None) -> tuple[dict[str, Any] | None, str]:
    """(metadata, "") for a finished output at ``base``, else (None, why it is not).

    ``full`` checks the array's sha256 even when its modification time is as recorded.
    """
    path = metadata_path(base)
    try:
        meta = parse_json(read_bytes(path, limit=MAX_METADATA_BYTES, root=root), path)
    except OutputError as exc:
        return None, f"{exc} (no finished tdvideo output here)"
    if not isinstance(meta, dict) or not isinstance(meta.get("file"), str) or Path(meta["file"]).name != meta["file"] or meta["file"] in ("", ".", ".."):
        return None, f"{show_path(path)}: names no array file (not tdvideo metadata)"
    target = base.parent / meta["file"]
    try:
        with open_regular(target, root=root) as fh:
            why = _same_array(fh, target, meta, full=full, path=path)
    except OutputError as exc:
        return None, f"{exc} (the array {path.name} names)"
    return (meta, "") if why is None else (None, why)


def _size_and_stamp(fh: BinaryIO, target: Path | Url) -> tuple[int, str, Any]:
    """An open array file's size, and the metadata key and value that say it is untouched
    since it was written: its modification time; for a store's object, its ETag."""
    if isinstance(target, Url):
        info = stat_url(target)
        return int(info.get("size") or 0), "file_etag", _etag(info)
    stat = os.fstat(fh.fileno())
    return stat.st_size, "file_mtime_ns", stat.st_mtime_ns


def _same_array(fh: BinaryIO, target: Path | Url, meta: dict[str, Any], *, full: bool, path: Path | Url) -> str | None:
    """Why the open array file ``fh`` is not the one ``meta`` was written with, or None."""
    size, key, stamp = _size_and_stamp(fh, target)
    if meta.get("file_bytes") != size:
        return f"{show_path(target)}: {size} bytes, not the {meta.get('file_bytes')} {path.name} was written with"
    if (full or stamp is None or meta.get(key) != stamp) and _sha256(fh) != meta.get("file_sha256"):
        return f"{show_path(target)}: not the array {path.name} was written with (sha256 differs: damaged or replaced)"
    return None


def _sha256(fh: IO[bytes]) -> str:
    digest = hashlib.sha256()
    fh.seek(0)
    for block in iter(lambda: fh.read(1 << 20), b""):
        digest.update(block)
    fh.seek(0)
    return digest.hexdigest()


def load(path: str | Path | Url, *, root: str | Path | Url | None = None) -> Features:
    """Read an output back: pass the array file (``.npy``/``.npz``/``.pt``), its ``.json``,
    or the name without extension.

    Checks that the pair is consistent: the array file is the one the metadata was
    written with (size and sha256), its header agrees with the metadata's shape and its
    own size, and it has one row per timestamp. Only regular files are read, never
    through a symbolic link (nor, with ``root``, through a linked folder below it), and
    never a pickle. Raises :class:`~tdvideo.errors.OutputError`, naming the file and the
    reason, otherwise.
    """
    p = location(path)
    base = p.with_suffix("") if p.suffix in (".json", ".npy", ".npz", ".pt") else p
    where = location(root) if root is not None else None
    # The cheap checks first (size, time); the sha256 once, of the very file read below.
    meta, why = finished_output(base, root=where)
    if meta is None:
        raise OutputError(why)  # it names the file at fault
    target = base.parent / meta["file"]
    fmt = meta.get("format")
    try:
        shape = _shape(meta.get("shape"))
        with open_regular(target, root=where) as fh:
            if _sha256(fh) != meta.get("file_sha256"):
                raise OutputError(
                    f"{show_path(target)}: not the array {metadata_path(base).name} was written with "
                    f"(sha256 differs: damaged or replaced)"
                )
            if fmt == "npy":
                array = _read_npy(fh, size=_size_and_stamp(fh, target)[0], shape=shape)
                if not isinstance(meta.get("timestamps"), list):
                    raise ValueError(f"the metadata's timestamps are {type(meta.get('timestamps')).__name__}, not a list")
                times = np.asarray(meta["timestamps"], dtype=np.float64)
            elif fmt == "npz":
                array, times = _read_npz(fh, shape=shape)
            elif fmt == "pt":
                array, times = _read_pt(fh, shape=shape)
            else:
                raise OutputError(f"{show_path(metadata_path(base))}: unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    except OutputError:
        raise
    except pickle.UnpicklingError:
        raise OutputError(f"{show_path(target)}: refused: its pickle holds more than tensors (it could run code; nothing in it has run)") from None
    except (ValueError, TypeError, KeyError, EOFError, OSError, zipfile.BadZipFile, RuntimeError) as exc:
        raise OutputError(f"{show_path(target)}: damaged or not a tdvideo {fmt} output ({first_line(exc)})") from None
    # One row per timestamp; a video model's row is a window, with a row of timestamps.
    rows = times.shape[:1] if meta.get("features_per") == "window" else times.shape
    if times.ndim not in (1, 2) or tuple(array.shape[: len(rows)]) != tuple(rows) or tuple(array.shape) != shape:
        raise OutputError(
            f"{show_path(target)}: {tuple(array.shape)} features do not match {tuple(times.shape)} timestamps "
            f"(metadata says {list(shape)})"
        )
    if times.size and not (np.isfinite(times).all() and np.abs(times).max() <= MAX_SECONDS):
        raise OutputError(f"{show_path(target)}: timestamps that are no times of a video (not finite, or beyond {MAX_SECONDS:g} s)")
    return Features(array=array, timestamps=times, metadata=meta)


def _shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise ValueError(f"the metadata's shape {value!r} is not a list of sizes")
    return tuple(value)


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """A .npy stream's (shape, fortran order, dtype), checked to hold plain numbers."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=_MAX_HEADER_BYTES)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=_MAX_HEADER_BYTES)
    else:
        raise ValueError(f".npy version {version[0]}.{version[1]}, not one numpy writes for numbers")
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ValueError(f"holds {dtype} values, not numbers (refused: it could run code or be any size)")
    return shape, fortran, dtype


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def _read_npy(fh: IO[bytes], *, size: int, shape: tuple[int, ...] | None) -> np.ndarray:
    """A .npy array whose header must agree with the file's size (and ``shape``): a few
    bytes of header cannot make this read more than the file holds."""
    declared, fortran, dtype = _npy_header(fh)
    if shape is not None and declared != shape:
        raise ValueError(f"its header says shape {list(declared)}, the metadata {list(shape)}")
    if _nbytes(declared, dtype) != size - fh.tell():
        raise ValueError(f"its header declares {_nbytes(declared, dtype)} bytes of data, the file holds {size - fh.tell()}")
    data = np.empty(math.prod(declared), dtype=dtype)
    view, done = memoryview(data).cast("B"), 0
    while done < len(view):
        got = fh.readinto(view[done:])
        if not got:
            raise EOFError(f"the data ends after {done} of {len(view)} bytes")
        done += got
    return data.reshape(declared[::-1]).transpose() if fortran else data.reshape(declared)


def _read_npz(fh: IO[bytes], *, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``features`` and ``timestamps`` of an .npz file, each member checked as a .npy."""
    arrays = {}
    archive_size = fh.seek(0, os.SEEK_END)
    fh.seek(0)
    with zipfile.ZipFile(fh) as archive:
        for name in ("features", "timestamps"):
            info = archive.getinfo(f"{name}.npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{name}.npy is compressed; tdvideo writes them stored")
            # Stored: the member is as large as it says it is, and inside the file.
            if info.file_size != info.compress_size or info.header_offset + info.compress_size > archive_size:
                raise ValueError(f"{name}.npy claims {info.file_size} bytes; the file holds {archive_size}")
            with archive.open(info) as member:
                arrays[name] = _read_npy(member, size=info.file_size, shape=shape if name == "features" else None)
    return arrays["features"], arrays["timestamps"].astype(np.float64, copy=False)


def _read_pt(fh: IO[bytes], *, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``features`` and ``timestamps`` of a .pt file: torch's zip format, no code run."""
    if not zipfile.is_zipfile(fh):
        raise ValueError("not a torch zip file (the format torch.save writes)")
    fh.seek(0)
    with zipfile.ZipFile(fh) as archive:
        if any(info.compress_type != zipfile.ZIP_STORED for info in archive.infolist()):
            raise ValueError("compressed members; torch.save stores them")
    fh.seek(0)
    import warnings

    import torch  # only for this format

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on a file's pickle protocol: any problem is raised
        data = torch.load(fh, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), torch.Tensor) for k in ("features", "timestamps")):
        raise ValueError("does not hold tensors named features and timestamps")
    features = data["features"].numpy()
    if tuple(features.shape) != shape:
        raise ValueError(f"its features have shape {list(features.shape)}, the metadata says {list(shape)}")
    return features, data["timestamps"].numpy().astype(np.float64, copy=False)


def is_finished(base: Path, fmt: Format, *, source: Path, settings: Mapping[str, Any], root: Path | None = None) -> bool:
    """True when ``base`` holds ``source``'s output in format ``fmt`` for these ``settings``.

    The output must be a consistent pair of this very source file (size, modification
    time, fingerprint) and equal ``settings`` (as stored in the metadata). Raises
    ``OSError`` when the source cannot be read.
    """
    meta = read_metadata(base, root=root)
    if meta is None or meta.get("file") != array_path(base, fmt).name:
        return False
    if not SourceIdentity.of(source).same_file(meta.get("source") or {}):
        return False
    return all(meta.get(k) == v for k, v in settings.items())


def changed_settings(base: Path, fmt: Format, *, source: Path, settings: Mapping[str, Any], root: Path | None = None) -> list[str]:
    """The settings in which the finished output of this very ``source`` at ``base`` differs
    from ``settings`` (``format`` too); ``["source"]`` when it is the output of another file
    (another path, other contents); empty when there is none, or ``source`` was rewritten
    in place since (its output is stale, not another choice)."""
    meta = read_metadata(base, root=root)
    if meta is None:
        return []
    recorded = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    try:
        identity = SourceIdentity.of(source)
        if not identity.same_file(recorded):
            return ["source"] if recorded.get("path") not in (None, identity.path) else []
    except OSError:
        return []  # the source cannot be read: the run reports that
    changed = [k for k, v in settings.items() if meta.get(k) != v]
    return changed + (["format"] if meta.get("file") != array_path(base, fmt).name else [])


RUN_DIR = ".tdvideo"
"""The folder under ``--out`` where runs keep their records: plans, claims."""
