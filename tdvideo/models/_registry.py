"""Models by name: what each is, how to build it, and what it expects.

Following torchvision's ``models/_api.py``, an entry knows how to build its module, how
to turn it into a feature extractor (``pool``), and the preprocessing that belongs to its
weights. The families, in the order a name is looked up:

- the built-ins and models added with :func:`register_model`;
- ``timm:NAME``, any timm model (the ``tdvideo[timm]`` extra);
- ``hf:ORG/NAME``, Hugging Face transformers models (the ``tdvideo[transformers]`` extra);
- torchvision's image classifiers and video models (names from the stored catalog);
- plugins: packages that declare an entry point in the group ``tdvideo.models``.

The registry itself imports neither torch, torchvision nor timm: an entry's functions load
their family's module when first called.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from .._types import Pool
from ..errors import ModelError
from ._preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

__all__ = [
    "DEFAULT_MODEL",
    "HF_PREFIX",
    "PLUGIN_GROUP",
    "TIMM_PREFIX",
    "ModelEntry",
    "custom_model",
    "layer_names",
    "list_models",
    "model_entry",
    "register_model",
]

DEFAULT_MODEL = "colorhist"
TIMM_PREFIX = "timm:"
HF_PREFIX = "hf:"
PLUGIN_GROUP = "tdvideo.models"

Kind = Literal["frame", "window"]
"""``frame``: one output per frame (image models); ``window``: one per clip window of
``clip_len`` frames, which the model sees as ``(B, C, T, H, W)`` (video models)."""


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
    building the model; otherwise it is computed on the meta device. ``kind`` and
    ``clip_len`` (a window model's frames per window, from its weights) say what one
    output covers. ``layer(module, node)`` cuts a built module at a node of its graph, and
    ``layer_names(module)`` lists those nodes (torchvision's FX feature extraction, or
    the family's own); ``details(weights)`` adds what the metadata should record.
    ``resize_input(module, (h, w))`` makes a built module whose input size is fixed (a ViT's
    position embeddings are for one grid) take frames of another size, as its family does
    it, and returns what to record of that; ``input_sizes`` says in words which it takes.
    With ``weights_folder``, ``named_weights`` also takes a saved model's folder, and
    ``build(named)`` loads the named weights itself (a transformers model: its loader knows
    its checkpoints' layouts).
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
    kind: Kind = "frame"
    clip_len: int | None = None
    layer: Callable[[Any, str], Any] | None = None
    layer_names: Callable[[Any], list[str]] | None = None
    details: Callable[[str | None], dict[str, Any]] | None = None
    resize_input: Callable[[Any, tuple[int, int]], dict[str, Any]] | None = None
    input_sizes: str | None = None
    weights_folder: bool = False


def _late(module: str, function: str, *bound: Any) -> Callable[..., Any]:
    """``.module.function(*bound, ...)``, imported when first called."""

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(f".{module}", __package__), function)(*bound, *args)

    return call


_REGISTRY: dict[str, ModelEntry] = {}  # the built-ins and register_model's
_FOUND: dict[str, ModelEntry] = {}  # entries of the other families, made when first asked for


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add a model to the registry (see :func:`custom_model`); names are unique."""
    if entry.name in _REGISTRY or entry.name in _torchvision_names() or entry.name.startswith((TIMM_PREFIX, HF_PREFIX)):
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


def custom_model(
    name: str,
    *,
    build: Callable[[], Any],
    preprocessing: Preprocessing,
    description: str = "",
    spatial: bool = False,
) -> ModelEntry:
    """An entry for your own module: ``build()`` returns an ``nn.Module`` that maps
    normalized ``(N, 3, H, W)`` frames to features. For :func:`register_model`, or as the
    object a ``tdvideo.models`` entry point names. ``--weights PATH`` loads a state dict
    into it; ``spatial`` says its output is a map (then ``pool="avg"`` averages it)."""

    if not callable(build):
        raise TypeError(f"custom_model {name!r}: build must be a callable that returns an nn.Module, got {type(build).__name__}")
    if not isinstance(preprocessing, Preprocessing):
        raise TypeError(f"custom_model {name!r}: preprocessing must be a tdvideo.Preprocessing, got {type(preprocessing).__name__}")

    def adapt(module: Any, pool: Pool) -> Any:
        return _late("_builtin", "pooled")(module) if spatial and pool == "avg" else module

    return ModelEntry(
        name=name,
        build=lambda _weights: build(),
        adapt=adapt,
        preprocessing=lambda _weights: preprocessing,
        needs_weights=False,
        description=description or f"{name} (your module)",
        spatial=spatial,
    )


def torchvision_entry(name: str, row: dict[str, Any] | None = None) -> ModelEntry:
    """The entry of torchvision's model ``name``: an image classifier, or a video model
    when its catalog ``row`` says so (not checked against torchvision's list)."""
    window = row is not None and row.get("kind") == "window"
    return ModelEntry(
        name=name,
        build=_late("_torchvision", "build_named", name),
        adapt=lambda module, pool: _late("_torchvision", "adapt", name)(module, pool),
        preprocessing=_late("_torchvision", "preprocessing", name),
        needs_weights=True,
        description=f"torchvision {name}, {'Kinetics-400 video model, one vector per window' if window else 'classifier removed'}",
        spatial=not window and not name.startswith("vit_"),  # ViT's output is tokens, not a map
        named_weights=_late("_torchvision", "named_weights", name),
        kind="window" if window else "frame",
        clip_len=row.get("clip_len") if row is not None else None,
        layer=_late("_torchvision", "take_layer"),
        layer_names=_late("_torchvision", "layer_names"),
    )


def _require_timm(name: str) -> None:
    try:
        importlib.import_module("timm")
    except ImportError:
        raise ModelError(f"model {name!r} needs timm: pip install 'tdvideo[timm]'") from None


def _timm_entry(name: str) -> ModelEntry:
    _require_timm(name)
    return _late("_timm", "entry")(name)


def _require_transformers(name: str) -> None:
    try:
        importlib.import_module("transformers")
    except ImportError:
        raise ModelError(f"model {name!r} needs transformers: pip install 'tdvideo[transformers]'") from None


def _plugins() -> dict[str, metadata.EntryPoint]:
    """Models that installed packages declare in the ``tdvideo.models`` entry-point group."""
    return {ep.name: ep for ep in metadata.entry_points(group=PLUGIN_GROUP)}


def _plugin_entry(point: metadata.EntryPoint) -> ModelEntry:
    """The plugin's :class:`ModelEntry` (or a function returning one), under the entry point's name."""
    where = f"plugin {point.name!r} ({point.value})"
    try:
        target = point.load()
        entry = target() if callable(target) and not isinstance(target, ModelEntry) else target
    except Exception as exc:  # a broken plugin: say which, whatever it raised
        raise ModelError(f"{where} failed to load: {type(exc).__name__}: {exc}") from exc
    if not isinstance(entry, ModelEntry):
        raise ModelError(f"{where} gives {type(entry).__name__}, not a tdvideo.models.ModelEntry (see custom_model)")
    return replace(entry, name=point.name)


def _torchvision_names() -> list[str]:
    from ._catalog import torchvision_names

    return torchvision_names()


def list_models(pattern: str | None = None) -> list[str]:
    """Model names, sorted, optionally filtered by an fnmatch ``pattern``.

    timm's models are listed only for a pattern that starts with ``timm:`` (there are
    over a thousand): ``timm:*clip*``; they are its pretrained weights' names. ``hf:*``
    lists an example checkpoint of each transformers architecture tdvideo runs (any
    checkpoint of those architectures works).
    """
    if pattern is not None and pattern.startswith(HF_PREFIX):
        _require_transformers(pattern)
        return _late("_hf", "hf_names")(pattern)
    if pattern is not None and pattern.startswith(TIMM_PREFIX):
        from ._catalog import shipped_timm

        shipped = shipped_timm()  # the tags of the timm installed, without importing it
        if shipped is not None:
            return sorted(n for n in shipped if fnmatch.fnmatch(n, pattern))
        _require_timm(pattern)
        return [TIMM_PREFIX + n for n in _late("_timm", "timm_names")(pattern[len(TIMM_PREFIX) :])]
    names = sorted({*_REGISTRY, *_torchvision_names(), *_plugins()})
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_entry(name: str, *, weights: str | None = None) -> ModelEntry:
    """The registry entry for ``name``; :class:`ModelError` naming close matches if unknown.
    ``weights``: what the model will run with, for a family whose entry depends on it (an
    ``hf:`` model's config is read from a saved model's folder)."""
    found = _REGISTRY.get(name) or _FOUND.get(name)
    if found is not None:
        return found
    if name.startswith(HF_PREFIX):
        _require_transformers(name)
        return _late("_hf", "entry")(name, weights)
    if name.startswith(TIMM_PREFIX):
        return _FOUND.setdefault(name, _timm_entry(name))
    if name in _torchvision_names():
        from ._catalog import load_catalog

        return _FOUND.setdefault(name, torchvision_entry(name, load_catalog()["models"].get(name)))
    plugins = _plugins()
    if name in plugins:
        return _FOUND.setdefault(name, _plugin_entry(plugins[name]))
    close = difflib.get_close_matches(name, list_models(), n=5)
    hint = f"close: {', '.join(close)}" if close else "see `tdvideo models` (timm's: `tdvideo models 'timm:*clip*'`)"
    raise ModelError(f"unknown model {name!r}; {hint}")


def layer_names(name: str) -> list[str]:
    """The node names ``--layer`` takes for model ``name``, in execution order."""
    entry = model_entry(name)
    return _late("_modules", "layer_names")(entry)
