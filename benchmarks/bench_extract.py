"""End-to-end extraction benchmark: whole processes first, then where the time goes.

    python benchmarks/bench_extract.py [--quick] [--pairs N]

On generated 720p H.264 clips (see bench_decode.py; cached under --cache):
  0. whole process, as users feel it: ``tdvideo extract`` (start-up, imports and worker
     start included) against a bare PyAV decode+resize loop in its own process, over the
     same files, run in alternating rounds; for one 10 s clip and folders of 2, 4 and 8
     clips, with the default worker count and with 0, 1 and 2 workers (the figures the
     default is chosen from); ``--baseline DIR`` times another checkout's ``tdvideo`` in
     the same rounds (before/after figures from one run);
  1. in process (imports excluded): the default model against the bare loop;
  2. resnet18 at 224: extraction frames/s against the slower of decoding alone and the
     model alone on pre-decoded frames;
  3. peak RSS of a whole extraction of a 10 min clip against a 10 s clip, and of its
     spatial maps (conv2d) with and without spilling features to a temporary file;
  4. a rerun over a folder of 1,000 finished videos (seconds per 1,000 videos).
Section 0 is the figure to quote; the in-process ones find where time goes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import decode_loop, make_clip, make_folder

import tdvideo
from tdvideo import Extractor
from tdvideo.extract._batcher import Batch
from tdvideo.synthetic import index_frame, write_clip
from tdvideo.video._geometry import Geometry


def output_size(path: Path, size: int | tuple[int, int], crop: int | None = None) -> tuple[int, int]:
    """(width, height) swscale makes for ``path`` at the extractor's size (as tdvideo plans it)."""
    info = tdvideo.probe(path)
    plan = Geometry.plan(
        info.path, coded_width=info.raw_width, coded_height=info.raw_height,
        sample_aspect_ratio=info.sample_aspect_ratio, rotation=info.rotation, size=size, crop=crop,
    )
    return plan.sws_width, plan.sws_height


def bare_loop(paths: list[Path], size: int | tuple[int, int], crop: int | None = None) -> int:
    """Decode + resize with PyAV alone, to the size the extractor uses."""
    width, height = output_size(paths[0], size, crop)  # all clips share one size here
    return decode_loop(paths, lambda frame: frame.to_ndarray(width=width, height=height, format="rgb24", threads=1))


_BARE_PROCESS = """
import sys, av
width, height = int(sys.argv[1]), int(sys.argv[2])
n = 0
for path in sys.argv[3:]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frame.to_ndarray(width=width, height=height, format="rgb24", threads=1)
            n += 1
print(n)
"""


def timed(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=cwd, env=env)
    return time.perf_counter() - start


def whole_process(
    paths: list[Path], inputs: list[Path], out: Path, pairs: int, variants: dict[str, list[str]], baseline: Path | None
) -> dict[str, list[float]]:
    """Seconds of ``tdvideo extract`` with each variant's extra options, of the bare loop and
    of the ``baseline`` source tree's ``tdvideo extract`` with its defaults (when given),
    each a fresh process, in alternating rounds."""
    width, height = output_size(paths[0], Extractor().size)
    exe = shutil.which("tdvideo") or str(Path(sys.executable).with_name("tdvideo"))
    args = ["extract", *map(str, inputs), "-o", str(out), "-q"]
    # Run from a neutral folder: `python -m` puts the working directory first on sys.path,
    # and from a checkout that would shadow the baseline tree with this one.
    cwd = out.parent
    times: dict[str, list[float]] = {label: [] for label in [*variants, "bare", "baseline"]}
    for _ in range(pairs):
        for label, extra in variants.items():
            shutil.rmtree(out, ignore_errors=True)
            times[label].append(timed([exe, *args, *extra], cwd=cwd))
        times["bare"].append(timed([sys.executable, "-c", _BARE_PROCESS, str(width), str(height), *map(str, paths)], cwd=cwd))
        if baseline is not None:
            shutil.rmtree(out, ignore_errors=True)
            env = {**os.environ, "PYTHONPATH": str(baseline)}
            times["baseline"].append(timed([sys.executable, "-m", "tdvideo", *args], cwd=cwd, env=env))
    return times


def speed_line(label: str, seconds: list[float], bare: list[float]) -> str:
    """Median seconds and the median of the per-round speed ratios (bare time / this time)."""
    ratios = sorted(b / o for o, b in zip(seconds, bare))
    return (
        f"  {label:<22} {statistics.median(seconds):5.2f} s   speed ratio {statistics.median(ratios):.2f} "
        f"(range {ratios[0]:.2f}-{ratios[-1]:.2f})"
    )


def rate(fn: Callable[[], int], repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        frames = fn()
        rates.append(frames / (time.perf_counter() - start))
    return statistics.median(rates)


def run_folder(extractor: Extractor, inputs: list[Path], out: Path) -> int:
    shutil.rmtree(out, ignore_errors=True)
    results = list(extractor.run(inputs, out=out, progress=False))
    assert all(r.status == "done" for r in results), [r.error for r in results if r.status != "done"]
    return sum(r.frames for r in results)


_RSS_CHILD = """
import sys, warnings, tdvideo
from tdvideo.extract import _collect
def kib(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field))
if len(sys.argv) > 4:
    _collect.SPILL_BYTES = int(sys.argv[4])
extractor = tdvideo.Extractor(model=sys.argv[3], weights="none", workers=0, dtype="float16")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
before = kib("VmRSS:")
frames = sum(r.frames for r in extractor.run([sys.argv[1]], out=sys.argv[2], overwrite=True, progress=False))
print(frames, before, kib("VmHWM:"))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tdvideo-bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the 10 min clip and the 1,000-video rerun")
    parser.add_argument("--pairs", type=int, default=3, help="alternating whole-process rounds per case")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout (e.g. a git worktree of an older commit) timed in section 0 too"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # random-weights warnings: speed does not depend on the weights
    args.cache.mkdir(parents=True, exist_ok=True)
    clip = make_clip(args.cache, 10)
    folder_clips = make_folder(args.cache, "folder8", clip)
    folder = folder_clips[0].parent
    tmp = Path(tempfile.mkdtemp(prefix="tdvideo-bench-"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, PyAV {av.__version__}; {clip.name}")

    print(f"\n== 0. whole process against the bare loop in its own process ({args.pairs} alternating rounds) ==")
    variants = {"default": [], "--workers 0": ["--workers", "0"], "--workers 1": ["--workers", "1"], "--workers 2": ["--workers", "2"]}
    cases = [("one 10 s clip", [clip], [clip])] + [
        (f"folder of {n} clips", [paths[0].parent], paths)
        for n in (2, 4, 8)
        for paths in [folder_clips if n == 8 else make_folder(args.cache, f"folder{n}", clip, count=n)]
    ]
    for label, inputs, paths in cases:
        times = whole_process(paths, inputs, tmp / "whole", args.pairs, variants, args.baseline)
        workers = Extractor()._worker_count(paths)
        print(f"{label} ({sum(p.stat().st_size for p in paths) / 2**20:.1f} MiB): bare loop {statistics.median(times['bare']):.2f} s")
        for name in variants:
            print(speed_line(f"{name} ({workers} workers)" if name == "default" else name, times[name], times["bare"]))
        if times["baseline"]:
            print(speed_line("baseline default", times["baseline"], times["bare"]))
        sys.stdout.flush()

    print("\n== 1. in process: default model (colorhist, 112 px short side) against bare decode+resize ==")
    default = Extractor()
    size = default.size
    for label, inputs, paths in [("one 10 s clip", [clip], [clip]), ("folder of 8 clips", [folder], folder_clips)]:
        bare = rate(lambda paths=paths: bare_loop(paths, size), args.repeats)
        ours = rate(lambda inputs=inputs: run_folder(default, inputs, tmp / "out"), args.repeats)
        workers = default._worker_count(paths)
        print(f"{label:<18} bare {bare:7.1f} fps   tdvideo {ours:7.1f} fps   ratio {ours / bare:.2f}   (workers={workers})")

    print("\n== 2. resnet18 at 224 against the slower of decoding and the model ==")
    resnet = Extractor(model="resnet18", weights="none", batch_size=32)
    decode = rate(lambda: bare_loop([clip], resnet.size, resnet.crop), args.repeats)
    frames = np.random.default_rng(0).integers(0, 256, (1, 32, 224, 224, 3), dtype=np.uint8)
    runner = resnet._runner_now()
    model_rate = rate(lambda: (runner(Batch(frames, None, [])), 32)[1], args.repeats + 2)
    ours = rate(lambda: run_folder(resnet, [clip], tmp / "out"), args.repeats)
    bound = min(decode, model_rate)
    print(f"decode alone {decode:.1f} fps, model alone {model_rate:.1f} fps, tdvideo {ours:.1f} fps: {ours / bound:.2f} of the slower")

    if not args.quick:
        print("\n== 3. peak RSS of extracting a 10 min clip against a 10 s clip (colorhist, fresh subprocess) ==")
        peaks = []
        for path in (clip, make_clip(args.cache, 600)):
            out = subprocess.run(
                [sys.executable, "-c", _RSS_CHILD, str(path), str(tmp / "rss"), "colorhist"],
                capture_output=True, text=True, check=True,
            )
            n, before, peak = (int(v) for v in out.stdout.split())
            peaks.append(peak)
            print(f"{path.name:<32} {n:>6} frames  peak RSS {peak / 1024:7.1f} MiB (+{(peak - before) / 1024:.1f} MiB above imports)")
        print(f"ratio 10 min / 10 s: {peaks[1] / peaks[0]:.2f}")

        print("\n== 3b. spatial maps of the 10 min clip (conv2d, 16x62x62 float16 per frame) ==")
        for label, limit in (("spill past 512 MiB (default)", None), ("all in memory", str(1 << 40))):
            out = subprocess.run(
                [sys.executable, "-c", _RSS_CHILD, str(make_clip(args.cache, 600)), str(tmp / "rss"), "conv2d",
                 *([limit] if limit else [])],
                capture_output=True, text=True, check=True,
            )
            n, before, peak = (int(v) for v in out.stdout.split())
            print(f"{label:<30} {n} frames  peak RSS {peak / 1024:7.1f} MiB (+{(peak - before) / 1024:.1f} MiB above imports)")

        print("\n== 4. rerun over 1,000 finished videos ==")
        many = tmp / "many"
        many.mkdir()
        tiny = write_clip(tmp / "tiny.mp4", 2, make_frame=lambda i: index_frame(i, 32, 32))
        for i in range(1000):
            (many / f"v{i:04d}.mp4").hardlink_to(tiny)
        extractor = Extractor(workers=0)
        start = time.perf_counter()
        first = list(extractor.run([many], out=tmp / "many_out", progress=False))
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        again = list(extractor.run([many], out=tmp / "many_out", progress=False))
        rerun_s = time.perf_counter() - start
        assert all(r.status == "done" for r in first) and all(r.status == "skipped" for r in again)
        print(f"first run {first_s:.1f} s; rerun {rerun_s:.2f} s for 1,000 videos (all skipped)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
