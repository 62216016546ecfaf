"""Synthetic clips for tests, benchmarks and the bundled samples, written with PyAV.

Frames can carry their own index as big black/white bars (:func:`index_frame`), so a
reader's exact frame selection can be checked after lossy compression and resizing
(:func:`read_index`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np

__all__ = ["INDEX_BITS", "index_frame", "read_index", "scene_frame", "write_clip"]

INDEX_BITS = 10


def index_frame(i: int, height: int = 64, width: int = 96) -> np.ndarray:
    """An RGB frame whose ``INDEX_BITS`` vertical bars spell ``i`` in binary (MSB left)."""
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    edges = np.linspace(0, width, INDEX_BITS + 1).astype(int)
    for bit in range(INDEX_BITS):
        if (i >> (INDEX_BITS - 1 - bit)) & 1:
            frame[:, edges[bit] : edges[bit + 1]] = 255
    return frame


def read_index(frame_chw: np.ndarray) -> int:
    """Decode the index drawn by :func:`index_frame` from a ``(C, H, W)`` uint8 frame."""
    gray = np.asarray(frame_chw, dtype=np.float32).mean(axis=0)
    width = gray.shape[1]
    edges = np.linspace(0, width, INDEX_BITS + 1).astype(int)
    value = 0
    for bit in range(INDEX_BITS):
        lo, hi = edges[bit], edges[bit + 1]
        # Sample the middle of each bar: edges blur under compression and scaling.
        margin = max(0, (hi - lo) // 4)
        value = (value << 1) | int(gray[:, lo + margin : hi - margin].mean() > 127)
    return value


def scene_frame(i: int, height: int, width: int, *, frames_per_scene: int = 24) -> np.ndarray:
    """A frame of a clip with a hard scene change every ``frames_per_scene`` frames.

    Each scene has its own colour gradient and a square moving across it, so features
    change a little within a scene and a lot between scenes.
    """
    scene, t = divmod(i, frames_per_scene)
    background, colour = _scene(scene, height, width)
    frame = background.copy()
    side = max(4, height // 4)
    x = int((width - side) * t / max(1, frames_per_scene - 1))
    y = (height - side) // 2
    frame[y : y + side, x : x + side] = colour
    return frame


@lru_cache(maxsize=4)
def _scene(scene: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A scene's gradient background and square colour. Cached: a scene spans many frames."""
    rng = np.random.default_rng(scene)
    top, bottom = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    background = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).astype(np.uint8)
    background.flags.writeable = False
    return background, 255 - rng.integers(0, 256, size=3)


def write_clip(
    path: str | Path,
    num_frames: int,
    *,
    make_frame: Callable[[int], np.ndarray] = index_frame,
    fps: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
    gop: int | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode ``make_frame(i)`` for ``i < num_frames`` into ``path``.

    ``pts`` (in ``time_base``, default ``1/fps``) sets each frame's presentation time for
    variable-frame-rate clips; ``rotation`` writes a display matrix (counter-clockwise
    degrees); ``gop`` sets the keyframe interval in frames; ``options`` go to the encoder
    and ``container_options`` to the muxer (``{"movflags": "+faststart"}``). Encoding is single-threaded
    and x264 output is deterministic for the same inputs.
    """
    path = Path(path)
    first = make_frame(0)
    height, width = first.shape[:2]
    # bitexact: no random segment UIDs or encoder version strings, so output is reproducible.
    with av.open(str(path), mode="w", options={"fflags": "+bitexact", **(container_options or {})}) as container:
        # Encoder threads make the output depend on timing; one thread keeps it reproducible.
        defaults = {"threads": "1"}
        if codec == "libx264":
            # x264's CRF rate control still varied run to run here; constant QP does not.
            if not options or not {"crf", "qp", "b"} & set(options):
                defaults["qp"] = "23"
            params = "threads=1:lookahead-threads=1:sliced-threads=0:deterministic=1"
            # A fixed GOP means keyframes exactly every `gop` frames, not at scene cuts too.
            defaults["x264-params"] = params + (":scenecut=0" if gop is not None else "")
        stream = container.add_stream(codec, rate=fps, options={**defaults, **(options or {})})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.thread_count = 1
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if gop is not None:
            stream.codec_context.gop_size = gop
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(first if i == 0 else make_frame(i), format="rgb24")
            # Convert here with one scaler thread: threaded swscale output varies run to run.
            frame = frame.reformat(format=pix_fmt, threads=1)
            frame.pts = pts[i] if pts is not None else i
            frame.time_base = time_base if pts is not None and time_base is not None else Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def remux(
    src: str | Path,
    dst: str | Path,
    *,
    shift: float = 0.0,
    keep: Callable[[float], bool] | None = None,
) -> Path:
    """Copy the video packets of ``src`` into ``dst`` without re-encoding (``-c copy``).

    ``shift`` moves every timestamp back by that many seconds: packets before it get
    negative times, and the MP4 muxer then writes an edit list that discards their
    frames (what ``ffmpeg -ss T -i in.mp4 -c copy out.mp4`` produces). ``keep(t)``
    chooses packets by their original presentation time in seconds.
    """
    dst = Path(dst)
    with av.open(str(src)) as source, av.open(str(dst), mode="w", options={"fflags": "+bitexact"}) as sink:
        stream = source.streams.video[0]
        out = sink.add_stream_from_template(stream)
        offset = round(shift / stream.time_base)
        for packet in source.demux(stream):
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            if keep is not None and not keep(float(packet.pts * stream.time_base)):
                continue
            packet.pts -= offset
            packet.dts -= offset
            packet.stream = out
            sink.mux(packet)
    return dst
