"""Header times that disagree with the frames of a whole file; videos shorter than one clip window.

A fragmented MP4 whose first fragment starts late (its ``tfdt`` decode time is past 0) is
valid, and plain PyAV decodes every frame of it. But FFmpeg gives as the stream's duration
where the last fragment ends on the media timeline counted from 0, so "start + duration"
overshoots the frames by the start time, and a duration check built on it called the file
truncated (issue 17, item F).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

import tdvideo
from tdvideo.errors import DecodeError, EmptyVideoError
from tdvideo.synthetic import remux, write_clip
from tdvideo.video import _integrity
from tdvideo.video import _reader as reader

FPS = 25
FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
_MP4 = "mov,mp4,m4a,3gp,3g2,mj2"


def _boxes(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, size) of each ISO BMFF box between ``start`` and ``end`` (32-bit sizes only)."""
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        assert size >= 8, "the test writer only makes 32-bit box sizes"
        yield kind, offset, size
        offset += size


def delay_fragments(data: bytes, ticks: int) -> bytes:
    """``data``, a fragmented MP4, with every fragment's base decode time (``tfdt``) ``ticks`` later."""
    out = bytearray(data)
    moved = 0
    for kind, moof, moof_size in _boxes(out, 0, len(out)):
        if kind != b"moof":
            continue
        for kind, traf, traf_size in _boxes(out, moof + 8, moof + moof_size):
            if kind != b"traf":
                continue
            for kind, box, _ in _boxes(out, traf + 8, traf + traf_size):
                if kind == b"tfdt":
                    at = box + 12  # after the box header, version and flags
                    fmt = ">Q" if out[box + 8] == 1 else ">I"  # version 1: 64 bits
                    width = struct.calcsize(fmt)
                    (base,) = struct.unpack(fmt, out[at : at + width])
                    out[at : at + width] = struct.pack(fmt, base + ticks)
                    moved += 1
    assert moved, "no tfdt box to move: not a fragmented MP4?"
    return bytes(out)


def plain_times(path: Path) -> list[float]:
    """Presentation times plain PyAV decoding gives: the reference for what tdvideo must return."""
    with av.open(str(path)) as container:
        return [frame.time for frame in container.decode(container.streams.video[0])]


def late_fragments(path: Path, num_frames: int, *, gop: int) -> Path:
    """A fragmented MP4 of ``num_frames`` at 25 fps whose media starts 1 s late."""
    source = write_clip(path.with_suffix(".src.mp4"), num_frames, fps=FPS, gop=gop, container_options=FRAGMENTED)
    with av.open(str(source)) as container:
        time_base = container.streams.video[0].time_base  # 1 / the track's timescale, tfdt's unit
    path.write_bytes(delay_fragments(source.read_bytes(), round(1 / time_base)))
    source.unlink()
    return path


@pytest.fixture(scope="module")
def late(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 frames, as in the report: plain PyAV decodes all of them, from about 1 s."""
    path = late_fragments(tmp_path_factory.mktemp("late") / "late.mp4", 50, gop=10)
    times = plain_times(path)
    assert len(times) == 50 and times[0] > 1.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        header_end = float((stream.start_time + stream.duration) * stream.time_base)
    # The trigger: by the header arithmetic the frames end about a second short.
    assert header_end > times[-1] + 0.9
    return path


@pytest.fixture(scope="module")
def late_long(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s with a keyframe each second: long enough for a sparse sampling to seek."""
    return late_fragments(tmp_path_factory.mktemp("late_long") / "late_long.mp4", 300, gop=FPS)


def test_late_fragments_decode_as_plain_pyav_does(late: Path) -> None:
    video = tdvideo.read_video(late)
    assert not video.truncated and video.error is None
    np.testing.assert_array_equal(np.asarray(video.timestamps, dtype=np.float64), plain_times(late))


def test_late_fragments_header_duration_counts_from_the_start(late: Path) -> None:
    info = tdvideo.probe(late)
    times = plain_times(late)
    assert info.duration == pytest.approx(50 / FPS)
    assert info.start_time + info.duration == pytest.approx(times[-1] + 1 / FPS)


def test_late_fragments_with_seeks(late_long: Path) -> None:
    # Seeking decodes only part of the packets, so the header's end is checked: it must be right.
    times = plain_times(late_long)
    chunks = list(tdvideo.iter_video(late_long, fps=1.0))
    assert chunks[-1].seeks > 0 and not chunks[-1].truncated
    kept = np.concatenate([np.asarray(c.timestamps, dtype=np.float64) for c in chunks])
    assert len(kept) == 12 and set(kept.tolist()) <= set(times)
    clip = tdvideo.read_video(late_long, num_frames=4)
    assert [round(t, 2) for t in np.asarray(clip.timestamps).tolist()] == [1.08, 4.08, 7.08, 10.08]


def test_cut_late_fragments_still_fail(late: Path, tmp_path: Path) -> None:
    data = late.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 7 // 10])
    with pytest.raises(DecodeError, match="cut short"):
        tdvideo.read_video(cut)
    kept = tdvideo.read_video(cut, on_error="keep")
    assert kept.truncated and "cut short" in kept.error
    assert 0 < len(kept) < 50


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 50 frames in containers that declare their length, and in two that do not."""
    d = tmp_path_factory.mktemp("whole")
    mp4 = write_clip(d / "c.mp4", 50, fps=FPS, gop=10, container_options={"movflags": "+faststart"})
    return {
        "mp4": mp4,
        "mkv": remux(mp4, d / "c.mkv"),
        "ts": remux(mp4, d / "c.ts"),  # a cut between two packets leaves whole packets
        "h264": write_clip(d / "c.h264", 50, fps=FPS, gop=10),  # a raw stream declares nothing
    }


def test_check_length_tells_whole_from_cannot_tell(whole: dict[str, Path], tmp_path: Path) -> None:
    assert _integrity.check_length(whole["mp4"], _MP4).whole
    assert _integrity.check_length(whole["mkv"], "matroska,webm").whole
    for name, fmt in (("ts", "mpegts"), ("h264", "h264")):
        length = _integrity.check_length(whole[name], fmt)
        assert not length.whole and length.short is None, name
    assert not _integrity.check_length(tmp_path / "missing.mp4", _MP4).whole
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole["mp4"].read_bytes()[:-100])
    length = _integrity.check_length(cut, _MP4)
    assert not length.whole and "cut short" in length.short


def test_header_times_alone_do_not_fail_a_whole_file(whole: dict[str, Path], tmp_path: Path) -> None:
    frame = 1 / FPS
    shown_until = 50 * frame
    every_packet = reader.Report(frames_decoded=50, packets=50)
    for name in ("mp4", "mkv"):
        # The header claims a second more than the frames, but nothing is missing.
        info = dataclasses.replace(tdvideo.probe(whole[name]), duration=3.0, start_time=0.0, duration_source="stream")
        assert reader.silent_loss(info, every_packet, shown_until, frame) is None, name
        # After a seek not every packet was decoded: then the header is all there is.
        seeked = dataclasses.replace(every_packet, seeks=1)
        assert "header says 3.000 s" in reader.silent_loss(info, seeked, shown_until, frame)
        lost = reader.silent_loss(info, reader.Report(frames_decoded=47, packets=50), shown_until, frame)
        assert lost == "3 of 50 packets decoded to no frame (damaged data)"
    for name in ("ts", "h264"):
        # A cut there can look whole: the header's end still counts.
        info = dataclasses.replace(tdvideo.probe(whole[name]), duration=3.0, start_time=0.0, duration_source="stream")
        assert "header says 3.000 s" in reader.silent_loss(info, every_packet, shown_until, frame), name
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole["mp4"].read_bytes()[:-100])
    info = dataclasses.replace(tdvideo.probe(whole["mp4"]), path=str(cut), source=cut)
    assert "cut short" in reader.silent_loss(info, every_packet, shown_until, frame)


def test_video_shorter_than_one_window(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "short.mp4", 15, fps=FPS)
    with pytest.raises(EmptyVideoError) as info:
        tdvideo.read_video(path, sampling=tdvideo.Sampling(clip_len=16))
    message = str(info.value)
    assert message == f"{path}: 15 frames kept, fewer than one window of 16 frames (clip_len)"
    with pytest.raises(EmptyVideoError, match=r"3 frames kept of 15 decoded, fewer than one window of 16 frames \(clip_len\)"):
        tdvideo.read_video(path, sampling=tdvideo.Sampling(clip_len=16, fps=5.0))
    # A sampling that keeps nothing at all still says so.
    with pytest.raises(EmptyVideoError, match="kept no frames"):
        tdvideo.read_video(path, sampling=tdvideo.Sampling(clip_len=16, start=100.0))
    assert tuple(tdvideo.read_video(path, sampling=tdvideo.Sampling(clip_len=15)).timestamps.shape) == (1, 15)  # one window

