"""timm's models (CLIP, SigLIP, DINOv2, EVA, ConvNeXt ...) as per-frame feature extractors.

Imported only for a ``timm:NAME`` model, and only with the ``tdvideo[timm]`` extra. NAME is
a timm model with its pretrained tag (``vit_base_patch16_clip_224.openai``):

- the preprocessing is the tag's own data config, as ``timm.data.resolve_data_config``
  gives it (input size, crop fraction, interpolation, mean and std), and that config is
  recorded in the metadata;
- pooled features are the pre-logits embedding (``reset_classifier(0)``), except for
  image-text models (CLIP, SigLIP) not fine-tuned on classes, whose head is the projection
  into the joint space: their features are the image embedding that ``encode_image``
  gives, so they can be matched against text embeddings;
- ``pool="none"`` gives ``forward_features``: tokens ``(N, D)`` or a map ``(C, H, W)``;
- named weights (``DEFAULT``) come from the Hugging Face Hub through timm's own download
  helpers, into the Hugging Face cache, and are loaded as a state dict like any file;
- ``--layer`` uses timm's FX feature extraction (which knows timm's own leaf modules);
- a ViT (DINOv2, CLIP, SigLIP, EVA, DeiT, Swin) takes frames of another size than its
  config's (``--size 256 --crop 224`` for DINOv2, whose config says 518) through timm's own
  ``set_input_size``: the position embeddings are resampled once (bicubic), as timm does
  when it loads pretrained weights at another ``img_size``; the size must be a multiple of
  the patch size.
"""

from __future__ import annotations

import difflib
import math
import re
from functools import partial
from pathlib import Path
from typing import Any

import timm
import timm.data
import timm.models
from torch import Tensor, nn

from .._types import Interpolation, Pool
from ..errors import ModelError, WeightsError, first_line, option
from ._modules import take_node
from ._preprocessing import Preprocessing
from ._registry import TIMM_PREFIX, ModelEntry

__all__ = ["entry", "timm_names"]

_INTERPOLATION: dict[str, Interpolation] = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "area": "area"}


def timm_names(pattern: str) -> list[str]:
    """timm's pretrained model names (``arch.tag``) matching an fnmatch ``pattern``."""
    return timm.list_models(pattern or "*", pretrained=True)


def entry(name: str) -> ModelEntry:
    """The entry of ``timm:ARCH.TAG`` (or ``timm:ARCH``: timm's default tag)."""
    model_name = name[len(TIMM_PREFIX) :]
    try:
        cfg = timm.models.get_pretrained_cfg(model_name) if timm.is_model(model_name.split(".")[0]) else None
    except RuntimeError:  # a known architecture with an unknown tag
        cfg = None
    if cfg is None:
        close = difflib.get_close_matches(model_name, timm.list_models(pretrained=True), n=5)
        hint = f"close: {', '.join(TIMM_PREFIX + c for c in close)}" if close else "see `tdvideo models 'timm:*'`"
        raise ModelError(f"unknown timm model {model_name!r}; {hint}")
    joint = _is_image_text(model_name)
    return ModelEntry(
        name=name,
        build=partial(_build, model_name),
        adapt=partial(_adapt, joint),
        preprocessing=lambda _weights: preprocessing(model_name),
        needs_weights=True,
        description=f"timm {model_name}, {'image-text embedding' if joint else 'pre-logits embedding'}",
        spatial=True,
        named_weights=partial(named_weights, model_name),
        layer=_take_layer,
        layer_names=_layer_names,
        details=lambda _weights: {"timm_data_config": data_config(model_name), "embedding": "image-text" if joint else "pre-logits"},
        resize_input=resize_input,
        input_sizes=_input_sizes(model_name),
    )


def _input_sizes(model_name: str) -> str | None:
    """Which frame sizes the model takes, in words, where its name says its patch size."""
    patch = re.search(r"patch(\d+)", model_name.partition(".")[0])
    if patch is None:
        return None
    _, h, w = data_config(model_name)["input_size"]
    return f"{h}x{w} (its config), or any multiple of {patch.group(1)} with --size/--crop (position embeddings resampled)"


def resize_input(module: nn.Module, size: tuple[int, int]) -> dict[str, Any]:
    """Make the timm ViT inside ``module`` take ``size`` frames (timm's ``set_input_size``)."""
    model = next((m for m in module.modules() if hasattr(m, "set_input_size") and hasattr(m, "patch_embed")), None)
    if model is None:
        raise ModelError("its input size is fixed (no position embeddings to resample)")
    before = tuple(model.patch_embed.img_size)
    patch = tuple(model.patch_embed.patch_size)
    if size[0] % patch[0] or size[1] % patch[1]:
        raise ModelError(f"{size[0]}x{size[1]} is not a multiple of its patch size {patch[0]}x{patch[1]}")
    model.set_input_size(img_size=size)
    return {"from": list(before), "to": list(size), "how": "position embeddings resampled (bicubic) by timm's set_input_size"}


def _is_image_text(model_name: str) -> bool:
    """A CLIP or SigLIP tag trained on image-text pairs only (not fine-tuned on classes)."""
    arch, _, tag = model_name.partition(".")
    return ("clip" in arch or "siglip" in arch or "clip" in tag) and "ft" not in tag.split("_")


def data_config(model_name: str) -> dict[str, Any]:
    """The tag's data config, as timm resolves it for evaluation."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    resolved = timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict())
    return {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()}


def preprocessing(model_name: str) -> Preprocessing:
    """The data config as tdvideo's resize and center crop (timm's eval transform: resize
    to ``floor(size / crop_pct)``, then crop ``size``; ``squash`` resizes both sides)."""
    config = data_config(model_name)
    _, h, w = config["input_size"]
    crop_pct = config.get("crop_pct") or 1.0
    scaled = (math.floor(h / crop_pct), math.floor(w / crop_pct))
    if config.get("crop_mode") == "squash" or scaled[0] != scaled[1]:
        size: int | tuple[int, int] = scaled
    else:
        size = scaled[0]
    return Preprocessing(
        size=size,
        crop=h if h == w else (h, w),
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        interpolation=_INTERPOLATION.get(config.get("interpolation", "bilinear"), "bilinear"),
    )


def _build(model_name: str, weights: str | None) -> nn.Module:
    # Randomly initialised, shaped by the tag's config (CLIP's 512-wide projection head);
    # weights are loaded from their file afterwards, as for every family.
    return timm.create_model(model_name, pretrained=False)


class _Features(nn.Module):
    """``forward_features``: the token sequence or the last feature map."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)


def _adapt(joint: bool, model: nn.Module, pool: Pool) -> nn.Module:
    if pool == "none":
        return _Features(model)
    if not joint:
        if not hasattr(model, "reset_classifier"):
            raise ModelError(f"timm {type(model).__name__} is an encoder with no pooled output: use pool 'none' (its tokens)")
        model.reset_classifier(0)  # pre-logits: pooled, normalized, before the classifier
    return model


def named_weights(model_name: str, weights: str) -> tuple[str, Path]:
    """``DEFAULT`` (or the tag itself) to the weights file, downloaded into the Hugging Face
    cache by timm's hub helpers when missing."""
    if weights not in ("DEFAULT", model_name, model_name.partition(".")[2]):
        raise WeightsError(
            f"timm model {model_name} has one set of named weights, DEFAULT (its tag); "
            f"got {weights!r}: pass none or a .safetensors/.pth PATH"
        )
    from timm.models._builder import _resolve_pretrained_source
    from timm.models._hub import download_cached_file, download_from_hf

    cfg = timm.models.get_pretrained_cfg(model_name).to_dict()
    source, location = _resolve_pretrained_source(cfg)
    try:
        if source == "hf-hub":
            repo, filename = location if isinstance(location, tuple) else (location, None)
            path = _download_from_hub(download_from_hf, repo, filename)
        elif source == "url":
            path = download_cached_file(location, check_hash=True, progress=False)
        else:
            raise WeightsError(f"timm model {model_name}: weights from {source or 'nowhere'} are not supported; pass {option('weights', 'PATH')}")
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, offline mode, missing entries: all mean "not available"
        reason = first_line(exc).split(". ")[0]
        raise WeightsError(
            f"timm weights {model_name} are not in the Hugging Face cache ({_hf_cache()}) and could not be "
            f"downloaded ({reason}); fetch them once with a connection, "
            f"or pass {option('weights', 'PATH')} to a .safetensors or .pth file"
        ) from None  # the reason is in the message: the network's tracebacks would bury it
    return model_name, Path(path)


def _download_from_hub(download: Any, repo: str, filename: str | None) -> str:
    """The file from the Hugging Face cache when it is there (no network), else downloaded:
    ``filename``, or timm's usual names, safetensors first. ``OSError`` at once when the
    Hub cannot be reached."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import RemoteEntryNotFoundError

    names = [filename] if filename is not None else ["model.safetensors", "pytorch_model.bin"]
    for name in names:
        cached = try_to_load_from_cache(repo, name)
        if isinstance(cached, str):
            return cached
    from ._hub import hub_unreachable

    unreachable = hub_unreachable()
    if unreachable is not None:
        raise OSError(unreachable)
    for name in names[:-1]:
        try:
            return download(repo, name)
        except RemoteEntryNotFoundError:  # the repository has no such file: try the next name
            continue
    return download(repo, names[-1])


def _hf_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _take_layer(model: nn.Module, node: str) -> nn.Module:
    return take_node(model, node, create=timm.models.create_feature_extractor, names_of=_layer_names)


def _layer_names(model: nn.Module) -> list[str]:
    return timm.models.get_graph_node_names(model.eval())[1]
