"""An output folder you did not write: every command that reads one, against crafted files.

The folder holds real outputs and, beside them, what a stranger may leave: FIFOs named like
outputs, records and plans; links out of the folder (to a file and to a folder); a .npy
whose header claims a huge shape; a pickled .pt; an .npz of Python objects; a zero-row
array; a 4 GB "metadata" file (sparse); failure lines and plans that are not records; a
plan entry that climbs out of the folder; one flipped byte in an array. Each command runs
as a whole process with a timeout and its peak memory measured: it must answer in one line
per bad file, never hang, never read or write outside the folder, and never stop at the
first bad file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tdvideo
from tdvideo._system import measure_command
from tdvideo.errors import OutputError
from tdvideo.writers import Features, write_features

from .conftest import Clip, video_tree

# Peak resident memory any of these commands may take (torch's import is most of it).
MAX_RSS_BYTES = 1536 * 2**20
TIMEOUT = 120


def _craft(base: Path, array_file: Path, *, shape: list[int], timestamps: list[float], fmt: str) -> None:
    """Metadata that agrees with ``array_file``'s size and sha256, as an attacker can write it."""
    import hashlib

    data = array_file.read_bytes()
    meta = {
        "file": array_file.name, "format": fmt, "file_bytes": len(data), "file_mtime_ns": array_file.stat().st_mtime_ns,
        "file_sha256": hashlib.sha256(data).hexdigest(), "shape": shape, "dtype": "float32", "timestamps": timestamps,
        "source": {"path": "/nonexistent/video.mp4"}, "model": "crafted",
    }
    base.with_name(base.name + ".json").write_text(json.dumps(meta))


class Evil:
    def __reduce__(self):  # a pickle that would run code when loaded
        return (os.system, ("touch /tmp/tdvideo-pwned",))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Clip]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    src = video_tree(root / "src", {"a.mp4": clips["h264"].path, "b.mp4": clips["vp9"].path, "c.mp4": clips["mpeg4"].path})
    out = root / "out"
    outside = root / "outside"
    outside.mkdir()
    results = list(tdvideo.Extractor(workers=0).run([src], out=out, progress=False))
    assert [r.status for r in results] == ["done"] * 3
    # A folder of real outputs outside OUT, linked in: never to be read through the link.
    shutil.copytree(out, outside / "elsewhere", ignore=shutil.ignore_patterns(".tdvideo", "failures*"))
    os.symlink(outside / "elsewhere", out / "linked")
    # A file outside, linked in as an output's array: never read, never written through.
    (outside / "secret.npy").write_bytes(b"do not read or replace me")
    os.symlink(outside / "secret.npy", out / "passwd.npy")
    _craft(out / "passwd", out / "passwd.npy", shape=[1], timestamps=[0.0], fmt="npy")
    # FIFOs named like an output's metadata and array, a plan and a failures log.
    os.mkfifo(out / "fifo.json")
    os.mkfifo(out / "fifo2.npy")
    (out / ".tdvideo" / "plans").mkdir(exist_ok=True)
    os.mkfifo(out / ".tdvideo" / "plans" / "fifo.json")
    os.mkfifo(out / "failures.fifo.jsonl")
    # A .npy whose 100-byte header claims 10^12 x 48 floats.
    huge = out / "huge.npy"
    with huge.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 48)})
        fh.write(b"\0" * 64)
    _craft(out / "huge", huge, shape=[10**12, 48], timestamps=[0.0], fmt="npy")
    # A .pt whose pickle would run code, and an .npz of Python objects.
    torch.save({"features": Evil(), "timestamps": torch.zeros(1)}, out / "pickled.pt")
    _craft(out / "pickled", out / "pickled.pt", shape=[1, 48], timestamps=[0.0], fmt="pt")
    np.savez(out / "objects.npz", features=np.array([{"a": 1}], dtype=object), timestamps=np.zeros(1))
    _craft(out / "objects", out / "objects.npz", shape=[1], timestamps=[0.0], fmt="npz")
    # A consistent zero-row output: a video with nothing kept is no crash.
    write_features(out / "zero", Features(np.zeros((0, 48), np.float32), np.zeros(0), {"source": {"path": "/nonexistent"}}))
    # A 4 GB metadata file (sparse: no disk), with an array beside it.
    np.save(out / "big.npy", np.zeros((1, 48), np.float32))
    with (out / "big.json").open("wb") as fh:
        fh.truncate(4 * 2**30)
    # One flipped byte in a real output's array: same size, other bytes.
    damaged = bytearray((out / "b.npy").read_bytes())
    damaged[-1] ^= 0xFF
    (out / "b.npy").write_bytes(bytes(damaged))
    # Records that are not records.
    with (out / "failures.jsonl").open("a") as fh:
        fh.write('[1, "x", null]\n{"path": 5}\nnot json at all\n')
    (out / ".tdvideo" / "plans" / "list.json").write_text("[]")
    (out / ".tdvideo" / "plans" / "noout.json").write_text(json.dumps({"videos": [{"source": "x.mp4"}]}))
    (out / ".tdvideo" / "plans" / "climb.json").write_text(
        json.dumps({"videos": [{"source": "x.mp4", "output": "../../../../etc/hostname"}, {"source": "y.mp4", "output": "/etc/hostname"}]})
    )
    return {"root": root, "src": src, "out": out, "outside": outside}


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def run(*args: str, cwd: Path) -> tuple[int, str, str, int]:
    """A whole ``tdvideo`` process: exit code, stdout, stderr, and its own peak RSS in bytes."""
    try:
        done = measure_command([sys.executable, "-m", "tdvideo", *args], cwd=cwd, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung: tdvideo {' '.join(args)}")
    return done.code, done.stdout, done.stderr, done.peak_rss


def _one_line_each(stderr: str) -> list[str]:
    """stderr's lines, each a message of ours: a line per problem, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    for line in lines:
        ours = line.startswith(("error: ", "warning: ", "failed: ", "left out ")) or " done, " in line or "input(s) failed" in line or " -> " in line
        assert ours, line
    return lines


@pytest.fixture()
def untouched(hostile: dict[str, Path]):
    """Nothing outside OUT is written, and no pickle ran."""
    before = _snapshot(hostile["outside"])
    Path("/tmp/tdvideo-pwned").unlink(missing_ok=True)
    yield
    assert _snapshot(hostile["outside"]) == before
    assert not Path("/tmp/tdvideo-pwned").exists()


def test_load_refuses_each_bad_output_in_one_line(hostile: dict[str, Path], untouched: None) -> None:
    out = hostile["out"]
    reasons = {
        "passwd": "a symbolic link; not followed",
        "fifo": "not a regular file (a FIFO)",
        "huge": "its header declares",
        "pickled": "refused: its pickle holds more than tensors (it could run code; nothing in it has run)",
        "objects": "not numbers",
        "big": "4294967296 bytes, more than such a file may hold",
        "b": "sha256 differs",
        "linked/a": "not a folder of outputs; not followed",
    }
    for name, reason in reasons.items():
        with pytest.raises(OutputError) as caught:
            tdvideo.load(out / name, root=out)
        message = str(caught.value)
        assert reason in message and "\n" not in message, (name, message)
    assert len(tdvideo.load(out / "zero")) == 0 and len(tdvideo.load(out / "a")) == 60


def test_load_dir_names_every_output_it_leaves_out(hostile: dict[str, Path], untouched: None) -> None:
    out = hostile["out"]
    with pytest.warns(UserWarning) as warned:
        got = dict(tdvideo.load_dir(out, on_damaged="skip"))
    assert sorted(got) == ["a", "c", "zero"]
    left = sorted(str(w.message).split(":", 1)[0] for w in warned)
    assert left == sorted(f"left out {n}" for n in ("b", "big", "fifo", "fifo2", "huge", "linked", "objects", "passwd", "pickled"))
    with pytest.raises(OutputError, match="could not be read"):
        list(tdvideo.load_dir(out))


def test_export_reports_and_refuses_then_skips_on_request(hostile: dict[str, Path], untouched: None, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    out, target = hostile["out"], tmp_path / "f.parquet"
    code, _, stderr, peak = run("export", str(out), "--to", str(target), cwd=tmp_path)
    lines = _one_line_each(stderr)
    assert code == 1 and not target.exists() and not list(tmp_path.glob(".f.parquet*"))
    assert sum(line.startswith("left out ") for line in lines) == 9 and lines[-1].startswith("error: 9 output(s)")
    assert peak < MAX_RSS_BYTES
    code, _, stderr, peak = run("export", str(out), "--to", str(target), "--skip-damaged", cwd=tmp_path)
    lines = _one_line_each(stderr)
    assert code == 0 and target.exists(), stderr
    assert lines[-1].startswith("3 videos, 90 rows, 9 left out ->")
    assert peak < MAX_RSS_BYTES


def test_status_reads_what_it_can_and_says_what_it_cannot(hostile: dict[str, Path], untouched: None, tmp_path: Path) -> None:
    code, stdout, stderr, peak = run("status", str(hostile["out"]), cwd=tmp_path)
    warnings = _one_line_each(stderr)
    assert code == 1  # records could not all be read: never "all done"
    assert any("fifo.json: not a regular file (a FIFO)" in w for w in warnings)
    assert any("failures.fifo.jsonl: not a regular file (a FIFO)" in w for w in warnings)
    assert any("3 line(s) that are not failure records" in w for w in warnings)
    assert any("list.json: not a tdvideo plan" in w for w in warnings)
    assert any("noout.json: 1 entry without" in w for w in warnings) and any("climb.json: 2 entries without" in w for w in warnings)
    assert "hostname" not in stdout
    assert stdout.splitlines()[-1].startswith("2 done, 0 failed, 1 not yet done (3 videos")  # b is damaged: not done
    assert peak < MAX_RSS_BYTES


def test_show_on_each_bad_output_is_one_line(hostile: dict[str, Path], untouched: None, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = hostile["out"]
    for name in ("passwd", "fifo", "huge", "pickled", "objects", "big", "b"):
        code, _, stderr, peak = run("show", str(out / name), "-o", str(tmp_path / f"{name.replace('/', '_')}.png"), cwd=tmp_path)
        [line] = _one_line_each(stderr)
        assert code != 0 and line.startswith("error: "), (name, stderr)
        assert peak < MAX_RSS_BYTES
    code, _, stderr, _ = run("show", str(out / "zero"), "-o", str(tmp_path / "zero.png"), cwd=tmp_path)
    assert code != 0 and "Traceback" not in stderr and len(_one_line_each(stderr)) == 1


def test_a_rerun_of_extract_over_the_folder(hostile: dict[str, Path], untouched: None, tmp_path: Path) -> None:
    """The rerun redoes the damaged output, and each file in its way is one line."""
    out = hostile["out"]
    (out / "c.json").unlink()
    os.mkfifo(out / "c.json")  # a FIFO where a finished output's metadata was
    os.symlink(hostile["outside"] / "secret.npy", out / "a.npy.link")
    start = time.monotonic()
    code, _, stderr, peak = run("extract", str(hostile["src"]), "-o", str(out), "--workers", "0", cwd=tmp_path)
    _one_line_each(stderr)
    assert code == 0, stderr
    assert time.monotonic() - start < TIMEOUT and peak < MAX_RSS_BYTES
    assert len(tdvideo.load(out / "b")) == 30 and len(tdvideo.load(out / "c")) == 30  # redone
