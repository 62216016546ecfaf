"""Decoding real (generated) clips: exact frame selection, timestamps, geometry, bad files."""

from __future__ import annotations

import csv
import dataclasses
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import tdvideo
from tdvideo.errors import (
    DecodeError,
    EmptyVideoError,
    NoVideoStreamError,
    UnsupportedVideoError,
    UsageError,
    VideoOpenError,
)
from tdvideo.sampling import Sampling, select_indices
from tdvideo.synthetic import index_frame, read_index, remux, write_clip
from tdvideo.video import VideoInfo
from tdvideo.video import _geometry as geometry
from tdvideo.video import _index as index
from tdvideo.video import _integrity as integrity
from tdvideo.video import _probe as probe
from tdvideo.video import _reader as reader

from .conftest import Clip, frame_indices

SHARED_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "videos"


def test_probe(clips: dict[str, Clip]) -> None:
    clip = clips["h264"]
    info = tdvideo.probe(clip.path)
    assert (info.width, info.height, info.raw_width, info.raw_height) == (96, 64, 96, 64)
    assert info.fps == 25 and info.guessed_fps == 25
    assert info.frames == 60 and info.duration == pytest.approx(2.4)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p" and info.rotation == 0
    assert info.start_time == 0.0 and info.has_audio is False
    assert info.keyframe_interval == pytest.approx(12 / 25)


def test_all_frames_in_order_with_pts_timestamps(clips: dict[str, Clip]) -> None:
    for name in ("h264", "vp9", "mpeg4"):
        clip = clips[name]
        video = tdvideo.read_video(clip.path)
        assert video.frames.shape == (clip.num_frames, 3, clip.height, clip.width)
        assert video.frames.dtype == torch.uint8
        assert frame_indices(video.frames) == list(range(clip.num_frames))
        np.testing.assert_allclose(video.timestamps.numpy(), clip.times, atol=1e-9)
        assert not video.pts_synthesized


@pytest.mark.parametrize(
    "options",
    [
        {"fps": 10},
        {"fps": 3.3},
        {"fps": 60},
        {"stride": 4},
        {"num_frames": 7},
        {"start": 0.5, "end": 1.5},
        {"start": 1.0, "fps": 4},
        {"end": 1.0, "num_frames": 3},
    ],
)
def test_each_sampling_mode_selects_exactly(clips: dict[str, Clip], options: dict) -> None:
    """The decoded frames are the ones the pure selection picks, whichever way the reader got there."""
    clip = clips["h264"]
    expected = select_indices(clip.times, Sampling(**options), stop=clip.num_frames / clip.fps)
    video = tdvideo.read_video(clip.path, **options)
    assert frame_indices(video.frames) == expected
    np.testing.assert_allclose(video.timestamps.numpy(), [clip.times[i] for i in expected])


def test_sparse_sampling_seeks_and_stays_exact(clips: dict[str, Clip]) -> None:
    clip = clips["long_gop"]  # 200 frames, a keyframe every 25 (1 s)
    expected = select_indices(clip.times, Sampling(fps=0.4), stop=8.0)
    assert index.keyframe_times(av.open(str(clip.path)).streams.video[0]) == pytest.approx([0, 1, 2, 3, 4, 5, 6, 7])
    video = tdvideo.read_video(clip.path, fps=0.4)
    assert frame_indices(video.frames) == expected == [0, 62, 125, 187]
    assert video.seeks >= 3
    assert video.frames_decoded < clip.num_frames
    dense = tdvideo.read_video(clip.path, fps=5)  # gaps shorter than a GOP: no seeking
    assert dense.seeks == 0 and dense.frames_decoded == clip.num_frames


@pytest.mark.parametrize("rate, seeks", [(1.0, True), (2.0, False), (3.7, False)])
def test_frames_that_cannot_matter_are_never_decoded(clips: dict[str, Clip], rate: float, seeks: bool) -> None:
    """Between grid points, non-reference frames are dropped by the decoder (skip_frame=NONREF),
    and where a keyframe lies far enough ahead at or before the next grid point, the reader seeks."""
    clip = clips["long_gop"]  # a keyframe every second (25 frames)
    video = tdvideo.read_video(clip.path, fps=rate)
    assert frame_indices(video.frames) == select_indices(clip.times, Sampling(fps=rate), stop=8.0)
    assert (video.seeks > 0) == seeks
    assert video.frames_decoded < clip.num_frames


def test_seek_planning_from_the_keyframe_index() -> None:
    keyframes = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]  # an 8 s video at 25 fps

    def planned(sampling: Sampling, keyframes: list[float], end: float = 8.0) -> int:
        return index.planned_seeks(sampling, start=0.0, end=end, keyframes=keyframes, frame=0.04)

    assert planned(Sampling(fps=0.5), keyframes) == 3  # 0->2, 2->4, 4->6
    assert planned(Sampling(fps=5), keyframes) == 0  # grid closer than a seek pays
    assert planned(Sampling(num_frames=4), keyframes) == 3
    assert planned(Sampling(fps=0.5), []) == 0  # no index
    assert planned(Sampling(stride=50), keyframes) == 0  # not a time grid
    # A damaged header claiming 19 years: the walk stops at the last keyframe (the fuzz
    # test found it building a list of 300 million grid points).
    assert planned(Sampling(fps=0.5), keyframes, end=6e8) == 4  # and 6 -> 8, past the 8 s


def test_start_seeks_instead_of_decoding_from_zero(clips: dict[str, Clip]) -> None:
    clip = clips["long_gop"]
    video = tdvideo.read_video(clip.path, start=6.0)
    assert frame_indices(video.frames) == list(range(150, 200))
    assert video.frames_decoded <= 50 + 25


def test_keyframes_only(clips: dict[str, Clip]) -> None:
    video = tdvideo.read_video(clips["h264"].path, keyframes_only=True)
    assert frame_indices(video.frames) == [0, 12, 24, 36, 48]


def test_clip_windows(clips: dict[str, Clip]) -> None:
    clip = clips["h264"]
    video = tdvideo.read_video(clip.path, stride=2, clip_len=4, clip_stride=3)
    kept = list(range(0, 60, 2))  # 30 frames -> windows start at 0, 3, ..., 24
    assert video.frames.shape == (9, 4, 3, 64, 96)
    assert video.timestamps.shape == (9, 4)
    for b, window in enumerate(video.frames):
        assert frame_indices(window) == kept[3 * b : 3 * b + 4]


def test_iter_video_streams_chunks_equal_to_read_video(clips: dict[str, Clip]) -> None:
    clip = clips["h264"]
    chunks = list(tdvideo.iter_video(clip.path, chunk_frames=16, size=32))
    assert [len(c) for c in chunks] == [16, 16, 16, 12]
    whole = tdvideo.read_video(clip.path, size=32)
    assert torch.equal(torch.cat([c.frames for c in chunks]), whole.frames)
    assert torch.equal(torch.cat([c.timestamps for c in chunks]), whole.timestamps)


def test_chunks_are_bounded_in_bytes_too(clips: dict[str, Clip]) -> None:
    frame = 32 * 48 * 3
    chunks = list(tdvideo.iter_video(clips["h264"].path, chunk_frames=1000, chunk_bytes=7 * frame, size=32))
    assert [len(c) for c in chunks] == [7] * 8 + [4]
    windows = list(tdvideo.iter_video(clips["h264"].path, chunk_frames=1000, chunk_bytes=7 * frame, size=32, clip_len=4))
    assert {c.frames.shape[:2] for c in windows} == {(1, 4)}  # whole windows, at least one


def test_frames_over_the_limits_are_refused(clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match=r"size 64x12288 is over the frame limits \(at most 8192 px a side"):
        tdvideo.read_video(clips["h264"].path, size=(64, 12288))
    with pytest.raises(UnsupportedVideoError, match=r"frames resized to 4000x6000 would be over the frame limits"):
        tdvideo.read_video(clips["h264"].path, size=4000)  # the short side: 24 Mpx
    with pytest.raises(UnsupportedVideoError, match=r"a window of 64 frames of 2048x3072 would take 1.1 GiB"):
        tdvideo.read_video(clips["h264"].path, size=(2048, 3072), clip_len=64)
    monkeypatch.setattr(reader, "CODED_LIMIT", geometry.FrameLimit(pixels=64 * 64, side=100))
    with pytest.raises(UnsupportedVideoError, match="coded frames of 96x64 are over the frame limits"):
        tdvideo.read_video(clips["h264"].path)


def test_dropped_frames_are_never_converted(clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = geometry.Geometry.apply

    def counting(self, frame, interpolation, threads=1):
        calls.append(frame.pts)
        return original(self, frame, interpolation, threads)

    monkeypatch.setattr(geometry.Geometry, "apply", counting)
    video = tdvideo.read_video(clips["h264"].path, stride=5)
    assert len(calls) == len(video) == 12


def test_variable_frame_rate_timestamps(clips: dict[str, Clip]) -> None:
    video = tdvideo.read_video(clips["vfr"].path)
    assert video.timestamps.tolist() == pytest.approx([0.0, 0.1, 0.5, 0.6, 2.0, 2.1, 2.15, 4.0])
    assert frame_indices(video.frames) == list(range(8))
    sampled = tdvideo.read_video(clips["vfr"].path, fps=2)
    assert frame_indices(sampled.frames) == [0, 2, 3, 4, 6, 7]


def test_missing_pts_are_synthesized_and_flagged(clips: dict[str, Clip]) -> None:
    clip = clips["nopts"]  # raw H.264 elementary stream: no container timestamps
    video = tdvideo.read_video(clip.path)
    assert video.pts_synthesized
    assert frame_indices(video.frames) == list(range(clip.num_frames))
    np.testing.assert_allclose(video.timestamps.numpy(), np.arange(clip.num_frames) / clip.fps)


def test_rotation_is_applied(clips: dict[str, Clip]) -> None:
    clip = clips["rotated"]  # coded 96 wide x 48 high, display matrix: 90 degrees counter-clockwise
    info = tdvideo.probe(clip.path)
    assert info.rotation == 90 and (info.width, info.height) == (48, 96)
    video = tdvideo.read_video(clip.path)
    assert video.frames.shape == (6, 3, 96, 48)
    # Undo a counter-clockwise quarter turn: the index bars read correctly again only
    # if the reader turned the frames the right way.
    unrotated = torch.rot90(video.frames, k=-1, dims=(2, 3))
    assert frame_indices(unrotated) == list(range(6))
    resized = tdvideo.read_video(clip.path, size=(40, 20))
    assert resized.frames.shape == (6, 3, 40, 20)


def test_absurd_rotation_is_ignored_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="ignoring display rotation of 45"):
        assert probe.normalize_rotation("x.mp4", 45) == 0
    assert probe.normalize_rotation("x.mp4", -90) == 270


def test_frame_size_change_part_way_gives_one_size(tmp_path: Path) -> None:
    """Two MPEG-2 transport-stream segments of different sizes, concatenated byte for byte."""
    parts = []
    for start, (h, w) in ((0, (64, 96)), (10, (48, 80))):
        part = tmp_path / f"part{start}.ts"
        pts = list(range(start, start + 10))
        write_clip(part, 10, make_frame=lambda i, s=start, h=h, w=w: index_frame(i + s, h, w), codec="mpeg2video",
                   pts=pts, time_base=Fraction(1, 25))
        parts.append(part.read_bytes())
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(parts))
    # FFmpeg drops one frame where the sequences meet, which the reader reports.
    video = tdvideo.read_video(joined, on_error="keep")
    assert video.frames.shape[1:] == (3, 64, 96)
    indices = frame_indices(video.frames)
    assert indices[:9] == list(range(9)) and indices[-10:] == list(range(10, 20))
    assert video.truncated and "decoded to no frame" in video.error


def test_one_frame_clip(clips: dict[str, Clip]) -> None:
    for options in ({}, {"fps": 1}, {"num_frames": 4}, {"stride": 3}):
        video = tdvideo.read_video(clips["one"].path, **options)
        assert len(video) == 1 and video.timestamps.tolist() == [0.0]


def test_odd_sizes_and_resizing(clips: dict[str, Clip]) -> None:
    clip = clips["odd"]  # 97 x 63, yuv444p
    assert tdvideo.read_video(clip.path).frames.shape == (10, 3, 63, 97)
    short = tdvideo.read_video(clip.path, size=32)
    assert short.frames.shape == (10, 3, 32, 49)
    exact = tdvideo.read_video(clip.path, size=(31, 17), crop=(15, 9), interpolation="area")
    assert exact.frames.shape == (10, 3, 15, 9)
    assert frame_indices(tdvideo.read_video(clip.path, size=(40, 60)).frames) == list(range(10))


def test_resize_matches_swscale_output_channels_last(clips: dict[str, Clip]) -> None:
    video = tdvideo.read_video(clips["h264"].path, size=(32, 48))
    assert video.frames.is_contiguous(memory_format=torch.channels_last)


def test_bad_files_raise_typed_errors_naming_the_file(broken: dict[str, Path], audio_only: Path) -> None:
    cases = [
        (broken["empty"], VideoOpenError, "empty file"),
        (broken["text"], VideoOpenError, "not a video"),
        (broken["truncated"], DecodeError, "truncated"),
        (broken["garbage"], DecodeError, "decode error after 46 frames"),
        (broken["corrupt"], DecodeError, "corrupt frame after 93 frames"),
        (audio_only, NoVideoStreamError, "no video stream"),
        (broken["empty"].parent / "missing.mp4", VideoOpenError, "no such file"),
    ]
    for path, error, words in cases:
        with pytest.raises(error) as info:
            tdvideo.read_video(path)
        assert str(path) in str(info.value) and words in str(info.value)
        assert info.value.path == str(path)


def test_keep_frames_of_a_file_that_fails_part_way(broken: dict[str, Path]) -> None:
    video = tdvideo.read_video(broken["truncated"], on_error="keep")
    assert video.truncated and "truncated" in video.error
    assert 0 < len(video) < 200
    indices = frame_indices(video.frames)
    # What FFmpeg could decode, in order; the frame whose packet was cut off may be missing.
    assert indices[:100] == list(range(100)) and indices == sorted(set(indices))
    chunks = list(tdvideo.iter_video(broken["truncated"], on_error="keep", chunk_frames=10))
    assert [c.truncated for c in chunks] == [False] * (len(chunks) - 1) + [True]


def test_packets_that_decode_to_nothing_are_reported() -> None:
    info = VideoInfo("x.mp4", "mp4", "h264", 8, 8, 8, 8, 0, 25.0, 25.0, 4.0, 100, 0.0, False, "yuv420p", 1.0,
                            duration_source="stream")
    frame = 0.04
    assert reader.silent_loss(info, reader.Report(frames_decoded=100, packets=100), 4.0, frame) is None
    lost = reader.silent_loss(info, reader.Report(frames_decoded=97, packets=100), 4.0, frame)
    assert lost == "3 of 100 packets decoded to no frame (damaged data)"
    # After a seek packets are decoded more than once: no packet count check then.
    assert reader.silent_loss(info, reader.Report(frames_decoded=97, packets=100, seeks=1), 4.0, frame) is None
    assert "header says 4.000 s" in reader.silent_loss(info, reader.Report(), 2.0, frame)
    # Three frames short of the stream's own duration is a loss; one frame short is rounding.
    assert reader.silent_loss(info, reader.Report(), 4.0 - 3 * frame, frame) is not None
    assert reader.silent_loss(info, reader.Report(), 4.0 - frame, frame) is None
    # Only the container's duration, with other streams beside the video: it may be the audio's.
    with_audio = dataclasses.replace(info, duration_source="container", other_streams=1, has_audio=True)
    assert reader.silent_loss(with_audio, reader.Report(), 2.0, frame) is None


def test_sampling_that_keeps_nothing_is_an_error(clips: dict[str, Clip]) -> None:
    with pytest.raises(EmptyVideoError, match="kept no frames"):
        tdvideo.read_video(clips["h264"].path, start=100.0)


def test_invalid_options_are_usage_errors(clips: dict[str, Clip]) -> None:
    path = clips["h264"].path
    with pytest.raises(UsageError, match="interpolation must be one of"):
        tdvideo.read_video(path, interpolation="cubic")
    with pytest.raises(UsageError, match="size must be"):
        tdvideo.read_video(path, size=(0, 3))
    with pytest.raises(UsageError, match="unknown option"):
        tdvideo.read_video(path, fsp=3)
    with pytest.raises(UnsupportedVideoError, match="crop 100x100 is larger than the frame 64x96"):
        tdvideo.read_video(path, crop=100)


def _manifest() -> list[dict[str, str]]:
    path = SHARED_VIDEOS / "MANIFEST.tsv"
    if not path.exists():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _over_frame_limits(width_x_height: str) -> bool:
    w, h = (int(v) for v in width_x_height.split("x"))
    return not geometry.CODED_LIMIT.allows(h, w)


@pytest.mark.skipif(not _manifest(), reason="../shared/videos is not beside this checkout")
@pytest.mark.parametrize("row", _manifest(), ids=lambda r: r["file"])
def test_real_world_videos(row: dict[str, str]) -> None:
    """Every file of the shared corpus: good ones decode fully, bad ones fail with the right type."""
    path = SHARED_VIDEOS / row["file"]
    if row["open_error"] or row["size_bytes"] == "0":
        with pytest.raises(VideoOpenError):
            tdvideo.read_video(path, size=32)
    elif row["decode_error"] == "no video stream" or row["n_video_streams"] == "0":
        with pytest.raises(NoVideoStreamError):
            tdvideo.read_video(path, size=32)
    elif row["decode_error"] and _over_frame_limits(row["width_x_height"]):
        with pytest.raises(UnsupportedVideoError, match="over the frame limits"):
            tdvideo.read_video(path, size=32)
    elif row["decode_error"]:
        with pytest.raises(DecodeError):
            tdvideo.read_video(path, size=32)
        if int(row["frames_decoded"] or 0) > 0:
            kept = tdvideo.read_video(path, size=32, on_error="keep")
            assert kept.truncated and len(kept) == int(row["frames_decoded"])
    else:
        video = tdvideo.read_video(path, size=32)
        assert len(video) == int(row["frames_decoded"])
        assert bool(torch.all(video.timestamps[1:] > video.timestamps[:-1]))
        w, h = (int(v) for v in row["width_x_height"].split("x"))
        info = video.info
        assert (info.raw_width, info.raw_height) == (w, h)
        if row["rotation"]:
            assert info.rotation == int(row["rotation"]) % 360 and (info.width, info.height) == (h, w)


def test_threads_option_is_passed(clips: dict[str, Clip]) -> None:
    one = tdvideo.read_video(clips["h264"].path, threads=1)
    many = tdvideo.read_video(clips["h264"].path, threads=max(2, os.cpu_count() or 2))
    assert torch.equal(one.frames, many.frames)


# -- valid files that look odd, and cut-off files ----------------------------------------


def plain_decode(path: Path) -> tuple[list[float], list[int]]:
    """What plain PyAV decoding gives, up to its first error: each frame's time and the index drawn into it."""
    frames = []
    with av.open(str(path)) as container:
        try:
            for f in container.decode(video=0):
                frames.append((f.time, read_index(f.to_ndarray(format="rgb24").transpose(2, 0, 1))))
        except av.FFmpegError:
            pass
    return [t for t, _ in frames], [i for _, i in frames]


@pytest.fixture(scope="module")
def source_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of H.264 at 25 fps with a keyframe every second."""
    return write_clip(tmp_path_factory.mktemp("src") / "src.mp4", 200, gop=25)


def test_mp4_cut_with_stream_copy_gives_the_frames_ffmpeg_gives(source_clip: Path, tmp_path: Path) -> None:
    """``ffmpeg -ss 0.5 -i in.mp4 -c copy``: an edit list discards the frames before the cut point."""
    cut = remux(source_clip, tmp_path / "cut.mp4", shift=0.5)
    with av.open(str(cut)) as container:
        assert sum(p.is_discard for p in container.demux(video=0)) > 0  # the edit list is there
    times, indices = plain_decode(cut)
    assert indices[0] > 0 and times[0] == 0.0
    for options in ({}, {"fps": 1}, {"stride": 3}):
        video = tdvideo.read_video(cut, **options)
        expected = select_indices(times, Sampling(**options))
        assert frame_indices(video.frames) == [indices[i] for i in expected]
        np.testing.assert_allclose(video.timestamps.numpy(), [times[i] for i in expected])
        assert not video.truncated and video.error is None


@pytest.mark.parametrize("offset_packets", [95, 140])
def test_transport_stream_that_starts_mid_gop(source_clip: Path, tmp_path: Path, offset_packets: int) -> None:
    """A capture or a byte-cut .ts: packets before the first keyframe cannot decode, and that is not damage."""
    whole = remux(source_clip, tmp_path / "whole.ts")
    data = whole.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[offset_packets * 188 + 100 :])  # part-way into a packet, too
    times, indices = plain_decode(cut)
    assert 0 < len(times) < 200 and indices[0] % 25 == 0  # decoding starts at a keyframe
    with av.open(str(cut)) as container:
        assert not next(p for p in container.demux(video=0) if p.size).is_keyframe  # mid-GOP
    video = tdvideo.read_video(cut)
    assert frame_indices(video.frames) == indices
    np.testing.assert_allclose(video.timestamps.numpy(), times)
    sampled = tdvideo.read_video(cut, fps=1)
    assert frame_indices(sampled.frames) == [indices[i] for i in select_indices(times, Sampling(fps=1))]


def test_matroska_cut_with_a_late_start(source_clip: Path, tmp_path: Path) -> None:
    """``ffmpeg -i in.mp4 -ss 2 -t 4 -c copy out.mkv``: FFmpeg says start 2 s and a duration counted from 0."""
    cut = remux(source_clip, tmp_path / "cut.mkv", keep=lambda t: 2.0 <= t < 6.0)
    with av.open(str(cut)) as container:
        assert container.start_time / 1e6 == 2.0 and container.duration / 1e6 == 6.0  # the quirk
    times, indices = plain_decode(cut)
    assert len(times) == 100 and indices == list(range(50, 150))
    video = tdvideo.read_video(cut)
    assert frame_indices(video.frames) == indices and not video.truncated
    assert video.info.start_time == 2.0 and video.info.duration == pytest.approx(4.0)
    spread = tdvideo.read_video(cut, num_frames=4)  # the grid spans the real 4 s, not 6 s from 2 s
    assert frame_indices(spread.frames) == [50, 75, 100, 125]


def test_valid_files_are_not_flagged(tmp_path: Path) -> None:
    """Variable frame rate, and a container duration that is the (longer) audio's."""
    pts = [0, 10, 50, 60, 200, 210, 215, 400]
    for ext, codec in (("mkv", "libx264"), ("webm", "libvpx-vp9"), ("mp4", "libx264"), ("avi", "mpeg4"), ("ts", "mpeg2video")):
        path = write_clip(tmp_path / f"vfr.{ext}", 8, pts=pts, time_base=Fraction(1, 100), codec=codec)
        video = tdvideo.read_video(path)
        assert frame_indices(video.frames) == list(range(8)) and not video.truncated, ext
    longer_audio = _with_audio(tmp_path / "av.mkv", video_frames=50, audio_seconds=4.0)
    info = tdvideo.probe(longer_audio)
    assert info.duration_source == "container" and info.duration == pytest.approx(4.0, abs=0.1)
    video = tdvideo.read_video(longer_audio)
    assert frame_indices(video.frames) == list(range(50)) and not video.truncated


def _with_audio(path: Path, *, video_frames: int, audio_seconds: float) -> Path:
    """A Matroska file with 25 fps video and a longer AAC track, without per-stream duration tags
    (as libwebm and other writers make them): only the container's duration is known."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25, options={"qp": "23", "threads": "1"})
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        for i in range(video_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = np.zeros((1, 1024), dtype=np.float32)
        for start in range(0, int(audio_seconds * 16000), 1024):
            chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 16000, start
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    # Rename the DURATION tags so the demuxer does not see them (same length, so offsets hold).
    data = path.read_bytes()
    assert data.count(b"DURATION") == 2
    path.write_bytes(data.replace(b"DURATION", b"XURATION"))
    return path


CUT_FORMATS = [
    ("mkv", "libx264"), ("webm", "libvpx-vp9"), ("mp4", "libx264"), ("avi", "mpeg4"), ("ts", "mpeg2video"), ("flv", "libx264"),
]


@pytest.mark.parametrize("ext, codec", CUT_FORMATS)
@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99, 0.999])
def test_files_cut_anywhere_are_flagged(tmp_path: Path, ext: str, codec: str, fraction: float) -> None:
    """A 4 s clip cut at any point: failed by default, kept and flagged with on_error="keep"."""
    options = {"movflags": "+faststart"} if ext == "mp4" else None  # else a cut loses the index: cannot open
    whole = write_clip(tmp_path / f"whole.{ext}", 100, gop=25, codec=codec, container_options=options)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(DecodeError) as failure:
        tdvideo.read_video(cut)
    assert str(cut) in str(failure.value)
    kept = tdvideo.read_video(cut, on_error="keep")
    assert kept.truncated and kept.error
    _, indices = plain_decode(cut)
    assert frame_indices(kept.frames) == indices[: len(kept)] and len(kept) >= len(indices) - 1
    assert not tdvideo.read_video(whole).truncated


def test_a_short_matroska_cut_at_90_percent(tmp_path: Path) -> None:
    """The report's case: a 4 s MKV cut at 90% of its bytes lost a quarter of its frames without a word."""
    whole = write_clip(tmp_path / "whole.mkv", 100, make_frame=lambda i: np.full((64, 96, 3), i * 2, np.uint8))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.9)])
    kept = tdvideo.read_video(cut, on_error="keep")
    assert len(kept) < 100 and kept.truncated and "cut short" in kept.error


# -- what the fuzz test found (tests/test_fuzz.py), pinned ---------------------------------


@pytest.fixture(scope="module")
def fuzz_seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fuzz test's seeds: 64 x 48, 40 frames, a keyframe every 20."""
    d = tmp_path_factory.mktemp("fuzzseeds")
    make = lambda i: index_frame(i, 48, 64)
    return {
        "mp4": write_clip(d / "h264.mp4", 40, make_frame=make, gop=20),
        "avi": write_clip(d / "mpeg4.avi", 40, make_frame=make, gop=20, codec="mpeg4"),
    }


def test_metadata_that_is_not_utf8(fuzz_seeds: dict[str, Path], tmp_path: Path) -> None:
    data = fuzz_seeds["mp4"].read_bytes()
    at = data.index(b"VideoHandler")
    damaged = tmp_path / "meta.mp4"
    damaged.write_bytes(data[:at] + b"\x80" + data[at + 1 :])
    with pytest.raises(UnicodeDecodeError):
        av.open(str(damaged))  # what tdvideo opened it with before
    assert tdvideo.probe(damaged).codec == "h264"
    assert len(tdvideo.read_video(damaged)) == 40


def test_a_seek_the_demuxer_refuses(fuzz_seeds: dict[str, Path], tmp_path: Path) -> None:
    data = fuzz_seeds["mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 91 // 100])
    with av.open(str(cut)) as container, pytest.raises(av.FFmpegError):
        container.seek(0, stream=container.streams.video[0], backward=True)
    with pytest.raises(tdvideo.TdvideoError):  # it is cut off: typed, not av.PermissionError
        tdvideo.read_video(cut, start=0.3)


def test_a_video_stream_without_a_decoder(fuzz_seeds: dict[str, Path], tmp_path: Path) -> None:
    data = fuzz_seeds["avi"].read_bytes()
    damaged = tmp_path / "nocodec.avi"
    damaged.write_bytes(data[:169] + b"\x00" + data[169:])
    with av.open(str(damaged)) as container:
        assert container.streams.video[0].codec_context is None
    with pytest.raises(NoVideoStreamError, match="no decodable video stream"):
        tdvideo.read_video(damaged)


def test_frames_with_damaged_colour_tags_still_convert(clips: dict[str, Clip]) -> None:
    """A colour space of 243 (a damaged stream) made swscale refuse the frame (ENOTSUP)."""
    with av.open(str(clips["h264"].path)) as container:
        frame = next(container.decode(video=0))
        info = probe.header_info(container, container.streams.video[0], clips["h264"].path, [])
    frame.colorspace = 243
    with pytest.raises(av.FFmpegError):
        frame.to_ndarray(format="rgb24", width=48, height=32)
    plan = geometry.Geometry.plan(
        info.path, coded_width=info.raw_width, coded_height=info.raw_height, sample_aspect_ratio=1.0, rotation=0, size=(32, 48), crop=None
    )
    converted = plan.apply(frame, "bilinear")
    assert converted.shape == (32, 48, 3) and read_index(converted.transpose(2, 0, 1)) == 0


def test_an_absurd_sample_aspect_ratio_is_ignored(tmp_path: Path) -> None:
    """A header claiming 1:129 pixels squeezed a 64-pixel-wide frame to 0 (ZeroDivisionError, found by fuzzing)."""
    path = tmp_path / "sar.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"qp": "23", "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(2, 1)  # written into a 'pasp' box too
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(index_frame(i, 48, 64), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = bytearray(path.read_bytes())
    at = data.index(b"pasp") + 4
    data[at : at + 8] = (1).to_bytes(4, "big") + (129).to_bytes(4, "big")  # hSpacing 1, vSpacing 129
    path.write_bytes(bytes(data))
    with av.open(str(path)) as container:
        assert container.streams.video[0].sample_aspect_ratio == Fraction(1, 129)
    with pytest.warns(UserWarning, match="ignoring sample aspect ratio 1/129"):
        video = tdvideo.read_video(path, size=32)
    assert video.frames.shape == (5, 3, 32, 43) and frame_indices(video.frames) == list(range(5))


@pytest.fixture(scope="module")
def container_zoo(source_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 8 s of H.264 (B-frames, a keyframe every second) in several containers, and MPEG-2 in MPEG-PS."""
    d = tmp_path_factory.mktemp("zoo")
    gop30 = write_clip(d / "gop30.mp4", 150, make_frame=lambda i: index_frame(i, 96, 160), gop=30, options={"bf": "3"})
    return {
        "mp4 with an edit list": remux(source_clip, d / "cut.mp4", shift=0.52),
        "mp4 with an edit list, GOP 30": remux(gop30, d / "cut30.mp4", shift=0.52),
        "mpeg-ts": remux(source_clip, d / "h264.ts"),
        "flv": remux(source_clip, d / "h264.flv"),
        "late matroska": remux(source_clip, d / "late.mkv", keep=lambda t: t >= 2.0),
        "mpeg-ps": write_clip(d / "mpeg2.mpg", 200, gop=25, codec="mpeg2video"),
    }


@pytest.mark.parametrize(
    "name", ["mp4 with an edit list", "mp4 with an edit list, GOP 30", "mpeg-ts", "flv", "late matroska", "mpeg-ps"]
)
def test_sparse_sampling_gives_what_a_straight_decode_gives(container_zoo: dict[str, Path], name: str) -> None:
    """Seeks must never change which frames are kept, nor their times. Found by an adversarial
    sweep: TS seeks landing past the last keyframe (nothing decoded: a false "truncated"),
    MPEG-PS times 20 ms off after a seek, and B-frames dropped after a seek because the
    decoder was left skipping non-reference frames."""
    path = container_zoo[name]
    times, indices = plain_decode(path)
    last = times[-1]
    cases = [{"fps": 0.2}, {"fps": 0.5}, {"fps": 0.7}, {"num_frames": 4}, {"start": last - 0.5}, {"start": 1.11, "fps": 0.5}]
    # num_frames spreads over the header's duration, an estimate in MPEG-PS: the same for both.
    stop = last + (times[-1] - times[-2]) if name != "mpeg-ps" else tdvideo.probe(path).end_time
    for options in cases:
        expected = select_indices(times, Sampling(**options), stop=stop)
        video = tdvideo.read_video(path, **options)
        assert frame_indices(video.frames) == [indices[i] for i in expected], (name, options)
        np.testing.assert_allclose(video.timestamps.numpy(), [times[i] for i in expected], err_msg=f"{name} {options}")
        assert not video.truncated


@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_a_transport_stream_cut_on_a_packet_boundary_is_flagged_every_time(tmp_path: Path, fraction: float) -> None:
    """No length to compare with: only the damaged last frame tells, and with frame threads
    FFmpeg flagged it in 7 runs of 12 (half a video lost without a word in the others)."""
    def noisy(i: int) -> np.ndarray:  # noise: every frame spans many 188-byte packets, so a cut lands inside one
        return np.random.default_rng(i).integers(0, 256, (120, 160, 3), dtype=np.uint8)

    whole = write_clip(tmp_path / "whole.ts", 100, make_frame=noisy, gop=25)
    data = whole.read_bytes()
    cut = tmp_path / "cut.ts"
    at = int(len(data) * fraction) // 188 * 188
    cut.write_bytes(data[:at])
    assert integrity.shortfall(cut, "mpegts") is None  # nothing declares the length
    for _ in range(6):
        with pytest.raises(DecodeError, match="corrupt frame"):
            tdvideo.read_video(cut, threads=2)
