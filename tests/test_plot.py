"""tdvideo show / tdvideo.plot: the numbers the picture shows, and the picture itself."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tdvideo
from tdvideo.cli import app
from tdvideo.show import changes, describe, peaks, similarity
from tdvideo.synthetic import scene_frame, write_clip

pytest.importorskip("matplotlib")
runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four scenes of 10 frames at 10 fps: hard cuts at 1, 2 and 3 s."""
    path = tmp_path_factory.mktemp("scenes") / "scenes.mp4"
    return write_clip(path, 40, make_frame=partial(scene_frame, height=48, width=64, frames_per_scene=10), fps=10)


def test_the_similarity_matrix_shows_the_scenes(scenes: Path) -> None:
    features = tdvideo.Extractor().extract(scenes)
    x = features.array.astype(np.float64)
    sim = similarity(x)
    assert sim.shape == (40, 40)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-9)
    scene = np.arange(40) // 10
    same, other = sim[scene[:, None] == scene[None, :]], sim[scene[:, None] != scene[None, :]]
    assert same.min() > 0.95 and other.max() < same.min() - 0.05  # inside a scene alike, across scenes not
    expected = x[3] @ x[27] / (np.linalg.norm(x[3]) * np.linalg.norm(x[27]))
    assert sim[3, 27] == pytest.approx(expected)
    change = changes(x)
    assert list(peaks(change)) == [9, 19, 29]  # the steps 9->10, 19->20, 29->30
    assert describe(features)["cuts"] == pytest.approx([0.95, 1.95, 2.95])


@pytest.mark.parametrize("options", [{}, {"model": "conv2d"}, {"model": "thumbnail", "clip_len": 4, "clip_stride": 4}])
def test_show_writes_a_png_for_vectors_maps_and_windows(scenes: Path, tmp_path: Path, options: dict) -> None:
    [result] = tdvideo.Extractor(**options).run([scenes], out=tmp_path, progress=False)
    shown = runner.invoke(app, ["show", str(tmp_path / "scenes")])
    assert shown.exit_code == 0, shown.output
    png = tmp_path / "scenes.png"
    assert shown.stdout.strip() == str(png) and png.read_bytes()[:8] == PNG
    assert describe(tdvideo.load(result.output))["cuts"]  # the cuts are found in every kind


def test_show_works_when_the_source_has_moved(scenes: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved.mp4"
    moved.write_bytes(scenes.read_bytes())
    [result] = tdvideo.Extractor().run([moved], out=tmp_path / "out", progress=False)
    moved.unlink()
    path = tdvideo.plot(result.output, tmp_path / "picture.png")
    assert path.read_bytes()[:8] == PNG


def test_show_without_matplotlib_says_what_to_install(scenes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [result] = tdvideo.Extractor().run([scenes], out=tmp_path, progress=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    shown = runner.invoke(app, ["show", str(result.output)])
    assert shown.exit_code == 2 and "pip install 'tdvideo[plot]'" in shown.stderr
