"""Decoding benchmark: tdvideo's reader against a bare PyAV loop and the naive path.

    python benchmarks/bench_decode.py            # generates its clips once, under --cache
    python benchmarks/bench_decode.py --quick    # skip the 10-minute clip

Figures (median of --repeats runs, frames per second of kept frames):
  read_video(size=(224, 224))    vs  (a) bare PyAV loop: frame threading,
                                      to_ndarray(width=224, height=224, format="rgb24", threads=1)
                                      (b) naive: full-size to_ndarray, then torch resize
                                      (c) torchcodec, when importable
  fps=1 and fps=0.25 sampling    vs  dense decoding (same clip), with seek counts; also on
                                     real footage (../shared/videos/torchcodec__nasa_13013.mp4,
                                     re-encoded to 720p, 2 s GOP) when that file is present
  peak RSS of iter_video over a 10 s and a 10 min clip (fresh subprocesses)
The clips are 1280x720 H.264 at 25 fps with a keyframe every 2 s (a common streaming GOP),
with a panning noise texture so that decoding costs about what camera footage costs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

import tdvideo
from tdvideo.synthetic import scene_frame, write_clip

FPS, GOP, HEIGHT, WIDTH = 25, 50, 720, 1280


_TEXTURE = np.random.default_rng(0).integers(0, 48, size=(HEIGHT, WIDTH + 256, 3), dtype=np.uint8)


def textured_frame(i: int) -> np.ndarray:
    """A scene frame plus a panning noise texture: flat synthetic frames decode unrealistically fast."""
    frame = scene_frame(i, HEIGHT, WIDTH, frames_per_scene=5 * FPS)
    shift = (2 * i) % 256
    return np.add(frame, _TEXTURE[:, shift : shift + WIDTH], out=frame)


def make_clip(cache: Path, seconds: int) -> Path:
    path = cache / f"bench_720p_textured_{seconds}s.mp4"
    if not path.exists():
        print(f"generating {path} ({seconds} s of 720p H.264) ...", flush=True)
        frame = textured_frame
        # Speed over byte-reproducibility here: threaded x264, fast preset.
        options = {"preset": "veryfast", "qp": "23", "threads": "0", "x264-params": "scenecut=0"}
        tmp = path.with_suffix(".tmp.mp4")
        write_clip(tmp, seconds * FPS, make_frame=frame, fps=FPS, gop=GOP, options=options)
        tmp.rename(path)
    return path


REAL_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "videos" / "torchcodec__nasa_13013.mp4"


def make_real_clip(cache: Path) -> Path | None:
    """Real footage (../shared, when present) re-encoded like the synthetic clip: 720p, 2 s GOP."""
    path = cache / "nasa_720p.mp4"
    if path.exists() or not REAL_SOURCE.exists():
        return path if path.exists() else None
    print(f"generating {path} from {REAL_SOURCE.name} ...", flush=True)
    with av.open(str(REAL_SOURCE)) as source:
        frames = [
            f.reformat(width=WIDTH, height=HEIGHT, format="rgb24", interpolation="BICUBIC").to_ndarray()
            for f in source.decode(video=0)
        ]
    options = {"preset": "veryfast", "qp": "23", "threads": "0", "x264-params": "scenecut=0"}
    tmp = path.with_suffix(".tmp.mp4")
    write_clip(tmp, len(frames), make_frame=frames.__getitem__, fps=FPS, gop=GOP, options=options)
    tmp.rename(path)
    return path


def make_folder(cache: Path, name: str, clip: Path, count: int = 8) -> list[Path]:
    """A folder of ``count`` hard links to ``clip``: a batch of videos without the disk cost."""
    folder = cache / name
    folder.mkdir(exist_ok=True)
    for i in range(count):
        if not (folder / f"clip{i}.mp4").exists():
            (folder / f"clip{i}.mp4").hardlink_to(clip)
    return sorted(folder.glob("*.mp4"))


def decode_loop(paths: list[Path], convert: Callable[[av.VideoFrame], object]) -> int:
    """A bare PyAV loop with frame threading, ``convert`` applied to every frame; returns the frame count."""
    n = 0
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                convert(frame)
                n += 1
    return n


def to_224(frame: av.VideoFrame) -> None:
    frame.to_ndarray(width=224, height=224, format="rgb24", threads=1)


def full_size_then_torch(frame: av.VideoFrame) -> None:
    full = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float().unsqueeze(0)
    F.interpolate(full, size=(224, 224), mode="bilinear", antialias=False).to(torch.uint8)


def ours(path: Path, **options) -> int:
    return len(tdvideo.read_video(path, size=(224, 224), **options))


def torchcodec_loop(path: Path) -> int:
    from torchcodec.decoders import VideoDecoder  # optional

    decoder = VideoDecoder(str(path), dimension_order="NCHW", transforms=None)
    n = 0
    for batch_start in range(0, len(decoder), 64):
        frames = decoder.get_frames_in_range(batch_start, min(batch_start + 64, len(decoder))).data
        F.interpolate(frames.float(), size=(224, 224), mode="bilinear")
        n += frames.shape[0]
    return n


def fps_of(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    rates, frames = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        frames = fn()
        rates.append(frames / (time.perf_counter() - start))
    return statistics.median(rates), frames


_RSS_CHILD = """
import sys, tdvideo
def kib(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field))
path = sys.argv[1]
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak-RSS mark: count the decoding, not the imports
before = kib("VmRSS:")
n = sum(len(chunk) for chunk in tdvideo.iter_video(path, size=(224, 224), chunk_frames=64))
print(n, before, kib("VmHWM:"))
"""


def peak_rss(path: Path) -> tuple[int, float, float]:
    """(frames, RSS after imports, peak RSS while decoding), MiB."""
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path)], capture_output=True, text=True, check=True)
    frames, before, peak = out.stdout.split()
    return int(frames), int(before) / 1024, int(peak) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tdvideo-bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the 10-minute clip")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    short = make_clip(args.cache, 10)
    print(f"PyAV {av.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads; clip {short.name}")

    print("\n== decode + resize to 224x224, frames/s (median) ==")
    base, n = fps_of(lambda: decode_loop([short], to_224), args.repeats)
    rows = [("bare PyAV loop (a)", base, n)]
    rows.append(("tdvideo.read_video", *fps_of(lambda: ours(short), args.repeats)))
    rows.append(("naive full-size + torch resize (b)", *fps_of(lambda: decode_loop([short], full_size_then_torch), args.repeats)))
    try:
        rows.append(("torchcodec (c)", *fps_of(lambda: torchcodec_loop(short), args.repeats)))
    except ImportError:
        print("torchcodec: not importable, skipped")
    ours_fps = rows[1][1]
    for name, rate, frames in rows:
        print(f"{name:<36} {rate:>8.1f} fps  ({frames} frames)  ours/this = {ours_fps / rate:.2f}x")

    print("\n== sparse sampling against dense decoding (same clip, 224x224) ==")
    real = make_real_clip(args.cache)
    for path in [short] + ([real] if real is not None else []):
        _, n = fps_of(lambda path=path: ours(path), 1)
        dense_s = statistics.median(_timed(lambda path=path: ours(path)) for _ in range(args.repeats))
        for rate in (1.0, 0.25):
            clip = tdvideo.read_video(path, size=(224, 224), fps=rate)
            seconds = statistics.median(_timed(lambda path=path, rate=rate: ours(path, fps=rate)) for _ in range(args.repeats))
            print(
                f"{path.name:<28} fps={rate:<5} {len(clip):>3} frames in {seconds:.3f} s vs dense {dense_s:.3f} s: "
                f"{dense_s / seconds:.1f}x faster; decoded {clip.frames_decoded} of {n}, {clip.seeks} seeks"
            )

    print("\n== peak RSS of iter_video(size=224, chunk_frames=64), fresh subprocess ==")
    clips = [short] if args.quick else [short, make_clip(args.cache, 600)]
    peaks = []
    for path in clips:
        frames, before, peak = peak_rss(path)
        peaks.append(peak)
        print(f"{path.name:<32} {frames:>6} frames  peak RSS {peak:7.1f} MiB ({before:.1f} MiB after imports, +{peak - before:.1f} MiB decoding)")
    if len(peaks) == 2:
        print(f"10 min / 10 s peak RSS: {peaks[1] / peaks[0]:.2f}x")


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
