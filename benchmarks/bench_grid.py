"""Rows on a fixed grid (``--fps-rows grid``) on a long video, as users run it: whole processes.

    python benchmarks/bench_grid.py [--hours 10] [--keep DIR]

A ``--hours`` long 64x64 clip at 1 frame per second (36,000 frames for 10 hours, written
once with :func:`tdvideo.synthetic.write_clip`) is extracted with the default model:

- ``--fps 100 --fps-rows grid``: 3.6 million rows, each frame's row repeated 100 times;
- ``--fps 1000 --fps-rows grid``: 36 million rows, over the bound: refused from the header;
- ``tdvideo show`` on the 3.6-million-row output.

Each command runs through ``tdvideo._system.measure_command``: its own peak RSS (from
``wait4``, through a small launcher) and its wall time from start to exit.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tdvideo._system import measure_command
from tdvideo.synthetic import scene_frame, write_clip


def measure(args: list[str], folder: Path) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MiB, exit code, last stderr line) of ``tdvideo ARGS``."""
    done = measure_command([sys.executable, "-m", "tdvideo", *args], cwd=folder)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return done.seconds, done.peak_rss / 2**20, done.code, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=10.0)
    parser.add_argument("--keep", type=Path, help="a folder to keep the clip in (reused when there)")
    options = parser.parse_args()
    folder = options.keep or Path(tempfile.mkdtemp(prefix="tdvideo-bench-grid-"))
    folder.mkdir(parents=True, exist_ok=True)
    clip = folder / f"long-{options.hours:g}h.mp4"
    frames = int(options.hours * 3600)
    if not clip.exists():
        start = time.perf_counter()
        write_clip(clip, frames, make_frame=lambda i: scene_frame(i // 600, 64, 64), fps=1, gop=60)
        print(f"wrote {clip.name}: {frames} frames at 1 fps in {time.perf_counter() - start:.1f} s")
    out = folder / "out"
    cases = [
        ("grid, 100 rows/s", ["extract", str(clip), "-o", str(out), "--fps", "100", "--fps-rows", "grid", "-q", "--overwrite"]),
        ("grid, 1000 rows/s", ["extract", str(clip), "-o", str(folder / "refused"), "--fps", "1000", "--fps-rows", "grid", "-q"]),
        ("show the grid output", ["show", str(out / clip.stem), "-o", str(folder / "grid.png")]),
    ]
    for name, args in cases:
        wall, peak, code, last = measure(args, folder)
        print(f"{name:<22} exit {code}  wall {wall:6.1f} s  peak RSS {peak:7.1f} MiB  {last[:150]}")
    if options.keep is None:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
