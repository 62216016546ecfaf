"""Every torchvision classification model as a per-frame feature extractor, and every
video model as a per-window one.

Imported only when a torchvision model is used: torchvision takes about as long to import
as torch itself, and the built-in models need neither.

The classifier is removed so a frame maps to its penultimate embedding (ResNet-50:
2048, ViT-B/16: the class token, 768; ConvNeXt, EfficientNet, MobileNet, RegNet: the
pooled features). ``pool="none"`` returns the last spatial feature map where the
architecture has one. A video model (R3D, MC3, R(2+1)D, S3D, MViT, Swin3D) takes a window
``(B, C, T, H, W)`` and gives its penultimate embedding, one vector per window.
Preprocessing comes from the weights' own transforms, as in torchvision's weights API (a
video model's frames per window from its weights' documentation), and named weights are
cached under TORCH_HOME. ``--layer`` cuts any model at a node of its FX graph, with
torchvision's feature-extraction utilities.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import WeightsEnum
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from .._types import Interpolation, Pool
from ..errors import ModelError, WeightsError, first_line, option
from ._modules import take_node
from ._preprocessing import Preprocessing

_INTERPOLATION: dict[str, Interpolation] = {
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "nearest": "nearest",
    "nearest-exact": "nearest",
}


def classification_models() -> list[str]:
    """Names of torchvision's image classification models."""
    return torchvision.models.list_models(module=torchvision.models)


def video_models() -> list[str]:
    """Names of torchvision's video classification models."""
    return torchvision.models.list_models(module=torchvision.models.video)


def clip_len(name: str) -> int | None:
    """Frames per window the default weights of video model ``name`` were evaluated with,
    as their documentation states (``clip_len=16``), else their minimum temporal size."""
    meta = resolve_weights(name, "DEFAULT").meta
    found = re.search(r"clip_len=(\d+)", meta.get("_docs", ""))
    return int(found.group(1)) if found else meta.get("min_temporal_size")


def build(name: str, weights: WeightsEnum) -> nn.Module:
    """The full classifier, randomly initialised, shaped for ``weights``.

    This is the module checkpoints are saved from. Some weights change the architecture
    (ViT SWAG weights are for larger images), so the build follows the weights' meta.
    """
    kwargs: dict[str, object] = {"init_weights": True} if name in ("googlenet", "inception_v3") else {}
    if name.startswith("vit_"):
        kwargs["image_size"] = weights.meta["min_size"][0]
    return torchvision.models.get_model(name, weights=None, **kwargs)


class _Permute(nn.Module):
    """NHWC to NCHW (Swin's feature maps are channels-last tensors)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 3, 1, 2)


def spatial_trunk(name: str, model: nn.Module) -> nn.Module | None:
    """The part of ``model`` that ends in its last spatial feature map, or None (ViT)."""
    if name.startswith(("vit_",)):
        return None
    if name.startswith("swin"):
        return nn.Sequential(model.features, model.norm, _Permute())
    if name.startswith("regnet"):
        return nn.Sequential(model.stem, model.trunk_output)
    if name.startswith("mnasnet"):
        return model.layers
    if name.startswith("maxvit"):
        return nn.Sequential(model.stem, *model.blocks)
    if name.startswith("shufflenet"):
        return nn.Sequential(model.conv1, model.maxpool, model.stage2, model.stage3, model.stage4, model.conv5)
    if name.startswith("densenet"):
        return nn.Sequential(model.features, nn.ReLU())
    if hasattr(model, "layer4"):  # ResNet family, GoogLeNet-free
        return nn.Sequential(*[m for n, m in model.named_children() if n not in ("avgpool", "fc")])
    if name.startswith(("googlenet", "inception")):
        keep = [m for n, m in model.named_children() if n not in ("avgpool", "dropout", "fc", "aux1", "aux2", "AuxLogits")]
        return nn.Sequential(*keep)
    if hasattr(model, "features"):
        return model.features
    return None


def strip_head(name: str, model: nn.Module) -> nn.Module:
    """``model`` with its classifier removed, in place: frames map to the penultimate embedding."""
    if name.startswith("mobilenet_v3"):
        model.classifier = nn.Identity()  # pooled features (576 / 960), before the head's MLP
    elif name == "s3d":
        model.classifier = nn.Identity()  # then averaged over time and space: 1024
    elif isinstance(getattr(model, "head", None), nn.Sequential) and isinstance(model.head[-1], nn.Linear):
        model.head[-1] = nn.Identity()  # MViT: the class token, 768
    elif name.startswith("squeezenet"):
        model.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    elif isinstance(getattr(model, "fc", None), nn.Linear):
        model.fc = nn.Identity()
    elif hasattr(model, "heads"):  # ViT: the class token
        model.heads = nn.Identity()
    elif isinstance(getattr(model, "head", None), nn.Linear):  # Swin, Swin3D
        model.head = nn.Identity()
    elif isinstance(getattr(model, "classifier", None), nn.Linear):  # DenseNet
        model.classifier = nn.Identity()
    elif isinstance(getattr(model, "classifier", None), nn.Sequential) and isinstance(model.classifier[-1], nn.Linear):
        model.classifier[-1] = nn.Identity()  # ConvNeXt, EfficientNet, MobileNetV2, MNASNet, VGG, AlexNet, MaxViT
    else:
        raise ModelError(f"do not know how to remove the classifier of {name!r}")
    return model


def adapt(name: str, model: nn.Module, pool: Pool) -> nn.Module:
    if pool == "avg":
        return strip_head(name, model)
    trunk = spatial_trunk(name, model)
    if trunk is None:
        raise ModelError(f"model {name!r} has no spatial feature map; pool must be 'avg'")
    return trunk


def take_layer(model: nn.Module, node: str) -> nn.Module:
    """``model`` cut at ``node`` of its FX graph, with torchvision's feature extraction."""
    return take_node(model, node, create=create_feature_extractor, names_of=layer_names)


def layer_names(model: nn.Module) -> list[str]:
    """The nodes of ``model``'s FX graph in eval mode, in execution order."""
    return get_graph_node_names(model.eval())[1]


# -- weights ---------------------------------------------------------------------------


def resolve_weights(name: str, weights: str) -> WeightsEnum:
    """``DEFAULT`` or an enum member name (``IMAGENET1K_V2``) to the torchvision weights."""
    enum = torchvision.models.get_model_weights(name)
    try:
        return enum[weights]
    except KeyError:
        # __members__ holds the DEFAULT alias too: list it once, first.
        choices = ", ".join(["DEFAULT", *(member for member in enum.__members__ if member != "DEFAULT")])
        raise WeightsError(
            f"unknown weights {weights!r} for {name}; choose one of {choices}, none, "
            f"or a checkpoint path (./{weights} for a file of that name here)"
        ) from None


def preprocessing(name: str, weights: str | None) -> Preprocessing:
    """Resize, crop, mean/std and interpolation from the weights' own eval transforms
    (``weights=None``: the default weights')."""
    t = resolve_weights(name, weights or "DEFAULT").transforms()
    # One number scales the short side; two resize to exactly H x W (R3D: 128 x 171).
    resize = t.resize_size
    crop = t.crop_size
    return Preprocessing(
        size=int(resize[0]) if len(resize) == 1 else (int(resize[0]), int(resize[1])),
        crop=int(crop[0]) if len(crop) == 1 or crop[0] == crop[1] else (int(crop[0]), int(crop[1])),
        mean=tuple(float(v) for v in t.mean),
        std=tuple(float(v) for v in t.std),
        interpolation=_INTERPOLATION.get(t.interpolation.value, "bilinear"),
    )


def build_named(name: str, weights: str | None) -> nn.Module:
    """:func:`build` for weights given by name (``None``: the default ones)."""
    return build(name, resolve_weights(name, weights or "DEFAULT"))


def named_weights(name: str, weights: str) -> tuple[str, Path]:
    """The canonical name of ``weights`` (``DEFAULT`` resolved) and its file, fetched if needed."""
    resolved = resolve_weights(name, weights)
    return resolved.name, fetch_weights(name, resolved)


def cached_weights_file(weights: WeightsEnum) -> Path:
    """Where torch.hub keeps (or would keep) this weights file: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def fetch_weights(name: str, weights: WeightsEnum) -> Path:
    """The cached weights file, downloaded through torch.hub if missing.

    Raises a one-line :class:`WeightsError` saying which file is missing, where to put
    it, and that a local checkpoint path works too, when it cannot be downloaded.
    """
    path = cached_weights_file(weights)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    match = re.search(r"-([a-f0-9]{6,})\.", path.name)  # torch.hub's hash-prefix convention
    try:
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=match.group(1) if match else None, progress=False)
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, OSError, hash mismatch: all mean "not available"
        reason = first_line(exc)
        raise WeightsError(
            f"{name} weights {weights.name} are not cached and could not be downloaded ({reason}): "
            f"put {path.name} (from {weights.url}) into {path.parent}/ (set TORCH_HOME to move it), "
            f"or pass {option('weights', 'PATH')} to a local checkpoint"
        ) from None  # the reason is in the message: the network's tracebacks would bury it
    return path
