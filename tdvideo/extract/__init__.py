"""Extraction, in the order of the data flow.

``_inputs`` (which videos, which outputs, which shard), ``_loader`` (decoding in worker
processes), ``_batcher`` ((B, T) batches with lengths), ``_runner`` (the model on its
device), ``_collect`` (rows back into videos), ``_report`` (results, summary, progress),
``_extractor`` (:class:`Extractor`: the flow on one screen), ``_status`` (where the runs
writing into one output folder stand). The modules are internal;
their public names are re-exported here.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._extractor import Extractor
    from ._inputs import VIDEO_EXTENSIONS, Discovery, InputVideo, Shard, Unreadable, discover_videos, plan_outputs, read_list_file
    from ._report import DryRun, RunSummary, VideoResult
    from ._runner import resolve_device
    from ._shards import is_shard
    from ._status import RunStatus, run_status

# Each module and the public names it defines.
_MODULES = {
    "_extractor": ("Extractor",),
    "_inputs": ("VIDEO_EXTENSIONS", "Discovery", "InputVideo", "Shard", "Unreadable", "discover_videos", "plan_outputs", "read_list_file"),
    "_report": ("DryRun", "RunSummary", "VideoResult"),
    "_runner": ("resolve_device",),
    "_shards": ("is_shard",),
    "_status": ("RunStatus", "run_status"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _MODULES, globals())
