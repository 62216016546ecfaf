"""Throughput of the model families people ask for, on pre-decoded uint8 input.

    python benchmarks/bench_models.py [--device cpu|cuda] [--precision fp32|bf16] [--repeats 3]

Random weights (speed does not depend on them), the whole model tdvideo runs: uint8 in,
normalization on the device, the backbone, features out.
  - timm CLIP ViT-B/16 at 224 (the image-text embedding, 512-d), frames/s;
  - timm DINOv2 ViT-S/14 at 224 (timm built for 224 x 224 input), and at 518, the input
    size of its pretrained config that tdvideo uses by default, frames/s;
  - torchvision r3d_18 on windows of 16 frames at 112 x 112, windows/s (and frames/s).
Needs the timm extra (``pip install "tdvideo[timm]"``).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_timedistributed import median_ms

from tdvideo import TimeDistributed, build_backbone
from tdvideo.models import Normalize

_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def frame_rate(model: nn.Module, size: int, batch: int, device: torch.device, precision: str, repeats: int) -> float:
    model = TimeDistributed(model).to(device).eval()
    frames = torch.randint(0, 256, (1, batch, 3, size, size), dtype=torch.uint8, device=device)
    dtype = _AUTOCAST[precision]
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        return batch / (median_ms(lambda: model(frames), device, repeats, warmup=1) / 1e3)


def window_rate(
    model: nn.Module, batch: int, clip_len: int, size: tuple[int, int], device: torch.device, precision: str, repeats: int
) -> float:
    """Windows a second through ``model`` (a backbone's ``window_model()``: uint8 windows in)."""
    model = model.to(device).eval()
    windows = torch.randint(0, 256, (batch, clip_len, 3, *size), dtype=torch.uint8, device=device)
    dtype = _AUTOCAST[precision]
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        return batch / (median_ms(lambda: model(windows), device, repeats, warmup=1) / 1e3)


def run(device: torch.device, precision: str, repeats: int, batch: int) -> list[str]:
    import timm

    lines = []
    clip = build_backbone("timm:vit_base_patch16_clip_224.openai", weights="none")
    rate = frame_rate(clip.frame_model(), 224, batch, device, precision, repeats)
    lines.append(f"timm CLIP ViT-B/16 @224       {rate:8.1f} frames/s   features {clip.feature_shape}")

    dino = build_backbone("timm:vit_small_patch14_dinov2.lvd142m", weights="none")
    pre = dino.preprocessing
    at_224 = timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False, img_size=224, num_classes=0)
    rate = frame_rate(nn.Sequential(Normalize(pre.mean, pre.std), at_224), 224, batch, device, precision, repeats)
    lines.append(f"timm DINOv2 ViT-S/14 @224     {rate:8.1f} frames/s   features {dino.feature_shape}")
    rate = frame_rate(dino.frame_model(), 518, max(1, batch // 4), device, precision, repeats)
    lines.append(f"timm DINOv2 ViT-S/14 @518     {rate:8.1f} frames/s   (its pretrained input size, tdvideo's default)")

    windows = max(1, batch // 4)
    rate = window_rate(build_backbone("r3d_18", weights="none").window_model(), windows, 16, (112, 112), device, precision, repeats)
    lines.append(f"torchvision r3d_18, 16x112²   {rate:8.1f} windows/s  ({rate * 16:.1f} frames/s)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(_AUTOCAST), default="fp32")
    parser.add_argument("--batch", type=int, default=32, help="frames per pass (windows: a quarter of it)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # random-weights warnings
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}, {args.precision}, batch {args.batch}")
    for line in run(device, args.precision, args.repeats, args.batch):
        print(line)


if __name__ == "__main__":
    main()
