"""A model ready to run: what it is, the preprocessing its weights expect, and their provenance.

:func:`resolve_backbone` checks a model name, pool and weights (finding, downloading or
loading them) and describes the result; the module of a weight-free built-in is only
built when first used, so that deciding what to do imports no torch (which the built-ins
would otherwise cost every run). :func:`build_backbone` does both at once.
:meth:`Backbone.from_module` wraps a module of your own.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._types import Pool
from ..errors import ModelError, WeightsError, first_line, option
from ._preprocessing import Preprocessing
from ._registry import DEFAULT_MODEL, Kind, ModelEntry, model_entry

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Backbone", "build_backbone", "resolve_backbone"]


@dataclass(kw_only=True, eq=False)
class Backbone:
    """A per-frame model with its preprocessing and provenance.

    ``module`` takes normalized float frames ``(N, 3, H, W)`` (a ``window`` model:
    windows ``(N, 3, T, H, W)`` of ``clip_len`` frames); :meth:`frame_model` and
    :meth:`window_model` prepend the uint8-to-normalized-float step. ``feature_shape`` is
    one frame's (or window's) output shape at the preprocessing size. The module is built
    when first asked for. ``details`` are recorded in the metadata as they are.
    """

    name: str
    make: Callable[[], nn.Module] | None = field(repr=False)
    preprocessing: Preprocessing
    feature_shape: tuple[int, ...]
    pool: Pool
    weights: str | None
    weights_sha256: str | None = None
    random_weights: bool = False
    light: bool = False
    kind: Kind = "frame"
    clip_len: int | None = None
    layer: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    resize_input: Callable[[nn.Module, tuple[int, int]], dict[str, Any]] | None = field(default=None, repr=False)
    _module: nn.Module | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_module(cls, module: nn.Module, *, preprocessing: Preprocessing, name: str | None = None) -> Backbone:
        """Your own ``module``, mapping normalized ``(N, 3, H, W)`` frames to features.

        Named ``name`` (default: its class name) in the metadata, which also records its
        class; ``preprocessing`` says how frames are sized and normalized for it.
        """
        from torch import nn

        from ._modules import feature_shape

        if not isinstance(module, nn.Module):
            raise ModelError(f"model must be a name or a torch.nn.Module, got {type(module).__name__}")
        if not isinstance(preprocessing, Preprocessing):
            raise ModelError("a module needs preprocessing=tdvideo.Preprocessing(size=..., crop=..., mean=..., std=...)")
        kind = type(module)
        return cls(
            name=name or kind.__name__,
            make=lambda: module,
            preprocessing=preprocessing,
            feature_shape=feature_shape(module.eval(), preprocessing),
            pool="avg",
            weights=None,
            details={"module_class": f"{kind.__module__}.{kind.__qualname__}"},
        )

    @property
    def module(self) -> nn.Module:
        if self._module is None:
            assert self.make is not None
            self._module, self.make = self.make(), None
        return self._module

    def fit_input(self, height: int, width: int) -> None:
        """Make the model take frames of ``height`` x ``width``, or raise :class:`ModelError`
        saying why it cannot. A model that takes them as it is is left alone (a meta-device
        pass, no compute); one whose input size is fixed by its position embeddings (a timm
        ViT, DINOv2) is resized as its family resizes it, their position embeddings
        resampled once, and ``details["input_resized"]`` records it. ``feature_shape``
        becomes the shape at this size. The light built-ins take any size as they are."""
        if self.light:
            return
        from ._modules import feature_shape

        window = self.clip_len if self.kind == "window" else None
        at = Preprocessing(size=None, crop=(height, width))
        try:
            self.feature_shape = feature_shape(self.module, at, clip_len=window)
            return
        except Exception as exc:  # noqa: BLE001 - whatever the model raises about its input: tried below, or said
            refusal = exc
        if self.resize_input is not None:
            try:
                record = self.resize_input(self.module, (height, width))
                self.feature_shape = feature_shape(self.module, at, clip_len=window)
            except Exception as exc:  # noqa: BLE001 - as above: the model's own reason is the message
                refusal = exc
            else:
                self.details = {**self.details, "input_resized": record}
                return
        raise ModelError(f"model {self.name} does not take {height}x{width} frames: {first_line(refusal)}") from refusal

    def frame_model(self) -> nn.Module:
        """uint8 ``(N, 3, H, W)`` frames in, features out."""
        from torch import nn

        from ._modules import Normalize

        p = self.preprocessing
        return nn.Sequential(Normalize(p.mean, p.std), self.module) if p.normalize else self.module

    def window_model(self) -> nn.Module:
        """uint8 windows ``(N, T, 3, H, W)`` in, one output per window."""
        from ._modules import WindowModel

        return WindowModel(self.module, self.preprocessing)

    def metadata(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "random_weights": self.random_weights,
            "pool": self.pool,
            "layer": self.layer,
            "features_per": self.kind,
            "feature_shape": list(self.feature_shape),
            "preprocessing": self.preprocessing.to_dict(),
            **self.details,
        }

    def __repr__(self) -> str:
        return f"Backbone({self.name!r}, pool={self.pool!r}, weights={self.weights!r}, feature_shape={self.feature_shape})"


def resolve_backbone(
    name: str = DEFAULT_MODEL,
    *,
    weights: str | Path | None = None,
    pool: Pool | None = None,
    layer: str | None = None,
) -> Backbone:
    """Check and describe a registered model: everything :func:`build_backbone` does,
    but a weight-free built-in's module is built later, when first used. Same errors."""
    entry = model_entry(name, weights=None if weights is None else str(weights))
    if pool is not None and pool not in ("avg", "none"):
        raise ModelError(f"pool must be 'avg' or 'none', got {pool!r}")
    if layer is not None:
        pool = pool or "none"  # a layer's output as it is, unless asked to average it
    else:
        pool = pool or entry.default_pool
        if pool == "none" and not entry.spatial:
            raise ModelError(f"model {name!r} has no spatial feature map; pool must be 'avg'")
    if weights is None:
        weights = "DEFAULT" if entry.named_weights is not None else "none"
    weights = str(weights)
    named: str | None = None
    if weights == "none":
        path = None
    elif entry.named_weights is not None and (not _is_path(weights) or (entry.weights_folder and Path(weights).is_dir())):
        named, path = entry.named_weights(weights)
    elif _is_path(weights) or Path(weights).exists():
        path = Path(weights)
    else:
        raise WeightsError(f"model {name!r} has no named weights; {option('weights')} takes none or a checkpoint path, got {weights!r}")
    preprocessing = entry.preprocessing(named)
    random_weights = entry.needs_weights and path is None
    if random_weights:
        warnings.warn(f"model {name} runs with RANDOM weights ({option('weights', 'none')}): its features carry no learned meaning")
    describe: dict[str, Any] = {
        "name": name,
        "preprocessing": preprocessing,
        "pool": pool,
        "weights": named or (str(path) if path is not None else None),
        "random_weights": random_weights,
        "light": entry.light and layer is None,
        "kind": entry.kind,
        "clip_len": entry.clip_len,
        "layer": layer,
        "details": entry.details(named) if entry.details is not None else {},
        "resize_input": entry.resize_input,
    }
    if path is None and layer is None and pool in entry.feature_shapes:
        return Backbone(make=lambda: _build(entry, named, None, pool)[0], feature_shape=entry.feature_shapes[pool], **describe)
    # Weights to load or a layer to find (their errors are the caller's to see now), or a
    # shape to compute: build now.
    from ._modules import PoolMap, build_module, feature_shape

    module, sha256 = build_module(entry, named, path, pool, layer)
    shape = feature_shape(module, preprocessing, clip_len=entry.clip_len if entry.kind == "window" else None)
    if layer is not None and pool == "avg":
        if len(shape) < 3:
            raise ModelError(f"layer {layer!r} of {name} gives {shape}, not a (C, H, W) map to average; use pool 'none'")
        module, shape = PoolMap(module).eval(), shape[:1]
    return Backbone(make=lambda: module, feature_shape=shape, weights_sha256=sha256, **describe)


def _build(entry: ModelEntry, named: str | None, path: Path | None, pool: Pool) -> tuple[nn.Module, str | None]:
    from ._modules import build_module  # torch is imported here, when a module is built

    return build_module(entry, named, path, pool)


def build_backbone(
    name: str = DEFAULT_MODEL,
    *,
    weights: str | Path | None = None,
    pool: Pool | None = None,
) -> Backbone:
    """Build a registered model, ready for :class:`TimeDistributed`.

    Args:
        name: a name from :func:`list_models`.
        weights: ``None`` for the model's default (``DEFAULT`` pretrained weights for
            models that need weights, nothing for the built-ins); ``"DEFAULT"`` or a
            torchvision weights name such as ``"IMAGENET1K_V2"`` (cached under
            TORCH_HOME, downloaded if missing); ``"none"`` for random initialisation;
            or a path to a state-dict checkpoint, loaded safely (``weights_only=True``).
        pool: ``"avg"`` for one vector per frame, ``"none"`` for the spatial map;
            ``None`` takes the model's default.

    Raises:
        ModelError: unknown model or pool. WeightsError: weights that cannot be found,
        downloaded, loaded safely or matched to the model.
    """
    backbone = resolve_backbone(name, weights=weights, pool=pool)
    backbone.module  # noqa: B018  (built now)
    return backbone


def _is_path(weights: str) -> bool:
    """Whether ``weights`` names a file for certain: it has a folder or a suffix.

    A bare word (``DEFAULT``, ``IMAGENET1K_V2``) is a weights name for models that have
    named weights, even if a file of that name lies in the working directory: the
    meaning of ``--weights DEFAULT`` must not depend on where the command runs
    (``./DEFAULT`` names that file).
    """
    return os.sep in weights or "/" in weights or Path(weights).suffix != ""
