"""Is a video file as long as its own container structure says?

FFmpeg ends a cut-off file quietly: the demuxer stops at the end of the bytes, and a
file that lost its last tenth decodes "fine" to fewer frames. Most containers declare
their own length, so a cut is visible without decoding anything:

- ISO BMFF (MP4, MOV, 3GP): every top-level box starts with its size;
- Matroska / WebM: the Segment element declares its size (unless written as "unknown");
- RIFF (AVI): each ``RIFF`` chunk declares its size;
- MPEG-TS: a stream of fixed-size packets (188, 192 or 204 bytes); a file that ends
  part-way into one was cut;
- FLV: FFmpeg's muxer writes the file size into the onMetaData script tag.

MPEG-PS and raw streams declare nothing; a cut there shows only in the decoding.

:func:`check_length` reads a few bytes per box or chunk (never the media data) and says
how a file falls short of its declared length, if it does, and whether the file is
known to be whole: its container declares a length and the file holds all of it.
:func:`shortfall` is the first half alone.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..storage import SKIM_BLOCK, Url, location, open_read

__all__ = ["Length", "check_length", "shortfall"]

# Top-level boxes or chunks read at most: bounds the work on a hostile file.
_MAX_ELEMENTS = 1_000_000


@dataclass(frozen=True)
class Length:
    """What a file's container structure says about the file's length."""

    short: str | None = None  # why the file is shorter than its container declares
    # The container declares a length and the file holds all of it. False when the format
    # declares none, or one that a cut can leave intact (MPEG-TS: a cut between two
    # packets leaves whole packets), or the file cannot be read.
    whole: bool = False


def check_length(path: str | Path | Url, format_name: str) -> Length:
    """Whether ``path`` is shorter than its container declares, or known to be whole.

    ``format_name`` is FFmpeg's demuxer name (``container.format.name``).
    """
    names = set(format_name.split(","))
    try:
        # Headers only: a few bytes per box or chunk, jumping through the file.
        with open_read(location(path), block_size=SKIM_BLOCK) as fh:
            size = fh.seek(0, os.SEEK_END)
            if names & {"mov", "mp4"}:
                declared = _isobmff_end(fh, size)
            elif "matroska" in names or "webm" in names:
                declared = _matroska_end(fh, size)
            elif "avi" in names:
                declared = _riff_end(fh, size)
            elif "mpegts" in names:
                return Length(short=_mpegts_shortfall(fh, size))
            elif "flv" in names:
                declared = _flv_filesize(fh)
            else:
                return Length()
    except OSError:
        return Length()  # reading the file itself fails later, with its own message
    if declared is None:
        return Length()
    if declared > size:
        return Length(short=f"file is cut short: {size} bytes of the {declared} its container declares (truncated file?)")
    return Length(whole=True)


def shortfall(path: str | Path | Url, format_name: str) -> str | None:
    """Why ``path`` is shorter than its container declares, or None if it is not (or cannot tell).

    ``format_name`` is FFmpeg's demuxer name (``container.format.name``).
    """
    return check_length(path, format_name).short


def _isobmff_end(fh: BinaryIO, size: int) -> int | None:
    """Where the last top-level box says it ends."""
    offset = 0
    for _ in range(_MAX_ELEMENTS):
        if offset + 8 > size:
            # A box header itself cut off counts as a box that would need 8 bytes.
            return offset + 8 if offset < size else None
        fh.seek(offset)
        box_size, _box_type = struct.unpack(">I4s", fh.read(8))
        if box_size == 1:
            large = fh.read(8)
            if len(large) < 8:
                return offset + 16
            box_size = struct.unpack(">Q", large)[0]
        elif box_size == 0:
            return None  # "extends to the end of the file"
        if box_size < 8:
            return None  # not a box structure we can follow; the demuxer will judge
        offset += box_size
        if offset >= size:
            return offset
    return None


# In FLV's onMetaData (AMF0): the key "filesize" (length-prefixed), then a number (type
# 0, a big-endian double). FFmpeg's muxer fills it in when it finishes the file.
_FLV_FILESIZE = b"\x00\x08filesize\x00"


def _flv_filesize(fh: BinaryIO) -> int | None:
    """The file size an FLV's metadata declares, if it declares one."""
    fh.seek(0)
    head = fh.read(64 * 1024)
    if not head.startswith(b"FLV"):
        return None
    at = head.find(_FLV_FILESIZE)
    if at < 0 or at + len(_FLV_FILESIZE) + 8 > len(head):
        return None
    (value,) = struct.unpack(">d", head[at + len(_FLV_FILESIZE) : at + len(_FLV_FILESIZE) + 8])
    return int(value) if value > 0 and value.is_integer() else None


def _read_vint(fh: BinaryIO, *, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer: (value, its length in bytes); None at EOF or if invalid.

    Element IDs keep their length marker bit (``keep_marker``); sizes do not. A size whose
    value bits are all ones means "unknown", returned as -1.
    """
    first = fh.read(1)
    if not first:
        return None
    byte = first[0]
    length = 1
    mask = 0x80
    while length <= 8 and not byte & mask:
        length += 1
        mask >>= 1
    if length > 8:
        return None
    rest = fh.read(length - 1)
    if len(rest) < length - 1:
        return None
    value = byte if keep_marker else byte & (mask - 1)
    for b in rest:
        value = (value << 8) | b
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return -1, length
    return value, length


_EBML_HEADER = 0x1A45DFA3
_SEGMENT = 0x18538067


def _matroska_end(fh: BinaryIO, size: int) -> int | None:
    """Where the first Segment says it ends (None for an unknown-size segment)."""
    fh.seek(0)
    offset = 0
    for _ in range(16):  # the EBML header, maybe Void elements, then the Segment
        element = _read_vint(fh, keep_marker=True)
        length = _read_vint(fh, keep_marker=False)
        if element is None or length is None:
            return None
        data_start = offset + element[1] + length[1]
        if element[0] == _SEGMENT:
            return None if length[0] < 0 else data_start + length[0]
        if length[0] < 0:
            return None
        offset = data_start + length[0]
        fh.seek(offset)
    return None


def _riff_end(fh: BinaryIO, size: int) -> int | None:
    """Where the last RIFF chunk (OpenDML files have several) says it ends."""
    offset = 0
    for _ in range(_MAX_ELEMENTS):
        fh.seek(offset)
        header = fh.read(8)
        if len(header) < 8:
            return offset + 8 if header else None
        tag, chunk_size = struct.unpack("<4sI", header)
        if tag != b"RIFF":
            return None if offset == 0 else offset  # trailing bytes that are no chunk: leave them
        offset += 8 + chunk_size + (chunk_size & 1)
        if offset >= size:
            return offset
    return None


_TS_SYNC = 0x47
# (packet size, offset of the sync byte in it): plain TS, M2TS with its 4-byte
# timestamp first, and TS with 16 bytes of FEC after each packet.
_TS_LAYOUTS = ((188, 0), (192, 4), (204, 0))


def _mpegts_shortfall(fh: BinaryIO, size: int) -> str | None:
    """Whether the file ends part-way into a transport packet."""
    fh.seek(0)
    head = fh.read(5 * 204)
    for packet, sync_at in _TS_LAYOUTS:
        # Find the first sync byte from which the packets line up: a capture may start
        # part-way into a packet, and the demuxer skips to the first whole one too.
        for first_sync in range(packet):
            if all(head[first_sync + k * packet] == _TS_SYNC for k in range(4) if first_sync + k * packet < len(head)):
                if first_sync + 3 * packet >= len(head):
                    break  # too short to tell
                tail = (size - (first_sync - sync_at)) % packet
                if tail == 0:
                    return None
                return f"file ends {tail} bytes into a {packet}-byte transport packet (cut off part-way)"
    return None
