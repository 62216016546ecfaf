"""Hugging Face ``transformers`` models (``hf:ORG/NAME``) as feature extractors.

Imported only for an ``hf:`` model, and only with the ``tdvideo[transformers]`` extra.

- **Image models**, one vector per frame: CLIP and SigLIP give the joint image-text
  embedding (``get_image_features``), so features can be matched against text; DINOv2, ViT
  and other image backbones their pooled output (``pooler_output``: DINOv2's and ViT's
  normalized class token). ``--pool none`` gives the last hidden state (the tokens).
- **Video models**, one vector per window of ``clip_len`` frames (the model's
  ``num_frames``): VideoMAE and V-JEPA 2 the mean of their last tokens, TimeSformer and ViViT
  their class token, X-CLIP the video embedding in its joint space
  (``get_video_features``). Which one is recorded as ``embedding``.
- **Preprocessing** comes from the model's own processor config
  (``preprocessor_config.json`` or ``video_preprocessor_config.json``): resize (shortest
  edge, or height and width), center crop, mean, std and resampling, applied to uint8
  frames as tdvideo applies every model's; the config is recorded as ``hf_processor``.
  Lanczos resampling, which swscale's set here lacks, becomes bicubic (recorded).
- **Weights**: ``DEFAULT`` is the repository's, from the Hugging Face cache (``HF_HOME``)
  or downloaded once into it; ``--weights FOLDER`` a saved model (``save_pretrained``);
  ``none`` the config's random initialisation. Offline and not cached: one line, at once.
- A ViT at another patch-aligned size than its config's (``--size 256 --crop 224``) runs
  with ``interpolate_pos_encoding``, as transformers does it, recorded as ``input_resized``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from .._types import Interpolation, Pool
from ..errors import ModelError, WeightsError, first_line, option
from ._hub import hub_unreachable
from ._preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from ._registry import HF_PREFIX, ModelEntry

__all__ = ["SUPPORTED", "TextTower", "describe", "entry", "hf_names", "text_tower"]

Embedding = Literal["image-text", "pooled", "mean-tokens", "class-token", "video-text"]

# model_type -> (what one output is, how it is taken). Image models not named here give
# their pooled output when they have one.
_IMAGE: dict[str, Embedding] = {"clip": "image-text", "siglip": "image-text", "siglip2": "image-text", "dinov2": "pooled", "vit": "pooled"}
_VIDEO: dict[str, Embedding] = {
    "videomae": "mean-tokens", "vjepa2": "mean-tokens", "timesformer": "class-token", "vivit": "class-token", "xclip": "video-text",
}
SUPPORTED = {**_IMAGE, **_VIDEO}
_EXAMPLES = {
    "clip": "openai/clip-vit-base-patch32", "siglip": "google/siglip-base-patch16-224", "siglip2": "google/siglip2-base-patch16-224",
    "dinov2": "facebook/dinov2-small", "vit": "google/vit-base-patch16-224-in21k", "videomae": "MCG-NJU/videomae-base",
    "vjepa2": "facebook/vjepa2-vitl-fpc64-256", "timesformer": "facebook/timesformer-base-finetuned-k400",
    "vivit": "google/vivit-b-16x2-kinetics400", "xclip": "microsoft/xclip-base-patch32",
}
_CONFIGS = ["config.json", "preprocessor_config.json", "video_preprocessor_config.json"]
# What the text tower's tokenizer needs (for search), fetched with the weights.
_TOKENIZER = ["tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json", "*.model"]
# PIL's resampling numbers, as processor configs give them.
_RESAMPLE: dict[int, Interpolation] = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "area", 5: "bicubic"}
_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def hf_names(pattern: str) -> list[str]:
    """How to name an ``hf:`` model, per supported architecture (an example checkpoint each)."""
    import fnmatch

    return sorted(HF_PREFIX + repo for kind, repo in _EXAMPLES.items() if fnmatch.fnmatch(HF_PREFIX + repo, pattern) or fnmatch.fnmatch(kind, pattern))


def describe(name: str) -> dict[str, Any] | None:
    """What ``tdvideo models`` shows of an example checkpoint, from the architecture alone
    (no config fetched), or None for another name."""
    kinds = {HF_PREFIX + repo: kind for kind, repo in _EXAMPLES.items()}
    kind = kinds.get(name)
    if kind is None:
        return None
    video = kind in _VIDEO
    return {
        "name": name, "feature_shape": None, "needs_weights": True, "spatial": not video, "input_size": None,
        "description": f"transformers {kind}, {_describe(SUPPORTED[kind])}; any {kind} checkpoint works",
        "kind": "window" if video else "frame", "clip_len": None,
    }


def entry(name: str, weights: str | None = None) -> ModelEntry:
    """The entry of ``hf:ORG/NAME``: its config from ``weights`` when that is a saved model's
    folder, else from the Hugging Face cache or the Hub (config files only)."""
    repo = name[len(HF_PREFIX) :]
    if not _REPO.match(repo):
        raise ModelError(f"{name!r} is not a Hugging Face model name: use hf:ORG/NAME (`tdvideo models 'hf:*'` lists examples)")
    folder = Path(weights) if weights is not None and Path(weights).is_dir() else None
    source = folder or _snapshot(repo, configs_only=True)
    config = _read_json(source / "config.json", name)
    model_type = str(config.get("model_type", ""))
    if model_type not in SUPPORTED:
        known = ", ".join(sorted(SUPPORTED))
        raise ModelError(f"{name}: model type {model_type or '(none)'!r} is not one tdvideo runs; it runs {known}")
    processor = _processor_config(source)
    video = model_type in _VIDEO
    embedding = SUPPORTED[model_type]
    clip_len = _clip_len(config) if video else None
    return ModelEntry(
        name=name,
        build=partial(_build, repo, config, folder),
        adapt=partial(_adapt, model_type, embedding, video),
        preprocessing=lambda _weights: preprocessing(processor, config),
        needs_weights=True,
        description=f"transformers {model_type}, {_describe(embedding)}",
        spatial=not video,
        named_weights=partial(named_weights, repo),
        kind="window" if video else "frame",
        clip_len=clip_len,
        details=lambda _weights: {
            "hf_model": repo, "hf_model_type": model_type, "hf_processor": processor, "embedding": embedding,
            "hf_revision": source.name if folder is None else None,
        },
        resize_input=None if video else _resize_input,
        input_sizes=_input_sizes(config, processor, video),
        weights_folder=True,
    )


def _describe(embedding: Embedding) -> str:
    return {
        "image-text": "image-text embedding (get_image_features)",
        "pooled": "pooled output",
        "mean-tokens": "one vector per window (mean of its tokens)",
        "class-token": "one vector per window (its class token)",
        "video-text": "one vector per window (video-text embedding, get_video_features)",
    }[embedding]


def _read_json(path: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{name}: no {path.name} in {path.parent}") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{name}: {path} cannot be read ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{name}: {path} is not a JSON object")
    return data


def _processor_config(source: Path) -> dict[str, Any]:
    for filename in ("preprocessor_config.json", "video_preprocessor_config.json"):
        path = source / filename
        if path.is_file():
            return _read_json(path, str(source))
    return {}


def _clip_len(config: Mapping[str, Any]) -> int:
    vision = config.get("vision_config") or {}
    for key in ("num_frames", "frames_per_clip"):
        for where in (config, vision):
            value = where.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return 16


def _vision(config: Mapping[str, Any]) -> Mapping[str, Any]:
    return config.get("vision_config") or config


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def preprocessing(processor: Mapping[str, Any], config: Mapping[str, Any]) -> Preprocessing:
    """The processor config as tdvideo's resize, center crop and normalization."""
    size_cfg = processor.get("size")
    size: int | tuple[int, int] | None
    if isinstance(size_cfg, dict) and "shortest_edge" in size_cfg:
        size = int(size_cfg["shortest_edge"])
    elif isinstance(size_cfg, dict) and "height" in size_cfg:
        size = (int(size_cfg["height"]), int(size_cfg["width"]))
    elif isinstance(size_cfg, int):
        size = size_cfg
    else:
        side = _pair(_vision(config).get("image_size")) or (224, 224)
        size = side
    crop = None
    if processor.get("do_center_crop", False):
        crop_cfg = processor.get("crop_size")
        crop = (int(crop_cfg["height"]), int(crop_cfg["width"])) if isinstance(crop_cfg, dict) else _pair(crop_cfg)
        if crop is not None and crop[0] == crop[1]:
            crop = crop[0]  # type: ignore[assignment]
    if processor.get("do_normalize", True):
        mean = tuple(processor.get("image_mean") or IMAGENET_MEAN)
        std = tuple(processor.get("image_std") or IMAGENET_STD)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    resample = processor.get("resample", 2)
    return Preprocessing(
        size=size, crop=crop, mean=mean, std=std,  # type: ignore[arg-type]
        interpolation=_RESAMPLE.get(resample if isinstance(resample, int) else 2, "bilinear"),
    )


def _input_sizes(config: Mapping[str, Any], processor: Mapping[str, Any], video: bool) -> str | None:
    vision = _vision(config)
    side, patch = _pair(vision.get("image_size")), vision.get("patch_size")
    if side is None or not isinstance(patch, int):
        return None
    text = f"{side[0]}x{side[1]} (its config)"
    if not video:
        text += f", or any multiple of {patch} with --size/--crop (position embeddings interpolated)"
    if processor.get("resample") in (1, 4, 5):
        text += f"; its processor's {_RESAMPLE_NAMES[processor['resample']]} resampling runs as bicubic here"
    return text


# -- weights ------------------------------------------------------------------------------------


def _snapshot(repo: str, *, configs_only: bool) -> Path:
    """The repository's folder in the Hugging Face cache, downloaded there when missing
    (only its config files when ``configs_only``)."""
    from huggingface_hub import snapshot_download

    patterns = _CONFIGS if configs_only else [*_CONFIGS, *_TOKENIZER, "*.safetensors", "*.safetensors.index.json"]
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001, S110 - not (all) in the cache: fetched below
        pass
    what = "config" if configs_only else "weights"
    unreachable = hub_unreachable()
    if unreachable is not None:
        raise WeightsError(
            f"hf:{repo}: its {what} are not in the Hugging Face cache ({_hf_cache()}) and the Hub cannot be reached "
            f"({unreachable}); fetch them once with a connection, or pass {option('weights', 'FOLDER')} to a saved model"
        )
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001 - a missing repository, a gated one, the network: all mean "not available"
        raise WeightsError(f"hf:{repo}: its {what} could not be downloaded ({first_line(exc).split('. ')[0]})") from None


def _hf_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def named_weights(repo: str, weights: str) -> tuple[str, Path]:
    """``DEFAULT`` (the repository's weights, cached or downloaded once) or a saved model's folder."""
    if Path(weights).is_dir():
        folder = Path(weights)
        if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
            raise WeightsError(f"{folder}: no weights in it (a folder that save_pretrained wrote has model.safetensors)")
        return str(folder), folder
    if weights != "DEFAULT":
        raise WeightsError(f"hf:{repo} takes {option('weights', 'DEFAULT')}, none, or a saved model's FOLDER; got {weights!r}")
    return repo, _snapshot(repo, configs_only=False)


def _build(repo: str, config: Mapping[str, Any], folder: Path | None, weights: str | None) -> nn.Module:
    """The model with its weights (``weights``: a repository or folder name, loaded by
    transformers itself, which knows its checkpoints' prefixes), or random ones."""
    import transformers

    _quiet()
    if weights is None:
        model_config = transformers.AutoConfig.for_model(**config)
        return transformers.AutoModel.from_config(model_config)
    source = Path(weights) if Path(weights).is_dir() else _snapshot(repo, configs_only=False)
    try:
        return transformers.AutoModel.from_pretrained(str(source))
    except Exception as exc:  # noqa: BLE001 - whatever transformers raises about a checkpoint: one line naming it
        raise WeightsError(f"{source}: cannot be loaded as hf:{repo} ({first_line(exc)})") from None


def _quiet() -> None:
    """No per-tensor loading bar from transformers: tdvideo shows its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


# -- as a feature extractor ---------------------------------------------------------------------


def _output(value: Any) -> Tensor:
    """A tensor, or a model output's pooled tensor (transformers 5 returns outputs from
    ``get_*_features`` where 4 returned the tensor)."""
    if isinstance(value, Tensor):
        return value
    pooled = getattr(value, "pooler_output", None)
    if pooled is None:
        raise ModelError(f"{type(value).__name__} has no pooled output")
    return pooled


class _ImageFeatures(nn.Module):
    """Frames ``(N, 3, H, W)`` to one vector each (or their tokens with ``tokens``)."""

    def __init__(self, model: nn.Module, embedding: Embedding, *, tokens: bool) -> None:
        super().__init__()
        self.model, self.embedding, self.tokens = model, embedding, tokens
        self.interpolate = False  # set when the frames are another size than the config's

    def forward(self, x: Tensor) -> Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self.interpolate else {}
        if self.embedding == "image-text" and not self.tokens:
            return _output(self.model.get_image_features(pixel_values=x, **kwargs))
        tower = getattr(self.model, "vision_model", self.model)
        out = tower(pixel_values=x, **kwargs)
        if self.tokens:
            return out.last_hidden_state
        return out.pooler_output if out.pooler_output is not None else out.last_hidden_state[:, 0]


class _VideoFeatures(nn.Module):
    """Windows ``(N, C, T, H, W)`` (as tdvideo gives video models) to one vector each."""

    def __init__(self, model: nn.Module, model_type: str, embedding: Embedding) -> None:
        super().__init__()
        self.model, self.model_type, self.embedding = model, model_type, embedding

    def forward(self, x: Tensor) -> Tensor:
        frames = x.transpose(1, 2)  # (N, T, C, H, W): transformers' video layout
        if self.embedding == "video-text":
            return _output(self.model.get_video_features(pixel_values=frames))
        if self.model_type == "vjepa2":
            out = self.model(pixel_values_videos=frames, skip_predictor=True)
        else:
            out = self.model(pixel_values=frames)
        tokens = out.last_hidden_state
        return tokens.mean(dim=1) if self.embedding == "mean-tokens" else tokens[:, 0]


def _adapt(model_type: str, embedding: Embedding, video: bool, model: nn.Module, pool: Pool) -> nn.Module:
    if video:
        return _VideoFeatures(model, model_type, embedding)
    return _ImageFeatures(model, embedding, tokens=pool == "none")


def _resize_input(module: nn.Module, size: tuple[int, int]) -> dict[str, Any]:
    """Frames of another size through ``interpolate_pos_encoding``, as transformers does it."""
    features = next((m for m in module.modules() if isinstance(m, _ImageFeatures)), None)
    if features is None:
        raise ModelError("its input size is fixed")
    vision = features.model.config
    vision = getattr(vision, "vision_config", vision)
    patch = int(getattr(vision, "patch_size", 1))
    if size[0] % patch or size[1] % patch:
        raise ModelError(f"{size[0]}x{size[1]} is not a multiple of its patch size {patch}x{patch}")
    features.interpolate = True
    side = _pair(getattr(vision, "image_size", None))
    return {"from": list(side) if side else None, "to": list(size), "how": "position embeddings interpolated (transformers' interpolate_pos_encoding)"}



# -- the text tower, for search -----------------------------------------------------------------


class TextTower:
    """The text tower of an image-text (or video-text) model, with its tokenizer: sentences
    to vectors in the space its image (or video) features are in."""

    def __init__(self, source: Path, model_type: str) -> None:
        import transformers

        _quiet()
        self.model_type = model_type
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
            self.model = transformers.AutoModel.from_pretrained(str(source)).eval()
        except ImportError as exc:  # SigLIP's tokenizer: SentencePiece (and protobuf)
            missing = re.search(r"requires the (\w+) library", str(exc))
            what = missing.group(1) if missing else first_line(exc)
            raise WeightsError(f"{source}: its tokenizer needs {what}: pip install 'tdvideo[transformers]'") from None
        except Exception as exc:  # noqa: BLE001 - whatever transformers raises about missing files: one line
            raise WeightsError(f"{source}: its text tower cannot be loaded ({first_line(exc)})") from None

    def encode(self, texts: list[str]) -> Tensor:
        import torch

        if self.model_type.startswith("siglip"):
            # SigLIP (1 and 2) was trained on text padded to its full length (64 tokens: its
            # position embeddings), the padding attended to, without an attention mask
            # (big_vision; huggingface/transformers#39269): so it is encoded here too.
            length = self.model.config.text_config.max_position_embeddings
            tokens = self.tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
            inputs = {"input_ids": tokens["input_ids"]}
        else:
            tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            inputs = {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            return _output(self.model.get_text_features(**inputs))


def text_tower(weights: str, model_type: str) -> TextTower:
    """The text tower for features extracted with ``weights`` (a repository's name, from the
    Hugging Face cache or downloaded once, or a saved model's folder)."""
    if model_type not in ("clip", "siglip", "siglip2", "xclip"):
        raise ModelError(f"a {model_type} model has no text tower")
    source = Path(weights) if Path(weights).is_dir() else _snapshot(weights, configs_only=False)
    return TextTower(source, model_type)
