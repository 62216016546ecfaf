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

from . import errors
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
    from .export import export_parquet, load_dir
    from .extract import Extractor, VideoResult
    from .models import Backbone, Preprocessing, build_backbone, list_models
    from .moments import Moment, search
    from .sampling import Sampling
    from .settings import Settings
    from .show import plot
    from .timedistributed import TimeDistributed
    from .video import VideoClip, VideoInfo, iter_video, probe, read_video
    from .writers import Features, load

# Each module and the public names it defines.
_MODULES = {
    "models": ("Backbone", "Preprocessing", "build_backbone", "list_models"),
    "video": ("VideoClip", "VideoInfo", "iter_video", "probe", "read_video"),
    "extract": ("Extractor", "VideoResult"),
    "sampling": ("Sampling",),
    "settings": ("Settings",),
    "timedistributed": ("TimeDistributed",),
    "writers": ("Features", "load"),
    "export": ("export_parquet", "load_dir"),
    "show": ("plot",),
    "moments": ("Moment", "search"),
}
__getattr__, __dir__, _LAZY = lazy_exports(__name__, _MODULES, globals())

__all__ = sorted([*_LAZY, *(name for name in errors.__all__ if name.endswith("Error")), "__version__"])
