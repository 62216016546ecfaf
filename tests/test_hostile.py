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
import stat
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


def _refused_in_one_line(out: Path, reasons: dict[str, str]) -> None:
    """``load`` of each output under ``out`` is one line that gives its reason."""
    for name, reason in reasons.items():
        with pytest.raises(OutputError) as caught:
            tdvideo.load(out / name, root=out)
        message = str(caught.value)
        assert reason in message and "\n" not in message, (name, message)


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
    _refused_in_one_line(out, reasons)
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
    """The rerun redoes the damaged output; a FIFO where an output's metadata goes fails that
    video in one line (nothing is written into it, or replaces it)."""
    out = hostile["out"]
    (out / "c.json").unlink()
    os.mkfifo(out / "c.json")  # a FIFO where a finished output's metadata was
    os.symlink(hostile["outside"] / "secret.npy", out / "a.npy.link")
    start = time.monotonic()
    code, _, stderr, peak = run("extract", str(hostile["src"]), "-o", str(out), "--workers", "0", cwd=tmp_path)
    lines = _one_line_each(stderr)
    assert code == 1, stderr
    assert [line for line in lines if line.startswith("failed: ")] == [
        f"failed: {hostile['src'] / 'c.mp4'}: {out / 'c.json'}: a FIFO, not a regular file; not replaced"
    ]
    assert time.monotonic() - start < TIMEOUT and peak < MAX_RSS_BYTES
    assert len(tdvideo.load(out / "b")) == 30  # redone
    assert stat.S_ISFIFO(os.lstat(out / "c.json").st_mode)


# -- a second round: what an attacker tried against the first ---------------------------------


def _craft_meta(base: Path, array_file: Path, **fields: object) -> None:
    """Consistent metadata for ``array_file`` (size, sha256), with ``fields`` put in as given."""
    import hashlib

    data = array_file.read_bytes()
    meta = {
        "file": array_file.name, "format": array_file.suffix[1:], "file_bytes": len(data), "file_mtime_ns": array_file.stat().st_mtime_ns,
        "file_sha256": hashlib.sha256(data).hexdigest(), "shape": [3, 48], "dtype": "float32", "timestamps": [0.0, 0.1, 0.2],
        "source": {"path": "/nonexistent/video.mp4"}, "model": "crafted",
    }
    base.with_name(base.name + ".json").write_text(json.dumps({**meta, **fields}))


def _lying_npz(path: Path, claimed: int) -> None:
    """An .npz whose zip directory says its features member holds ``claimed`` bytes."""
    import zipfile

    np.savez(path, features=np.zeros((3, 48), np.float32), timestamps=np.zeros(3))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("features.npy")
    header = np.lib.format.header_data_from_array_1_0(np.zeros((3, 48), np.float32))
    header["shape"] = (claimed // 192, 48)
    import io

    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, header)
    member = data.find(b"\x93NUMPY", info.header_offset)
    data[member : member + len(stream.getvalue())] = stream.getvalue()  # same length: a lying shape
    for at in (info.header_offset + 18, info.header_offset + 22):  # local header: compressed, plain size
        data[at : at + 4] = claimed.to_bytes(4, "little")
    central = data.rfind(b"PK\x01\x02", 0, len(data))
    while central != -1:
        name_len = int.from_bytes(data[central + 28 : central + 30], "little")
        if data[central + 46 : central + 46 + name_len] == b"features.npy":
            data[central + 20 : central + 24] = claimed.to_bytes(4, "little")
            data[central + 24 : central + 28] = claimed.to_bytes(4, "little")
        central = data.rfind(b"PK\x01\x02", 0, central)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Clip]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crafted")
    src = video_tree(root / "src", {"a.mp4": clips["h264"].path, "b.mp4": clips["vp9"].path})
    out = root / "out"
    assert [r.status for r in tdvideo.Extractor(workers=0).run([src], out=out, progress=False)] == ["done", "done"]
    rows = np.zeros((3, 48), np.float32)
    for name in ("nested", "nul", "surrogate", "notimes", "oddsource", "far"):
        np.save(out / f"{name}.npy", rows)
    (out / "nested.json").write_text('{"file": "nested.npy", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    _craft_meta(out / "nul", out / "nul.npy", file="nul\u0000.npy")
    (out / "surrogate.json").write_text(json.dumps({"file": "\ud800.npy"}))
    _craft_meta(out / "notimes", out / "notimes.npy", timestamps=None)
    _craft_meta(out / "oddsource", out / "oddsource.npy", source=[1, 2], model=5)
    _craft_meta(out / "far", out / "far.npy", timestamps=[1e308, 1e308, 1e308])
    np.save(out / "wide0.npy", np.zeros((3, 0), np.float32))
    _craft_meta(out / "wide0", out / "wide0.npy", shape=[3, 0])
    _lying_npz(out / "zbomb.npz", 2**31)
    _craft_meta(out / "zbomb", out / "zbomb.npz")
    (out / "packed.json").write_bytes(b'{"file": "packed.npy", "x": [' + b"[]," * 400_000 + b"[]]}")
    # A folder named like an abandoned temporary of a's array.
    (out / f".a.npy.w{2**22 + 7}-{_host()}.abcdefgh.tmp").mkdir()
    # Records that are not records: numbers out of range, wrong types, a line with no end.
    with (out / "failures.jsonl").open("a") as fh:
        fh.write('{"path": "x", "time": 1' + "0" * 400 + "}\n")
        fh.write('{"path": "y", "error_type": "DecodeError\\nfailed: /forged.mp4: Fake", "message": "m"}\n')
        fh.write('{"path": "z", "error_type": "\\ud800"}\n')
    (out / "failures.noise.jsonl").write_bytes(bytes(range(256)) * 1200)
    (out / "failures.blob.jsonl").write_bytes(b"x" * 300_000)  # one "line" with no end, five times too long
    plans = out / ".tdvideo" / "plans"
    (plans / "far.json").write_text(json.dumps({"created": 1e300, "videos": [{"source": "q.mp4", "output": "q"}]}))
    (plans / "nan.json").write_text('{"created": NaN, "videos": [{"source": "r.mp4", "output": "r"}]}')
    (plans / "unreadable.json").write_text(json.dumps({"videos": [], "unreadable": 5}))
    (plans / "deep.json").write_text('{"videos": [], "x": ' + "[" * 30_000 + "]" * 30_000 + "}")
    return {"root": root, "src": src, "out": out}


def _host() -> str:
    from tdvideo._files import owner_tag

    return owner_tag().rsplit("-", 1)[1]


def test_crafted_metadata_is_one_line_each(crafted: dict[str, Path]) -> None:
    out = crafted["out"]
    reasons = {
        "nested": "not a tdvideo record",
        "nul": "not a file name",
        "surrogate": "not a file name",
        "notimes": "timestamps are NoneType, not a list",
        "far": "timestamps that are no times of a video",
        "zbomb": "claims 2147483648 bytes; the file holds",
        "packed": "not a tdvideo record",
    }
    _refused_in_one_line(out, reasons)
    assert len(tdvideo.load(out / "oddsource")) == 3  # odd but harmless metadata: read, and handled below


def test_export_and_status_over_crafted_records(crafted: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    out = crafted["out"]
    code, _, stderr, peak = run("export", str(out), "--to", str(tmp_path / "f.parquet"), "--skip-damaged", cwd=tmp_path)
    lines = _one_line_each(stderr)
    assert code == 0 and lines[-1].startswith("3 videos, 93 rows, 8 left out ->"), stderr  # a, b, oddsource
    assert any("wide0: no features (0 numbers a step)" in line for line in lines)
    assert peak < MAX_RSS_BYTES
    code, stdout, stderr, _ = run("status", str(out), cwd=tmp_path)
    warnings = _one_line_each(stderr)
    assert code == 1
    assert any("failures.noise.jsonl: 1200 line(s) that are not failure records" in w for w in warnings), warnings
    assert any("failures.blob.jsonl: 1 line(s) that are not failure records" in w for w in warnings), warnings
    assert any("deep.json: " in w and "not a tdvideo record" in w for w in warnings), warnings
    assert any("unreadable.json: 1 entry" in w for w in warnings), warnings
    assert not any(line.startswith("failed: /forged.mp4") for line in stdout.splitlines())  # printed escaped, on its own line
    assert "q (plan far" not in stdout


def test_show_and_a_rerun_over_crafted_files(crafted: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = crafted["out"]
    for name in ("nested", "nul", "far", "zbomb"):
        code, _, stderr, _ = run("show", str(out / name), "-o", str(tmp_path / f"{name}.png"), cwd=tmp_path)
        assert code == 1 and len(_one_line_each(stderr)) == 1, (name, stderr)
    code, stdout, stderr, _ = run("show", str(out / "oddsource"), "-o", str(tmp_path / "odd\nname.png"), cwd=tmp_path)
    assert code == 0 and stdout.strip() == repr(str(tmp_path / "odd\nname.png")), (stdout, stderr)
    # The folder named like a temporary is left alone; the run goes on and redoes nothing it need not.
    code, _, stderr, _ = run("extract", str(crafted["src"]), "-o", str(out), "--workers", "0", cwd=tmp_path)
    assert code == 0 and "Traceback" not in stderr, stderr
    assert len(list(out.glob(".a.npy.w*.tmp"))) == 1


def test_names_that_are_not_utf8_export_and_show(clips: dict[str, Clip], tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    pytest.importorskip("matplotlib")
    src = tmp_path / "src"
    src.mkdir()
    name = os.fsdecode(b"bad\xffname.mp4")
    shutil.copy(clips["h264"].path, src / name)
    out = tmp_path / "out"
    [result] = tdvideo.Extractor(workers=0).run([src], out=out, progress=False)
    assert result.status == "done"
    code, _, stderr, _ = run("export", str(out), "--to", str(tmp_path / "f.parquet"), cwd=tmp_path)
    assert code == 0, stderr
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "f.parquet")["video"][0].as_py() == "bad\\xffname"
    code, _, stderr, _ = run("show", os.fsdecode(bytes(out) + b"/bad\xffname"), "-o", str(tmp_path / "x.png"), cwd=tmp_path)
    assert code == 0, stderr


def test_links_where_run_records_go_are_refused(clips: dict[str, Clip], tmp_path: Path) -> None:
    """A link at OUT/.tdvideo/plans would have plans written elsewhere, and status then miss them."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    (out / ".tdvideo").mkdir(parents=True)
    os.symlink(elsewhere, out / ".tdvideo" / "plans")
    code, _, stderr, _ = run("extract", str(clips["one"].path), "-o", str(out), cwd=tmp_path)
    assert code == 2 and "plans: a symbolic link" in stderr and "tdvideo keeps its run records there" in stderr, stderr
    assert not list(elsewhere.iterdir())
    code, _, stderr, _ = run("status", str(out), cwd=tmp_path)
    assert code == 1 and "a symbolic link" in stderr, stderr


def test_a_full_disk_while_the_plan_is_written_is_one_line(clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from tdvideo.extract import _records

    def full(path, write):  # publish, on a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_records, "publish", full)
    with pytest.raises(OutputError, match=r"^cannot write to .*: No space left on device; stopped \(the run's plan\)$"):
        list(tdvideo.Extractor(workers=0).run([clips["one"].path], out=tmp_path / "out", progress=False))


def test_links_and_folders_where_an_output_goes(clips: dict[str, Clip], tmp_path: Path) -> None:
    """A folder or a link at an output's metadata or array name: that video fails in one line,
    nothing is written through the link, and a folder at another format's name is left alone."""
    src = video_tree(tmp_path / "src", {"a.mp4": clips["h264"].path, "b.mp4": clips["vp9"].path, "c.mp4": clips["mpeg4"].path})
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.json").mkdir()
    victim = tmp_path / "victim.json"
    victim.write_text("keep")
    os.symlink(victim, out / "b.json")
    (out / "c.pt").mkdir()
    results = {r.path.name: r for r in tdvideo.Extractor(workers=0).run([src], out=out, progress=False)}
    assert results["a.mp4"].status == "failed" and results["a.mp4"].error_type == "OutputError" and "a directory" in results["a.mp4"].error
    assert results["b.mp4"].status == "failed" and "a symbolic link" in results["b.mp4"].error
    assert results["c.mp4"].status == "done" and (out / "c.pt").is_dir()
    assert victim.read_text() == "keep"
