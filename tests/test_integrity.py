"""Declared container lengths against actual file sizes (tdvideo._integrity)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdvideo.synthetic import remux, write_clip
from tdvideo.video._integrity import shortfall


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("integrity") / "clip.mp4", 30, gop=10)


def test_whole_files_are_not_short(clip: Path, tmp_path: Path) -> None:
    assert shortfall(clip, "mov,mp4,m4a,3gp,3g2,mj2") is None
    assert shortfall(remux(clip, tmp_path / "c.mkv"), "matroska,webm") is None
    assert shortfall(remux(clip, tmp_path / "c.ts"), "mpegts") is None
    assert shortfall(clip, "h264") is None  # a raw stream declares nothing


def test_cut_files_are_short(clip: Path, tmp_path: Path) -> None:
    for suffix, fmt in ((".mp4", "mov,mp4"), (".mkv", "matroska,webm"), (".ts", "mpegts")):
        whole = clip if suffix == ".mp4" else remux(clip, tmp_path / f"c{suffix}")
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(whole.read_bytes()[:-5])
        assert shortfall(cut, fmt) is not None, suffix


def test_m2ts_packets_and_unknown_matroska_sizes(clip: Path, tmp_path: Path) -> None:
    ts = remux(clip, tmp_path / "c.ts").read_bytes()
    # M2TS: a 4-byte timestamp before each 188-byte packet.
    m2ts = b"".join(b"\0\0\0\0" + ts[i : i + 188] for i in range(0, len(ts), 188))
    (tmp_path / "c.m2ts").write_bytes(m2ts)
    assert shortfall(tmp_path / "c.m2ts", "mpegts") is None
    (tmp_path / "cut.m2ts").write_bytes(m2ts[:-100])
    assert "192-byte" in shortfall(tmp_path / "cut.m2ts", "mpegts")
    # A Matroska segment of unknown size (a live recording) declares no length.
    mkv = bytearray(remux(clip, tmp_path / "c.mkv").read_bytes())
    at = mkv.index(bytes.fromhex("18538067")) + 4
    assert mkv[at] == 0x01  # FFmpeg writes the size as an 8-byte vint
    mkv[at : at + 8] = bytes.fromhex("01ffffffffffffff")
    (tmp_path / "live.mkv").write_bytes(bytes(mkv[:-50]))
    assert shortfall(tmp_path / "live.mkv", "matroska,webm") is None
