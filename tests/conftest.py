"""Shared fixtures: tiny generated clips (session-scoped, so each is encoded once)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tdvideo.synthetic import index_frame, read_index, write_clip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_cuda: the test needs a CUDA device (skipped without one)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


@dataclass(frozen=True)
class Clip:
    """A generated test clip and what was written into it."""

    path: Path
    num_frames: int
    fps: int
    height: int
    width: int
    codec: str
    container: str
    times: tuple[float, ...]  # presentation times written, seconds


def video_tree(root: Path, files: dict[str, Path]) -> Path:
    """Folder ``root`` with a copy of each source file at its relative name; returns ``root``."""
    for name, source in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    return root


def heavy_imports_after(script: str) -> list[str]:
    """Which of torch and torchvision a fresh interpreter holds after running ``script``."""
    check = "\nimport sys\nprint(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))\n"
    done = subprocess.run([sys.executable, "-c", script + check], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])


def frame_indices(frames: torch.Tensor) -> list[int]:
    """The index each (C, H, W) frame encodes (see tdvideo.synthetic.index_frame)."""
    return [read_index(f.numpy()) for f in frames]


def _make(path: Path, n: int, *, fps: int = 25, height: int = 64, width: int = 96, codec: str = "libx264", **kw) -> Clip:
    write_clip(path, n, make_frame=lambda i: index_frame(i, height, width), fps=fps, codec=codec, **kw)
    pts, tb = kw.get("pts"), kw.get("time_base")
    times = tuple(float(p * tb) for p in pts) if pts is not None else tuple(i / fps for i in range(n))
    with av.open(str(path)) as c:
        fmt = c.format.name
    return Clip(path, n, fps, height, width, codec, fmt, times)


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "h264": _make(d / "idx.mp4", 60, gop=12),
        "vp9": _make(d / "idx.webm", 30, codec="libvpx-vp9"),
        "mpeg4": _make(d / "idx.avi", 30, codec="mpeg4"),
        "long_gop": _make(d / "long.mp4", 200, gop=25, fps=25),
        "vfr": _make(
            d / "vfr.mp4", 8, pts=[0, 10, 50, 60, 200, 210, 215, 400], time_base=Fraction(1, 100)
        ),
        "nopts": _make(d / "nopts.h264", 20),
        "rotated": _make(d / "rot.mp4", 6, rotation=90, height=48, width=96),
        "one": _make(d / "one.mp4", 1),
        "odd": _make(d / "odd.mp4", 10, height=63, width=97, pix_fmt="yuv444p", options={"profile": "high444"}),
    }


@pytest.fixture(scope="session")
def audio_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "tone.m4a"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        t = np.arange(16000, dtype=np.float32) / 16000
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).reshape(1, -1)
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = start
            for p in stream.encode(frame):
                c.mux(p)
        for p in stream.encode(None):
            c.mux(p)
    return path


@pytest.fixture(scope="session")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bad files: cut off part-way, damaged part-way (two ways), zero bytes, not a video at all."""
    d = tmp_path_factory.mktemp("bad")
    good = write_clip(d / "good.mkv", 200, gop=25)
    data = good.read_bytes()
    (d / "truncated.mkv").write_bytes(data[: int(len(data) * 0.6)])
    # 8 random bytes at 32% hit a packet FFmpeg rejects; at 50% one it decodes as corrupt.
    # (The clip's bytes are deterministic: constant-QP, single-threaded x264.)
    for name, percent in (("garbage", 32), ("corrupt", 50)):
        damaged = bytearray(data)
        at = len(damaged) * percent // 100
        damaged[at : at + 8] = np.random.default_rng(percent).integers(0, 256, 8, dtype=np.uint8).tobytes()
        (d / f"{name}.mkv").write_bytes(bytes(damaged))
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("this is not a video\n")
    good.unlink()
    return {name: d / f for name, f in [
        ("truncated", "truncated.mkv"), ("garbage", "garbage.mkv"), ("corrupt", "corrupt.mkv"), ("empty", "empty.mp4"), ("text", "notes.mp4"),
    ]}
