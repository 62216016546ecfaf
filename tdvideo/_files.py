"""Files of an output folder, read and written as a record that anyone may have touched.

An output folder is read by every command (``extract`` on a rerun, ``status``, ``export``,
``show``, ``load``) and may hold what a colleague, a crashed process or an attacker left.
So, reading:

- only regular files are opened, and never through a symbolic link: the last part with
  ``O_NOFOLLOW``, the folders between the output folder and the file checked one by one,
  and with ``O_NONBLOCK``, so that a FIFO named like an output never blocks a command;
- no more than a bound is read (:func:`read_bytes`), whatever the file claims.

Writing: a temporary file beside the target, named after its writer (this host and pid),
renamed into place; never through a symbolic link, and never onto something that is not a
regular file. :class:`Leftovers` removes the temporaries of writers that are gone, and only
theirs: a process still committing keeps its own.

Every problem is an :class:`~tdvideo.OutputError` whose message names the file and the reason.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ._system import file_kind, file_mode
from .errors import OutputError, first_line, show_path
from .storage import Url, open_read, put_file, reason, stat_url

__all__ = [
    "STALE_SECONDS",
    "Leftovers",
    "Sink",
    "check_inside",
    "open_regular",
    "owner_tag",
    "parse_json",
    "process_alive",
    "publish",
    "read_bytes",
    "rename_into_place",
    "temporary",
    "temporary_prefix",
    "writable_target",
]

log = logging.getLogger("tdvideo")

# A temporary of another host's writer (whose process cannot be looked up from here) is
# removed once it is this old: no single commit takes an hour.
STALE_SECONDS = 3600.0
# Most file systems allow 255 bytes a name.
_NAME_MAX = 255


def check_inside(root: Path | Url, path: Path | Url) -> None:
    """Raise :class:`OutputError` unless every folder between ``root`` and ``path`` is a real
    folder (no symbolic link leading out of ``root``). ``root`` itself may be a link. A
    store has no links: nothing to check there."""
    if isinstance(path, Url):
        return
    assert isinstance(root, Path)
    try:
        relative = path.relative_to(root)
    except ValueError:
        raise OutputError(f"{show_path(path)}: not inside {show_path(root)}") from None
    if any(part in ("", ".", "..") for part in relative.parts):
        raise OutputError(f"{show_path(path)}: not inside {show_path(root)}")
    folder = root
    for part in relative.parts[:-1]:
        folder = folder / part
        try:
            mode = os.lstat(folder).st_mode
        except FileNotFoundError:
            return  # nothing below exists yet: nothing to follow
        except OSError as exc:
            raise OutputError(f"{show_path(folder)}: cannot be read ({exc.strerror or exc})") from None
        if not stat.S_ISDIR(mode):
            raise OutputError(f"{show_path(folder)}: a {file_kind(mode)}, not a folder of outputs; not followed")


def open_regular(path: Path | Url, *, root: Path | Url | None = None) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file (not a link, FIFO, device or folder)
    inside ``root`` (when given); else :class:`OutputError` naming it and what it is. A
    store's object is opened for reading by ranges."""
    if isinstance(path, Url):
        _stat_object(path)
        try:
            return open_read(path)
        except FileNotFoundError:
            raise OutputError(f"{path}: missing") from None  # removed since it was looked at
        except Exception as exc:  # noqa: BLE001 - a store's client raises its own types
            raise OutputError(f"{path}: cannot be read ({reason(exc)})") from None
    if root is not None:
        check_inside(root, path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except ValueError:  # a NUL, or a character no file name can hold (a lone surrogate)
        raise OutputError(f"{show_path(path)}: not a file name") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputError(f"{show_path(path)}: a symbolic link; not followed") from None
        what = "missing" if isinstance(exc, FileNotFoundError) else f"cannot be read ({exc.strerror or exc})"
        raise OutputError(f"{show_path(path)}: {what}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OutputError(f"{show_path(path)}: not a regular file (a {file_kind(mode)}); not read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _stat_object(url: Url) -> dict[str, Any]:
    """What the store says of an object it should hold; :class:`OutputError` when it does not."""
    try:
        info = stat_url(url)
    except FileNotFoundError:
        raise OutputError(f"{url}: missing") from None
    except Exception as exc:  # noqa: BLE001 - a store's client raises its own types
        raise OutputError(f"{url}: cannot be read ({reason(exc)})") from None
    if info.get("type") != "file":
        raise OutputError(f"{url}: a prefix (a folder), not an object; not read")
    return info


def read_bytes(path: Path | Url, *, limit: int, root: Path | Url | None = None) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`), at most ``limit``
    of them: a larger file is an :class:`OutputError`, found before it is read."""
    if isinstance(path, Url):
        size = int(_stat_object(path).get("size") or 0)
        if size > limit:
            raise OutputError(f"{path}: {size} bytes, more than such a file may hold ({limit}); not read")
        try:
            with open_read(path) as fh:
                return fh.read(limit + 1)[:limit]
        except OSError as exc:
            raise OutputError(f"{path}: cannot be read ({reason(exc)})") from None
    with open_regular(path, root=root) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise OutputError(f"{show_path(path)}: {size} bytes, more than such a file may hold ({limit}); not read")
        data = fh.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise OutputError(f"{show_path(path)}: more than {limit} bytes; not read")
    return data


# JSON written by tdvideo holds numbers and names: a file that opens a list or an object more
# often than once every this many bytes is not one of its records, and parsing it would take
# far more memory than its size (about 64 bytes an empty list) or recurse without end.
_BYTES_PER_CONTAINER = 16


def parse_json(data: bytes, path: Path) -> Any:
    """``data`` (the bytes of ``path``) as JSON; :class:`OutputError` for what is not JSON, or
    not the shape of a tdvideo record (nested or packed with containers beyond reason)."""
    containers = data.count(b"[") + data.count(b"{")
    if containers * _BYTES_PER_CONTAINER > len(data) + 4096:
        raise OutputError(f"{show_path(path)}: {containers} lists or objects in {len(data)} bytes: not a tdvideo record; not read")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise OutputError(f"{show_path(path)}: not JSON ({first_line(exc)})") from None


# -- writing -----------------------------------------------------------------------------------


def _host_identity() -> str:
    """This host as its processes see it: the name, the boot and the pid namespace, so that
    two containers sharing a host name (``--network host``) are not taken for one host."""
    parts = [socket.gethostname()]
    for source in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(source) as fh:
                parts.append(fh.read().strip())
        except OSError:
            continue
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass  # no /proc (not Linux): the host name and the pid must do
    return "/".join(parts)


_HOST_TAG = hashlib.sha1(_host_identity().encode()).hexdigest()[:8]


def owner_tag() -> str:
    """This process, as temporaries and claims name their writer: ``w<pid>-<host tag>``."""
    return f"w{os.getpid()}-{_HOST_TAG}"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_prefix(name: str) -> str:
    """The prefix of the temporaries of ``name``: ``.NAME.``, or a digest of it for a name
    too long to take the writer's tag and ``mkstemp``'s characters too."""
    extra = len(".") + len(owner_tag()) + len(".XXXXXXXX.tmp") + 8  # room for longer pids
    if len(os.fsencode(name)) + len(".") + extra <= _NAME_MAX:
        return f".{name}."
    return f".{hashlib.sha1(os.fsencode(name)).hexdigest()[:16]}."


class Sink(io.RawIOBase):
    """An open file that numpy, zipfile, torch and pyarrow write through with plain ``write`` calls.

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


def writable_target(target: Path | Url) -> None:
    """Refuse (:class:`OutputError`) to replace what is not a regular file: a link, a FIFO, a folder."""
    if isinstance(target, Url):
        return  # an object is replaced whole by a PUT; a store has no links
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise OutputError(f"{show_path(target)}: a {file_kind(mode)}, not a regular file; not replaced")


def temporary(target: Path | Url) -> Path:
    """A new empty temporary file beside ``target``, named after this writer, with the
    umask's mode (see :class:`Leftovers`); for writers that need a path (Parquet). For a
    store's object, a local temporary (in ``TMPDIR``), uploaded by :func:`rename_into_place`."""
    writable_target(target)
    folder = None if isinstance(target, Url) else target.parent
    fd, tmp = tempfile.mkstemp(prefix=f"{temporary_prefix(target.name)}{owner_tag()}.", suffix=".tmp", dir=folder)
    try:
        # mkstemp makes 0600 files; a rename keeps the mode, so give the umask's mode now.
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    return Path(tmp)


def rename_into_place(tmp: Path, target: Path | Url) -> None:
    """Rename the finished temporary ``tmp`` to ``target`` (not onto a link, a FIFO, a folder);
    a store's object is uploaded whole from it (a PUT is atomic), and the temporary removed."""
    if isinstance(target, Url):
        try:
            put_file(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    writable_target(target)
    os.replace(tmp, target)


def publish(target: Path | Url, write: Callable[[BinaryIO], object]) -> None:
    """Write ``target`` through ``write(file)`` into a temporary beside it, then rename it
    into place: a kill leaves the old file (or none), never half of the new one.

    An existing ``target`` that is not a regular file (a symbolic link, a FIFO, a folder)
    is an :class:`OutputError` and is left as it is: nothing is written through a link.
    ``OSError`` from writing (a full disk) propagates with its errno.
    """
    tmp = temporary(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            with Sink(fd) as sink:
                write(sink)  # type: ignore[arg-type]
        finally:
            os.close(fd)
        rename_into_place(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_OWNED = re.compile(r"w(\d+)-([0-9a-f]{8})\.[A-Za-z0-9_]{8}\.tmp")
_UNOWNED = re.compile(r"[A-Za-z0-9_]{8}\.tmp")  # tdvideo before writers were named


class Leftovers:
    """Temporaries that writers which are gone left in output folders.

    A temporary names its writer (:func:`owner_tag`). One of this host is removed when its
    process no longer exists; one of another host (whose processes cannot be looked up)
    or of an older tdvideo that did not name writers, once it is :data:`STALE_SECONDS`
    old. So a run never removes the temporary of a commit still in progress elsewhere.
    Each folder is listed once, however many outputs it holds.
    """

    def __init__(self) -> None:
        self._names: dict[Path, set[str]] = {}

    def remove(self, folder: Path | Url, names: list[str]) -> list[Path]:
        """Remove the abandoned temporaries of the files ``names`` in ``folder``; return them.
        A store holds none: an object is written whole."""
        if isinstance(folder, Url):
            return []
        found = self._names.get(folder)
        if found is None:
            try:
                with os.scandir(folder) as entries:
                    found = {e.name for e in entries if e.name.startswith(".") and e.name.endswith(".tmp")}
            except (FileNotFoundError, NotADirectoryError):
                found = set()
            self._names[folder] = found
        removed = []
        now = time.time()
        for name in names:
            prefix = temporary_prefix(name)
            for candidate in sorted(n for n in found if n.startswith(prefix)):
                if not self._abandoned(folder / candidate, candidate[len(prefix) :], now):
                    continue
                found.discard(candidate)
                try:
                    if not stat.S_ISREG(os.lstat(folder / candidate).st_mode):
                        continue  # named like a temporary, but not one (a folder): not ours to remove
                    (folder / candidate).unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.warning("could not remove the leftover %s: %s", show_path(folder / candidate), exc.strerror or exc)
                    continue
                removed.append(folder / candidate)
        return removed

    @staticmethod
    def _abandoned(path: Path, rest: str, now: float) -> bool:
        owned = _OWNED.fullmatch(rest)
        if owned is None and _UNOWNED.fullmatch(rest) is None:
            return False  # not a name tdvideo makes
        if owned is not None and owned.group(2) == _HOST_TAG:
            return not process_alive(int(owned.group(1)))
        try:
            return now - os.lstat(path).st_mtime > STALE_SECONDS
        except FileNotFoundError:
            return False
