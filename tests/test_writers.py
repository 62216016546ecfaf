"""Outputs: consistent pairs after kills, source identity, stale outputs, file modes, load checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tdvideo
from tdvideo import Extractor
from tdvideo._files import STALE_SECONDS, owner_tag, temporary_prefix
from tdvideo.errors import DecodeError, OutputError, UsageError
from tdvideo.writers import Features, SourceIdentity, remove_temporaries, write_features

from .conftest import Clip


def _kill_at_rename(n: int, script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter that SIGKILLs itself at its ``n``-th os.replace."""
    prelude = textwrap.dedent(
        f"""
        import os, signal
        _real, _calls = os.replace, [0]
        def _replace(*args, **kwargs):
            _calls[0] += 1
            if _calls[0] == {n}:
                os.kill(os.getpid(), signal.SIGKILL)
            return _real(*args, **kwargs)
        os.replace = _replace
        """
    )
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)], cwd=cwd, capture_output=True, text=True, check=False)


def test_a_kill_between_the_two_renames_never_pairs_new_features_with_old_metadata(
    clips: dict[str, Clip], tmp_path: Path
) -> None:
    """The report's case: killed after the array's rename, before the metadata's, a rerun
    skipped the video as finished and load gave 5 rows with 125 timestamps."""
    video = clips["long_gop"].path  # 200 frames at 25 fps
    out = tmp_path / "out"
    [first] = list(Extractor(fps=1).run([video], out=out, progress=False))  # 8 rows
    assert first.status == "done" and len(tdvideo.load(first.output)) == 8
    script = f"""
        import tdvideo
        list(tdvideo.Extractor(fps=5).run([{str(video)!r}], out={str(out)!r}, progress=False, overwrite=True))
    """
    # Killed at the array's rename, then at the metadata's (the run's plan is the first run's,
    # recorded already: it is not written again).
    for n in (1, 2):
        killed = _kill_at_rename(n, script, tmp_path)
        assert killed.returncode == -9, killed.stderr
        with pytest.raises(OutputError, match="no finished tdvideo output"):
            tdvideo.load(out / "long.npy")
        assert list(out.glob(".long.*.tmp")), "the kill should leave a temporary file behind"
        [again] = list(Extractor(fps=5).run([video], out=out, progress=False))
        assert again.status == "done"  # not skipped as finished
        loaded = tdvideo.load(out / "long.npy")
        assert len(loaded) == len(loaded.timestamps) == 40
        assert not list(out.glob(".*.tmp")), "temporaries of the kill were not removed"
        list(Extractor(fps=1).run([video], out=out, progress=False, overwrite=True))  # back to the 8-row output


def test_load_checks_that_the_pair_belongs_together(clips: dict[str, Clip], tmp_path: Path) -> None:
    [result] = list(Extractor(fps=5).run([clips["h264"].path], out=tmp_path, progress=False))
    good = result.output.read_bytes()
    array = np.load(result.output)
    # Same shape and size, other values: the sha256 in the metadata tells.
    np.save(result.output, array + 1)
    assert result.output.stat().st_size == len(good)
    with pytest.raises(OutputError, match="sha256 differs"):
        tdvideo.load(result.output)
    # Rows that do not match the timestamps, with a metadata that was edited to fit the file.
    np.save(result.output, array[:5])
    meta_path = tmp_path / "idx.json"
    meta = json.loads(meta_path.read_text())
    meta.update(file_bytes=result.output.stat().st_size, file_sha256=_sha256(result.output))
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(OutputError, match=r"idx.npy: .*its header says shape \[5, 48\], the metadata \[12, 48\]"):
        tdvideo.load(result.output)
    meta["shape"] = [5, 48]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(OutputError, match=r"\(5, 48\) features do not match \(12,\) timestamps"):
        tdvideo.load(result.output)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_temporaries_whose_writer_is_gone_are_removed(tmp_path: Path) -> None:
    """A temporary names its writer: one of a process of this host that is gone is removed at
    once, one of a live process (another run committing right now) never; one of another
    host, or of a tdvideo that did not name writers, once it is an hour old."""
    base = tmp_path / "clip"
    host = owner_tag().rsplit("-", 1)[1]
    old = time.time() - STALE_SECONDS - 60
    gone = [tmp_path / f".clip.npy.w{_dead_pid()}-{host}.a1b2c3d4.tmp", tmp_path / ".clip.json.w9-0badcafe.zz99_x_y.tmp", tmp_path / ".clip.npy.k2k2k2k2.tmp"]
    kept = [
        tmp_path / f".clip.npy.{owner_tag()}.a1b2c3d4.tmp",  # this very process
        tmp_path / f".clip.json.w1-{host}.a1b2c3d4.tmp",  # pid 1 is alive
        tmp_path / ".clip.npz.w9-0badcafe.abcdefgh.tmp",  # another host's, and recent
        tmp_path / ".clip.pt.q1w2e3r4.tmp",  # an older tdvideo's, and recent
        tmp_path / ".clip.notes.tmp", tmp_path / ".clip.v2.npy.x1234567.tmp", tmp_path / ".clip.npy.tmp", tmp_path / "clip.npy",
    ]
    for path in gone + kept:
        path.write_text("x")
    for path in gone[1:]:
        os.utime(path, (old, old))
    assert sorted(remove_temporaries(base)) == sorted(gone)
    assert all(p.exists() for p in kept)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_follow_the_umask(clips: dict[str, Clip], tmp_path: Path, umask: int) -> None:
    before = os.umask(umask)
    try:
        [result] = list(Extractor(fps=5).run([clips["h264"].path], out=tmp_path, progress=False))
    finally:
        os.umask(before)
    expected = 0o666 & ~umask
    for path in (result.output, tmp_path / "idx.json"):
        assert path.stat().st_mode & 0o777 == expected, oct(path.stat().st_mode)


def test_another_file_with_the_same_name_size_and_mtime_is_extracted(clips: dict[str, Clip], tmp_path: Path) -> None:
    """Two folders, one output folder: a same-sized file with the same mtime must not pass as finished."""
    original = clips["h264"].path.read_bytes()
    other = bytearray(original)
    other[len(other) // 2] ^= 0xFF  # another file of the same size (decodes a little differently)
    for folder, data in (("a", original), ("b", bytes(other))):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.mp4").write_bytes(data)
        os.utime(tmp_path / folder / "x.mp4", ns=(1_600_000_000_000_000_000,) * 2)
    out = tmp_path / "out"
    assert [r.status for r in Extractor().run([tmp_path / "a" / "x.mp4"], out=out, progress=False)] == ["done"]
    # Not taken for finished; and being another file's output, not replaced without overwrite.
    with pytest.raises(UsageError, match=r"^1 finished output\(s\) under .* are of other source files \(the first: x, which .*b/x.mp4 would replace\)"):
        list(Extractor(on_error="keep").run([tmp_path / "b" / "x.mp4"], out=out, progress=False))
    second = list(Extractor(on_error="keep").run([tmp_path / "b" / "x.mp4"], out=out, progress=False, overwrite=True))
    assert [r.status for r in second] == ["done"]
    assert tdvideo.load(out / "x.npy").metadata["source"]["path"] == str(tmp_path / "b" / "x.mp4")
    # The very same file again (even copied elsewhere, with its time) is finished.
    shutil.copy2(tmp_path / "b" / "x.mp4", tmp_path / "c.mp4")
    os.rename(tmp_path / "c.mp4", tmp_path / "x.mp4")
    assert [r.status for r in Extractor(on_error="keep").run([tmp_path / "x.mp4"], out=out, progress=False)] == ["skipped"]


def test_a_failed_reextraction_does_not_leave_old_features_looking_current(
    clips: dict[str, Clip], broken: dict[str, Path], tmp_path: Path
) -> None:
    video = tmp_path / "x.mkv"
    shutil.copy(clips["h264"].path, video)
    out = tmp_path / "out"
    assert [r.status for r in Extractor().run([video], out=out, progress=False)] == ["done"]
    shutil.copy(broken["truncated"], video)  # the source changes, and now fails
    [failed] = list(Extractor().run([video], out=out, progress=False))
    assert failed.status == "failed" and "earlier output" in failed.error
    assert sorted(p.name for p in out.iterdir()) == [".tdvideo", "failures.jsonl"]  # the run's plan, its failure
    with pytest.raises(OutputError):
        tdvideo.load(out / "x.npy")


def failing_decode(path: Path, options):
    raise DecodeError(path, "decode error after 0 frames (simulated: out of memory)")
    yield  # a generator, as iter_video is


def test_a_failure_keeps_an_output_that_is_still_current(clips: dict[str, Clip], tmp_path: Path) -> None:
    """--overwrite of a finished output whose source and settings are unchanged, which then
    fails (a passing lack of memory, say): the old output is still this video's, so it stays."""
    out = tmp_path / "out"
    assert [r.status for r in Extractor().run([clips["h264"].path], out=out, progress=False)] == ["done"]
    extractor = Extractor()
    extractor._decode = failing_decode
    [result] = list(extractor.run([clips["h264"].path], out=out, progress=False, overwrite=True))
    assert result.status == "failed" and "earlier output" not in result.error
    assert len(tdvideo.load(out / "idx.npy")) == 60


def test_source_identity_tells_files_apart(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"\0" * 300_000)
    b.write_bytes(b"\0" * 299_999 + b"\1")  # differs in its last bytes only
    os.utime(a, ns=(1, 1))
    os.utime(b, ns=(1, 1))
    ia, ib = SourceIdentity.of(a), SourceIdentity.of(b)
    assert ia.size == ib.size and ia.mtime_ns == ib.mtime_ns and ia.fingerprint != ib.fingerprint
    assert not ib.same_file(ia.to_dict()) and ia.same_file(ia.to_dict())
    assert ia.unchanged()
    a.write_bytes(b"changed")
    assert not ia.unchanged()


def test_writing_again_in_another_format_removes_the_stale_array(tmp_path: Path) -> None:
    features = Features(np.zeros((3, 4), np.float32), np.arange(3.0), {})
    write_features(tmp_path / "clip", features, fmt="npz")
    write_features(tmp_path / "clip", features, fmt="npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.json", "clip.npy"]
    assert tdvideo.load(tmp_path / "clip.json").array.shape == (3, 4)


def test_names_near_the_file_system_limit(tmp_path: Path) -> None:
    """A 240-byte name fits, with its extension, but its temporary name did not (ENAMETOOLONG)."""
    base = tmp_path / ("L" * 240)
    features = Features(np.zeros((2, 3), np.float32), np.arange(2.0), {})
    write_features(base, features)
    assert tdvideo.load(base.with_name(base.name + ".npy")).array.shape == (2, 3)
    leftover = tmp_path / (temporary_prefix(base.name + ".npy") + f"w{_dead_pid()}-{owner_tag().rsplit('-', 1)[1]}.abcd1234.tmp")
    assert len(leftover.name) <= 255
    leftover.write_text("x")
    assert remove_temporaries(base) == [leftover]


def test_a_full_disk_is_an_oserror_with_its_errno(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy's own writer reported a full disk as "N requested and M written" without errno, and
    torch's as a RuntimeError: the run could not tell a full disk from a bad video."""
    import errno

    real_write = os.write
    room = [10_000]

    def small_disk(fd: int, data: bytes) -> int:
        if len(data) > room[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        room[0] -= len(data)
        return real_write(fd, data)

    features = Features(np.zeros((100, 100), np.float32), np.arange(100.0), {})
    for fmt in ("npy", "npz", "pt"):
        room[0] = 10_000
        monkeypatch.setattr(os, "write", small_disk)
        with pytest.raises(OSError) as info:
            write_features(tmp_path / fmt, features, fmt=fmt)
        monkeypatch.undo()
        assert info.value.errno == errno.ENOSPC, fmt
        assert sorted(p.name for p in tmp_path.iterdir()) == [], fmt  # nothing half-written


def test_a_damaged_array_of_the_same_size_is_extracted_again(clips: dict[str, Clip], tmp_path: Path) -> None:
    """Damage that keeps the size (bytes overwritten, a power loss) used to pass the resume check for good."""
    [done] = list(Extractor().run([clips["h264"].path], out=tmp_path, progress=False))
    data = bytearray(done.output.read_bytes())
    data[-100:] = bytes(100)
    done.output.write_bytes(bytes(data))
    with pytest.raises(OutputError, match="sha256 differs"):
        tdvideo.load(done.output)
    assert [r.status for r in Extractor().run([clips["h264"].path], out=tmp_path, progress=False)] == ["done"]
    assert len(tdvideo.load(done.output)) == 60
    # A copy with a new modification time but the same bytes is still finished.
    shutil.copy(done.output, tmp_path / "copy")
    os.replace(tmp_path / "copy", done.output)
    assert [r.status for r in Extractor().run([clips["h264"].path], out=tmp_path, progress=False)] == ["skipped"]


def test_leftovers_are_found_with_one_listing_per_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun over thousands of finished outputs sweeps each folder once, not once per output."""
    from tdvideo import _files, writers

    dead = f"w{_dead_pid()}-{owner_tag().rsplit('-', 1)[1]}"
    leftovers = [tmp_path / (temporary_prefix(f"v{i}.npy") + f"{dead}.abcd1234.tmp") for i in range(3)]
    for path in leftovers:
        path.write_text("x")
    listings = []
    scandir = _files.os.scandir
    monkeypatch.setattr(_files.os, "scandir", lambda path: listings.append(path) or scandir(path))
    temporaries = writers.Temporaries()
    removed = [path for i in range(3) for path in temporaries.remove(tmp_path / f"v{i}")]
    assert removed == leftovers and not any(p.exists() for p in leftovers)
    assert listings == [tmp_path]


def test_a_run_never_removes_a_temporary_of_a_commit_in_progress(clips: dict[str, Clip], tmp_path: Path) -> None:
    """The report's case: a second plain run into the same folder deleted the first's
    in-flight temporary, and the first then failed a good video. A run removes only the
    temporaries of writers that are gone."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        shutil.copy(clips["h264"].path, folder / f"{name}.mp4")
    out = tmp_path / "out"
    out.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # another run, committing b
    try:
        in_flight = [
            out / f".b.npy.w{writer.pid}-{owner_tag().rsplit('-', 1)[1]}.a1b2c3d4.tmp",
            out / ".b.json.q1w2e3r4.tmp",  # the name an older tdvideo gives, just written
        ]
        for path in in_flight:
            path.write_bytes(b"half a commit")
        assert [r.status for r in Extractor(workers=0).run([folder], out=out, progress=False)] == ["done", "done"]
        assert all(path.read_bytes() == b"half a commit" for path in in_flight)
    finally:
        writer.kill()
        writer.wait()
    list(Extractor(workers=0).run([folder], out=out, progress=False, overwrite=True))
    assert not in_flight[0].exists()  # its writer is gone now
