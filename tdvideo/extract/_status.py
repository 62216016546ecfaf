"""Where a run stands, over every process that wrote into one output folder.

Each run records its plan (every video, whatever the shard) in ``OUT/.tdvideo/plan.json``;
the outputs themselves say which videos are done, and the failures logs of every process
which failed. A video
is counted once: done if its output is finished, else failed if its last failure record
says so, else not yet done.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError, show_path
from ..writers import RUN_DIR, read_failures, read_metadata, read_plan

__all__ = ["RunStatus", "run_status"]


@dataclass
class RunStatus:
    """Counts over every planned video, and the failures still standing, one per video."""

    out: str
    done: int = 0
    failed: int = 0
    pending: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.done + self.failed + self.pending

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def run_status(out: str | Path) -> RunStatus:
    """The status of the runs that wrote into ``out`` (:class:`UsageError` if none did)."""
    out = Path(out)
    plan = read_plan(out)
    if plan is None:
        raise UsageError(f"{show_path(out)}: no tdvideo run recorded its plan here ({RUN_DIR}/plan.json)")
    videos = {video["output"]: video["source"] for video in plan.get("videos", [])}  # output base -> source
    last_failure = {record.get("path"): record for record in read_failures(out)}
    status = RunStatus(out=str(out))
    for output, source in sorted(videos.items()):
        if read_metadata(out / output) is not None:
            status.done += 1
        elif source in last_failure:
            status.failed += 1
            status.failures.append(last_failure.pop(source))
        else:
            status.pending += 1
    # Inputs that never became a job (an unreadable folder, a broken link) fail on their own.
    planned = set(videos.values())
    status.failures += [r for path, r in last_failure.items() if path not in planned and r.get("error_type") == "UnreadableInput"]
    status.failed += sum(1 for r in status.failures if r.get("error_type") == "UnreadableInput")
    return status
