"""One script for a lent GPU: CUDA correctness against the CPU, then throughput.

    python benchmarks/gpu.py                 # on a machine with CUDA
    python benchmarks/gpu.py --device cpu    # dry run of the same steps on the CPU

Prints, with the card's name:
  1. correctness: colorhist and resnet50 (seeded random weights) features on CUDA
     against the CPU for the same decoded frames (fp32 and bf16 autocast);
  2. decode-only frames/s (720p H.264 -> 224x224, the pipeline's reader);
  3. model-only frames/s: resnet50, bf16 autocast, channels_last, batch 128;
  4. end-to-end frames/s: a folder of 8 clips through Extractor with resnet50 bf16;
  5. the model families (bench_models.py, bf16): timm CLIP ViT-B/16 and DINOv2 ViT-S/14
     frames/s, torchvision r3d_18 windows/s (skipped without the timm extra).
Generated clips are cached under --cache (one 10 s clip, hard-linked 8 times).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import make_clip, make_folder

import tdvideo
from tdvideo import Extractor, TimeDistributed, build_backbone


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def correctness(clip: Path, device: torch.device) -> bool:
    frames = tdvideo.read_video(clip, size=232, crop=224, num_frames=16).frames.unsqueeze(0)
    ok = True
    for name in ("colorhist", "resnet50"):
        torch.manual_seed(0)
        backbone = build_backbone(name, weights="none")
        model = TimeDistributed(backbone.frame_model()).eval()
        with torch.inference_mode():
            cpu = model(frames)
            gpu_model = model.to(device)
            if device.type == "cuda":
                gpu_model = gpu_model.to(memory_format=torch.channels_last)
            for precision, dtype, tol in (("fp32", None, 1e-3), ("bf16", torch.bfloat16, 5e-2)):
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    out = gpu_model(frames.to(device)).float().cpu()
                err = ((out - cpu).norm() / cpu.norm().clamp_min(1e-12)).item()
                good = err <= tol
                ok &= good
                print(f"{name:<10} {precision}: relative error vs CPU {err:.2e} (tolerance {tol:.0e}) {'OK' if good else 'MISMATCH'}")
    return ok


def decode_only(clip: Path) -> float:
    start = time.perf_counter()
    n = sum(len(c) for c in tdvideo.iter_video(clip, size=232, crop=224))
    return n / (time.perf_counter() - start)


def model_only(device: torch.device, batch: int, repeats: int) -> float:
    backbone = build_backbone("resnet50", weights="none")
    model = TimeDistributed(backbone.frame_model()).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    frames = torch.randint(0, 256, (1, batch, 3, 224, 224), dtype=torch.uint8, device=device)
    times = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
        for i in range(repeats + 2):
            sync(device)
            start = time.perf_counter()
            model(frames)
            sync(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def end_to_end(folder: Path, device: str, batch: int, out: Path) -> tuple[float, int]:
    # Decoding is the bottleneck next to a GPU: one worker process per core, up to 8.
    workers = min(8, os.cpu_count() or 1)
    extractor = Extractor(
        model="resnet50", weights="none", device=device, precision="bf16", batch_size=batch, workers=workers
    )
    start = time.perf_counter()
    results = list(extractor.run([folder], out=out, overwrite=True, progress=False))
    wall = time.perf_counter() - start
    frames = sum(r.frames for r in results if r.status == "done")
    return frames / wall, extractor._worker_count(sorted(folder.glob("*.mp4")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tdvideo-bench")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # random weights are on purpose
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu for a dry run")
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {card}; torch {torch.__version__}; tdvideo {tdvideo.__version__}")
    args.cache.mkdir(parents=True, exist_ok=True)
    clip = make_clip(args.cache, 10)
    folder = make_folder(args.cache, "folder8", clip)[0].parent

    print("\n== 1. correctness against the CPU ==")
    ok = correctness(clip, device)
    print("\n== 2-4. throughput ==")
    print(f"decode only (720p -> 224, one process): {decode_only(clip):8.1f} frames/s")
    print(f"model only (resnet50, bf16, channels_last, batch {args.batch}): {model_only(device, args.batch, args.repeats):8.1f} frames/s")
    out = Path(tempfile.mkdtemp(prefix="tdvideo-gpu-"))
    rate, workers = end_to_end(folder, args.device, args.batch, out)
    print(f"end to end (8 x 10 s clips, resnet50 bf16, {workers} decode workers): {rate:8.1f} frames/s")
    shutil.rmtree(out, ignore_errors=True)
    print("\n== 5. model families (bf16) ==")
    try:
        import bench_models

        for line in bench_models.run(device, "bf16", args.repeats, args.batch):
            print(line)
    except ImportError as exc:
        print(f"skipped: {exc}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
