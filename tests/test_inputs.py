"""Inputs and output names: odd names, unreadable folders, list files, the output folder itself."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tdvideo
from tdvideo import Extractor
from tdvideo.cli import app
from tdvideo.errors import OutputCollisionError, UsageError
from tdvideo.extract._inputs import discover_videos, plan_outputs, prepare_output, read_list_file

from .conftest import Clip, video_tree

runner = CliRunner()


def _files(root: Path) -> list[str]:
    """The files under ``root``, but the run records (``.tdvideo/``)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".tdvideo" not in p.relative_to(root).parts)


def test_names_made_of_dots_stay_inside_out(clips: dict[str, Clip], tmp_path: Path) -> None:
    """``..mp4`` has the stem ``.``: it used to write ``<out>.npy`` beside the output folder."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("..mp4", "sub/...mp4", "sub/.mp4x.mp4"):
        shutil.copy(clips["one"].path, src / name)
    out = tmp_path / "work" / "out"
    result = runner.invoke(app, ["extract", str(src / "..mp4"), str(src / "sub"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["out"]  # nothing beside it
    # "..mp4" is "." without its extension, "...mp4" is ".."
    assert _files(out) == sorted(["_.json", "_.npy", "__.json", "__.npy", ".mp4x.json", ".mp4x.npy"])


def test_dot_as_the_output_folder(clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``-o .`` with an input named ``..mp4`` aborted the run with a traceback."""
    shutil.copy(clips["one"].path, tmp_path / "..mp4")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["extract", "..mp4", "-o", ".", "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "_.npy").exists() and tdvideo.load(tmp_path / "_.json").array.shape == (1, 48)


def test_unreadable_subfolders_are_reported(clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder that cannot be listed fails like a bad video, instead of being skipped without a word.

    Permissions do not stop root, so the refusal is simulated where the walk lists folders.
    """
    src = tmp_path / "in"
    (src / "open").mkdir(parents=True)
    (src / "secret").mkdir()
    shutil.copy(clips["one"].path, src / "open" / "a.mp4")
    shutil.copy(clips["one"].path, src / "secret" / "b.mp4")
    os.symlink(src / "gone.mp4", src / "dangling.mp4")
    real_scandir = os.scandir

    def scandir(path="."):
        if not isinstance(path, int) and Path(path) == src / "secret":  # shutil.rmtree lists by fd
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = discover_videos([src])
    assert [v.relative.as_posix() for v in found.videos] == ["open/a"]
    assert {(p.path.name, p.reason) for p in found.unreadable} == {
        ("secret", "cannot list folder (Permission denied)"),
        ("dangling.mp4", "broken symbolic link"),
    }
    out = tmp_path / "out"
    result = runner.invoke(app, ["extract", str(src), "-o", str(out)])
    assert result.exit_code == 1
    assert "1 done, 0 skipped, 2 failed" in result.stderr
    assert f"failed: {src / 'secret'}: cannot list folder (Permission denied)" in result.stderr
    assert "UnreadableInput" in (out / "failures.jsonl").read_text()


def test_links_to_folders_are_followed_once(clips: dict[str, Clip], tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "real").mkdir(parents=True)
    shutil.copy(clips["one"].path, src / "real" / "a.mp4")
    os.symlink(src / "real", src / "alias")
    os.symlink(src, src / "real" / "loop")  # a link back up the tree
    found = discover_videos([src])
    assert sorted(v.relative.as_posix() for v in found.videos) == ["alias/a", "real/a"]  # as the tree shows them


def test_a_subfolder_named_like_the_failures_log(clips: dict[str, Clip], tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "failures.jsonl").mkdir(parents=True)
    shutil.copy(clips["one"].path, src / "failures.jsonl" / "a.mp4")
    with pytest.raises(OutputCollisionError, match="also the failures log"):
        plan_outputs(discover_videos([src]).videos, tmp_path / "out")
    result = runner.invoke(app, ["extract", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output


def test_the_output_folder_must_be_a_writable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clips: dict[str, Clip]) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        prepare_output(a_file)
    with pytest.raises(UsageError, match="cannot write to out=.*Not a directory"):
        prepare_output(a_file / "sub")
    result = runner.invoke(app, ["extract", str(clips["one"].path), "-o", str(a_file)])
    assert result.exit_code == 2 and result.stderr == f"error: --out {a_file} is a file, not a folder\n"

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", read_only)  # root ignores permissions: simulate them
    with pytest.raises(UsageError, match="cannot write to out=.*: Permission denied"):
        prepare_output(tmp_path / "ro")


def test_a_failures_log_that_cannot_be_replaced(clips: dict[str, Clip], tmp_path: Path) -> None:
    (tmp_path / "failures.jsonl").mkdir()
    result = runner.invoke(app, ["extract", str(clips["one"].path), "-o", str(tmp_path)])
    assert result.exit_code == 2 and "failures.jsonl" in result.stderr and "Traceback" not in result.output


def test_list_files_hold_any_file_name(clips: dict[str, Clip], tmp_path: Path) -> None:
    """File names are bytes: a list in another encoding than UTF-8 still names its files."""
    name = os.fsdecode(b"caf\xe9.mp4")  # Latin-1 bytes, not UTF-8
    shutil.copy(clips["one"].path, tmp_path / name)
    listing = tmp_path / "list.txt"
    listing.write_bytes(os.fsencode(str(tmp_path / name)) + b"\n")
    assert read_list_file(listing) == [str(tmp_path / name)]
    out = tmp_path / "out"
    result = runner.invoke(app, ["extract", "--from-list", str(listing), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert (out / os.fsdecode(b"caf\xe9.npy")).exists()
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02")
    with pytest.raises(UsageError, match="holds NUL bytes"):
        read_list_file(tmp_path / "binary.txt")
    with pytest.raises(UsageError, match="is a folder, not a list file"):
        read_list_file(tmp_path)


def test_a_source_deleted_while_it_is_read(clips: dict[str, Clip], tmp_path: Path) -> None:
    victim = tmp_path / "victim.mp4"
    shutil.copy(clips["long_gop"].path, victim)
    shutil.copy(clips["one"].path, tmp_path / "other.mp4")
    extractor = Extractor(workers=0, batch_size=16)
    extractor._decode = deleting_decode
    results = {r.path.name: r for r in extractor.run([victim, tmp_path / "other.mp4"], out=tmp_path / "out", progress=False)}
    assert results["other.mp4"].status == "done"
    assert results["victim.mp4"].status == "failed"
    assert "changed, moved or deleted while it was being read" in results["victim.mp4"].error


def deleting_decode(path: Path, options):
    """read_chunks, deleting the file after its first chunk (as a cleanup job might)."""
    from tdvideo.video import read_chunks

    for i, clip in enumerate(read_chunks(path, options)):
        if i == 0 and path.name == "victim.mp4":
            path.unlink()
        yield clip


def test_endless_or_binary_list_and_config_files_are_refused_at_once(tmp_path: Path) -> None:
    """``/dev/zero`` as a list or config file was read until the machine ran out of memory."""
    for option in ("--from-list", "--config"):
        result = runner.invoke(app, ["extract", "x.mp4", option, "/dev/zero", "-o", str(tmp_path / "out")])
        assert result.exit_code == 2 and len(error_lines(result)) == 1, (option, result.output)
    with pytest.raises(UsageError, match="holds NUL bytes"):
        read_list_file("/dev/zero")


def test_an_empty_input_argument_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clips: dict[str, Clip]) -> None:
    """``tdvideo extract "$UNSET"`` used to extract the whole working directory."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(clips["one"].path, tmp_path / "here.mp4")
    result = runner.invoke(app, ["extract", "", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "an empty path" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_file_named_only_by_its_extension(clips: dict[str, Clip], tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(clips["one"].path, src / ".mp4")
    shutil.copy(clips["one"].path, src / "x.MP4")
    found = discover_videos([src])
    assert sorted(v.relative.as_posix() for v in found.videos) == ["_", "x"]


def test_a_config_with_a_byte_order_mark(tmp_path: Path) -> None:
    from tdvideo.settings import load_toml

    preset = tmp_path / "bom.toml"
    preset.write_bytes(b"\xef\xbb\xbf" + b'model = "thumbnail"\n')
    assert load_toml(preset) == {"model": "thumbnail"}


def test_write_checks_left_by_a_kill_are_removed(tmp_path: Path) -> None:
    """A kill's leftover, once a minute old; a fresh one may be another run's check in progress."""
    import os
    import time

    old, fresh = tmp_path / ".tdvideo-write-test.abcd1234", tmp_path / ".tdvideo-write-test.efgh5678"
    for path in (old, fresh):
        path.write_text("")
    os.utime(old, (time.time() - 120,) * 2)
    prepare_output(tmp_path)
    assert list(tmp_path.iterdir()) == [fresh]


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_files_given_one_by_one_keep_their_folders(clips: dict[str, Clip], tmp_path: Path) -> None:
    """`find /data -name '*.mp4' | tdvideo extract --from-list -`: same names in different folders."""
    data = video_tree(tmp_path / "data", {"a/0001.mp4": clips["one"].path, "b/0001.mp4": clips["one"].path, "b/c/0002.mp4": clips["one"].path})
    listed = "".join(f"{p}\n" for p in sorted(data.rglob("*.mp4")))
    out = tmp_path / "feats"
    result = runner.invoke(app, ["extract", "--from-list", "-", "-o", str(out), "-q"], input=listed)
    assert result.exit_code == 0, result.output
    assert _files(out) == sorted(f"{n}.{ext}" for n in ("a/0001", "b/0001", "b/c/0002") for ext in ("json", "npy"))

    # --root names them below another folder; a file outside it is a usage error.
    names = [v.relative.as_posix() for v in discover_videos(sorted(data.rglob("*.mp4")), root=tmp_path).videos]
    assert names == ["data/a/0001", "data/b/0001", "data/b/c/0002"]
    with pytest.raises(UsageError, match=r"0001.mp4 is not below root=.*b"):
        discover_videos([data / "a" / "0001.mp4"], root=data / "b")
    # A lone file keeps its stem; relative paths work as given.
    assert [v.relative.as_posix() for v in discover_videos([data / "b" / "c" / "0002.mp4"]).videos] == ["0002"]


def test_files_and_folders_together(clips: dict[str, Clip], tmp_path: Path) -> None:
    data = video_tree(tmp_path / "data", {"x/1.mp4": clips["one"].path, "y/2.mp4": clips["one"].path, "z/3.mp4": clips["one"].path})
    found = discover_videos([data / "x" / "1.mp4", data / "z", data / "y" / "2.mp4"])
    assert [v.relative.as_posix() for v in found.videos] == ["x/1", "3", "y/2"]  # in the order given
