"""Models by name: what each is, how to build it, and what it expects.

Following torchvision's ``models/_api.py``, an entry knows how to build its module, how
to turn it into a per-frame feature extractor (``pool``), and the preprocessing that
belongs to its weights. The registry itself imports neither torch nor torchvision: an
entry's functions load their family's module when first called, and torchvision's model
names come from the catalog (see :mod:`tdvideo.models.catalog`).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._types import Pool
from ..errors import ModelError
from ._preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

__all__ = ["DEFAULT_MODEL", "ModelEntry", "list_models", "model_entry", "register_model"]

DEFAULT_MODEL = "colorhist"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: how to build it, adapt it to features, and feed it.

    ``build(weights)`` returns the module in the form its checkpoints are saved from
    (for a torchvision model, the full classifier), shaped for the named ``weights``
    (``None``: the default ones); ``adapt(module, pool)`` turns it into the per-frame
    feature extractor. ``preprocessing(weights)`` gives the input those weights expect.
    ``named_weights`` resolves names such as ``DEFAULT`` to a file (downloaded and
    cached when needed); models without it take only ``none`` or a path.
    ``feature_shapes`` gives one frame's output shape per pool where it is known without
    building the model; otherwise it is computed on the meta device.
    """

    name: str
    build: Callable[[str | None], Any]
    adapt: Callable[[Any, Pool], Any]
    preprocessing: Callable[[str | None], Preprocessing]
    needs_weights: bool
    description: str
    spatial: bool = False
    default_pool: Pool = "avg"
    named_weights: Callable[[str], tuple[str, Path]] | None = None
    light: bool = False  # costs far less than decoding a frame
    feature_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _late(module: str, function: str, *bound: Any) -> Callable[..., Any]:
    """``.module.function(*bound, ...)``, imported when first called."""

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(f".{module}", __package__), function)(*bound, *args)

    return call


_REGISTRY: dict[str, ModelEntry] = {}


def _torchvision_names() -> list[str]:
    from ._catalog import torchvision_names

    return torchvision_names()


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add a model to the registry; names are unique."""
    if entry.name in _REGISTRY or entry.name in _torchvision_names():
        raise ValueError(f"model {entry.name!r} is already registered")
    return _add(entry)


def _add(entry: ModelEntry) -> ModelEntry:
    _REGISTRY[entry.name] = entry
    return entry


def _builtin(
    name: str,
    function: str,
    preprocessing: Preprocessing,
    description: str,
    shapes: dict[str, tuple[int, ...]],
    *,
    spatial: bool = False,
) -> ModelEntry:
    """A weight-free model from :mod:`tdvideo.models.builtin`. A ``spatial`` one gives a
    map, and ``pool="avg"`` wraps it in a global average pool."""

    def adapt(module: Any, pool: Pool) -> Any:
        return _late("_builtin", "pooled")(module) if spatial and pool == "avg" else module

    return ModelEntry(
        name=name,
        build=lambda _weights: _late("_builtin", function)(),
        adapt=adapt,
        preprocessing=lambda _weights: preprocessing,
        needs_weights=False,
        description=description,
        spatial=spatial,
        default_pool="none" if spatial else "avg",
        light=True,
        feature_shapes=shapes,
    )


_add(
    _builtin(
        "colorhist",
        "ColorHistogram",
        Preprocessing(size=112, normalize=False),
        "RGB colour histograms, 3 x 16 bins (default; no weights)",
        {"avg": (48,)},
    )
)
_add(
    _builtin(
        "thumbnail",
        "Thumbnail",
        Preprocessing(size=(64, 64), interpolation="area"),
        "8 x 8 RGB thumbnail, flattened (no weights)",
        {"avg": (192,)},
    )
)
_add(
    _builtin(
        "conv2d",
        "seeded_conv2d",
        Preprocessing(size=(64, 64), mean=IMAGENET_MEAN, std=IMAGENET_STD),
        "the seed example TimeDistributed(Conv2d(3, 16, 3)), seeded init; spatial maps",
        {"none": (16, 62, 62), "avg": (16,)},
        spatial=True,
    )
)


def torchvision_entry(name: str) -> ModelEntry:
    """The entry of torchvision's classifier ``name`` (not checked against torchvision's list)."""
    return ModelEntry(
        name=name,
        build=_late("_torchvision", "build_named", name),
        adapt=lambda module, pool: _late("_torchvision", "adapt", name)(module, pool),
        preprocessing=_late("_torchvision", "preprocessing", name),
        needs_weights=True,
        description=f"torchvision {name}, classifier removed",
        spatial=not name.startswith("vit_"),  # ViT's output is tokens, not a map
        named_weights=_late("_torchvision", "named_weights", name),
    )


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by an fnmatch ``pattern``."""
    names = sorted({*_REGISTRY, *_torchvision_names()})
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; :class:`ModelError` naming close matches if unknown."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _torchvision_names():
        return _REGISTRY.setdefault(name, torchvision_entry(name))
    close = difflib.get_close_matches(name, list_models(), n=5)
    hint = f"close: {', '.join(close)}" if close else "see `tdvideo models`"
    raise ModelError(f"unknown model {name!r}; {hint}")
