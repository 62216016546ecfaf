"""tdvideo: per-timestep video features with a reference ``TimeDistributed`` for PyTorch.

The public API, top to bottom of the data flow::

    info = tdvideo.probe("clip.mp4")
    clip = tdvideo.read_video("clip.mp4", fps=2, size=224)        # uint8 (T, C, H, W)
    backbone = tdvideo.build_backbone("colorhist")
    feats = tdvideo.Extractor(model="colorhist", fps=2).extract("clip.mp4")
"""

from ._version import __version__
from .backbones import Backbone, Preprocessing, build_backbone, list_models
from .decode import VideoClip, VideoInfo, iter_video, probe, read_video
from .errors import (
    DecodeError,
    EmptyVideoError,
    ModelError,
    NoVideosError,
    NoVideoStreamError,
    OutputCollisionError,
    TdvideoError,
    UsageError,
    VideoError,
    VideoOpenError,
    WeightsError,
)
from .pipeline import Extractor, VideoResult
from .sampling import Sampling
from .timedistributed import TimeDistributed
from .writers import Features, load

__all__ = [
    "Backbone",
    "DecodeError",
    "EmptyVideoError",
    "Extractor",
    "Features",
    "ModelError",
    "NoVideoStreamError",
    "NoVideosError",
    "OutputCollisionError",
    "Preprocessing",
    "Sampling",
    "TdvideoError",
    "TimeDistributed",
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
