"""tdvideo: per-timestep video features with a reference ``TimeDistributed`` for PyTorch.

The public API, top to bottom of the data flow::

    info = tdvideo.probe("clip.mp4")
    clip = tdvideo.read_video("clip.mp4", fps=2, size=224)        # uint8 (T, C, H, W)
    backbone = tdvideo.build_backbone("colorhist")
    feats = tdvideo.Extractor(model="colorhist", fps=2).extract("clip.mp4")
    settings = tdvideo.Settings.from_toml("configs/clips.toml")  # what the CLI's --config reads

Names are imported when first used (PEP 562), so ``import tdvideo`` and the command
line start without importing torch until they need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
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
    from .extract import Extractor, VideoResult
    from .models import Backbone, Preprocessing, build_backbone, list_models
    from .sampling import Sampling
    from .settings import Settings
    from .timedistributed import TimeDistributed
    from .video import VideoClip, VideoInfo, iter_video, probe, read_video
    from .writers import Features, load

# Public name -> the module that defines it.
_NAMES: dict[str, str] = {
    "Backbone": "models",
    "Preprocessing": "models",
    "build_backbone": "models",
    "list_models": "models",
    "VideoClip": "video",
    "VideoInfo": "video",
    "iter_video": "video",
    "probe": "video",
    "read_video": "video",
    "Extractor": "extract",
    "VideoResult": "extract",
    "Sampling": "sampling",
    "Settings": "settings",
    "TimeDistributed": "timedistributed",
    "Features": "writers",
    "load": "writers",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES, globals())

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
    "Settings",
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
