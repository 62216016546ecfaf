"""tdvideo: per-timestep video features with a reference ``TimeDistributed`` for PyTorch.

The public API, top to bottom of the data flow::

    info = tdvideo.probe("clip.mp4")
    clip = tdvideo.read_video("clip.mp4", fps=2, size=224)        # uint8 (T, C, H, W)
    backbone = tdvideo.build_backbone("colorhist")
    feats = tdvideo.Extractor(model="colorhist", fps=2).extract("clip.mp4")

Names are imported when first used (PEP 562), so ``import tdvideo`` and the command
line start without importing torch until they need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    DecodeError,
    DecoderCrashError,
    EmptyVideoError,
    ModelError,
    NoVideosError,
    NoVideoStreamError,
    OutputCollisionError,
    OutputError,
    TdvideoError,
    UnsupportedVideoError,
    UsageError,
    VideoError,
    VideoOpenError,
    WeightsError,
)

if TYPE_CHECKING:
    from .backbones import Backbone, Preprocessing, build_backbone, list_models
    from .decode import VideoClip, VideoInfo, iter_video, probe, read_video
    from .pipeline import Extractor, VideoResult
    from .sampling import Sampling
    from .timedistributed import TimeDistributed
    from .writers import Features, load

# Public name -> the module that defines it.
_LAZY: dict[str, str] = {
    "Backbone": "backbones",
    "Preprocessing": "backbones",
    "build_backbone": "backbones",
    "list_models": "backbones",
    "VideoClip": "decode",
    "VideoInfo": "decode",
    "iter_video": "decode",
    "probe": "decode",
    "read_video": "decode",
    "Extractor": "pipeline",
    "VideoResult": "pipeline",
    "Sampling": "sampling",
    "TimeDistributed": "timedistributed",
    "Features": "writers",
    "load": "writers",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tdvideo' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "Backbone",
    "DecodeError",
    "DecoderCrashError",
    "EmptyVideoError",
    "Extractor",
    "Features",
    "ModelError",
    "NoVideoStreamError",
    "NoVideosError",
    "OutputCollisionError",
    "OutputError",
    "Preprocessing",
    "Sampling",
    "TdvideoError",
    "TimeDistributed",
    "UnsupportedVideoError",
    "UsageError",
    "VideoClip",
    "VideoError",
    "VideoInfo",
    "VideoOpenError",
    "VideoResult",
    "WeightsError",
    "__version__",
    "build_backbone",
    "iter_video",
    "list_models",
    "load",
    "probe",
    "read_video",
]
