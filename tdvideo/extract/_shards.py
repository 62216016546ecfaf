"""WebDataset shards as inputs: tar archives whose members are videos, with their sidecars.

``shards/{00000..00099}.tar`` is expanded as WebDataset (braceexpand) expands it; each shard,
a local file or a store's object, is read once for its members' headers (the media are
skipped over, never read here). A member whose extension is a video's is a video: decoded
later straight from the shard's bytes (:class:`~tdvideo.storage.TarMember`), named
``SHARD/KEY`` below ``--out`` (``00042/000000123``). The members sharing its key with the
extensions ``json`` and ``txt`` (video2dataset's metadata and caption) are its sidecar, kept
in its output's metadata. A shard that cannot be read, or is damaged part-way, is named with
its reason; the members before the damage are still videos.
"""

from __future__ import annotations

import json
import re
import stat
import tarfile
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from .._system import file_kind
from ..errors import UsageError, show_path
from ..storage import TarMember, Url, is_url, location, open_read, reason

__all__ = ["expand_braces", "is_shard", "scan_shard"]

_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}|\{([^{}]*,[^{}]*)\}")
# More shards than any dataset has: a typo in a range must not make a list of billions.
MAX_SHARDS = 1_000_000
# A sidecar is a caption or a small JSON record; a larger member is not read into memory.
MAX_SIDECAR_BYTES = 1 << 20
_SIDECARS = ("json", "txt")


def expand_braces(text: str) -> list[str]:
    """``text`` with each ``{A..B}`` (numbers, zero-padded to A's width when A and B are
    equally wide) and ``{x,y}`` expanded, as WebDataset's shard lists are."""
    match = _BRACES.search(text)
    if match is None:
        return [text]
    head, tail = text[: match.start()], text[match.end() :]
    if match.group(1) is not None:
        first, last = match.group(1), match.group(2)
        start, stop = int(first), int(last)
        if stop < start or stop - start >= MAX_SHARDS:
            raise UsageError(f"{text!r}: the range {{{first}..{last}}} must count up, to at most {MAX_SHARDS} shards")
        width = len(first) if len(first) == len(last) else 0
        choices = [str(n).zfill(width) for n in range(start, stop + 1)]
    else:
        choices = match.group(3).split(",")
    expanded = [item for choice in choices for item in expand_braces(head + choice + tail)]
    if len(expanded) > MAX_SHARDS:
        raise UsageError(f"{text!r} expands to more than {MAX_SHARDS} shards")
    return expanded


def is_shard(text: str) -> bool:
    """Whether an input names WebDataset shards: a ``.tar`` path or URL, braces allowed."""
    name = str(text).split("?", 1)[0]
    return name.endswith(".tar")


def scan_shard(shard: Path | Url, extensions: set[str]) -> tuple[list[tuple[TarMember, PurePath]], str | None]:
    """The video members of ``shard`` with their output names (``SHARD/KEY``), and why the
    shard could not be read to its end (None when it could). A shard that is not there, or
    may not be read, is a :class:`UsageError`."""
    stem = shard.name[: -len(".tar")] if shard.name.endswith(".tar") else shard.stem
    members: dict[str, dict[str, tarfile.TarInfo]] = {}  # key -> extension -> member
    order: list[str] = []
    problem = None
    sidecars: dict[str, dict[str, Any]] = {}
    try:
        if isinstance(shard, Path) and not stat.S_ISREG(mode := shard.stat().st_mode):
            return [], f"not a regular file (a {file_kind(mode)})"  # a FIFO would block the open
        opened = open_read(shard)
    except FileNotFoundError:  # a shard not there is a wrong input, as a missing video is
        raise UsageError(f"{show_path(shard)}: no such {'object' if isinstance(shard, Url) else 'file'}") from None
    except PermissionError as exc:
        raise UsageError(f"{show_path(shard)}: access denied ({reason(exc)})") from None
    except OSError as exc:
        return [], f"cannot read ({reason(exc).removeprefix(f'{shard}: ')})"
    try:
        with opened as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
            size = fh.seek(0, 2)
            fh.seek(tar.offset)
            try:
                for info in tar:
                    if not info.isfile():
                        continue
                    folder, _, base = info.name.rpartition("/")
                    key, dot, ext = base.partition(".")
                    if not dot or not key:
                        continue
                    key = f"{folder}/{key}" if folder else key
                    if key not in members:
                        members[key] = {}
                        order.append(key)
                    members[key][ext.lower()] = info
                    if ext.lower() in _SIDECARS and info.size <= MAX_SIDECAR_BYTES:
                        extracted = tar.extractfile(info)
                        if extracted is not None:
                            sidecars.setdefault(key, {})[ext.lower()] = _sidecar(ext.lower(), extracted.read())
            except (tarfile.TarError, OSError, EOFError) as exc:
                problem = f"a damaged tar archive after {len(order)} key(s) ({reason(exc)})"
    except (tarfile.TarError, OSError, EOFError) as exc:
        return [], f"not a tar archive that can be read ({reason(exc)})"
    videos = []
    for key in order:
        for ext, info in members[key].items():
            if info.offset_data + info.size > size:  # tarfile reads headers only: a cut shows here
                # More telling than tarfile's "unexpected end of data": which member, and where.
                problem = f"cut short: {info.name} ends at byte {info.offset_data + info.size} of {size}"
                continue
            if f".{ext.rsplit('.', 1)[-1]}" in extensions:
                member = TarMember(shard, info.name, info.offset_data, info.size, sidecars.get(key, {}))
                videos.append((member, PurePath(stem, *key.split("/"))))
                break  # one video a key: WebDataset's sample
    return videos, problem


def _sidecar(ext: str, data: bytes) -> Any:
    text = data.decode("utf-8", "replace")
    if ext == "json":
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return text  # kept as the text it is
    return text


def shard_places(text: str, storage_options: Mapping[str, Any] | None) -> list[Path | Url]:
    """The shards an input names (braces expanded), as paths or URLs."""
    return [location(item, storage_options) if is_url(item) else Path(item) for item in expand_braces(text)]
