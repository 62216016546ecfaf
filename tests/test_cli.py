"""The command line, end to end: through Typer's CliRunner and the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

import tdvideo
from tdvideo.cli import app

from .conftest import Clip

runner = CliRunner()


def run(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"tdvideo {tdvideo.__version__}"


def test_extract_file_writes_array_and_metadata(clips: dict[str, Clip], tmp_path: Path) -> None:
    clip = clips["h264"]
    result = run("extract", clip.path, "-o", tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    array = np.load(tmp_path / "idx.npy")
    meta = json.loads((tmp_path / "idx.json").read_text())
    assert array.shape == (clip.num_frames, 48)
    assert array.dtype == np.float32
    assert meta["shape"] == [clip.num_frames, 48] and meta["dtype"] == "float32"
    for key in ("timestamps", "source", "model", "weights", "sampling", "tdvideo_version"):
        assert key in meta
    assert meta["source"]["path"] == str(clip.path)
    assert meta["source"]["size"] == clip.path.stat().st_size
    assert meta["model"] == "colorhist"
    times = np.asarray(meta["timestamps"])
    assert np.all(np.diff(times) > 0)
    # The frames' own pts, read independently of tdvideo.
    with av.open(str(clip.path)) as c:
        pts = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    np.testing.assert_allclose(times, pts)
    np.testing.assert_allclose(times, clip.times)


@pytest.mark.parametrize("name", ["vp9", "mpeg4"])
def test_extract_other_codecs(clips: dict[str, Clip], tmp_path: Path, name: str) -> None:
    clip = clips[name]
    result = run("extract", clip.path, "-o", tmp_path, "-q", "--format", "npz")
    assert result.exit_code == 0, result.output
    feats = tdvideo.load(tmp_path / f"{clip.path.stem}.npz")
    assert len(feats) == clip.num_frames
    np.testing.assert_allclose(feats.timestamps, clip.times, atol=1e-6)


def test_folder_tree_is_mirrored(clips: dict[str, Clip], tmp_path: Path) -> None:
    src = tmp_path / "videos"
    (src / "a").mkdir(parents=True)
    (src / "b" / "deep").mkdir(parents=True)
    shutil.copy(clips["h264"].path, src / "a" / "x.mp4")
    shutil.copy(clips["vp9"].path, src / "b" / "deep" / "x.webm")
    (src / "readme.txt").write_text("not a video, and ignored inside a folder")
    out = tmp_path / "out"
    result = run("extract", src, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy")) == ["a/x.npy", "b/deep/x.npy"]
    assert len(np.load(out / "a" / "x.npy")) == clips["h264"].num_frames
    assert len(np.load(out / "b" / "deep" / "x.npy")) == clips["vp9"].num_frames


def test_colliding_outputs_are_reported_before_any_work(clips: dict[str, Clip], tmp_path: Path) -> None:
    src = tmp_path / "videos"
    src.mkdir()
    shutil.copy(clips["h264"].path, src / "x.mp4")
    shutil.copy(clips["vp9"].path, src / "x.webm")
    out = tmp_path / "out"
    result = run("extract", src, "-o", out, "-q")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "x.mp4" in lines[0] and "x.webm" in lines[0]
    assert not out.exists() or not any(out.rglob("*.npy"))


def test_info_json_matches_what_was_written(clips: dict[str, Clip]) -> None:
    clip = clips["h264"]
    result = run("info", clip.path, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("width", "height", "fps", "duration", "frames", "codec", "container", "rotation"):
        assert key in data
    assert (data["width"], data["height"]) == (clip.width, clip.height)
    assert data["fps"] == clip.fps
    assert data["frames"] == clip.num_frames
    assert data["duration"] == pytest.approx(clip.num_frames / clip.fps)
    assert data["codec"] == "h264" and data["container"].startswith("mov,mp4")
    assert data["rotation"] == 0 and data["has_audio"] is False


def test_info_on_a_bad_file_fails_with_one_line(broken: dict[str, Path]) -> None:
    result = run("info", broken["text"])
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: {broken['text']}: not a video FFmpeg can open (Invalid data found when processing input)"]


def test_info_text(clips: dict[str, Clip]) -> None:
    result = run("info", clips["vp9"].path)
    assert result.exit_code == 0
    assert "vp9" in result.stdout and "fps" in result.stdout


def test_models_lists_shapes_and_weights_need() -> None:
    result = run("models", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["colorhist"]["feature_shape"] == [48] and rows["colorhist"]["needs_weights"] is False
    assert rows["conv2d"]["feature_shape"] == [16, 62, 62]
    text = run("models")
    assert "colorhist" in text.stdout and "thumbnail" in text.stdout


def test_spatial_model_writes_t_c_h_w(clips: dict[str, Clip], tmp_path: Path) -> None:
    result = run("extract", clips["mpeg4"].path, "-o", tmp_path, "-q", "--model", "conv2d")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "idx.npy").shape == (clips["mpeg4"].num_frames, 16, 62, 62)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    result = run("extract", missing, "-o", tmp_path / "out")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and str(missing) in lines[0]
    assert "Traceback" not in result.output


def test_non_video_file_fails_the_input(broken: dict[str, Path], clips: dict[str, Clip], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("extract", broken["text"], clips["h264"].path, "-o", out, "-q")
    assert result.exit_code == 1
    failed = [line for line in error_lines(result) if line.startswith("failed:")]
    assert len(failed) == 1 and str(broken["text"]) in failed[0]
    assert "Traceback" not in result.output
    # The good input is still processed; the bad one leaves nothing behind.
    assert (out / "idx.npy").exists()
    assert not (out / "notes.npy").exists() and not (out / "notes.json").exists()
    record = json.loads((out / "failures.jsonl").read_text())
    assert record["path"] == str(broken["text"]) and record["error_type"] == "VideoOpenError"


def test_empty_folder_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("extract", empty, "-o", tmp_path / "out")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and str(empty) in lines[0] and "no video files" in lines[0]


def test_bad_option_value_is_a_usage_error(clips: dict[str, Clip], tmp_path: Path) -> None:
    assert run("extract", clips["h264"].path, "--format", "csv").exit_code == 2
    result = run("extract", clips["h264"].path, "-o", tmp_path, "--size", "big")
    assert result.exit_code == 2 and "--size" in result.stderr
    result = run("extract", clips["h264"].path, "-o", tmp_path, "--model", "nope")
    assert result.exit_code == 2 and "unknown model 'nope'" in result.stderr and len(error_lines(result)) == 1


def test_console_script_and_module_entry_points(clips: dict[str, Clip], tmp_path: Path) -> None:
    exe = shutil.which("tdvideo") or str(Path(sys.executable).with_name("tdvideo"))
    assert Path(exe).exists(), "the tdvideo console script is not installed"
    done = subprocess.run(
        [exe, "extract", str(clips["h264"].path), "-o", str(tmp_path), "--fps", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "1 done, 0 skipped, 0 failed" in done.stderr
    meta = json.loads((tmp_path / "idx.json").read_text())
    assert meta["sampling"] == {"fps": 5.0}
    assert meta["shape"][0] == 12  # 60 frames at 25 fps, sampled at 5 fps
    version = subprocess.run([sys.executable, "-m", "tdvideo", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"tdvideo {tdvideo.__version__}"
    missing = subprocess.run([exe, "info", str(tmp_path / "missing.mp4")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "missing.mp4" in missing.stderr


def test_info_json_is_strict_json_for_a_single_gop_file(clips: dict[str, Clip]) -> None:
    result = run("info", clips["rotated"].path, "--json")  # 6 frames, one keyframe
    assert result.exit_code == 0
    data = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["keyframe_interval"] is None and data["frames"] == 6
