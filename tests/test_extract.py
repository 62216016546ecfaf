"""The extraction pipeline: formats, resume, failures, (B, T) batches, workers, the Python API."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tdvideo
from tdvideo import Extractor
from tdvideo.cli import app
from tdvideo.errors import NoVideosError, OutputCollisionError, UsageError
from tdvideo.extract import RunSummary, Shard, VideoResult, discover_videos, plan_outputs, resolve_device
from tdvideo.video import read_chunks

from .conftest import Clip, video_tree


@pytest.fixture()
def folder(clips: dict[str, Clip], tmp_path: Path) -> Path:
    files = {"a/x.mp4": clips["h264"].path, "b/x.webm": clips["vp9"].path, "one.mp4": clips["one"].path}
    return video_tree(tmp_path / "videos", files)


@pytest.mark.parametrize("fmt", ["npy", "npz", "pt"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_load_round_trips_each_format(clips: dict[str, Clip], tmp_path: Path, fmt: str, dtype: str) -> None:
    extractor = Extractor(dtype=dtype, fps=10)
    [result] = list(extractor.run([clips["h264"].path], out=tmp_path, format=fmt, progress=False))
    assert result.status == "done" and result.output == tmp_path / f"idx.{fmt}"
    loaded = tdvideo.load(result.output)
    direct = extractor.extract(clips["h264"].path)
    np.testing.assert_array_equal(loaded.array, direct.array)
    np.testing.assert_array_equal(loaded.timestamps, direct.timestamps)
    assert loaded.array.dtype == np.dtype(dtype)
    assert loaded.metadata["format"] == fmt and loaded.metadata["sampling"] == {"fps": 10}
    assert tdvideo.load(tmp_path / "idx.json").array.shape == loaded.array.shape
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".tdvideo"], "temporary files left behind"


def test_extract_equals_the_cli_output(clips: dict[str, Clip], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["extract", str(clips["mpeg4"].path), "-o", str(tmp_path), "-q", "--stride", "2"])
    assert result.exit_code == 0, result.output
    cli = tdvideo.load(tmp_path / "idx.npy")
    api = Extractor(stride=2).extract(clips["mpeg4"].path)
    np.testing.assert_array_equal(cli.array, api.array)
    np.testing.assert_array_equal(cli.timestamps, api.timestamps)
    assert {k: v for k, v in cli.metadata.items() if k not in ("format", "file", "file_bytes", "file_mtime_ns", "file_sha256", "shape", "timestamps")} == json.loads(
        json.dumps(api.metadata)
    )


def test_features_change_at_scene_cuts() -> None:
    sample = Path(__file__).resolve().parents[1] / "sample_videos" / "h264_scenes.mp4"
    feats = Extractor().extract(sample)
    jumps = np.abs(np.diff(feats.array, axis=0)).sum(axis=1)
    cuts = sorted(np.argsort(jumps)[-3:] + 1)
    assert cuts == [24, 48, 72]  # a new scene every second at 24 fps


def test_rerun_skips_finished_and_recomputes_what_changed(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = list(Extractor().run([folder], out=out, progress=False))
    assert [r.status for r in first] == ["done", "done", "done"]
    assert [r.output.relative_to(out).as_posix() for r in first] == ["a/x.npy", "b/x.npy", "one.npy"]
    again = list(Extractor().run([folder], out=out, progress=False))
    assert [r.status for r in again] == ["skipped"] * 3
    # A changed source is recomputed, the others are not.
    os.utime(folder / "one.mp4", (1_000_000_000, 1_000_000_000))
    changed = list(Extractor().run([folder], out=out, progress=False))
    assert [r.status for r in changed] == ["skipped", "skipped", "done"]
    # Another model or sampling: the run stops before any work, and says what differs.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    with pytest.raises(UsageError, match=r"^3 finished output\(s\) under .* were made with other settings: .*model \(3\).*; rerun with overwrite=True to replace them, or choose another out=DIR$"):
        list(Extractor(model="thumbnail").run([folder], out=out, progress=False))
    with pytest.raises(UsageError, match=r"sampling \(3\)"):
        list(Extractor(fps=5).run([folder], out=out, progress=False))
    with pytest.raises(UsageError, match=r"format \(3\)"):
        list(Extractor().run([folder], out=out, format="npz", progress=False))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == before  # nothing touched
    assert {r.status for r in Extractor(model="thumbnail", fps=5).run([folder], out=out, progress=False, overwrite=True)} == {"done"}
    assert tdvideo.load(out / "one.npy").metadata["model"] == "thumbnail"
    assert {r.status for r in Extractor(model="thumbnail", fps=5).run([folder], out=tmp_path / "other", progress=False)} == {"done"}


def test_a_bad_video_does_not_stop_the_run(folder: Path, broken: dict[str, Path], tmp_path: Path) -> None:
    shutil.copy(broken["corrupt"], folder / "a" / "bad.mkv")
    shutil.copy(broken["empty"], folder / "empty.mp4")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["extract", str(folder), "-o", str(out)])
    assert result.exit_code == 1
    assert "3 done, 0 skipped, 2 failed" in result.stderr
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(Path(f["path"]).name, f["error_type"]) for f in failures] == [("bad.mkv", "DecodeError"), ("empty.mp4", "VideoOpenError")]
    assert "corrupt frame" in failures[0]["message"]
    assert sorted(p.name for p in out.rglob("*.npy")) == ["one.npy", "x.npy", "x.npy"]
    assert not (out / "a" / "bad.json").exists() and not (out / "a" / "bad.npy").exists()


def test_keep_records_truncation_in_metadata(broken: dict[str, Path], tmp_path: Path) -> None:
    [result] = list(Extractor(on_error="keep").run([broken["truncated"]], out=tmp_path, progress=False))
    assert result.status == "done"
    meta = tdvideo.load(result.output).metadata
    assert meta["truncated"] is True and "truncated" in meta["error"]


def test_clip_windows_give_b_l_d(clips: dict[str, Clip], tmp_path: Path) -> None:
    feats = Extractor(clip_len=8, clip_stride=4, batch_size=16).extract(clips["h264"].path)
    assert feats.array.shape == (14, 8, 48) and feats.timestamps.shape == (14, 8)
    np.testing.assert_allclose(feats.timestamps[1], np.arange(4, 12) / 25)


def test_interrupted_write_leaves_nothing_under_the_final_name(clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def exploding_save(fh, array, allow_pickle=False):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", exploding_save)
    [result] = list(Extractor().run([clips["h264"].path], out=tmp_path, progress=False))
    assert result.status == "failed" and "disk full" in result.error
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tdvideo", "failures.jsonl"]  # the run's plan, its failure
    assert sorted(p.name for p in (tmp_path / ".tdvideo").iterdir()) == ["plans"]
    assert len(list((tmp_path / ".tdvideo" / "plans").iterdir())) == 1


def test_discovery_and_output_planning(folder: Path, tmp_path: Path) -> None:
    found = discover_videos([folder])
    assert [v.relative.as_posix() for v in found.videos] == ["a/x", "b/x", "one"] and found.unreadable == []
    with pytest.raises(OutputCollisionError, match="x.mp4.*x.mp4"):
        plan_outputs(discover_videos([folder / "a" / "x.mp4", folder / "a" / "x.mp4"]).videos, tmp_path)
    with pytest.raises(NoVideosError):
        discover_videos([tmp_path / "nothing"] if (tmp_path / "nothing").mkdir() is None else [])
    with pytest.raises(UsageError, match="no such file or folder"):
        discover_videos([tmp_path / "missing"])


def test_device_choices() -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(UsageError, match="device must be auto, cpu, cuda or cuda:N; got 'gpu'"):
        resolve_device("gpu")


def test_extractor_validates_options() -> None:
    with pytest.raises(UsageError, match="batch_size must be a positive integer, got 0"):
        Extractor(batch_size=0)
    with pytest.raises(UsageError, match="precision must be one of fp32, fp16, bf16; got 'fp8'"):
        Extractor(precision="fp8")  # type: ignore[arg-type]


class SpyRunner:
    """Records the (B, T) shape and lengths of every batch the model gets."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.seen: list[tuple[tuple[int, int], list[int] | None]] = []

    def __call__(self, batch):
        lengths = None if batch.lengths is None else batch.lengths.tolist()
        self.seen.append((tuple(batch.frames.shape[:2]), lengths))
        return self.runner(batch)


def spy_on(extractor: Extractor) -> SpyRunner:
    spy = SpyRunner(extractor._runner_now())
    extractor._runner = spy  # type: ignore[assignment]
    return spy


def test_videos_are_stacked_along_b_with_lengths_never_along_time(folder: Path, tmp_path: Path) -> None:
    """Real (B, T) batches: rows of different videos never mix in time; short ones are padded."""
    extractor = Extractor(batch_size=64, workers=0)
    spy = spy_on(extractor)
    results = list(extractor.run([folder], out=tmp_path, progress=False))
    # a/x.mp4 has 60 frames, b/x.webm 30, one.mp4 1: 60 fill a pass alone; 30 and 1
    # share the next as two rows, the second padded to 30 and run on its 1 valid step.
    assert spy.seen == [((1, 60), None), ((2, 30), [30, 1])]
    for result in results:
        alone = Extractor().extract(result.path)
        # Per frame, the same features as alone (up to float rounding in another batch shape).
        np.testing.assert_allclose(tdvideo.load(result.output).array, alone.array, rtol=1e-6, atol=1e-7)


def test_padded_steps_never_reach_the_model(folder: Path, tmp_path: Path) -> None:
    counted: list[int] = []

    class Counting(torch.nn.Module):
        def forward(self, x):
            counted.append(x.shape[0])
            return x.float().mean(dim=(1, 2, 3)).unsqueeze(1)

    extractor = Extractor(model="thumbnail", batch_size=64, workers=0)
    extractor.backbone._module = Counting()  # the frames the model sees, not the thumbnail
    extractor.backbone.feature_shape = (1,)
    list(extractor.run([folder], out=tmp_path, progress=False))
    assert counted == [60, 31]  # 30 + 1 valid steps of the padded (2, 30) batch


def test_worker_processes_give_the_same_outputs(folder: Path, broken: dict[str, Path], tmp_path: Path) -> None:
    (folder / "b" / "deep").mkdir()
    shutil.copy(folder / "a" / "x.mp4", folder / "b" / "deep" / "x.mp4")  # same name, another folder
    shutil.copy(broken["garbage"], folder / "b" / "bad.mkv")
    in_process = {r.path: r for r in Extractor(workers=0, batch_size=16).run([folder], out=tmp_path / "w0", progress=False)}
    spawned = {r.path: r for r in Extractor(workers=2, batch_size=16).run([folder], out=tmp_path / "w2", progress=False)}
    assert in_process.keys() == spawned.keys()
    assert {p.name: r.status for p, r in spawned.items()} == {"x.mp4": "done", "x.webm": "done", "one.mp4": "done", "bad.mkv": "failed"}
    assert spawned[folder / "b" / "bad.mkv"].error_type == "DecodeError"
    assert "decode error after" in spawned[folder / "b" / "bad.mkv"].error
    for path, result in spawned.items():
        if result.status == "done":
            other = in_process[path]
            assert result.output.relative_to(tmp_path / "w2") == other.output.relative_to(tmp_path / "w0")
            np.testing.assert_allclose(tdvideo.load(result.output).array, tdvideo.load(other.output).array, rtol=1e-6, atol=1e-7)
    assert sorted(p.relative_to(tmp_path / "w2").as_posix() for p in (tmp_path / "w2").rglob("*.npy")) == [
        "a/x.npy", "b/deep/x.npy", "b/x.npy", "one.npy"
    ]


def test_shards_split_the_videos_without_overlap(folder: Path, tmp_path: Path) -> None:
    env = {"RANK": "1", "WORLD_SIZE": "3"}
    assert Shard.from_env(env) == Shard(1, 3)
    assert Shard.from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}) == Shard(0, 2)
    assert Shard.from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None and Shard.from_env({}) is None
    with pytest.raises(UsageError, match=r"shard rank must be in \[0, 2\), got 2"):
        Shard(2, 2)
    for name in ("c/x.mp4", "d/x.mp4", "e.mp4", "f.mp4"):
        (folder / name).parent.mkdir(exist_ok=True)
        shutil.copy(folder / "one.mp4", folder / name)
    done: list[Path] = []
    for rank in range(3):
        results = list(Extractor().run([folder], out=tmp_path, shard=Shard(rank, 3), progress=False))
        assert all(r.status == "done" for r in results)
        done.extend(r.output for r in results)
    assert len(done) == len(set(done)) == 7
    assert {r.status for r in Extractor().run([folder], out=tmp_path, shard=None, progress=False)} == {"skipped"}


def test_shard_from_the_environment(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    mine = list(Extractor().run([folder], out=tmp_path, progress=False))
    monkeypatch.setenv("RANK", "1")
    theirs = list(Extractor().run([folder], out=tmp_path, progress=False))
    assert sorted(r.path.name for r in mine + theirs) == ["one.mp4", "x.mp4", "x.webm"]
    assert not {r.path for r in mine} & {r.path for r in theirs}


def test_compiled_model_gives_the_same_features(clips: dict[str, Clip]) -> None:
    compiled = Extractor(compile=True, fps=10).extract(clips["h264"].path)
    eager = Extractor(fps=10).extract(clips["h264"].path)
    np.testing.assert_allclose(compiled.array, eager.array, rtol=1e-6, atol=1e-7)


def test_bf16_autocast_is_close_to_fp32(clips: dict[str, Clip]) -> None:
    fp32 = Extractor(model="conv2d", pool="avg", fps=5).extract(clips["h264"].path)
    bf16 = Extractor(model="conv2d", pool="avg", fps=5, precision="bf16").extract(clips["h264"].path)
    assert bf16.metadata["precision"] == "bf16" and bf16.array.dtype == np.float32
    np.testing.assert_allclose(bf16.array, fp32.array, rtol=0.05, atol=0.02)


@pytest.mark.needs_cuda
def test_cuda_features_match_cpu(clips: dict[str, Clip], tmp_path: Path) -> None:
    for model in ("colorhist", "conv2d"):
        cpu = Extractor(model=model, device="cpu").extract(clips["h264"].path)
        gpu = Extractor(model=model, device="cuda").extract(clips["h264"].path)
        np.testing.assert_allclose(gpu.array, cpu.array, rtol=1e-3, atol=1e-4)
    results = list(Extractor(device="cuda", workers=2, batch_size=16).run([clips["h264"].path, clips["vp9"].path], out=tmp_path, progress=False))
    assert [r.status for r in results] == ["done", "done"]


def test_large_features_spill_to_an_anonymous_file(clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tdvideo.extract import _collect

    in_memory = Extractor(model="conv2d", batch_size=16, dtype="float16").extract(clips["h264"].path)
    monkeypatch.setattr(_collect, "SPILL_BYTES", 200_000)  # < two frames of 16 x 62 x 62 float16
    spill_dir = tmp_path / "tmp"
    spill_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill_dir))
    extractor = Extractor(model="conv2d", batch_size=16, dtype="float16")
    spilled = extractor.extract(clips["h264"].path)
    assert isinstance(spilled.array, np.memmap) and not isinstance(in_memory.array, np.memmap)
    np.testing.assert_array_equal(spilled.array, in_memory.array)
    [result] = list(extractor.run([clips["h264"].path], out=tmp_path / "out", progress=False))
    np.testing.assert_array_equal(tdvideo.load(result.output).array, in_memory.array)
    assert list(spill_dir.iterdir()) == []  # anonymous: nothing left behind


def test_forward_passes_hold_a_bounded_number_of_bytes(clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch) -> None:
    """A huge batch_size cannot make a huge pass: frames per pass are capped in bytes too."""
    from tdvideo.extract import _extractor

    frame = 112 * 168 * 3  # the default model's frames of a 64 x 96 clip
    reference = Extractor().extract(clips["h264"].path)
    monkeypatch.setattr(_extractor, "BATCH_BYTES", 10 * frame)
    with pytest.warns(UserWarning, match="batch_size 100000 would hold"):
        extractor = Extractor(batch_size=100_000, workers=0)
    spy = spy_on(extractor)
    feats = extractor.extract(clips["h264"].path)
    slots = [b * t for (b, t), _ in spy.seen]
    assert sum(slots) == 60 and max(slots) * frame <= 10 * frame
    np.testing.assert_allclose(feats.array, reference.array, rtol=1e-6, atol=1e-7)


def test_the_worker_count_follows_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tdvideo.extract import _extractor

    monkeypatch.setattr(_extractor, "available_cpus", lambda: 4)
    monkeypatch.setattr(_extractor, "available_memory", lambda: 64 * 2**30)

    def files(sizes_mib: list[float]) -> list[Path]:
        paths = []
        for i, size in enumerate(sizes_mib):
            path = tmp_path / f"{len(sizes_mib)}-{i}.mp4"
            with open(path, "wb") as fh:
                fh.truncate(int(size * 2**20))
            paths.append(path)
        return paths

    count = Extractor()._worker_count
    assert count(files([500])) == 1  # one video: a worker decodes while torch loads
    assert count(files([0.01])) == 1
    assert count(files([0.01, 0.01, 0.01])) == 1  # tiny, but a worker decodes while torch loads
    assert count(files([3.5, 3.5])) == 1
    assert count(files([4, 4, 4])) == 3
    assert count(files([100] * 20)) == 4  # the cores
    assert Extractor(workers=2)._worker_count(files([0.01] * 5)) == 2
    monkeypatch.setattr(_extractor, "available_memory", lambda: 2 * _extractor.WORKER_BYTES + 1)
    assert count(files([100] * 20)) == 2  # what the memory holds


def test_fps_rows_grid_gives_a_row_per_grid_point(tmp_path: Path) -> None:
    """A VFR clip with a 2.5 s gap: distinct rows skip the gap, grid rows fill it with copies."""
    from fractions import Fraction

    from tdvideo.synthetic import index_frame, write_clip

    pts = [0, 10, 20, 30, 40, 50, 300, 310, 320, 330, 340, 350]
    video = write_clip(tmp_path / "gap.mkv", len(pts), make_frame=lambda i: index_frame(i, 32, 48), pts=pts, time_base=Fraction(1, 100))
    distinct = Extractor(fps=2).extract(video)
    np.testing.assert_allclose(distinct.timestamps, [0.0, 0.5, 3.0, 3.5])
    [result] = Extractor(fps=2, fps_rows="grid").run([video], out=tmp_path / "out", progress=False)
    grid = tdvideo.load(result.output)
    np.testing.assert_allclose(grid.timestamps, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    assert grid.metadata["frame_pts"] == pytest.approx([0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 3.0, 3.5])
    rows = [0, 1, 1, 1, 1, 1, 2, 3]
    np.testing.assert_allclose(grid.array, distinct.array[rows], rtol=1e-6, atol=1e-7)  # another run: a tolerance
    for copy in range(2, 6):
        np.testing.assert_array_equal(grid.array[copy], grid.array[1])  # copied rows, not recomputed
    with pytest.raises(UsageError, match="fps_rows=grid needs fps"):
        Extractor(fps_rows="grid")
    with pytest.raises(UsageError, match="fps_rows=grid needs fps, and rows of frames"):
        Extractor(fps=2, fps_rows="grid", clip_len=2)


@pytest.mark.parametrize("options", [{}, {"fps": 2}, {"fps": 7, "start": 0.5}, {"stride": 3}, {"num_frames": 5}, {"fps": 2, "end": 1.5}])
def test_the_frames_bar_total_is_the_frames_the_model_will_see(clips: dict[str, Clip], options: dict) -> None:
    """The estimate from the header (for the bar's total and ETA) on a constant-rate clip."""
    extractor = Extractor(**options)
    expected = extractor._expected_frames(clips["long_gop"].path)
    assert expected == len(extractor.extract(clips["long_gop"].path))


def test_the_frames_bar_gets_its_total_in_the_background(clips: dict[str, Clip], tmp_path: Path) -> None:
    from tdvideo.extract._records import FailuresLog
    from tdvideo.extract._report import Recorder

    extractor = Extractor(fps=5)
    with Recorder(RunSummary(), FailuresLog(tmp_path / "f.jsonl"), total=2, progress=True) as record:
        record.estimate_frames([clips["h264"].path, clips["long_gop"].path], extractor._expected_frames)
        deadline = time.monotonic() + 20
        while record.frames.total != 12 + 40 and time.monotonic() < deadline:  # 2.4 s and 8 s at 5 fps
            time.sleep(0.05)
        assert record.frames.total == 52


def test_the_frames_bar_total_is_corrected_as_videos_end(clips: dict[str, Clip], tmp_path: Path) -> None:
    """A header's estimate is only an estimate (the report's bar ended at 206 of 232): each
    video that ends puts its real count in place of its estimate."""
    from tdvideo.extract._records import FailuresLog
    from tdvideo.extract._report import Recorder

    first, second = clips["h264"].path, clips["long_gop"].path
    with Recorder(RunSummary(), FailuresLog(tmp_path / "f.jsonl"), total=2, progress=True) as record:
        record.estimate_frames([first, second], lambda path: 100)  # both overestimated
        deadline = time.monotonic() + 20
        while record.frames.total != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        record(VideoResult(first, None, "done", frames=60))
        assert record.frames.total == 160
        record(VideoResult(second, None, "failed", error="x"))
        assert record.frames.total == 60


def test_rows_on_a_grid_are_bounded_before_any_work(clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A grid repeats rows, so unlike frames its rows are not bounded by the file: too dense a
    grid is a usage error, and a video whose header promises too many rows fails before it
    is decoded; one whose frames' times (not its header) do, before a row is made."""
    from tdvideo.extract import _extractor

    with pytest.raises(UsageError, match=r"fps=1e\+06 with fps_rows=grid.*at most 1000 rows a second"):
        Extractor(fps=1e6, fps_rows="grid")
    result = CliRunner().invoke(app, ["extract", str(clips["h264"].path), "-o", str(tmp_path / "never"), "--fps", "1e6", "--fps-rows", "grid"])
    assert result.exit_code == 2 and not (tmp_path / "never").exists()

    monkeypatch.setattr(_extractor, "MAX_GRID_ROWS", 100)  # an 8 s clip at 20 rows a second: 160
    decoded = []
    extractor = Extractor(fps=20, fps_rows="grid", workers=0)
    extractor._decode = lambda path, options: decoded.append(path) or read_chunks(path, options)
    [result] = extractor.run([clips["long_gop"].path], out=tmp_path / "a", progress=False)  # 200 frames at 25 fps
    assert result.status == "failed" and result.error_type == "UnsupportedVideoError" and not decoded
    assert "would be 160 rows (at most 100 on a fixed grid)" in result.error and "(from its header)" in result.error
    # A raw stream declares no duration: its frames' times tell, after decoding, before any row.
    monkeypatch.setattr(_extractor, "MAX_GRID_ROWS", 10)
    [result] = Extractor(fps=20, fps_rows="grid", workers=0).run([clips["nopts"].path], out=tmp_path / "b", progress=False)
    assert result.status == "failed" and "(at most 10 on a fixed grid)" in result.error and "header" not in result.error


def test_running_out_of_memory_fails_that_video_alone(clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tdvideo.extract import _extractor

    real = _extractor.write_features

    def write(base, features, **kw):  # write_features, failing for b
        if base.name == "b":
            raise MemoryError
        return real(base, features, **kw)

    monkeypatch.setattr(_extractor, "write_features", write)
    folder = video_tree(tmp_path / "in", {"a.mp4": clips["h264"].path, "b.mp4": clips["vp9"].path, "c.mp4": clips["mpeg4"].path})
    results = {r.path.name: r for r in Extractor(workers=0).run([folder], out=tmp_path / "out", progress=False)}
    assert [results[n].status for n in ("a.mp4", "b.mp4", "c.mp4")] == ["done", "failed", "done"]
    assert results["b.mp4"].error == "ran out of memory for its features; nothing written"


def test_running_out_of_memory_assembling_a_video_fails_that_video(clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tdvideo.extract import _collect

    real = _collect.np.concatenate
    calls = []

    def concatenate(parts, *args, **kwargs):  # the first video's timestamps cannot be put together
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError
        return real(parts, *args, **kwargs)

    monkeypatch.setattr(_collect.np, "concatenate", concatenate)
    folder = video_tree(tmp_path / "in", {"a.mp4": clips["h264"].path, "b.mp4": clips["vp9"].path})
    results = [(r.status, r.error) for r in Extractor(workers=0).run([folder], out=tmp_path / "out", progress=False)]
    assert results == [("failed", "ran out of memory for its features; nothing written"), ("done", None)]
