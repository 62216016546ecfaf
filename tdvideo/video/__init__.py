"""Decoding and probing: video files to uint8 frames with exact timestamps.

``probe`` reads a header; ``iter_video``/``read_video`` decode to torch tensors;
``read_chunks(path, ReadOptions(...))`` decodes to NumPy (what decoding workers use, without importing torch).
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
    from ._reader import OnError, RawChunk, ReadOptions, read_chunks

# Each module and the public names it defines.
_MODULES = {
    "_api": ("VideoClip", "iter_video", "read_video"),
    "_geometry": ("CODED_LIMIT", "INTERPOLATIONS", "MAX_WINDOW_BYTES", "OUTPUT_LIMIT", "FrameLimit", "check_size", "resolve_size"),
    "_probe": ("VideoInfo", "file_kind", "probe"),
    "_reader": ("OnError", "RawChunk", "ReadOptions", "read_chunks"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _MODULES, globals())
