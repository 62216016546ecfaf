"""A whole output folder as one dataset: load_dir and the Parquet export."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tdvideo
from tdvideo.cli import app

from .conftest import Clip, video_tree

pq = pytest.importorskip("pyarrow.parquet")


def _equal(table, name: str):
    import pyarrow.compute as pc

    return pc.equal(table["video"], name)
runner = CliRunner()


@pytest.fixture
def out(clips: dict[str, Clip], tmp_path: Path) -> Path:
    src = video_tree(tmp_path / "in", {"a/x.mp4": clips["h264"].path, "b/x.webm": clips["vp9"].path, "one.mp4": clips["one"].path})
    (src / "bad.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    list(tdvideo.Extractor(workers=0).run([src], out=out, progress=False))
    return out


def test_load_dir_yields_every_finished_output(out: Path) -> None:
    got = dict(tdvideo.load_dir(out))
    assert sorted(got) == ["a/x", "b/x", "one"]  # not the failures log, not the run records
    for name, features in got.items():
        np.testing.assert_array_equal(features.array, tdvideo.load(out / f"{name}.npy").array)


def test_export_round_trips_against_the_per_video_files(out: Path, tmp_path: Path) -> None:
    target = tmp_path / "tables" / "features.parquet"
    result = runner.invoke(app, ["export", str(out), "--to", str(target)])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("3 videos, 91 rows ->")
    table = pq.read_table(target)
    assert table.column_names == ["video", "timestamp", "feature"] and table.num_rows == 91
    assert pq.ParquetFile(target).num_row_groups == 3  # one per video: memory holds one at a time
    for name, features in tdvideo.load_dir(out):
        rows = table.filter(_equal(table, name))
        np.testing.assert_array_equal(np.stack(rows["feature"].to_numpy(zero_copy_only=False)), features.array)
        np.testing.assert_array_equal(rows["timestamp"].to_numpy(), features.timestamps)
    videos = pq.read_table(tmp_path / "tables" / "features.videos.parquet").to_pylist()
    assert [(v["video"], v["rows"], v["model"]) for v in videos] == [("a/x", 60, "colorhist"), ("b/x", 30, "colorhist"), ("one", 1, "colorhist")]
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_export_of_windows_and_maps_flattens_each_timestep(clips: dict[str, Clip], tmp_path: Path) -> None:
    [result] = tdvideo.Extractor(model="thumbnail", clip_len=4, clip_stride=4).run([clips["h264"].path], out=tmp_path / "w", progress=False)
    tdvideo.export_parquet(tmp_path / "w", tmp_path / "w.parquet")
    table = pq.read_table(tmp_path / "w.parquet")
    features = tdvideo.load(result.output)  # (15, 4, 192): 15 windows
    assert table.num_rows == 15 and table.schema.field("feature").type.list_size == 4 * 192
    np.testing.assert_array_equal(table["timestamp"].to_numpy(), features.timestamps[:, 0])


def test_export_refuses_mixed_feature_sizes_and_empty_folders(clips: dict[str, Clip], tmp_path: Path) -> None:
    list(tdvideo.Extractor().run([clips["h264"].path], out=tmp_path / "mix" / "a", progress=False))
    list(tdvideo.Extractor(model="thumbnail").run([clips["vp9"].path], out=tmp_path / "mix" / "b", progress=False))
    result = runner.invoke(app, ["export", str(tmp_path / "mix"), "--to", str(tmp_path / "m.parquet")])
    assert result.exit_code == 2 and "features of size 192, but earlier videos have 48" in result.stderr
    assert not (tmp_path / "m.parquet").exists() and not list(tmp_path.glob(".m.parquet*"))
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["export", str(tmp_path / "empty"), "--to", str(tmp_path / "e.parquet")])
    assert result.exit_code == 2 and "no finished tdvideo outputs to export" in result.stderr


def test_export_without_pyarrow_says_what_to_install(out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    result = runner.invoke(app, ["export", str(out), "--to", str(tmp_path / "f.parquet")])
    assert result.exit_code == 2 and "pip install 'tdvideo[parquet]'" in result.stderr


def test_a_killed_export_leaves_nothing_the_next_one_does_not_remove(out: Path, tmp_path: Path) -> None:
    """Killed part-way (here at its first rename), an export leaves temporaries; the next
    export of the same target removes them, and a target that is a link is not written through."""
    import os
    import subprocess
    import textwrap

    target = tmp_path / "t" / "f.parquet"
    script = textwrap.dedent(
        f"""
        import os, signal
        os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        import tdvideo
        tdvideo.export_parquet({str(out)!r}, {str(target)!r})
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert killed.returncode == -9, killed.stderr
    assert len(list(target.parent.glob(".f.*parquet*.tmp"))) == 2 and not target.exists()
    report = tdvideo.export_parquet(out, target)
    assert (report.videos, report.rows) == (3, 91)
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.parquet", "f.videos.parquet"]
    elsewhere = tmp_path / "elsewhere.parquet"
    elsewhere.write_bytes(b"keep")
    target.unlink()
    os.symlink(elsewhere, target)
    result = runner.invoke(app, ["export", str(out), "--to", str(target)])
    assert result.exit_code == 1 and "a symbolic link, not a regular file; not replaced" in result.stderr
    assert elsewhere.read_bytes() == b"keep"
