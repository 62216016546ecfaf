"""The extraction pipeline on one screen: paths -> decoded uint8 chunks -> (B, T) batches -> model -> writer.

:class:`Extractor` is the library API the CLI is built on::

    extractor = Extractor(model="resnet50", fps=1)
    feats = extractor.extract("clip.mp4")          # in memory
    for result in extractor.run(["videos/"], out="features"):
        print(result.status, result.output)

Decoding starts before the model is built: worker processes (or a thread) decode while
the main process imports torch and builds the model, and a background thread batches
the chunks while the model runs on the previous batch.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import threading
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._files import check_inside
from .._system import available_cpus, available_memory
from .._version import __version__
from ..errors import (
    OutputCollisionError,
    OutputError,
    UnsupportedVideoError,
    UsageError,
    VideoError,
    VideoOpenError,
    option,
    show_path,
)
from ..models._backbone import Backbone, resolve_backbone
from ..sampling import MAX_GRID_ROWS, expected_rows, grid_count, grid_rows
from ..settings import Settings
from ..storage import TIMEOUT_OPTION, TarMember, Url, addressed, is_url, location
from ..video._geometry import MAX_WINDOW_BYTES
from ..video._reader import RawChunk, ReadOptions, read_chunks
from ..writers import (
    FATAL_WRITE_ERRORS,
    Features,
    SourceIdentity,
    Temporaries,
    array_path,
    changed_settings,
    is_finished,
    remove_output,
    write_features,
)
from ._batcher import Batch, Failure, Restart, batches
from ._claims import ClaimQueue, open_claims
from ._collect import Collector, take_rows
from ._inputs import VIDEO_EXTENSIONS, Job, RunPlan, Shard, output_folder, plan_run, prepare_output
from ._loader import Chunk, Decode, DecodePool, Prefetch, StandbyWorkers, decode_in_process, sweep_frame_folders
from ._records import FailuresLog, write_plan
from ._report import DryRun, Recorder, RunSummary, VideoResult, reason_of

if TYPE_CHECKING:
    from torch import nn

    from ..models._preprocessing import Preprocessing
    from ._runner import Runner

__all__ = ["Extractor"]

log = logging.getLogger(__package__)  # the public package: its modules are private

# uint8 frames in one forward pass (and one decoded chunk), whatever the batch size asks:
# with chunks in flight, float conversion and a model's activations a run holds several
# times this. 64 MiB is 440 frames at 224 x 224, more than a GPU needs to be busy.
BATCH_BYTES = 64 * 2**20
# Memory a decoding worker may take: the interpreter, PyAV and FFmpeg's frame buffers,
# with room to spare. Workers beyond what the available memory holds are not started.
WORKER_BYTES = 2**30
# Input that pays for one more decoding process when the count is chosen automatically:
# a worker's start-up costs about what decoding this much H.264 does (benchmarks/RESULTS.md).
BYTES_PER_WORKER = 4 * 2**20
# Batches decoded ahead of the model: enough to keep decoding while torch is imported,
# bounded in bytes whatever the frame size.
_AHEAD = 16
_AHEAD_BYTES = 4 * BATCH_BYTES
# Settings a run may change (the others shape the features, and are the Extractor's).
_RUN_SETTINGS = ("out", "format", "overwrite", "ext", "glob", "root", "shard", "balance", "claim_timeout", "engine", "ray_address")


class Extractor:
    """Extract per-timestep features from videos with a :class:`~tdvideo.TimeDistributed` backbone.

    Takes a :class:`~tdvideo.settings.Settings`, or its fields as keywords
    (``Extractor(model="resnet50", fps=1, batch_size=128)``); every field is described
    there and in ``tdvideo extract --help``. Every value is checked here, before any
    video is touched: a bad one is a :class:`UsageError` naming it.

    ``model`` may also be your own ``nn.Module`` mapping normalized ``(N, 3, H, W)``
    frames to features, with its ``preprocessing`` (a :class:`~tdvideo.Preprocessing`)
    and, for the metadata, a ``model_name`` (default: its class name).

    Decoding workers are fresh interpreters that never import the caller's ``__main__``:
    a script needs no ``if __name__ == "__main__":`` guard.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        /,
        *,
        model: str | nn.Module | None = None,
        preprocessing: Preprocessing | None = None,
        model_name: str | None = None,
        **options: Any,
    ) -> None:
        module = None
        if model is not None and not isinstance(model, str):
            module = model  # your own module: checked by Backbone.from_module
            given = sorted(k for k in ("weights", "pool", "layer") if options.get(k) is not None)
            if given:
                raise UsageError(f"{', '.join(given)} apply to models by name; with model=<an nn.Module>, load weights and cut it before")
            if model_name is not None and not (isinstance(model_name, str) and model_name.strip()):
                raise UsageError(f"model_name must be a non-empty string, got {model_name!r}")
        elif model is not None:
            options["model"] = model
        if module is None and (preprocessing is not None or model_name is not None):
            raise UsageError("preprocessing and model_name go with model=<an nn.Module>; a named model's are its weights' (size=, crop= change them)")
        if settings is None:
            settings = Settings.from_mapping(options, source="Extractor")
        elif options:
            settings = settings.replace(**options)
        self.settings = settings
        if settings.device not in ("auto", "cpu"):
            from ._runner import check_device  # an explicit GPU: torch is needed to check it

            check_device(settings.device)
        if module is not None:
            if preprocessing is None:
                raise UsageError("model=<an nn.Module> needs preprocessing=tdvideo.Preprocessing(size=..., mean=..., std=...)")
            self.backbone: Backbone = Backbone.from_module(module, preprocessing=preprocessing, name=model_name)
        else:
            self.backbone = resolve_backbone(settings.model, weights=settings.weights, pool=settings.pool, layer=settings.layer)
        if settings.fps_rows == "grid" and (settings.fps is None or settings.clip_len is not None or self.backbone.kind == "window"):
            raise UsageError(f"{option('fps_rows', 'grid')} needs {option('fps')}, and rows of frames (not clip windows)")
        # A video model sees windows of the length its weights were evaluated with, unless told.
        self.sampling = settings.sampling(clip_len=self.backbone.clip_len if self.backbone.kind == "window" else None)
        pre = self.backbone.preprocessing
        self.read_options = ReadOptions(
            sampling=self.sampling,
            chunk_frames=settings.batch_size,
            chunk_bytes=BATCH_BYTES,
            size=settings.size if settings.size is not None else pre.size,
            crop=settings.crop if settings.crop is not None else pre.crop,
            interpolation=settings.interpolation or pre.interpolation,
            threads=settings.threads,
            on_error=settings.on_error,
            stream=settings.stream,
        )
        self.size, self.crop = self.read_options.size, self.read_options.crop
        self.interpolation = self.read_options.interpolation
        _check_geometry(self.size, self.crop, self.sampling.clip_len, settings)
        box = self.crop if self.crop is not None else self.size if isinstance(self.size, tuple) else None
        if box is not None and box != self.backbone.preprocessing.input_size:
            self.backbone.fit_input(*((box, box) if isinstance(box, int) else box))
        _warn_if_batch_is_capped(settings.batch_size, self.size, self.crop)
        # As stored in each output's metadata (tuples become lists), for the resume check.
        self._stored = json.loads(json.dumps(self.describe()))
        # The decoding function: a seam for tests (module-level, as it crosses to workers).
        self._decode: Decode = read_chunks
        self._runner: Runner | None = None

    def describe(self) -> dict[str, Any]:
        """Everything that determines the features, as stored in each output's metadata."""
        return {
            **self.backbone.metadata(),
            "sampling": self.sampling.to_dict(),
            "fps_rows": self.settings.fps_rows,
            "stream": self.settings.stream,
            "resize": {"size": self.size, "crop": self.crop, "interpolation": self.interpolation},
            "precision": self.settings.precision,
            "dtype": self.settings.dtype,
        }

    # -- the flow ---------------------------------------------------------------------------

    def run(
        self,
        inputs: Iterable[str | Path],
        *,
        shard: Shard | Literal["auto"] | None = "auto",
        progress: bool | None = None,
        summary: RunSummary | None = None,
        **run_settings: Any,
    ) -> Iterator[VideoResult]:
        """Extract every video under ``inputs``, yielding a result per video as it finishes.

        ``run_settings`` change how this run goes, not the features: ``out``, ``format``,
        ``overwrite``, ``ext``, ``glob``, ``shard``, ``balance``, ``claim_timeout``,
        ``engine`` (``"ray"``: on a Ray cluster, see :mod:`tdvideo.extract._ray`) and
        ``ray_address``. Before any work, inputs are found, outputs planned (collisions are an
        error) and the output folder checked (:class:`UsageError`). Finished outputs of
        the same source and settings are skipped unless ``overwrite``. A failing video
        never stops the run: it yields a ``failed`` result and is appended to the failures
        log; an older output of it that no longer matches its source or these settings is
        removed, so nothing stale looks current. A full disk or a read-only file system
        stops the run with :class:`~tdvideo.OutputError`. The run adds its plan to the
        folder's records (``OUT/.tdvideo/plans/``) and never erases another run's.

        With ``balance="claim"`` a result may also be ``elsewhere``: done (or, with
        ``error`` set, failed) by another process while this one ran.

        ``shard``: with the ``shard`` setting (``"I/N"``), under torchrun/SLURM (``"auto"``
        reads the setting, else the environment) or with an explicit :class:`Shard`, this
        process takes only its share of the videos, and its failures go to
        ``failures.rank{N}.jsonl``; ``None`` takes every video.
        """
        inputs = list(inputs)
        with self._standby(inputs, run_settings) as standby:
            settings, plan = self._plan(inputs, shard, run_settings)
            prepare_output(plan.out)
            if not settings.overwrite:
                self._refuse_changed_settings(plan.jobs, plan.out, settings)
            # Records only grow: this run's plan joins the others', its failures are appended.
            failures = FailuresLog(plan.failures_log, out=plan.out)
            failures.check()
            write_plan(
                plan.out, fmt=settings.format, jobs=[(j.path, j.base) for j in plan.every_job],
                inputs=[str(i) for i in inputs], unreadable=[(u.path, u.reason) for u in plan.unreadable],
            )
            total = len(plan.jobs) + len(plan.unreadable)
            outputs = {job.path: job.base for job in plan.jobs}
            with Recorder(summary or RunSummary(), failures, total=total, progress=progress, outputs=outputs) as record:
                for problem in plan.unreadable:
                    yield record(VideoResult(problem.path, None, "failed", error_type="UnreadableInput", error=problem.reason))
                # Leftovers of interrupted commits are swept as each video is taken: only those
                # whose writer is gone (another process may be committing).
                temporaries = Temporaries()
                if settings.balance == "claim":
                    yield from map(record, self._claimed(plan.jobs, plan.out, settings, temporaries, progress=record.frames, standby=standby))
                    return
                todo: list[Job] = []
                for job in plan.jobs:
                    skipped = self._skip(job, settings, temporaries)
                    if skipped is not None:
                        yield record(skipped)
                    else:
                        todo.append(job)
                log.info("%d video(s): %d to extract, %d finished earlier; model %s", total, len(todo), record.summary.skipped, self.backbone.name)
                record.estimate_frames([job.path for job in todo], self._expected_frames)
                if settings.engine == "ray":
                    from ._ray import ray_features

                    features = ray_features(self, [job.path for job in todo], address=settings.ray_address, progress=record.frames)
                else:
                    features = self._features([job.path for job in todo], progress=record.frames, standby=standby)
                for index, result in features:
                    yield record(self._commit(todo[index], result, settings))

    def _claimed(
        self, jobs: list[Job], out: Path, settings: Settings, temporaries: Temporaries, *, progress: Any, standby: StandbyWorkers
    ) -> Iterator[VideoResult]:
        """Claim mode: each video is claimed as a decoder frees up, and its claim released
        when it is committed; then the videos other processes hold are waited for."""
        claims = open_claims(out, timeout=settings.claim_timeout)
        queue = ClaimQueue(jobs, out, claims, finished=lambda job: self._finished(job, settings), sweep=lambda job: temporaries.remove(job.base))
        try:
            for index, result in self._features(jobs, progress=progress, claims=queue, standby=standby):
                job = queue.claimed[index]
                outcome = self._commit(job, result, settings)
                queue.done_with(job, failed=outcome.status == "failed")
                yield outcome
                yield from self._outcomes(queue, settings)
        finally:
            claims.close()
        yield from self._outcomes(queue, settings)

    def _outcomes(self, queue: ClaimQueue, settings: Settings) -> Iterator[VideoResult]:
        """Videos this process did not extract in claim mode: finished before, or done or
        failed by another process meanwhile (that process logs the failure)."""
        while queue.outcomes:
            other = queue.outcomes.popleft()
            output = array_path(other.job.base, settings.format)
            if other.how == "finished":
                yield VideoResult(other.job.path, output, "skipped")
            elif other.how == "done":
                yield VideoResult(other.job.path, output, "elsewhere")
            else:
                yield VideoResult(other.job.path, None, "elsewhere", error="failed in another process (see its failures log)")

    def dry_run(self, inputs: Iterable[str | Path], *, shard: Shard | Literal["auto"] | None = "auto", **run_settings: Any) -> DryRun:
        """What :meth:`run` would do with the same arguments, without doing it: the videos it
        would extract, skip (finished) and refuse, and why it would stop before any work.
        Each video's header is opened (a file that is no video, or has no video stream, is
        refused). Writes nothing and runs no model."""
        try:
            settings, plan = self._plan(inputs, shard, run_settings)
        except OutputCollisionError as exc:
            return DryRun(stop=str(exc))
        report = DryRun(refused=[(u.path, u.reason) for u in plan.unreadable])
        for job in plan.jobs:
            finished = self._skip(job, settings, None)
            problem = self._header_problem(job.path) if finished is None else None
            if problem is not None:
                report.refused.append((job.path, reason_of(problem)))
            elif finished is None:
                report.todo.append(job.path)
            elif finished.status == "skipped":
                report.skipped.append(job.path)
            else:
                report.refused.append((job.path, finished.error or finished.status))
        if not settings.overwrite:
            try:
                self._refuse_changed_settings(plan.jobs, plan.out, settings)
            except UsageError as exc:
                report.stop = str(exc)
        return report

    def extract(self, path: str | Path | Url | TarMember) -> Features:
        """Features of one video, in memory (no files written): a local file or a URL (see
        :mod:`tdvideo.storage`). Raises the video's error."""
        # In this process unless workers are asked for: one video gains little from a
        # worker, and a script calling this has usually imported torch already.
        workers = 0 if self.settings.workers is None else None
        source = path if isinstance(path, TarMember) else location(path, self._storage_options()) if is_url(path) else Path(path)
        [(_, result)] = list(self._features([source], workers=workers))
        if isinstance(result, BaseException):
            raise result
        return self._on_grid(result, source)

    def _out(self, settings: Settings) -> Path | Url:
        """The output folder: local, or in a store."""
        return output_folder(settings.out, self._storage_options())

    def _storage_options(self) -> dict[str, Any]:
        """What URL inputs take to be reached: the storage options, and the timeout."""
        return {**(self.settings.storage_options or {}), TIMEOUT_OPTION: self.settings.storage_timeout}

    def _expected_frames(self, path: Path) -> int | None:
        """About how many frames of ``path`` the model will see, from its header."""
        from ..video._probe import header_counts

        duration, frames, fps = header_counts(path, stream=self.settings.stream)
        return expected_rows(self.sampling, duration=duration, frames=frames, fps=fps)

    def _header_problem(self, path: Path) -> VideoError | None:
        """Why ``path``'s header alone says it cannot be extracted, or None: it opens no
        video stream, or its rows on a fixed grid would be over the bound (found here,
        before it is decoded)."""
        from ..video._probe import header_counts

        try:
            duration, _, _ = header_counts(path, stream=self.settings.stream)
        except VideoError as exc:
            return exc
        fps = self.sampling.fps
        if self.settings.fps_rows == "grid" and fps is not None and duration is not None and math.isfinite(duration):
            count = grid_count(0.0, 0.0, step=1.0 / fps, end=duration)
            if count > MAX_GRID_ROWS:
                return UnsupportedVideoError(path, _too_many_rows(count, 0.0, duration, fps) + " (from its header)")
        return None

    def _on_grid(self, features: Features, path: Path) -> Features:
        """With ``fps_rows="grid"``: one row per grid point, a repeated frame's row copied
        (not computed again); the metadata keeps each row's frame time as ``frame_pts``.

        The rows are counted before any is made: a video whose grid would hold more than
        :data:`~tdvideo.sampling.MAX_GRID_ROWS` fails with :class:`UnsupportedVideoError`
        (its frames' times, not only its header, decide). Large outputs are assembled in
        a temporary file, as :class:`Collector` does, not in memory."""
        if self.settings.fps_rows != "grid" or len(features.timestamps) == 0:
            return features
        step = 1.0 / float(self.sampling.fps or 1)
        video = features.metadata.get("video") or {}
        ends = [e for e in (self.sampling.end, _end_time(video)) if e is not None]
        end = min(ends) if ends else None
        times = features.timestamps
        count = grid_count(float(times[0]), float(times[-1]), step=step, end=end)
        if count > MAX_GRID_ROWS:
            raise UnsupportedVideoError(path, _too_many_rows(count, float(times[0]), end if end is not None else float(times[-1]), self.sampling.fps))
        grid, rows = grid_rows(times, step=step, end=end)
        metadata = {**features.metadata, "frame_pts": times[rows].tolist()}
        return Features(array=take_rows(features.array, rows), timestamps=grid, metadata=metadata)

    def _features(
        self,
        paths: Sequence[Path] | Sequence[Job],
        progress: Any = None,
        *,
        workers: int | None = None,
        claims: ClaimQueue | None = None,
        standby: StandbyWorkers | None = None,
    ) -> Iterator[tuple[int, Features | BaseException]]:
        """Each video's features (or the error that failed it), in the order they finish;
        decoded in ``workers`` processes (None: :meth:`_worker_count`'s choice), the
        ``standby`` ones first. With ``claims``, ``paths`` are the candidate jobs and the
        videos are claimed as they are started; an index is then a place in ``claims.claimed``."""
        if not paths:
            return
        candidates = [p.path if isinstance(p, Job) else p for p in paths]
        workers = self._worker_count(candidates) if workers is None else workers
        if claims is not None:
            claims.limit = max(1, workers)  # a claim for each video being decoded, none ahead
        videos: Sequence[Path] | Iterator[Path | None] = iter(claims) if claims is not None else candidates
        where = f"in {workers} worker processes" if workers else "in this process"
        log.info("decoding %s%d video(s) %s", "up to " if claims is not None else "", len(candidates), where)
        chunks, stop = self._chunks(videos, workers, standby)
        stream = batches(chunks, batch_size=self.settings.batch_size, max_bytes=BATCH_BYTES)
        # Decoding and batching start now, in a thread (and worker processes) ...
        ahead = Prefetch(stream, depth=_AHEAD, max_bytes=_AHEAD_BYTES, weight=_batch_bytes, on_stop=stop)
        try:
            runner = self._runner_now()  # ... while torch loads and the model is built.
            collector = Collector(
                dtype=self.settings.dtype,
                paths=claims.paths if claims is not None else candidates,
                describe=self._metadata,
                per_window=self.backbone.kind == "window",
            )
            for item in ahead:
                if isinstance(item, (Restart, Failure)):
                    collector.forget(item.index)
                    if isinstance(item, Failure):
                        yield item.index, item.error
                    continue
                features = runner(item)
                if progress is not None:
                    progress.update(item.frame_count)
                yield from collector.add(item, features)
        finally:
            ahead.close()

    # -- the parts --------------------------------------------------------------------------

    def _plan(self, inputs: Iterable[str | Path], shard: Shard | Literal["auto"] | None, run_settings: dict[str, Any]) -> tuple[Settings, RunPlan]:
        """The run's settings and plan: its shard, its videos and their outputs (collisions are an error)."""
        settings = self._for_run(run_settings)
        if shard == "auto":
            shard = Shard.parse(settings.shard) if settings.shard is not None else Shard.from_env()
        if shard is not None and shard.world == 1:
            shard = None  # one share of one: every video, one failures log
        claim = settings.balance == "claim"
        if claim and settings.engine == "ray":
            raise UsageError("balance 'claim' is for processes you launch; the Ray engine balances the work itself")
        plan = plan_run(
            inputs, out=settings.out, extensions=settings.ext, glob=settings.glob, root=settings.root, shard=None if claim else shard, claim=claim,
            storage_options=self._storage_options(),
        )
        return settings, plan

    def _for_run(self, run_settings: dict[str, Any]) -> Settings:
        others = sorted(set(run_settings) - set(_RUN_SETTINGS))
        if others and set(others) <= {f for f in Settings.__dataclass_fields__}:
            raise UsageError(f"{', '.join(others)} shape the features: give them to Extractor(), not run()")
        return self.settings.replace(**run_settings)

    def _refuse_changed_settings(self, jobs: Sequence[Job], out: Path, settings: Settings) -> None:
        """Stop before any work when finished outputs of these very videos were made with
        other settings, or outputs these videos would replace are other files' (another
        run's videos of the same names): features that may have cost GPU hours are never
        replaced silently."""
        differ = 0
        names: Counter[str] = Counter()
        others: list[Job] = []
        for job in jobs:
            changed = changed_settings(job.base, settings.format, source=job.path, settings=self._stored, root=out)
            if changed == ["source"]:
                others.append(job)
                continue
            differ += bool(changed)
            names.update(changed)
        problems = []
        if differ:
            which = ", ".join(f"{name} ({count})" for name, count in sorted(names.items()))
            problems.append(f"{differ} finished output(s) under {show_path(out)} were made with other settings: {which}")
        if others:
            first = others[0]
            problems.append(
                f"{len(others)} finished output(s) under {show_path(out)} are of other source files "
                f"(the first: {show_path(first.base.relative_to(out))}, which {show_path(first.path)} would replace)"
            )
        if problems:
            raise UsageError(f"{'; '.join(problems)}; rerun with {option('overwrite', True)} to replace them, or choose another {option('out', 'DIR')}")

    def _finished(self, job: Job, settings: Settings) -> bool:
        """Whether ``job``'s output is finished for these settings (a source that cannot be
        read is not: extracting it fails, with its reason)."""
        try:
            return not settings.overwrite and is_finished(job.base, settings.format, source=job.path, settings=self._stored, root=self._out(settings))
        except OSError:
            return False

    def _skip(self, job: Job, settings: Settings, temporaries: Temporaries | None) -> VideoResult | None:
        """A result when ``job`` needs no work (finished, or its source unreadable), else None.
        ``temporaries``: sweep the job's leftovers of an interrupted commit first."""
        if temporaries is not None:
            temporaries.remove(job.base)
        if settings.overwrite:
            return None
        try:
            finished = is_finished(job.base, settings.format, source=job.path, settings=self._stored, root=self._out(settings))
        except OSError as exc:
            return VideoResult.failure(job.path, VideoOpenError(job.path, f"cannot read: {exc.strerror or exc}"))
        if not finished:
            problem = self._header_problem(job.path) if self.settings.fps_rows == "grid" else None
            return None if problem is None else VideoResult.failure(job.path, problem)
        log.debug("%s: finished earlier, skipped", show_path(job.path))
        return VideoResult(job.path, array_path(job.base, settings.format), "skipped")

    def _commit(self, job: Job, result: Features | BaseException, settings: Settings) -> VideoResult:
        """Write a video's features; or, for a failure, remove an older output that is now stale.

        What fails this video alone: its own error, a link or FIFO where its output goes,
        running out of memory for its rows. A full disk stops the run (OutputError)."""
        out = self._out(settings)
        try:
            check_inside(out, job.base)  # a linked folder inside OUT leads out of it: nothing written there
            if isinstance(result, BaseException):
                failure = VideoResult.failure(job.path, result)
                if self._remove_stale(job, settings):
                    failure.error = f"{failure.error} (its earlier output, for another source or settings, was removed)"
                return failure
            frames = int(result.metadata.get("frames", result.timestamps.size))  # what the model saw
            result = self._on_grid(result, job.path)
            if isinstance(job.path, TarMember) and job.path.sidecar:
                result.metadata["sidecar"] = dict(job.path.sidecar)  # video2dataset's caption and metadata
            target = write_features(job.base, result, fmt=settings.format)
        except OSError as exc:
            if exc.errno in FATAL_WRITE_ERRORS:
                raise OutputError(
                    f"cannot write to {show_path(settings.out)}: {exc.strerror}; stopped "
                    f"(finished outputs are kept; a rerun goes on from here)"
                ) from exc
            if exc.errno == errno.ENAMETOOLONG:
                exc = OutputError(f"{show_path(job.base)}: its output's name is too long for the file system")
            return VideoResult.failure(job.path, exc)
        except (OutputError, UnsupportedVideoError) as exc:
            return VideoResult.failure(job.path, exc)
        except MemoryError:
            return VideoResult.failure(job.path, UnsupportedVideoError(job.path, "ran out of memory for its features; nothing written"))
        log.info("%s: %d rows -> %s", show_path(job.path), len(result), show_path(target))
        return VideoResult(job.path, target, "done", frames=frames)

    def _remove_stale(self, job: Job, settings: Settings) -> bool:
        """Remove an output at ``job.base`` that is not this video's for these settings; True if removed."""
        try:
            if is_finished(job.base, settings.format, source=job.path, settings=self._stored, root=self._out(settings)):
                return False
        except OSError:
            pass  # the source is gone: whatever is at base no longer describes it
        return remove_output(job.base)

    def _metadata(self, last: RawChunk, source: SourceIdentity, frames: int) -> dict[str, Any]:
        return {
            "tdvideo_version": __version__,
            "source": source.to_dict(),
            **self.describe(),
            "video": last.info.to_dict(),
            "frames": frames,
            "pts_synthesized": last.pts_synthesized,
            "truncated": last.truncated,
            "error": last.error,
        }

    def _runner_now(self) -> Runner:
        if self._runner is None:
            from ._runner import Runner  # torch: imported while the decoders already work

            self._runner = Runner(
                self.backbone, device=self.settings.device, precision=self.settings.precision, compile=self.settings.compile
            )
        return self._runner

    def _chunks(self, paths: Sequence[Path] | Iterator[Path | None], workers: int, standby: StandbyWorkers | None) -> tuple[Iterator[Chunk], Any]:
        """The decoded chunks of ``paths`` (to be consumed in one thread), and how to stop them
        early. ``paths`` may give None: no video for now (claim mode), ask again."""
        if workers == 0:
            sweep_frame_folders()  # of killed runs, as a run with workers does when it starts them
            stop = threading.Event()
            return decode_in_process(paths, self.read_options, self._decode, identify=SourceIdentity.of, stop=stop), stop.set
        # Share the cores out: each worker decodes one video at a time.
        threads = self.settings.threads or max(1, available_cpus() // workers)
        options = replace(self.read_options, threads=threads)
        # A worker reads a store's objects by presigned addresses: no SDK to import and set up.
        pool = DecodePool(
            map(addressed, paths), options, workers=workers, decode=self._decode, identify=SourceIdentity.before_reading, standby=standby
        )
        pool.start()  # the workers decode while this process imports torch
        return pool.chunks(), pool.stop

    def _standby(self, inputs: Sequence[str | Path], run_settings: dict[str, Any]) -> StandbyWorkers:
        """Decoding processes launched before planning, when an input is in a store: listing
        it waits on the network and imports the store's SDK (tenths of a second), time in
        which they import PyAV on the other cores. As many as :meth:`_worker_count` can
        choose for these inputs: a URL that names a video counts one, any other (a prefix,
        shards) and any folder as many as the cores allow. None for local inputs alone, whose
        planning is short, nor for the Ray engine or ``workers=0``."""
        settings = self._for_run(run_settings)
        if settings.engine != "local" or settings.workers == 0 or not any(is_url(i) for i in inputs):
            return StandbyWorkers(0)
        most = min(settings.workers, self._worker_cap()) if settings.workers is not None else min(self._worker_cap(), 8)
        extensions = {f".{e.lower().lstrip('.')}" for e in settings.ext or VIDEO_EXTENSIONS}
        count = 0
        for value in inputs:
            count += 1 if location(value).suffix.lower() in extensions else most
            if count >= most:
                break
        return StandbyWorkers(min(count, most))

    def _worker_cap(self) -> int:
        cpus, memory = available_cpus(), available_memory()
        return min(cpus, max(1, memory // WORKER_BYTES) if memory is not None else cpus)

    def _worker_count(self, paths: Sequence[Path | Url]) -> int:
        cap = self._worker_cap()
        requested = self.settings.workers
        if requested is not None:
            if requested > cap:
                cpus, memory = available_cpus(), available_memory()
                memory_text = f", {memory / 2**30:.1f} GiB of memory available" if memory is not None else ""
                warnings.warn(f"workers {requested} capped at {cap} ({cpus} CPU cores{memory_text})")
            return min(requested, cap, len(paths))
        total = 0
        for p in paths:
            if isinstance(p, (Url, TarMember)):
                # A store's object: one more request to size it would cost more than the
                # choice is worth, and reading it waits on the network, which a worker hides.
                total += BYTES_PER_WORKER
                continue
            try:
                total += p.stat().st_size
            except OSError:
                continue  # it fails when decoded, with its own reason
        # Even one small video is worth one worker: it decodes without waiting for this
        # process's interpreter lock, which importing torch holds most of the time.
        return max(1, min(cap, 8, len(paths), total // BYTES_PER_WORKER))


def _batch_bytes(item: Any) -> int:
    return item.frames.nbytes if isinstance(item, Batch) else 0


def _check_geometry(size: Any, crop: Any, clip_len: int | None, settings: Settings) -> None:
    """A crop that fits the resized frame, and clip windows within their memory limit
    (where the frame size, or its least, is known before decoding)."""
    # A crop or an H x W size is the frame; a short side S makes frames of at least S x S.
    box = crop if crop is not None else size
    if clip_len is not None and box is not None:
        bh, bw = (box, box) if isinstance(box, int) else box
        least = "at least " if crop is None and isinstance(size, int) else ""
        if clip_len * bh * bw * 3 > MAX_WINDOW_BYTES:
            raise UsageError(
                f"clip_len {clip_len} windows of {least}{bh}x{bw} frames would take {least}"
                f"{clip_len * bh * bw * 3 / 2**30:.1f} GiB each (at most {MAX_WINDOW_BYTES / 2**30:.0f} GiB)"
            )
    if crop is None or size is None:
        return
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    # A short-side size S gives frames of at least S x S; an (H, W) size gives exactly that.
    sh, sw = (size, size) if isinstance(size, int) else size
    if ch > sh or cw > sw:
        whose_size = "" if settings.size is not None else " (the model's)"
        whose_crop = "" if settings.crop is not None else " (the model's)"
        size_text = f"short side {size}" if isinstance(size, int) else f"{sh}x{sw}"
        raise UsageError(
            f"crop {ch}x{cw}{whose_crop} does not fit in frames resized to {size_text}{whose_size}; "
            f"give a larger size or a smaller crop"
        )


def _warn_if_batch_is_capped(batch_size: int, size: Any, crop: Any) -> None:
    box = crop or size
    if box is None:
        return
    h, w = (box, box) if isinstance(box, int) else box
    frame = h * w * 3
    if batch_size * frame > BATCH_BYTES:
        what = f"at least {h}x{w}" if isinstance(box, int) and crop is None else f"{h}x{w}"
        warnings.warn(
            f"batch_size {batch_size} would hold {batch_size * frame / 2**30:.1f} GiB of frames of {what}; "
            f"a forward pass holds at most {BATCH_BYTES // 2**20} MiB of frames, and at least one "
            f"({max(1, BATCH_BYTES // frame)} of that size)"
        )


def _too_many_rows(count: int, first: float, end: float, fps: float | None) -> str:
    return (
        f"a row every 1/{fps:g} s from {first:.3f} s to {end:.3f} s would be {count} rows "
        f"(at most {MAX_GRID_ROWS} on a fixed grid); sample with a lower fps, or fps_rows 'distinct'"
    )


def _end_time(video: dict[str, Any]) -> float | None:
    """When the video stream stops being shown, from its probe (start time + duration)."""
    duration = video.get("duration")
    return None if duration is None else float(video.get("start_time") or 0.0) + float(duration)
