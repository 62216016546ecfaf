"""Regenerate the bundled sample clips: ``python sample_videos/generate.py``.

Deterministic (fixed content, single-threaded encoders, constant-QP H.264, bitexact muxers): three short clips with a hard
scene change every second, in the three container/codec pairs users meet most.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from tdvideo.synthetic import scene_frame, write_clip

HERE = Path(__file__).resolve().parent
FPS = 24
SECONDS = 4
HEIGHT, WIDTH = 180, 320

SAMPLES = {
    "h264_scenes.mp4": {"codec": "libx264", "options": {"preset": "medium", "qp": "30"}},
    "vp9_scenes.webm": {"codec": "libvpx-vp9", "options": {"crf": "40", "b": "0", "deadline": "good"}},
    "mpeg4_scenes.avi": {"codec": "mpeg4", "options": {"qscale": "8"}},
}


def main() -> None:
    frame = partial(scene_frame, height=HEIGHT, width=WIDTH, frames_per_scene=FPS)
    for name, settings in SAMPLES.items():
        path = write_clip(HERE / name, FPS * SECONDS, make_frame=frame, fps=FPS, gop=FPS, **settings)
        print(f"{path.name}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
