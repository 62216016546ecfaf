"""Decoding and probing: video files to uint8 frames with exact timestamps.

``probe`` reads a header; ``iter_video``/``read_video`` decode to torch tensors;
``read_chunks`` decodes to NumPy (what decoding workers use, without importing torch).
The (internal) modules, in the order a frame passes through them: ``_probe`` (open,
header), ``_index`` (keyframes, when a seek pays), ``_reader`` (the decoding state),
``_geometry`` (resize, rotate, crop), ``_integrity`` (declared lengths), ``_api`` (torch
tensors). Their public names are re-exported here.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._api import VideoClip, iter_video, read_video
    from ._geometry import CODED_LIMIT, INTERPOLATIONS, MAX_WINDOW_BYTES, OUTPUT_LIMIT, FrameLimit, check_size, resolve_size
    from ._probe import VideoInfo, file_kind, probe
    from ._reader import OnError, RawChunk, read_chunks

_NAMES = {
    "VideoClip": "_api",
    "iter_video": "_api",
    "read_video": "_api",
    "CODED_LIMIT": "_geometry",
    "INTERPOLATIONS": "_geometry",
    "MAX_WINDOW_BYTES": "_geometry",
    "OUTPUT_LIMIT": "_geometry",
    "FrameLimit": "_geometry",
    "check_size": "_geometry",
    "resolve_size": "_geometry",
    "VideoInfo": "_probe",
    "file_kind": "_probe",
    "probe": "_probe",
    "OnError": "_reader",
    "RawChunk": "_reader",
    "read_chunks": "_reader",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES, globals())
__all__ = sorted(_NAMES)
