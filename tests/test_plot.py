"""tdvideo show / tdvideo.plot: the numbers the picture shows, and the picture itself."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

import tdvideo
import tdvideo.video
from tdvideo.cli import app
from tdvideo.show import changes, describe, peaks, similarity
from tdvideo.synthetic import index_frame, read_index, scene_frame, write_clip
from tdvideo.writers import Features, write_features

pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # after the skip: matplotlib is an extra
from matplotlib.image import AxesImage

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


# -- any output: long, damaged, hostile, in a folder someone else touched ----------------------


def _scenes(rows: int, *, scene: int, dims: int = 16, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """float32 rows: one positive vector a scene of ``scene`` rows, plus a little noise."""
    rng = np.random.default_rng(seed)
    bases = np.abs(rng.normal(size=(-(-rows // scene), dims)))
    return (np.repeat(bases, scene, axis=0)[:rows] + rng.normal(scale=noise, size=(rows, dims))).astype(np.float32)


def _output(base: Path, array: np.ndarray, *, fps: float = 10.0, metadata: dict | None = None) -> Path:
    times = np.arange(len(array), dtype=np.float64) / fps
    write_features(base, Features(array, times, {"model": "test", **(metadata or {})}), fmt="npy")
    return base


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every figure tdvideo saves, for its panels to be read back."""
    drawn: list[Figure] = []
    save = Figure.savefig

    def spy(self: Figure, *args: object, **kwargs: object) -> object:
        drawn.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return drawn


def _images(fig: Figure) -> list[AxesImage]:
    return [image for ax in fig.axes for image in ax.images]


def _matrix(fig: Figure) -> AxesImage:
    [image] = [image for image in _images(fig) if image.colorbar is not None]
    return image


def _timeline(fig: Figure) -> np.ndarray:
    [colours] = [np.asarray(i.get_array()) for i in _images(fig) if np.ndim(i.get_array()) == 3 and i.get_array().shape[0] == 1]
    return colours[0]


def _one_line_error(result: Result) -> str:
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


# The peak of this process's own memory: VmHWM, since ru_maxrss also counts the forked
# test process it was before exec.
LONG_CHILD = """
import re, sys, time
from pathlib import Path
from tdvideo.show import plot
started = time.perf_counter()
plot(sys.argv[1])
peak = re.search(r"VmHWM:\\s*(\\d+) kB", Path("/proc/self/status").read_text())
print(int(peak.group(1)) // 1024, time.perf_counter() - started)
"""


def _limit_address_space() -> None:
    # The matrix of every step of the old show asked for 320 GB here: fail, never thrash.
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))


def test_a_long_output_is_drawn_in_bounded_memory(tmp_path: Path) -> None:
    base = _output(tmp_path / "long", _scenes(200_000, scene=3000, dims=48), fps=30)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", LONG_CHILD, str(base)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_limit_address_space,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mib, seconds = done.stdout.split()
    assert int(peak_mib) < 300 and float(seconds) < 30, done.stdout  # 37 MB of features; the matrix of every step: 320 GB
    assert (tmp_path / "long.png").read_bytes()[:8] == PNG


def test_a_pooled_picture_says_so_and_the_cuts_stay_exact(tmp_path: Path, figures: list[Figure]) -> None:
    array = _scenes(2500, scene=250)
    base = _output(tmp_path / "clip", array)
    tdvideo.plot(base)
    [fig] = figures
    assert "2,500 steps pooled into 834 bins of 3" in fig.get_suptitle()
    assert _matrix(fig).get_array().shape == (834, 834) and _timeline(fig).shape == (834, 3)
    change = changes(array)
    [curve] = [line for ax in fig.axes for line in ax.get_lines() if len(line.get_xdata()) > 100]
    assert np.nanmax(curve.get_ydata()) == pytest.approx(change.max())  # a bin shows its largest change: no cut averaged away
    steps = np.arange(249, 2499, 250)  # the last step of each scene
    assert list(peaks(change)) == list(steps)
    assert describe(tdvideo.load(base))["cuts"] == pytest.approx(list((steps + 0.5) / 10))  # every step, not bins


def test_thumbnails_seek_to_their_times(tmp_path: Path, figures: list[Figure], monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_clip(tmp_path / "long.mp4", 600, make_frame=index_frame, fps=25, gop=25)
    base = _output(tmp_path / "out" / "long", _scenes(600, scene=60), fps=25, metadata={"source": {"path": str(source)}})
    decoded: list[int] = []  # the decoder's frames, each call

    def counted(name: str) -> object:
        real = getattr(tdvideo.video, name)

        def spy(*args: object, **kwargs: object) -> object:
            if name == "read_video":
                clip = real(*args, **kwargs)
                decoded.append(clip.frames_decoded)
                return clip

            def chunks() -> Iterator[object]:
                decoded.append(0)
                for chunk in real(*args, **kwargs):
                    decoded[-1] = chunk.frames_decoded
                    yield chunk

            return chunks()

        return spy

    for name in ("read_video", "read_chunks"):
        monkeypatch.setattr(tdvideo.video, name, counted(name))
    tdvideo.plot(base)
    assert 0 < sum(decoded) < 150  # six frames, each decoded from the keyframe before it: not 600
    [fig] = figures
    thumbs = [
        (float(ax.get_title().split()[0]), np.asarray(ax.images[0].get_array()))
        for ax in fig.axes
        if ax.images and ax.images[0].get_array().dtype == np.uint8
    ]
    wanted = np.linspace(0, 599 / 25, 6)
    assert [t for t, _ in thumbs] == pytest.approx(wanted, abs=1 / 25)
    assert [read_index(frame.transpose(2, 0, 1)) for _, frame in thumbs] == [round(t * 25) for t, _ in thumbs]


def test_a_killed_show_leaves_the_old_picture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _output(tmp_path / "clip", _scenes(40, scene=10))
    png = tdvideo.plot(base)
    before = png.read_bytes()

    def killed(self: Figure, fname: object, **kwargs: object) -> None:
        half = before[: len(before) // 2]
        if hasattr(fname, "write"):
            fname.write(half)
        else:
            Path(fname).write_bytes(half)
        raise KeyboardInterrupt  # Ctrl-C half-way through the PNG (a kill -9 leaves the temporary, for the next show to remove)

    monkeypatch.setattr(Figure, "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        tdvideo.plot(base)
    assert png.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.json", "clip.npy", "clip.png"]  # no temporary left


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_show_never_writes_through_a_link_or_onto_what_is_not_a_file(tmp_path: Path, kind: str) -> None:
    base = _output(tmp_path / "out" / "a", _scenes(40, scene=10))
    victim = tmp_path / "elsewhere.txt"
    victim.write_text("someone else's file")
    png = tmp_path / "out" / "a.png"
    if kind == "symlink":
        png.symlink_to(victim)
    elif kind == "fifo":
        os.mkfifo(png)
    else:
        png.mkdir()
    error = _one_line_error(runner.invoke(app, ["show", str(base)]))
    assert str(png) in error and "not replaced" in error
    assert victim.read_text() == "someone else's file"
    assert png.is_symlink() if kind == "symlink" else png.is_fifo() if kind == "fifo" else png.is_dir()


def test_the_picture_keeps_the_whole_name_of_the_output(tmp_path: Path) -> None:
    for name in ("clip.v1", "clip.v2"):
        _output(tmp_path / name, _scenes(40, scene=10))
    assert tdvideo.plot(tmp_path / "clip.v1") == tmp_path / "clip.v1.png"
    assert tdvideo.plot(tmp_path / "clip.v2.json") == tmp_path / "clip.v2.png"  # an output file's own suffix goes
    assert tdvideo.plot(tmp_path / "clip.v2.npy") == tmp_path / "clip.v2.png"
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["clip.v1.png", "clip.v2.png"]


def test_rows_of_nan_or_inf_are_marked_not_a_traceback(tmp_path: Path, figures: list[Figure]) -> None:
    array = _scenes(40, scene=10)
    array[[5, 6]] = np.nan
    array[30, 2] = np.inf
    base = _output(tmp_path / "bad", array)
    shown = runner.invoke(app, ["show", str(base)])
    assert shown.exit_code == 0, shown.output
    assert (tmp_path / "bad.png").read_bytes()[:8] == PNG
    [fig] = figures
    assert "3 of 40 steps hold NaN or inf" in fig.get_suptitle()
    assert np.isnan(_matrix(fig).get_array().filled(np.nan)[5]).all()  # the bad step is blank, the others drawn
    assert np.isfinite(_matrix(fig).get_array().filled(np.nan)[7, 7])
    found = describe(tdvideo.load(base))
    assert found["non_finite"] == 3 and found["cuts"] == pytest.approx([0.95, 1.95])  # the cut at 2.95 touches the inf row
    everything = _output(tmp_path / "nothing", np.full((5, 4), np.nan, dtype=np.float32))
    assert tdvideo.plot(everything).read_bytes()[:8] == PNG


def test_a_missing_output_folder_is_a_usage_error(tmp_path: Path) -> None:
    base = _output(tmp_path / "clip", _scenes(40, scene=10))
    target = tmp_path / "missing" / "clip.png"
    shown = runner.invoke(app, ["show", str(base), "-o", str(target)])
    assert shown.exit_code == 2 and str(target) in _one_line_error(shown)


@pytest.mark.parametrize("metadata", [{"source": "not a record"}, {"source": {"path": 7}}], ids=["source", "path"])
def test_odd_metadata_is_drawn_anyway(tmp_path: Path, metadata: dict) -> None:
    base = _output(tmp_path / "odd", _scenes(40, scene=10), metadata=metadata)
    assert tdvideo.plot(base).read_bytes()[:8] == PNG


def test_timestamps_of_nan_are_one_line(tmp_path: Path) -> None:
    times = np.arange(40) / 10
    times[[3, -1]] = np.nan, np.inf
    write_features(tmp_path / "clip", Features(_scenes(40, scene=10), times, {}), fmt="npy")
    assert "timestamps that are no times of a video" in _one_line_error(runner.invoke(app, ["show", str(tmp_path / "clip")]))


def test_nearly_constant_features_are_not_stretched_into_structure(tmp_path: Path, figures: list[Figure]) -> None:
    rng = np.random.default_rng(0)
    flat = (np.abs(rng.normal(size=48)) + rng.normal(scale=1e-4, size=(200, 48))).astype(np.float32)
    assert similarity(flat).min() > 0.9999
    tdvideo.plot(_output(tmp_path / "flat", flat))
    tdvideo.plot(_output(tmp_path / "scenes", _scenes(200, scene=50, dims=48)))
    flat_fig, scenes_fig = figures
    image = _matrix(flat_fig)
    low, high = image.get_clim()
    assert low <= 0.99 and high == 1.0  # a spread of 4e-5 is not the whole colour map
    bar = image.colorbar.ax.yaxis
    assert bar.get_offset_text().get_text() == ""  # no "1e-5+9.999e-1": the ticks read as they are
    ticks = [float(t.get_text().replace("\N{MINUS SIGN}", "-")) for t in bar.get_ticklabels() if t.get_text()]
    assert ticks and all(low - 1e-9 <= t <= 1.0 + 1e-9 for t in ticks)
    assert np.abs(_timeline(flat_fig) - 0.5).max() < 0.05  # noise stays grey
    assert np.ptp(_timeline(scenes_fig), axis=0).max() > 0.5  # scenes are colours


def test_show_into_a_folder(scenes: Path, tmp_path: Path) -> None:
    """-o FOLDER (existing, or named with a trailing slash) writes NAME.png inside it; a
    trailing-slash name that does not exist is a usage error, not a file named like it."""
    [done] = tdvideo.Extractor().run([scenes], out=tmp_path / "out", progress=False)
    folder = tmp_path / "pictures"
    folder.mkdir()
    result = runner.invoke(app, ["show", str(done.output), "-o", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "scenes.png").read_bytes().startswith(PNG)
    result = runner.invoke(app, ["show", str(done.output), "-o", str(tmp_path / "missing") + "/"])
    assert result.exit_code == 2 and "no such folder to write the picture in" in result.stderr
    assert not (tmp_path / "missing").exists()


# -- a query's best moments on the timeline ----------------------------------------------------


def _query_panel(fig: Figure) -> tuple[np.ndarray, list[tuple[float, float]], str]:
    """The query panel's curve, its markers (time, score) in rank order, and its title."""
    [ax] = [ax for ax in fig.axes if ax.get_title().startswith("similarity to ")]
    lines = ax.get_lines()
    markers = [(float(line.get_xdata()[0]), float(line.get_ydata()[0])) for line in lines if line.get_marker() == "^"]
    ranks = [int(text.get_text()) for text in ax.texts]
    assert ranks == list(range(1, len(markers) + 1))
    [curve] = [line for line in lines if line.get_marker() != "^"]
    return np.asarray(curve.get_ydata()), markers, ax.get_title()


def test_a_query_marks_the_moments_search_finds(tmp_path: Path, figures: list[Figure]) -> None:
    array = _scenes(60, scene=10)
    base = _output(tmp_path / "out" / "clip", array)
    vector = array[35] + 0.05  # near the fourth scene (3.0-3.9 s)

    tdvideo.plot(base, vector=vector, k=3)
    [fig] = figures
    curve, markers, title = _query_panel(fig)
    found = tdvideo.search(tmp_path / "out", vector=vector, k=3)
    assert [t for t, _ in markers] == pytest.approx([m.time for m in found])
    assert [s for _, s in markers] == pytest.approx([m.score for m in found], abs=1e-6)
    assert all(3.0 <= m.time < 4.0 for m in found) and "its 3 best moments" in title
    expected = array @ vector / np.linalg.norm(array, axis=1) / np.linalg.norm(vector)  # every step, by hand
    np.testing.assert_allclose(curve, expected, atol=1e-5)


def test_a_pooled_picture_shows_each_bins_best_similarity(tmp_path: Path, figures: list[Figure]) -> None:
    array = _scenes(2500, scene=250)
    base = _output(tmp_path / "clip", array)
    tdvideo.plot(base, vector=array[1234], k=2)
    curve, markers, title = _query_panel(figures[0])
    assert len(curve) == 834 and np.nanmax(curve) == pytest.approx(1.0, abs=1e-6)  # the best step's bin shows it
    assert markers[0] == pytest.approx((123.4, 1.0), abs=1e-6) and "the largest of each 3" in title


def test_show_marks_the_frame_a_picture_shows(scenes: Path, tmp_path: Path, figures: list[Figure]) -> None:
    """--image: the picture of a frame of the third scene, through the features' own model."""
    import av

    [result] = tdvideo.Extractor(model="thumbnail").run([scenes], out=tmp_path, progress=False)
    picture = tmp_path / "frame.png"
    with av.open(str(picture), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb24"
        frame = av.VideoFrame.from_ndarray(scene_frame(25, 48, 64, frames_per_scene=10), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)

    shown = runner.invoke(app, ["show", str(result.output), "--image", str(picture), "-k", "1"])
    assert shown.exit_code == 0, shown.output
    _, [(time, score)], title = _query_panel(figures[0])
    assert time == pytest.approx(2.5) and score > 0.99 and "frame.png" in title


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--query", "a dog"], "features of colorhist have no text tower"),
        (["--query", " "], "the text query is empty"),
        (["--image", "x.png", "--query", "a dog"], "search needs one query"),
        (["--query", "a dog", "-k", "0"], "k must be a positive integer, got 0"),
        (["--query", "a dog", "-k", "51"], "show marks at most 50 moments, got k=51"),
    ],
)
def test_a_query_show_cannot_use_is_one_line(scenes: Path, tmp_path: Path, args: list[str], message: str) -> None:
    [result] = tdvideo.Extractor().run([scenes], out=tmp_path, progress=False)
    shown = runner.invoke(app, ["show", str(result.output), *args])
    assert message in _one_line_error(shown) and shown.exit_code == 2
    assert not (tmp_path / "scenes.png").exists()
