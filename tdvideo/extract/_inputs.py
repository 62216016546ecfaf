"""Which videos a run takes, and where their outputs go.

Inputs (files, folders searched recursively, list files) become :class:`InputVideo`s
with an output name: the path below the folder it was found in, every part a plain name,
so outputs mirror the input tree and stay inside ``--out``. Under torchrun or SLURM each
process owns the videos whose output name hashes to its rank (:class:`Shard`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from .._files import check_inside
from ..errors import NoVideosError, OutputCollisionError, OutputError, UsageError, option, show_path
from ..storage import Url, is_url, location, put_bytes, reason, remove_url, stat_url, walk_url
from ..writers import RUN_DIR
from ._shards import is_shard, scan_shard, shard_places

__all__ = [
    "VIDEO_EXTENSIONS",
    "Discovery",
    "InputVideo",
    "Job",
    "RunPlan",
    "Shard",
    "Unreadable",
    "discover_videos",
    "failures_log_name",
    "plan_outputs",
    "plan_run",
    "prepare_output",
    "read_list_file",
]

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    [".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".3gp", ".flv", ".wmv", ".ogv", ".mxf"]
)


@dataclass(frozen=True)
class InputVideo:
    """One video to process. ``relative`` is its output name: the path below the folder
    it was found in (extension dropped), or just the stem for a file given directly.
    Every part is a plain name (never empty, ``.`` or ``..``), so outputs stay inside ``--out``."""

    path: Path
    relative: PurePath


@dataclass(frozen=True)
class Unreadable:
    """Something inside an input folder that could not be looked into or read: a folder
    without permission, a broken link, a "video" that is no regular file."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover_videos` found: the videos, and what it could not read."""

    videos: list[InputVideo]
    unreadable: list[Unreadable]


def _normalize_exts(extensions: Iterable[str]) -> set[str]:
    return {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}


def _safe_part(name: str) -> str:
    # "..mp4" has the stem ".", which as a path part means the folder itself.
    return name if name not in ("", ".", "..") else name.replace(".", "_") or "_"


def _output_name(relative: PurePath) -> PurePath:
    return PurePath(*(_safe_part(part) for part in relative.parts)) if relative.parts else PurePath("_")


def _as_path(place: str | Path | Url) -> Path:
    """Where ``place`` is, as an absolute path to compare with others: a URL as
    ``/scheme/path``, so that objects of one store share its folders."""
    if isinstance(place, Url) or is_url(place):
        url = location(place)
        assert isinstance(url, Url)
        return Path("/", url.scheme, url.path)
    return Path(os.path.abspath(place))


def _file_names(files: list[Path | Url], root: str | Path | None) -> list[PurePath]:
    """Output names of files given one by one (as arguments or in a list): their path below
    ``root``, else below their deepest common folder, without the extension, as files found
    inside a folder input are named; a lone file is named by its stem."""
    if root is None and len(files) < 2:
        return [_output_name(PurePath(f.stem)) for f in files]
    absolute = [_as_path(f) for f in files]
    base = _as_path(root) if root is not None else Path(os.path.commonpath([a.parent for a in absolute]))
    names = []
    for given, path in zip(files, absolute):
        relative = PurePath(os.path.relpath(path, base))
        if relative.parts[0] == "..":
            raise UsageError(f"{show_path(given)} is not below {option('root', show_path(base))}")
        names.append(_output_name(PurePath(*relative.parent.parts, relative.stem)))
    return names


def discover_videos(
    inputs: Iterable[str | Path | Url],
    *,
    extensions: Iterable[str] | None = None,
    glob: str | None = None,
    root: str | Path | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Discovery:
    """Expand files and folders into a deterministic list of videos.

    Files named one by one keep their folders: see :func:`_file_names` (``root``).

    Folders are searched recursively (following links to folders, once each) for files
    with a video extension (``extensions``, default :data:`VIDEO_EXTENSIONS`) whose path
    below the folder matches ``glob`` (fnmatch, e.g. ``"cam1/*.mp4"``). A file named
    directly is taken whatever its extension (it fails later if it is no video).
    Subfolders that cannot be listed, broken links and non-regular files with a video
    extension are returned as :attr:`Discovery.unreadable`, never skipped silently.

    A URL (``s3://bucket/videos/``, ``https://host/clip.mp4``) is a store's object, or a
    prefix listed recursively like a folder; ``storage_options`` go to its store (see
    :mod:`tdvideo.storage`). A missing object or bucket, a denied access or a store that
    cannot be reached is a :class:`UsageError`, before any work.

    Raises :class:`UsageError` for a path that does not exist and :class:`NoVideosError`
    when a folder holds no videos at all.
    """
    exts = _normalize_exts(extensions) if extensions else set(VIDEO_EXTENSIONS)
    found: list[InputVideo] = []
    unreadable: list[Unreadable] = []
    files: list[tuple[int, Path | Url]] = []  # files given one by one, and their place in ``found``
    under = root
    for item in inputs:
        if str(item) == "":
            raise UsageError("an empty path was given as an input (a shell variable that was not set?)")
        if isinstance(item, str | Path) and is_shard(str(item)):
            videos, problems = _shards(str(item), exts, storage_options)
            found.extend(videos)
            unreadable.extend(problems)
            continue
        place = location(item, storage_options) if is_url(item) else Path(item)
        if isinstance(place, Url):
            if _url_is_prefix(place):
                videos = _walk_url(place, exts, glob)
                if not videos:
                    what = f"matching {glob!r} " if glob else ""
                    raise NoVideosError(f"{place}: no video files {what}found (extensions: {' '.join(sorted(exts))})")
                found.extend(videos)
            else:
                files.append((len(found), place))
                found.append(InputVideo(place, PurePath()))
            continue
        root = place
        if root.is_dir():
            videos, problems = _walk(root, exts, glob)
            if not videos and not problems:
                what = f"matching {glob!r} " if glob else ""
                raise NoVideosError(f"{show_path(root)}: no video files {what}found (extensions: {' '.join(sorted(exts))})")
            found.extend(videos)
            unreadable.extend(problems)
        elif root.is_file():
            files.append((len(found), root))
            found.append(InputVideo(root, PurePath()))  # named below, with the other files
        elif root.exists():
            raise UsageError(f"{show_path(root)}: not a regular file or folder")
        else:
            raise UsageError(f"{show_path(root)}: no such file or folder")
    for (index, path), name in zip(files, _file_names([path for _, path in files], under)):
        found[index] = InputVideo(path, name)
    if not found and not unreadable:
        raise NoVideosError("no input videos given")
    return Discovery(found, unreadable)


def _shards(text: str, exts: set[str], storage_options: Mapping[str, Any] | None) -> tuple[list[InputVideo], list[Unreadable]]:
    """The video members of the WebDataset shards ``text`` names (``{00000..00099}`` expanded);
    a shard that cannot be read, or is damaged part-way, is unreadable with its reason."""
    videos: list[InputVideo] = []
    problems: list[Unreadable] = []
    for shard in shard_places(text, storage_options):
        members, problem = scan_shard(shard, exts)
        videos.extend(InputVideo(member, _output_name(name)) for member, name in members)  # type: ignore[arg-type]
        if problem is not None:
            problems.append(Unreadable(shard, problem))  # type: ignore[arg-type]
    return videos, problems


def _url_is_prefix(url: Url) -> bool:
    """Whether ``url`` is a prefix of objects (a folder) rather than one object; what keeps
    it from being read is a :class:`UsageError`, said before any work."""
    try:
        info = stat_url(url)
    except FileNotFoundError:
        raise UsageError(f"{url}: no such object, prefix or bucket") from None
    except PermissionError as exc:
        raise UsageError(f"{url}: access denied ({reason(exc)})") from None
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - a store's client raises its own types: a bad endpoint, a timeout
        raise UsageError(f"{url}: cannot be reached ({reason(exc)})") from None
    return info.get("type") == "directory"


def _walk_url(root: Url, exts: set[str], pattern: str | None) -> list[InputVideo]:
    """The video objects below the prefix ``root``, named by their key below it."""
    videos = []
    try:
        for url, _ in walk_url(root):
            relative = url.relative_to(root)
            name = relative.name
            suffix = name[name.rfind(".") :] if "." in name else ""
            if suffix.lower() not in exts or (pattern is not None and not fnmatch.fnmatch(relative.as_posix(), pattern)):
                continue
            videos.append(InputVideo(url, _output_name(relative.parent / name[: -len(suffix)])))
    except Exception as exc:  # noqa: BLE001 - a store's client raises its own types
        raise UsageError(f"{root}: cannot be listed ({reason(exc)})") from None
    return videos


def _walk(root: Path, exts: set[str], pattern: str | None) -> tuple[list[InputVideo], list[Unreadable]]:
    videos: list[InputVideo] = []
    problems: list[Unreadable] = []
    real: dict[str, str] = {}  # each folder walked, resolved

    def unlistable(error: OSError) -> None:
        problems.append(Unreadable(Path(error.filename or root), f"cannot list folder ({error.strerror or error})"))

    for folder, subfolders, files in os.walk(root, onerror=unlistable, followlinks=True):
        real[folder] = os.path.realpath(folder)
        if _loops(folder, real, str(root)):  # a link back up the tree: once is enough
            subfolders.clear()
            continue
        subfolders.sort()
        for name in files:
            path = Path(folder, name)
            # The extension is the name's last dot on: a file named ".mp4" has one too
            # (pathlib would call it a hidden file without a suffix).
            suffix = name[name.rfind(".") :] if "." in name else ""
            if suffix.lower() not in exts:
                continue
            relative = path.relative_to(root)
            if pattern is not None and not fnmatch.fnmatch(relative.as_posix(), pattern):
                continue
            if path.is_file():
                videos.append(InputVideo(path, _output_name(relative.parent / name[: -len(suffix)])))
            elif path.is_symlink() and not path.exists():
                problems.append(Unreadable(path, "broken symbolic link"))
            else:
                problems.append(Unreadable(path, "not a regular file"))
    videos.sort(key=lambda v: v.path.relative_to(root).as_posix())
    return videos, problems


def _loops(folder: str, real: dict[str, str], root: str) -> bool:
    """Whether ``folder`` resolves to the same folder as one of its ancestors in the walk."""
    ancestor = folder
    while ancestor != root:
        parent = os.path.dirname(ancestor)
        if parent == ancestor:
            break
        ancestor = parent
        if real.get(ancestor) == real[folder]:
            return True
    return False


def read_list_file(path: str | Path) -> list[str]:
    """Paths from a list file, one per line (``-`` reads standard input); blank lines and ``#`` comments skipped.

    Lines are decoded as file names are (UTF-8, other bytes kept as they are), so any
    path the file system holds can be listed.
    """
    try:
        if str(path) == "-":
            data = _read_text_bytes(sys.stdin.buffer, path)
        else:
            with open(path, "rb") as fh:
                data = _read_text_bytes(fh, path)
    except IsADirectoryError:
        raise UsageError(f"{show_path(path)}: is a folder, not a list file") from None
    except OSError as exc:
        raise UsageError(f"{show_path(path)}: cannot read list file ({exc.strerror or exc})") from None
    lines = (os.fsdecode(line).strip() for line in data.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _read_text_bytes(fh: Any, path: str | Path) -> bytes:
    """All of ``fh``, read a block at a time: binary data (``/dev/zero``, a video given by
    mistake) is refused at its first NUL byte instead of being read to the end of memory."""
    blocks = []
    while block := fh.read(1 << 20):
        if b"\0" in block:
            raise UsageError(f"{show_path(path)}: not a text list of paths (it holds NUL bytes)")
        blocks.append(block)
    return b"".join(blocks)


def rank_name(shard: Shard | None, *, claim: bool = False) -> str | None:
    """How a process names its failures log: by rank, or by host and process id when
    processes claim videos without ranks; None for a lone run."""
    if shard is not None:
        return f"rank{shard.rank}"
    if claim:
        return f"{socket.gethostname()}-{os.getpid()}"
    return None


def failures_log_name(shard: Shard | None, *, claim: bool = False, store: bool = False) -> str:
    """Where a run writes its failures under ``--out``. In a ``store``, where an object
    cannot be appended to, each process of each run writes a log of its own."""
    name = rank_name(shard, claim=claim)
    if store:
        name = f"{name or socket.gethostname()}-{os.getpid()}-{time.time_ns() // 1_000_000}"
    return "failures.jsonl" if name is None else f"failures.{name}.jsonl"


def plan_outputs(videos: Sequence[InputVideo], out: str | Path | Url) -> list[Path]:
    """Output base paths (no extension) for ``videos`` under ``out``; collisions are an error.

    The tree below each input folder (and below the common folder of files given one by
    one) is mirrored, so ``a/x.mp4`` and ``b/x.mp4`` never share an output. Two inputs
    that would (``x.mp4`` beside ``x.webm``, or a file also found in a folder input), and a
    subfolder named like the failures log or the run records (``.tdvideo``), are reported
    together before any work starts.
    """
    out = out if isinstance(out, Url) else Path(out)
    owners: dict[Path, list[Path]] = {}
    bases = []
    lines = []
    for video in videos:
        base = out / video.relative
        owners.setdefault(base, []).append(video.path)
        bases.append(base)
        top = video.relative.parts[0]
        if len(video.relative.parts) > 1 and fnmatch.fnmatch(top, "failures*.jsonl"):
            lines.append(f"{show_path(out / top)}: a folder of outputs for {show_path(video.path)}, but also the failures log")
        elif top == RUN_DIR:
            lines.append(f"{show_path(out / top)}: outputs for {show_path(video.path)}, but also the folder of run records")
    clashes = {b: ps for b, ps in owners.items() if len(ps) > 1}
    lines += [f"{show_path(b)}: {', '.join(show_path(p) for p in ps)}" for b, ps in sorted(clashes.items())]
    if lines:
        raise OutputCollisionError(
            f"{len(lines)} output(s) would be written by more than one input; "
            f"rename or process them separately: {'; '.join(lines)}"
        )
    return bases


_WRITE_TEST = ".tdvideo-write-test."


def prepare_output(out: str | Path | Url) -> Path | Url:
    """Create the output folder if needed and check that files can be written in it (in a
    store: that an object can be written there, and removed).

    Raises :class:`UsageError` (before any work) when ``out`` is a file, cannot be
    created, or is not writable, or when its folder of run records is a link out of it.
    """
    if isinstance(out, Url):
        probe = out / f"{_WRITE_TEST}{os.getpid()}-{time.time_ns()}"
        try:
            put_bytes(probe, b"")
            remove_url(probe)
        except (OSError, UsageError) as exc:
            why = reason(exc).removeprefix(f"{probe}: ")  # the probe's name says nothing to the user
            raise UsageError(f"cannot write to {option('out', str(out))}: {why}") from None
        return out
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option('out', show_path(out))} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for leftover in out.glob(f"{_WRITE_TEST}*"):  # of a run killed right here, a while ago
            if leftover.is_file() and not leftover.is_symlink() and time.time() - leftover.stat().st_mtime > 60:
                leftover.unlink(missing_ok=True)
        fd, probe = tempfile.mkstemp(prefix=_WRITE_TEST, dir=out)
        os.close(fd)
        Path(probe).unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write to {option('out', show_path(out))}: {exc.strerror or exc}") from None
    for records in ("plans", "claims"):
        try:
            check_inside(out, out / RUN_DIR / records / "x")
        except OutputError as exc:
            raise UsageError(f"{exc}: tdvideo keeps its run records there; remove it") from None
    return out


@dataclass(frozen=True)
class Shard:
    """This process's share of the videos: those whose output name hashes to ``rank`` mod ``world``."""

    rank: int
    world: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise UsageError(f"shard rank must be in [0, {self.world}), got {self.rank}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Shard | None:
        """From torchrun (``RANK``/``WORLD_SIZE``) or SLURM (``SLURM_PROCID``/``SLURM_NTASKS``); None if alone."""
        for rank_key, world_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
            if rank_key in environ and world_key in environ:
                try:
                    shard = cls(int(environ[rank_key]), int(environ[world_key]))
                except ValueError:
                    raise UsageError(f"{rank_key}={environ[rank_key]!r}, {world_key}={environ[world_key]!r} are not a valid shard") from None
                return shard if shard.world > 1 else None
        return None

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``I/N`` (as ``--shard`` takes it)."""
        rank, _, world = text.partition("/")
        return cls(int(rank), int(world))

    def owns(self, video: InputVideo) -> bool:
        # A stable hash of the output name: every process agrees without talking, and a
        # rerun with the same world size gives each process the same videos.
        digest = hashlib.sha1(video.relative.as_posix().encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.world == self.rank


@dataclass(frozen=True)
class Job:
    """One video of a run, and the output base path (no extension) it goes to."""

    path: Path
    base: Path


@dataclass(frozen=True)
class RunPlan:
    """What a run does: its ``jobs`` (this process's share), inputs it cannot read, where the failures go."""

    jobs: list[Job]
    unreadable: list[Unreadable]
    out: Path
    failures_log: Path
    every_job: list[Job]  # every shard's: what `tdvideo status` counts, whichever ranks ran


def plan_run(
    inputs: Iterable[str | Path],
    *,
    out: str | Path,
    extensions: Iterable[str] | None = None,
    glob: str | None = None,
    shard: Shard | None = None,
    claim: bool = False,
    root: str | Path | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> RunPlan:
    """Discover the inputs and plan their outputs; collisions are checked over all inputs,
    whatever the shard. With ``claim``, ``shard`` only names the process (its logs): every
    video is a candidate, claimed when started."""
    found = discover_videos(inputs, extensions=extensions, glob=glob, root=root, storage_options=storage_options)
    folder = output_folder(out, storage_options)
    bases = plan_outputs(found.videos, folder)
    every = [(v, Job(v.path, base)) for v, base in zip(found.videos, bases)]
    jobs = [job for v, job in every if claim or shard is None or shard.owns(v)]
    failures = folder / failures_log_name(shard, claim=claim, store=isinstance(folder, Url))
    return RunPlan(jobs, found.unreadable, folder, failures, [job for _, job in every])


def output_folder(out: str | Path | Url, storage_options: Mapping[str, Any] | None = None) -> Path | Url:
    """``--out`` as a local folder, or a folder (prefix) in a store reached with ``storage_options``."""
    return location(out, storage_options) if is_url(out) else Path(out)
