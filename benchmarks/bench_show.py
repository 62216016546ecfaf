"""``tdvideo show`` on long outputs, as users run it: a whole process, timed from outside.

    python benchmarks/bench_show.py [--hours 10] [--source-minutes 60] [--keep DIR]

Two outputs are written into a temporary folder (or ``--keep DIR``, reused when there):

- ``long``: ``--hours`` of features at 30 fps, 48-d float32 like the default model
  (1,080,000 rows for 10 hours), scenes of 5 to 60 s with a little noise; its source does
  not exist, so no thumbnails are decoded;
- ``source``: one row per frame of a real ``--source-minutes`` clip (64x64 at 25 fps,
  a keyframe every 10 s, written with :func:`tdvideo.synthetic.write_clip`), so the six
  thumbnails are decoded from a long source.

For each, ``tdvideo show`` runs as a child process; its peak RSS comes from ``wait4``
(that child only) and its wall time from start to exit. The outputs are written by another
process, so that this one stays small: a child started by ``vfork`` counts its parent's
peak in its own ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from tdvideo.synthetic import scene_frame, write_clip
from tdvideo.writers import Features, write_features

DIMS = 48


def scenes(rows: int, fps: float, seed: int) -> np.ndarray:
    """``(rows, DIMS)`` float32: a vector a scene (5 to 60 s long) plus a little noise."""
    rng = np.random.default_rng(seed)
    array = np.empty((rows, DIMS), dtype=np.float32)
    start = 0
    while start < rows:
        length = int(rng.uniform(5, 60) * fps)
        base = np.abs(rng.normal(size=DIMS)).astype(np.float32)  # ReLU-like: all positive
        part = array[start : start + length]
        part[:] = base + rng.normal(scale=0.02, size=part.shape).astype(np.float32)
        start += length
    return array


def write_output(base: Path, array: np.ndarray, fps: float, source: Path) -> None:
    times = np.arange(len(array), dtype=np.float64) / fps
    write_features(base, Features(array, times, {"source": {"path": str(source)}, "model": "synthetic"}), fmt="npy")


def long_output(folder: Path, hours: float) -> Path:
    base = folder / "long"
    if not (folder / "long.json").exists():
        write_output(base, scenes(round(hours * 3600 * 30), 30.0, seed=0), 30.0, folder / "missing" / "long.mp4")
    return base


def source_output(folder: Path, minutes: float) -> Path:
    base = folder / "source"
    if not (folder / "source.json").exists():
        frames, fps = round(minutes * 60 * 25), 25
        started = time.perf_counter()
        clip = write_clip(
            folder / "source.mp4",
            frames,
            make_frame=partial(scene_frame, height=64, width=64, frames_per_scene=30 * fps),
            fps=fps,
            gop=10 * fps,
            options={"qp": "40"},  # a low bitrate: a long clip stays small
        )
        print(
            f"wrote {clip.name}: {frames} frames, {clip.stat().st_size / 2**20:.1f} MiB in {time.perf_counter() - started:.1f} s"
        )
        write_output(base, scenes(frames, float(fps), seed=1), float(fps), clip)
    return base


def run_show(base: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB, and the command's output."""
    exe = shutil.which("tdvideo") or str(Path(sys.executable).with_name("tdvideo"))
    started = time.perf_counter()
    child = subprocess.Popen([exe, "show", str(base)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert child.stdout is not None
    output = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"tdvideo show {base} failed ({child.returncode}): {output.strip()}")
    return wall, usage.ru_maxrss / 1024, output.strip()  # ru_maxrss: KiB on Linux


def write_outputs(folder: Path, hours: float, source_minutes: float) -> dict[str, Path]:
    cases = {f"{hours:g} h, no source": long_output(folder, hours)}
    if source_minutes > 0:
        cases[f"{source_minutes:g} min source"] = source_output(folder, source_minutes)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=10.0, help="length of the long output")
    parser.add_argument("--source-minutes", type=float, default=60.0, help="length of the real source (0: skip)")
    parser.add_argument("--keep", type=Path, help="write the outputs here and reuse them (default: a temporary folder)")
    parser.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="tdvideo-show-"))
    folder.mkdir(parents=True, exist_ok=True)
    if args.write_only:
        write_outputs(folder, args.hours, args.source_minutes)
        return
    try:
        # Written by another process: a child started by vfork takes this process's peak
        # RSS into its own ru_maxrss, so this one must stay small.
        options = ["--hours", str(args.hours), "--source-minutes", str(args.source_minutes), "--keep", str(folder)]
        subprocess.run([sys.executable, __file__, "--write-only", *options], check=True)
        for label, base in write_outputs(folder, args.hours, args.source_minutes).items():
            rows = len(np.load(base.with_name(base.name + ".npy"), mmap_mode="r"))
            wall, rss, output = run_show(base)
            png = Path(output)
            print(
                f"{label:<20} {rows:>9,} x {DIMS} float32   wall {wall:6.2f} s   peak RSS {rss:7.1f} MiB   PNG {png.stat().st_size / 1024:.0f} KiB"
            )
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"(this process's own peak RSS, which a child's figure cannot be below: {own:.1f} MiB)")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
