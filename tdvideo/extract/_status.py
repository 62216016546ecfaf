"""Where the runs that wrote into one output folder stand, over every process and every run.

Each run records its plan (every video, whatever the shard) under ``OUT/.tdvideo/plans/``
and its failures in ``OUT/failures*.jsonl`` (see :mod:`._records`); the outputs themselves
say which videos are done. Of two plans made from the same inputs the newer counts; plans
of other inputs add up. A video (an output name) is counted once: done if its output is
finished, else failed if a failure of it is recorded, else not yet done. Inputs a plan
could not read count as failed. Two plans that send different sources to one output are
reported, naming the plans.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError, show_path
from ..storage import Url, is_url, location
from ..writers import RUN_DIR, read_metadata
from ._records import Plan, read_records

__all__ = ["RunStatus", "run_status"]


@dataclass
class RunStatus:
    """Counts over every planned video, the failures still standing (one per video), the
    plans counted, outputs that plans disagree on, and records that could not be read."""

    out: str
    done: int = 0
    failed: int = 0
    pending: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.done + self.failed + self.pending

    @property
    def complete(self) -> bool:
        """Every planned video done, no output claimed by two sources, every record read:
        nothing claimed beyond the truth."""
        return not (self.failed or self.pending or self.conflicts or self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def run_status(out: str | Path | Url) -> RunStatus:
    """The status of the runs that wrote into ``out`` (:class:`UsageError` if none did)."""
    out = location(out) if is_url(out) else Path(out)
    records = read_records(out)
    if not records.plans and not records.problems:
        raise UsageError(f"{show_path(out)}: no tdvideo run recorded its plan here ({RUN_DIR}/plans/)")
    newest: dict[str, Plan] = {}
    for plan in records.plans:
        kept = newest.get(plan.inputs_key)
        if kept is None or (plan.created or 0.0) > (kept.created or 0.0):
            newest[plan.inputs_key] = plan
    plans = sorted(newest.values(), key=lambda p: (p.created or 0.0, p.name))
    status = RunStatus(out=str(out), plans=[plan.describe() for plan in plans], problems=records.problems)
    planned: dict[str, dict[str, list[str]]] = {}  # output -> source -> the plans that say so
    unreadable: dict[str, str] = {}
    for plan in plans:
        unreadable.update(plan.unreadable)
        for output, source in plan.videos.items():
            planned.setdefault(output, {}).setdefault(source, []).append(plan.describe())
    by_output = {r["output"]: r for r in records.failures.values() if isinstance(r.get("output"), str)}
    for output, sources in sorted(planned.items()):
        if len(sources) > 1:
            status.conflicts.append(
                f"{show_path(out / output)}: planned from "
                + " and from ".join(f"{show_path(src)} ({'; '.join(plans)})" for src, plans in sorted(sources.items()))
            )
        if read_metadata(out / output, root=out) is not None:
            status.done += 1
            continue
        failure = by_output.get(output) or next((records.failures[s] for s in sorted(sources) if s in records.failures), None)
        if failure is not None:
            status.failed += 1
            status.failures.append(failure)
        else:
            status.pending += 1
    # Inputs that never became a job (an unreadable folder, a broken link) fail on their own.
    for path, reason in sorted(unreadable.items()):
        status.failures.append({"path": path, "error_type": "UnreadableInput", "message": reason})
        status.failed += 1
    return status
