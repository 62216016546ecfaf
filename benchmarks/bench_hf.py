"""Throughput of the Hugging Face transformers families (``hf:ORG/NAME``), as tdvideo runs them.

    python benchmarks/bench_hf.py [--device cpu|cuda] [--precision fp32|bf16] [--repeats 2] [--cache DIR]

Each family at the size of a checkpoint people run, with random weights (speed does not
depend on them; no network is needed): the model is built from a config of that
checkpoint's architecture, saved with ``save_pretrained`` beside its processor config
under ``--cache`` (once), and loaded by tdvideo from that folder (``--weights FOLDER``), so
the module timed is the one ``tdvideo extract --model hf:...`` runs: uint8 in,
normalization, the model, the features tdvideo keeps out.

  - image models, frames/s (a batch of ``--batch`` frames): CLIP ViT-B/32
    (openai/clip-vit-base-patch32), SigLIP B/16 at 224 (google/siglip-base-patch16-224),
    DINOv2 ViT-S/14 at 224 (facebook/dinov2-small, as its processor crops);
  - video models, windows/s and frames/s (one window a pass): VideoMAE B/16 of 16 frames
    (MCG-NJU/videomae-base), TimeSformer B/16 of 8 (facebook/timesformer-base-finetuned-k400),
    ViViT B/16x2 of 32 (google/vivit-b-16x2-kinetics400), X-CLIP B/32 of 8
    (microsoft/xclip-base-patch32), V-JEPA 2 ViT-L/16 of 16 frames at 256
    (facebook/vjepa2-vitl-fpc16-256-ssv2's encoder).

Needs the transformers extra (``pip install "tdvideo[transformers]"``).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import frame_rate, window_rate  # a sibling script, not a package: after the path is set

from tdvideo import build_backbone

# name -> (what it stands for, a function that makes (model, processor) of that architecture)
Maker = Callable[[], tuple[torch.nn.Module, object]]


def _families() -> dict[str, tuple[str, Maker]]:
    import transformers as t

    def video_processor(size: int = 224) -> object:
        return t.VideoMAEImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})

    return {
        "clip": ("CLIP ViT-B/32", lambda: (t.CLIPModel(t.CLIPConfig()), t.CLIPImageProcessor())),
        "siglip": ("SigLIP B/16 @224", lambda: (t.SiglipModel(t.SiglipConfig()), t.SiglipImageProcessor())),
        "dinov2": (
            "DINOv2 ViT-S/14 @224",
            lambda: (
                t.Dinov2Model(t.Dinov2Config(hidden_size=384, num_attention_heads=6, image_size=518)),
                t.BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True),
            ),
        ),
        "videomae": ("VideoMAE B/16, 16 frames", lambda: (t.VideoMAEModel(t.VideoMAEConfig()), video_processor())),
        "timesformer": ("TimeSformer B/16, 8 frames", lambda: (t.TimesformerModel(t.TimesformerConfig()), video_processor())),
        "vivit": ("ViViT B/16x2, 32 frames", lambda: (t.VivitModel(t.VivitConfig()), video_processor())),
        "xclip": ("X-CLIP B/32, 8 frames", lambda: (t.XCLIPModel(t.XCLIPConfig()), video_processor())),
        "vjepa2": (
            "V-JEPA 2 ViT-L/16, 16 frames @256",
            lambda: (t.VJEPA2Model(t.VJEPA2Config(frames_per_clip=16)), video_processor(256)),
        ),
    }


def saved(cache: Path, family: str, make: Maker) -> Path:
    """The folder of ``family``'s random model, saved once."""
    folder = cache / family
    if not (folder / "config.json").is_file():
        model, processor = make()
        model.save_pretrained(folder)
        processor.save_pretrained(folder)  # type: ignore[attr-defined]
    return folder


def measure(family: str, folder: Path, device: torch.device, precision: str, repeats: int, batch: int) -> tuple[float, str]:
    """(frames/s, what one pass is) of ``family``'s model as tdvideo builds it from ``folder``."""
    backbone = build_backbone(f"hf:bench/{family}", weights=str(folder))
    pre = backbone.preprocessing
    side = pre.crop or pre.size
    height, width = (side, side) if isinstance(side, int) else side
    if backbone.kind == "window":
        assert backbone.clip_len is not None
        rate = window_rate(backbone.window_model(), 1, backbone.clip_len, (height, width), device, precision, repeats)
        return rate * backbone.clip_len, f"{rate:6.3f} windows/s of {backbone.clip_len} at {height}x{width}, features {backbone.feature_shape}"
    assert height == width
    rate = frame_rate(backbone.frame_model(), height, batch, device, precision, repeats)
    return rate, f"at {height}x{width}, features {backbone.feature_shape}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--batch", type=int, default=16, help="frames a pass for the image models")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tdvideo-bench" / "hf", help="where the models are saved")
    parser.add_argument("--only", nargs="*", help="these families only (clip siglip dinov2 videomae timesformer vivit xclip vjepa2)")
    args = parser.parse_args()
    import transformers

    warnings.simplefilter("ignore")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {name}, {args.precision}, image batch {args.batch}")
    for family, (label, make) in _families().items():
        if args.only and family not in args.only:
            continue
        rate, what = measure(family, saved(args.cache, family, make), device, args.precision, args.repeats, args.batch)
        print(f"{label:36s} {rate:8.2f} frames/s  {what}", flush=True)


if __name__ == "__main__":
    main()
