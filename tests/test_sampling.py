"""Sampling arithmetic on bare timestamps: which frames each mode keeps."""

from __future__ import annotations

import pytest

from tdvideo.errors import UsageError
from tdvideo.sampling import Sampling, select_indices, windows

CFR25 = [i / 25 for i in range(50)]  # 2 s at 25 fps


def test_default_keeps_everything() -> None:
    assert select_indices(CFR25, Sampling()) == list(range(50))


def test_fps_takes_last_frame_shown_at_or_before_each_grid_point() -> None:
    # Grid 0, 0.1, 0.2, ...; frames every 0.04 s: 0.1 -> frame 2 (0.08), 0.2 -> frame 5 (0.20).
    kept = select_indices(CFR25, Sampling(fps=10))
    assert kept == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27, 30, 32, 35, 37, 40, 42, 45, 47]


def test_fps_above_source_rate_never_repeats_a_frame() -> None:
    assert select_indices(CFR25, Sampling(fps=100)) == list(range(50))


def test_fps_on_variable_frame_rate() -> None:
    times = [0.0, 0.1, 0.5, 0.6, 2.0, 2.1, 2.15, 4.0]
    # Grid every 0.5 s up to the stream end (4.1): each takes the frame on screen then.
    kept = select_indices(times, Sampling(fps=2), stop=4.1)
    assert kept == [0, 2, 3, 4, 6, 7]


def test_fps_grid_starts_at_first_frame() -> None:
    times = [0.3 + i / 10 for i in range(20)]
    assert select_indices(times, Sampling(fps=1), stop=2.3) == [0, 10]


def test_stride() -> None:
    assert select_indices(CFR25, Sampling(stride=7)) == [0, 7, 14, 21, 28, 35, 42, 49]


def test_num_frames_is_uniform_over_the_range() -> None:
    assert select_indices(CFR25, Sampling(num_frames=5), stop=2.0) == [0, 10, 20, 30, 40]
    assert select_indices(CFR25, Sampling(num_frames=100), stop=2.0) == list(range(50))


def test_start_and_end() -> None:
    # Frames with start <= t < end: 0.52 s (frame 13) to 0.96 s (frame 24).
    assert select_indices(CFR25, Sampling(start=0.5, end=1.0)) == list(range(13, 25))
    assert select_indices(CFR25, Sampling(start=0.5, end=1.0, stride=5)) == [13, 18, 23]
    assert select_indices(CFR25, Sampling(start=1.0, num_frames=4), stop=2.0) == [25, 31, 37, 43]


def test_windows() -> None:
    assert list(windows(range(10), clip_len=4)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert list(windows(range(8), clip_len=4, clip_stride=2)) == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    assert list(windows(range(10), clip_len=2, clip_stride=4)) == [[0, 1], [4, 5], [8, 9]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fps": 2, "stride": 3}, "choose one of fps, stride, num_frames"),
        ({"fps": 0}, r"fps must be a number in \[1e-09, 1e\+06\], got 0"),
        ({"fps": float("nan")}, "fps must be a number in"),
        ({"fps": 1e-300}, "fps must be a number in .* got 1e-300"),
        ({"start": 1e300}, r"start must be a number of seconds in \[0, 1e\+09\], got 1e\+300"),
        ({"end": float("inf")}, "end must be a number of seconds in"),
        ({"stride": 0}, "stride must be a positive integer, got 0"),
        ({"num_frames": 2.5}, "num_frames must be a positive integer, got 2.5"),
        ({"start": 2.0, "end": 1.0}, "end (1.0) must be after start (2.0)"),
        ({"clip_stride": 2}, "clip_stride needs clip_len"),
    ],
)
def test_invalid_sampling_names_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Sampling(**kwargs)


def test_to_dict_keeps_only_what_was_set() -> None:
    assert Sampling().to_dict() == {}
    assert Sampling(fps=2.0, start=1.0).to_dict() == {"fps": 2.0, "start": 1.0}


def test_grid_rows_repeat_the_frame_shown_at_each_grid_point() -> None:
    from tdvideo.sampling import grid_rows

    # Frames kept at 0, 0.5, 3.0 and 3.5 (a gap of 2.5 s after 0.5), a 2 fps grid, shown until 3.6 s.
    grid, rows = grid_rows([0.0, 0.5, 3.0, 3.5], step=0.5, end=3.6)
    assert grid.tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    assert rows.tolist() == [0, 1, 1, 1, 1, 1, 2, 3]
    grid, rows = grid_rows([0.0, 0.5], step=0.5, end=None)  # unknown end: the last frame's own time
    assert (grid.tolist(), rows.tolist()) == ([0.0, 0.5], [0, 1])
    assert [part.tolist() for part in grid_rows([], step=0.5, end=1.0)] == [[], []]
    # A frame shown a little before a grid point (within EPS) counts as shown at it; times
    # that go back (a damaged stream) never make a row go back.
    assert grid_rows([0.0, 1.0 - 1e-9], step=1.0, end=2.0)[1].tolist() == [0, 1]
    assert grid_rows([0.0, 2.0, 1.0, 3.0], step=1.0, end=4.0)[1].tolist() == [0, 0, 2, 3]
