"""tdvideo search: the moments of a folder of features most like a sentence, an image or a
vector; ranked as computed by hand, refused in one line where the query has no meaning."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tdvideo
from tdvideo.cli import app
from tdvideo.errors import UsageError
from tdvideo.synthetic import index_frame

from .conftest import Clip

runner = CliRunner()


def extract(source: Path, out: Path, *args: str) -> None:
    result = runner.invoke(app, ["extract", str(source), "-o", str(out), "-q", *args])
    assert result.exit_code == 0, result.output


def png(path: Path, index: int, *, height: int = 64, width: int = 96) -> Path:
    """A picture of the clips' frame ``index`` (see tdvideo.synthetic.index_frame)."""
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
        frame = av.VideoFrame.from_ndarray(index_frame(index, height, width), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def every_row(out: Path) -> tuple[list[tuple[str, float, int]], np.ndarray]:
    names, rows = [], []
    for name, features in tdvideo.load_dir(out):
        names += [(name, float(t), i) for i, t in enumerate(features.timestamps)]
        rows.append(features.array.reshape(len(features.array), -1))
    return names, np.concatenate(rows)


def by_hand(out: Path, query: np.ndarray, k: int) -> list[tuple[str, float]]:
    names, rows = every_row(out)
    norms = np.linalg.norm(rows, axis=1)
    scores = rows @ query / np.where(norms > 0, norms, 1) / np.linalg.norm(query)  # a black frame's: 0
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    return [(names[i][0], names[i][1]) for i in order]


def test_a_vector_ranks_every_row_of_every_output(clips: dict[str, Clip], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(clips["h264"].path, folder / f"{name}.mp4")
    extract(folder, tmp_path / "out", "--model", "thumbnail", "--fps", "5")
    _, rows = every_row(tmp_path / "out")
    query = rows[7] + 0.1 * np.random.default_rng(0).standard_normal(rows.shape[1]).astype(np.float32)

    moments = tdvideo.search(tmp_path / "out", vector=query, k=5)
    assert [(m.video, m.time) for m in moments] == by_hand(tmp_path / "out", query, 5)
    assert [m.score for m in moments] == sorted((m.score for m in moments), reverse=True)
    assert moments[0].score == pytest.approx(float(rows[7] @ query / np.linalg.norm(rows[7]) / np.linalg.norm(query)), abs=1e-5)
    assert len(tdvideo.search(tmp_path / "out", vector=query, k=1000)) == len(rows)  # all of them, no more


def test_an_image_finds_its_own_frame(clips: dict[str, Clip], tmp_path: Path) -> None:
    """The picture of frame 23, through the features' own model and preprocessing."""
    extract(clips["h264"].path, tmp_path / "out", "--model", "thumbnail")
    picture = png(tmp_path / "frame23.png", 23)

    result = runner.invoke(app, ["search", str(tmp_path / "out"), "--image", str(picture), "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    best = json.loads(result.output)[0]
    assert best["video"] == "idx" and best["row"] == 23 and best["time"] == pytest.approx(23 / 25)
    assert best["score"] > 0.999


def test_the_table(clips: dict[str, Clip], tmp_path: Path) -> None:
    extract(clips["h264"].path, tmp_path / "out", "--model", "thumbnail")
    picture = png(tmp_path / "frame5.png", 5)
    result = runner.invoke(app, ["search", str(tmp_path / "out"), "--image", str(picture), "-k", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["rank", "video", "time", "(s)", "score"]
    assert lines[1].split()[:3] == ["1", "idx", "0.20"] and len(lines) == 3


def test_a_sentence_with_a_model_that_has_no_text_tower_is_one_line(clips: dict[str, Clip], tmp_path: Path) -> None:
    extract(clips["h264"].path, tmp_path / "out")
    result = runner.invoke(app, ["search", str(tmp_path / "out"), "a dog"])
    assert result.exit_code == 2
    assert result.output.startswith("error: features of colorhist have no text tower") and "--image" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "search needs one query"),
        (["a dog", "--image", "x.png"], "search needs one query"),
        (["   "], "the text query is empty"),
        (["a dog", "-k", "0"], "k must be a positive integer, got 0"),
    ],
)
def test_queries_that_mean_nothing_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["search", str(tmp_path), *args])
    assert result.exit_code == 2 and message in result.output


def test_outputs_of_different_models_are_not_mixed(clips: dict[str, Clip], tmp_path: Path) -> None:
    shutil.copy(clips["h264"].path, tmp_path / "a.mp4")
    shutil.copy(clips["vp9"].path, tmp_path / "b.webm")
    extract(tmp_path / "a.mp4", tmp_path / "out", "--model", "thumbnail")
    extract(tmp_path / "b.webm", tmp_path / "out", "--model", "colorhist")
    with pytest.raises(UsageError, match=r"b: its features are not comparable with the others' \(different model, feature_shape\)"):
        tdvideo.search(tmp_path / "out", vector=np.ones(192), k=3)
    with pytest.raises(UsageError, match="holds no tdvideo outputs"):
        (tmp_path / "empty").mkdir()
        tdvideo.search(tmp_path / "empty", vector=np.ones(3))
    with pytest.raises(UsageError, match="must be finite"):
        tdvideo.search(tmp_path / "out", vector=np.full(192, np.nan))
    with pytest.raises(UsageError, match="no direction"):
        tdvideo.search(tmp_path / "out", vector=np.zeros(192))


@pytest.mark.filterwarnings("ignore:model .* RANDOM weights")
def test_random_weights_have_nothing_to_find(clips: dict[str, Clip], tmp_path: Path) -> None:
    extract(clips["h264"].path, tmp_path / "out", "--model", "resnet18", "--weights", "none", "--num-frames", "2")
    result = runner.invoke(app, ["search", str(tmp_path / "out"), "--image", str(png(tmp_path / "frame5.png", 5))])
    assert result.exit_code == 2 and "extracted with random weights" in result.output


def test_a_damaged_output_is_named_and_skipped_on_request(clips: dict[str, Clip], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        shutil.copy(clips["h264"].path, folder / f"{name}.mp4")
    extract(folder, tmp_path / "out", "--model", "thumbnail")
    with open(tmp_path / "out" / "a.npy", "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\xff" * 8)
    picture = png(tmp_path / "frame5.png", 5)
    result = runner.invoke(app, ["search", str(tmp_path / "out"), "--image", str(picture)])
    assert result.exit_code == 1 and "a.npy" in result.output and "--skip-damaged" in result.output
    result = runner.invoke(app, ["search", str(tmp_path / "out"), "--image", str(picture), "--skip-damaged", "--json"])
    assert result.exit_code == 0
    assert {m["video"] for m in json.loads(result.stdout)} == {"b"}
    assert "left out a" in result.stderr


def test_timm_openai_clip_features_use_the_same_weights_text_tower(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The text tower of timm's OpenAI CLIP tags is their Hugging Face release's (no network
    here: the tower is stood in for, and asked for by name)."""
    from tdvideo.models import _hf
    from tdvideo.writers import Features, write_features

    asked: list[tuple[str, str]] = []

    class Tower:
        def encode(self, texts: list[str]) -> torch.Tensor:
            return torch.ones(1, 4)

    monkeypatch.setattr(_hf, "text_tower", lambda weights, kind: asked.append((weights, kind)) or Tower())
    meta = {"model": "timm:vit_base_patch16_clip_224.openai", "weights": "vit_base_patch16_clip_224.openai", "embedding": "image-text",
            "random_weights": False, "pool": "avg", "features_per": "frame"}
    rows = np.array([[1, 1, 1, 1], [1, -1, 1, -1]], dtype=np.float32)
    write_features(tmp_path / "out" / "v", Features(array=rows, timestamps=np.array([0.0, 0.5]), metadata=meta))
    moments = tdvideo.search(tmp_path / "out", "a diagram", k=2)
    assert asked == [("openai/clip-vit-base-patch16", "clip")]
    assert [m.row for m in moments] == [0, 1] and moments[0].score == pytest.approx(1.0)


def test_a_fifo_as_the_picture_is_one_line_not_a_hang(clips: dict[str, Clip], tmp_path: Path) -> None:
    """Opening a FIFO blocks until a writer comes: the picture is refused without opening it so."""
    extract(clips["h264"].path, tmp_path / "out", "--model", "thumbnail")
    fifo = tmp_path / "pic.png"
    os.mkfifo(fifo)
    args = [sys.executable, "-m", "tdvideo", "search", str(tmp_path / "out"), "--image", str(fifo)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and done.stderr.strip() == f"error: {fifo}: not a regular file (a FIFO)"
