"""Per-frame throughput of backbones on pre-decoded 224x224 frames (random weights: speed is the same).

    python benchmarks/bench_backbones.py [--models resnet18 resnet50 ...] [--batch 32] [--device cpu]

Measures the whole per-frame model tdvideo runs: uint8 frames in, normalization and the
backbone under TimeDistributed, features out. Median of --repeats batches after warm-up.
Then the default model's two histogram kernels on one batch of uint8 frames at its own
size (112 x 199): a byte-sized bincount per frame against one flat ``index_add_``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from tdvideo import TimeDistributed, build_backbone
from tdvideo.models import ColorHistogram


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def colorhist_kernels(batch: int, repeats: int) -> None:
    hist = ColorHistogram(16)
    frames = torch.randint(0, 256, (batch, 3, 112, 199), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(hist._per_frame_bincount(frames), hist._flat_index_add(frames))
    with torch.inference_mode():
        bincount = median_seconds(lambda: hist._per_frame_bincount(frames), repeats)
        index_add = median_seconds(lambda: hist._flat_index_add(frames), repeats)
    print(
        f"colorhist, {batch} frames of 112x199: per-frame bincount {bincount * 1e3:.1f} ms, "
        f"flat index_add_ {index_add * 1e3:.1f} ms ({index_add / bincount:.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mobilenet_v3_small", "resnet18", "resnet50"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}, batch {args.batch}")
    for name in args.models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random weights are the point here
            backbone = build_backbone(name, weights="none")
        model = TimeDistributed(backbone.frame_model()).to(device).eval()
        frames = torch.randint(0, 256, (1, args.batch, 3, 224, 224), dtype=torch.uint8, device=device)
        times = []
        with torch.inference_mode():
            for i in range(args.repeats + 1):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(frames)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:
                    times.append(time.perf_counter() - start)
        rate = args.batch / statistics.median(times)
        print(f"{name:<20} {rate:8.1f} frames/s  features {tuple(backbone.feature_shape)}")
    torch.set_num_threads(1)  # as the extractor runs light models on the CPU
    colorhist_kernels(64, args.repeats * 4)


if __name__ == "__main__":
    main()
