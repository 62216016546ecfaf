"""The command line, end to end: through Typer's CliRunner and the installed console script."""

from __future__ import annotations

import json
import re
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

from .conftest import Clip, video_tree

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
    src = video_tree(tmp_path / "videos", {"a/x.mp4": clips["h264"].path, "b/deep/x.webm": clips["vp9"].path})
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
    # A header, and every column where the header says, window models' longer shapes too.
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["name", "features", "weights", "description"]
    starts = [lines[0].index(word) for word in ("features", "weights", "description")]
    window = next(line for line in lines if line.startswith("r3d_18 "))
    assert window[starts[0] :].startswith("512 per 16 frames") and window[starts[1] :].startswith("needs weights")
    assert all(line[starts[1] - 2 : starts[1]] == "  " for line in lines[1:])


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
    # The good input is still processed; the bad one leaves nothing behind. (Two files from
    # two folders keep their folders below their common one.)
    assert [p.name for p in out.rglob("*.npy")] == ["idx.npy"]
    assert not list(out.rglob("notes.*"))
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
        timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 done, 0 skipped, 0 failed" in done.stderr
    meta = json.loads((tmp_path / "idx.json").read_text())
    assert meta["sampling"] == {"fps": 5.0}
    assert meta["shape"][0] == 12  # 60 frames at 25 fps, sampled at 5 fps
    version = subprocess.run([sys.executable, "-m", "tdvideo", "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0 and version.stdout.strip() == f"tdvideo {tdvideo.__version__}"
    missing = subprocess.run([exe, "info", str(tmp_path / "missing.mp4")], capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "missing.mp4" in missing.stderr


def test_info_json_is_strict_json_for_a_single_gop_file(clips: dict[str, Clip]) -> None:
    result = run("info", clips["rotated"].path, "--json")  # 6 frames, one keyframe
    assert result.exit_code == 0
    data = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["keyframe_interval"] is None and data["frames"] == 6


# -- when things go wrong ------------------------------------------------------------------


def test_values_that_can_be_checked_are_usage_errors_before_any_work(clips: dict[str, Clip], tmp_path: Path) -> None:
    """Each used to fail every video one by one, or fail after decoding and delete the failures log."""
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "failures.jsonl"
    earlier.write_text('{"path": "from an earlier run"}\n')
    cases = [
        (["--fps", "1e-300"], "fps must be a number in"),
        (["--start", "1e300"], "start must be a number of seconds in"),
        (["--size", "10000x10000"], "size 10000x10000 is over the frame limits"),
        (["--size", "64", "--crop", "100"], "crop 100x100 does not fit in frames resized to short side 64"),
        (["--model", "resnet18", "--weights", "none", "--size", "100"], "crop 224x224 (the model's) does not fit in frames resized to short side 100"),
        (["--batch-size", "0"], "batch_size must be a positive integer"),
        (["--threads", "100000"], "threads must be an integer in [0, 256], got 100000"),
        (["--clip-len", "100000"], "clip_len 100000 windows of at least 112x112 frames would take at least 3.5 GiB each"),
    ]
    for options, message in cases:
        result = run("extract", clips["h264"].path, "-o", out, *options)
        assert result.exit_code == 2, (options, result.output)
        lines = [line for line in error_lines(result) if not line.startswith("warning:")]
        assert len(lines) == 1 and message in lines[0], (options, lines)
        assert earlier.read_text() == '{"path": "from an earlier run"}\n', options
        assert sorted(p.name for p in out.iterdir()) == ["failures.jsonl"], options


def test_a_full_disk_stops_the_run_with_one_line(clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def full(fh, array, allow_pickle=False):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    result = run("extract", clips["h264"].path, clips["one"].path, "-o", tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    last = error_lines(result)[-1]
    assert last.startswith(f"error: cannot write to {tmp_path}: No space left on device; stopped")
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob(".*.tmp"))


def test_hostile_frame_sizes_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    """8 x 4096 pixels, 8 frames, a few KB: the default model's short-side resize would make
    112 x 57344 frames, and the run used to peak at 2.2 GiB."""
    from tdvideo.synthetic import write_clip

    tall = write_clip(tmp_path / "tall.mp4", 8, make_frame=lambda i: np.full((4096, 8, 3), 16 * i, np.uint8))
    assert tall.stat().st_size < 20_000
    # Peak RSS from VmHWM: ru_maxrss would count the test process itself, since it
    # survives the exec of a forked child.
    script = (
        "import re\n"
        "from tdvideo.cli import app\n"
        "try:\n"
        f"    app(['extract', {str(tall)!r}, '-o', {str(tmp_path / 'out')!r}, '-q'])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "peak = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
        "print(code, peak // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    code, peak_mib = done.stdout.split()
    assert code == "1", done.stderr
    assert "frames resized to 57344x112 would be over the frame limits" in done.stderr
    # torch alone is about 0.6 GiB of it; the frames must add little.
    assert int(peak_mib) < 1200, f"peak RSS {peak_mib} MiB"


def test_oversized_requests_are_capped_with_a_warning(clips: dict[str, Clip], tmp_path: Path) -> None:
    result = run("extract", clips["h264"].path, clips["one"].path, "-o", tmp_path, "-q", "--workers", "1000", "--batch-size", "100000")
    assert result.exit_code == 0, result.output
    warnings_ = [line for line in error_lines(result) if line.startswith("warning:")]
    assert any("workers 1000 capped at" in w and "CPU cores" in w for w in warnings_), warnings_
    assert any("batch_size 100000 would hold" in w for w in warnings_), warnings_


def test_failed_lines_land_above_the_progress_bars(broken: dict[str, Path], clips: dict[str, Clip], tmp_path: Path) -> None:
    """With bars on a terminal, a plain print of the failure was glued into a bar's line."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    exe = shutil.which("tdvideo") or str(Path(sys.executable).with_name("tdvideo"))
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new pty is 0 x 0
    process = subprocess.Popen(
        [exe, "extract", str(broken["text"]), str(clips["h264"].path), str(clips["one"].path), "-o", str(tmp_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower,
    )
    os.close(follower)
    output = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closes when the process ends
            break
        if not data:
            break
        output += data
    assert process.wait(timeout=120) == 1
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", output.decode(errors="replace"))  # cursor moves
    assert "videos:" in text  # the bars were drawn
    # A line's visible text is what follows its last carriage return (the terminal ends lines with \r\n).
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    assert any(line.startswith(f"failed: {broken['text']}: not a video FFmpeg can open") for line in lines), lines


def test_names_with_newlines_cannot_forge_lines(broken: dict[str, Path], tmp_path: Path) -> None:
    forged = tmp_path / "x\nfailed: somebody else.mp4"
    shutil.copy(broken["text"], forged)
    result = run("extract", forged, "-o", tmp_path / "out")
    assert result.exit_code == 1
    failed = [line for line in error_lines(result) if line.startswith("failed:")]
    assert failed == [f"failed: {str(forged)!r}: not a video FFmpeg can open (Invalid data found when processing input)"]


def test_log_levels_show_what_happens(clips: dict[str, Clip], tmp_path: Path) -> None:
    info = run("extract", clips["h264"].path, "-o", tmp_path / "a", "-q", "--log-level", "info")
    assert info.exit_code == 0, info.output
    assert "INFO tdvideo.extract: 1 video(s): 1 to extract, 0 finished earlier; model colorhist" in info.stderr
    assert "INFO tdvideo.extract: " in info.stderr and "60 rows ->" in info.stderr
    debug = run("extract", clips["h264"].path, "-o", tmp_path / "a", "-q", "--log-level", "debug")
    assert "DEBUG tdvideo.extract: " in debug.stderr and "finished earlier, skipped" in debug.stderr
    quiet = run("extract", clips["h264"].path, "-o", tmp_path / "b", "-q")
    assert quiet.stderr == ""


def test_info_on_things_that_are_no_file(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    result = run("info", fifo)
    assert result.exit_code == 2 and error_lines(result) == [f"error: {fifo}: not a regular file (a FIFO)"]
    result = run("extract", fifo, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "not a regular file or folder" in result.stderr
    assert tdvideo.read_video is not None
    with pytest.raises(tdvideo.VideoOpenError, match="not a regular file \\(a FIFO\\)"):
        tdvideo.read_video(fifo)  # returns at once instead of waiting for a writer


@pytest.mark.parametrize("signal_name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_interrupting_says_what_finished_and_leaves_no_workers(clips: dict[str, Clip], tmp_path: Path, signal_name: str, code: int) -> None:
    import os
    import signal
    import time
    import uuid

    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        shutil.copy(clips["long_gop"].path, src / f"v{i}.mp4")
    marker = f"TDVIDEO_TEST_{uuid.uuid4().hex}"
    exe = shutil.which("tdvideo") or str(Path(sys.executable).with_name("tdvideo"))
    process = subprocess.Popen(
        [exe, "extract", str(src), "-o", str(tmp_path / "out"), "--workers", "2", "--batch-size", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, marker: "1"},
    )
    deadline = time.monotonic() + 120
    while len(_processes_with(marker)) < 3 and time.monotonic() < deadline:  # the CLI and its workers
        time.sleep(0.1)
    assert len(_processes_with(marker)) >= 3
    started = time.monotonic()
    process.send_signal(getattr(signal, signal_name))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert time.monotonic() - started < 15
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and "not finished" in last and "Run the same command again" in last
    time.sleep(0.5)
    assert _processes_with(marker) == [], "worker processes outlived the run"
    from tdvideo.extract import _loader

    left = list(_loader._frames_root().glob(f"{_loader._FRAMES_PREFIX}w{process.pid}-*"))
    assert not left, f"the interrupted run left its shared-memory folder: {left}"


_STOP_IN_A_FINALIZER = """
import signal, sys, time
from tdvideo import cli
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job ignores it)
if len(sys.argv) > 1:
    sys.unraisablehook = cli._stop_again  # as the command sets it
class Finalized:
    def __del__(self):
        raise KeyboardInterrupt  # what a signal handler raises when it runs inside a finalizer
try:
    Finalized()
    time.sleep(3)
    print("went on")
except KeyboardInterrupt:
    print("stopped")
"""


def test_a_stop_that_arrives_inside_a_finalizer_is_not_lost() -> None:
    # Ctrl-C while torch was imported ran the handler inside a weakref callback of the
    # garbage collector: Python printed "Exception ignored" and the run went on to the end.
    dropped = subprocess.run([sys.executable, "-c", _STOP_IN_A_FINALIZER], capture_output=True, text=True, check=False, timeout=60)
    assert dropped.stdout.strip() == "went on" and "Exception ignored" in dropped.stderr  # Python's own behaviour
    kept = subprocess.run([sys.executable, "-c", _STOP_IN_A_FINALIZER, "hook"], capture_output=True, text=True, check=False, timeout=60)
    assert kept.stdout.strip() == "stopped" and kept.stderr == ""


def _processes_with(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().split(") ")[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_dry_run_says_what_would_happen_and_writes_nothing(clips: dict[str, Clip], audio_only: Path, tmp_path: Path) -> None:
    src = video_tree(tmp_path / "in", {"a.mp4": clips["h264"].path, "b.webm": clips["vp9"].path, "sub/c.avi": clips["mpeg4"].path})
    (src / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    out = tmp_path / "out"
    result = runner.invoke(app, ["extract", str(src), "-o", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"extract  {src / 'a.mp4'}", f"extract  {src / 'b.webm'}", f"extract  {src / 'sub' / 'c.avi'}",
        f"refuse   {src / 'gone.mp4'}: broken symbolic link",
    ]
    assert result.stderr.strip() == "dry run: 3 to extract, 0 finished (skipped), 1 refused; nothing was written, no model was run"
    assert not out.exists()
    # Each header is opened: an empty file and one with no video stream are refused, not listed to extract.
    (src / "empty.mp4").write_bytes(b"")
    shutil.copy(audio_only, src / "tone.mp4")
    result = runner.invoke(app, ["extract", str(src), "-o", str(out), "--dry-run"])
    assert f"refuse   {src / 'empty.mp4'}: " in result.stdout and f"refuse   {src / 'tone.mp4'}: no video stream" in result.stdout
    (src / "empty.mp4").unlink()
    (src / "tone.mp4").unlink()

    assert runner.invoke(app, ["extract", str(src / "a.mp4"), "-o", str(out), "-q"]).exit_code == 0
    extractor = tdvideo.Extractor()
    report = extractor.dry_run([src], out=out)
    assert (report.todo, report.skipped, report.stop) == ([src / "b.webm", src / "sub" / "c.avi"], [src / "a.mp4"], None)
    assert extractor._runner is None  # no model was built to run
    # The run would stop: a finished output with other settings, or colliding outputs.
    result = runner.invoke(app, ["extract", str(src), "-o", str(out), "--dry-run", "--fps", "2"])
    assert result.exit_code == 2 and "the run would stop: 1 finished output(s)" in result.stderr
    shutil.copy(clips["h264"].path, src / "b.mp4")  # b.mp4 and b.webm both map to OUT/b
    report = tdvideo.Extractor().dry_run([src], out=out)
    assert report.stop is not None and "would be written by more than one input" in report.stop


def test_info_on_several_files_and_folders(clips: dict[str, Clip], broken: dict[str, Path], tmp_path: Path) -> None:
    folder = video_tree(tmp_path / "in", {"a.mp4": clips["h264"].path, "sub/b.webm": clips["vp9"].path})
    shutil.copy(broken["text"], folder / "bad.mp4")
    result = run("info", folder, clips["mpeg4"].path)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["path", "codec", "size", "fps", "seconds", "frames", "rotation"]
    assert [line.split()[:3] for line in lines[1:]] == [
        [str(folder / "a.mp4"), "h264", f"{clips['h264'].width}x{clips['h264'].height}"],
        [str(folder / "sub" / "b.webm"), "vp9", f"{clips['vp9'].width}x{clips['vp9'].height}"],
        [str(clips["mpeg4"].path), "mpeg4", f"{clips['mpeg4'].width}x{clips['mpeg4'].height}"],
    ]
    assert error_lines(result) == [f"failed: {folder / 'bad.mp4'}: not a video FFmpeg can open (Invalid data found when processing input)"]
    as_json = run("info", folder / "a.mp4", folder / "sub" / "b.webm", "--json")
    assert as_json.exit_code == 0
    assert [json.loads(line)["codec"] for line in as_json.stdout.splitlines()] == ["h264", "vp9"]


def test_shell_completion_is_offered() -> None:
    result = run("--help")
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


def _two_streams(path: Path) -> Path:
    """A Matroska file with two video streams: 20 frames of 96x64 at 10 fps, 10 of 48x32 at 5 fps."""
    with av.open(str(path), "w") as container:
        big = container.add_stream("libx264", rate=10)
        big.width, big.height, big.pix_fmt = 96, 64, "yuv420p"
        small = container.add_stream("mpeg4", rate=5)
        small.width, small.height, small.pix_fmt = 48, 32, "yuv420p"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), i * 10, np.uint8), format="rgb24")
            container.mux(big.encode(frame))
            if i % 2 == 0:
                frame = av.VideoFrame.from_ndarray(np.full((32, 48, 3), 200 - i * 5, np.uint8), format="rgb24")
                container.mux(small.encode(frame))
        container.mux(big.encode())
        container.mux(small.encode())
    return path


def test_the_stream_is_chosen_listed_and_recorded(tmp_path: Path) -> None:
    video = _two_streams(tmp_path / "two.mkv")
    info = json.loads(run("info", video, "--json").stdout)
    assert [(s["index"], s["width"], s["height"], s["fps"]) for s in info["video_streams"]] == [(0, 96, 64, 10.0), (1, 48, 32, 5.0)]
    for stream, rows, width in ((0, 20, 96), (1, 10, 48)):
        result = run("extract", video, "-o", tmp_path / f"s{stream}", "--stream", str(stream), "-q")
        assert result.exit_code == 0, result.output
        features = tdvideo.load(tmp_path / f"s{stream}" / "two.npy")
        assert len(features) == rows and features.metadata["stream"] == stream and features.metadata["video"]["width"] == width
    assert tdvideo.read_video(video, stream=1).frames.shape[0] == 10
    result = run("extract", video, "-o", tmp_path / "s2", "--stream", "2", "-q")
    assert result.exit_code == 1 and error_lines(result)[0] == f"failed: {video}: no video stream 2 (it has 2, from 0)"


def test_the_summary_states_the_time_since_the_process_started(clips: dict[str, Clip], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tdvideo", "extract", str(clips["h264"].path), "-o", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    match = re.search(r"frames in ([\d.]+) s \([\d.]+ frames/s\); ([\d.]+) s since the process started$", done.stderr.strip())
    assert match and float(match.group(2)) >= float(match.group(1))  # imports and start-up included


@pytest.mark.parametrize("command", [[], ["extract"], ["info"], ["models"], ["status"], ["show"], ["export"]])
def test_help_shows_readable_metavars(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    assert "--help" in text and "<bool>" not in text and "list[" not in text


def test_help_keeps_square_brackets() -> None:
    """Rich markup took "[ray]" in "pip install 'tdvideo[ray]'" for a style and dropped it."""
    result = runner.invoke(app, ["extract", "--help"], env={"COLUMNS": "250"})
    assert "pip install 'tdvideo[ray]'" in result.stdout


def test_info_prints_plain_numbers_and_streams(clips: dict[str, Clip]) -> None:
    result = run("info", clips["h264"].path)
    fields = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert fields["keyframe_interval"] == "0.48" and fields["fps"] == "25"  # gop 12 at 25 fps, not 0.48000000000000004
    assert fields["video_streams"] == "#0 h264 96x64 25 fps 60 frames"


def test_frame_folders_of_killed_runs_are_removed_by_any_run(clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed with -9 leaves its shared-memory folder; the next run removes it, even one
    that decodes in its own process."""
    from tdvideo._files import owner_tag
    from tdvideo.extract import _loader

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = owner_tag().rsplit("-", 1)[1]
    dead = tmp_path / f"tdvideo-frames-w{child.pid}-{host}-abcd1234"
    alive = tmp_path / f"tdvideo-frames-w1-{host}-abcd1234"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "chunk").write_bytes(b"x" * 1000)
    monkeypatch.setattr(_loader, "_frames_root", lambda: tmp_path)
    list(tdvideo.Extractor(workers=0).run([clips["one"].path], out=tmp_path / "out", progress=False))
    assert not dead.exists() and alive.exists()
