"""Per-frame models by name, with the preprocessing that belongs to them.

Following torchvision's weights API, preprocessing travels with the model: a
:class:`Backbone` knows its module, the shape of one frame's features, and the input
size, mean/std and interpolation it expects. The built-in models need no weights.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import _torchvision as tv
from ._system import sha256_file
from ._types import Interpolation, Pool, Size
from .errors import ModelError, WeightsError, show_path
from .timedistributed import TimeDistributed

__all__ = [
    "DEFAULT_MODEL",
    "Backbone",
    "ModelEntry",
    "Normalize",
    "Preprocessing",
    "build_backbone",
    "describe_model",
    "list_models",
    "load_state_dict_file",
    "model_entry",
]

DEFAULT_MODEL = "colorhist"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNIT_MEAN = (0.0, 0.0, 0.0)
UNIT_STD = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Preprocessing:
    """How frames must look before they reach the model.

    ``size`` is the resize target (short side, or ``(H, W)``), ``crop`` an optional
    center crop after it; ``mean``/``std`` apply to pixels scaled to [0, 1]. With
    ``normalize=False`` the model takes the uint8 frames as they are.
    """

    size: Size | None
    crop: Size | None = None
    mean: tuple[float, float, float] = UNIT_MEAN
    std: tuple[float, float, float] = UNIT_STD
    interpolation: Interpolation = "bilinear"
    normalize: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Normalize(nn.Module):
    """uint8 (or [0, 255] float) frames to normalized float: ``(x / 255 - mean) / std``.

    Runs on the device, so only uint8 crosses the host-to-device link. One multiply-add
    on a fresh float tensor; the memory format (channels_last) is preserved.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * s), persistent=False)
        self.register_buffer("shift", -m / s, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)


class ColorHistogram(nn.Module):
    """Per-channel colour histograms: ``(N, 3 * bins)``, each channel summing to 1.

    Cheap, weight-free and useful: scene changes, shot boundaries and near-duplicate
    frames show up directly in the distance between consecutive rows. Takes uint8 frames
    (bin ``v * bins // 256``) or float frames in [0, 1] (bin ``floor(x * bins)``); for a
    power-of-two ``bins`` the two agree exactly on ``x = v / 255``.
    """

    def __init__(self, bins: int = 16) -> None:
        super().__init__()
        if not 1 <= bins <= 256:
            raise ValueError(f"bins must be in [1, 256], got {bins}")
        self.bins = bins

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        # One flat histogram of N * C * bins counters: int32 indices with index_add_ are
        # many times faster than int64 scatter_add_, and the output size stays fixed.
        offsets = torch.arange(n * c, dtype=torch.int32, device=x.device).view(n, c, 1, 1) * self.bins
        if x.dtype == torch.uint8 and self.bins & (self.bins - 1) == 0:
            idx = (x >> (9 - self.bins.bit_length())) + offsets  # uint8 shift, then int32
        elif x.dtype == torch.uint8:
            idx = ((x.to(torch.int32) * self.bins) >> 8) + offsets
        else:
            idx = (x.float().clamp(0.0, 1.0) * self.bins).to(torch.int32).clamp_(max=self.bins - 1) + offsets
        if idx.is_contiguous(memory_format=torch.channels_last):
            idx = idx.permute(0, 2, 3, 1)  # a histogram ignores order: flatten in memory order
        idx = idx.reshape(-1)
        ones = torch.ones((), dtype=torch.float32, device=x.device).expand(idx.shape)
        hist = torch.zeros(n * c * self.bins, dtype=torch.float32, device=x.device).index_add_(0, idx, ones)
        return hist.view(n, c * self.bins) / (h * w)

    def extra_repr(self) -> str:
        return f"bins={self.bins}"


class Thumbnail(nn.Module):
    """An ``side`` x ``side`` average-pooled thumbnail of each frame, flattened: ``(N, 3 * side**2)``."""

    def __init__(self, side: int = 8) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(side)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x).flatten(1)


class _GlobalAvgPool(nn.Module):
    """Spatial map ``(N, C, H, W)`` to ``(N, C)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


def _seeded_conv2d() -> nn.Module:
    # The seed example, with a fixed initialisation so features are reproducible run to run.
    conv = nn.Conv2d(3, 16, kernel_size=3)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bound = 1.0 / (3 * 3 * 3) ** 0.5
        conv.weight.copy_(torch.empty_like(conv.weight).uniform_(-bound, bound, generator=gen))
        conv.bias.copy_(torch.empty_like(conv.bias).uniform_(-bound, bound, generator=gen))
    return conv


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: how to build it, adapt it to features, and feed it.

    ``build(weights)`` returns the module in the form its checkpoints are saved from
    (for a torchvision model, the full classifier), shaped for the named ``weights``
    (``None``: the default ones); ``adapt(module, pool)`` turns it into the per-frame
    feature extractor. ``preprocessing(weights)`` gives the input those weights expect.
    ``named_weights`` resolves names such as ``DEFAULT`` to a file (downloaded and
    cached when needed); models without it take only ``none`` or a path.
    """

    name: str
    build: Callable[[str | None], nn.Module]
    adapt: Callable[[nn.Module, Pool], nn.Module]
    preprocessing: Callable[[str | None], Preprocessing]
    needs_weights: bool
    description: str
    spatial: bool = False
    default_pool: Pool = "avg"
    named_weights: Callable[[str], tuple[str, Path]] | None = None
    light: bool = False  # costs far less than decoding a frame


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add a model to the registry; names are unique."""
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def _builtin(
    name: str,
    build: Callable[[], nn.Module],
    preprocessing: Preprocessing,
    description: str,
    *,
    pooled: Callable[[nn.Module], nn.Module] | None = None,
) -> ModelEntry:
    """A weight-free model. With ``pooled``, its output is a spatial map and ``pool="avg"`` wraps it."""

    def adapt(module: nn.Module, pool: Pool) -> nn.Module:
        return pooled(module) if pooled is not None and pool == "avg" else module

    return ModelEntry(
        name=name,
        build=lambda _weights: build(),
        adapt=adapt,
        preprocessing=lambda _weights: preprocessing,
        needs_weights=False,
        description=description,
        spatial=pooled is not None,
        default_pool="none" if pooled is not None else "avg",
        light=True,
    )


register_model(
    _builtin(
        "colorhist",
        ColorHistogram,
        Preprocessing(size=112, normalize=False),
        "RGB colour histograms, 3 x 16 bins (default; no weights)",
    )
)
register_model(
    _builtin(
        "thumbnail",
        Thumbnail,
        Preprocessing(size=(64, 64), interpolation="area"),
        "8 x 8 RGB thumbnail, flattened (no weights)",
    )
)
register_model(
    _builtin(
        "conv2d",
        _seeded_conv2d,
        Preprocessing(size=(64, 64), mean=IMAGENET_MEAN, std=IMAGENET_STD),
        "the seed example TimeDistributed(Conv2d(3, 16, 3)), seeded init; spatial maps",
        pooled=lambda conv: nn.Sequential(conv, _GlobalAvgPool()),
    )
)


def _torchvision_entry(name: str) -> ModelEntry:
    def preprocessing(weights: str | None) -> Preprocessing:
        return Preprocessing(**tv.preprocessing(tv.resolve_weights(name, weights or "DEFAULT")))

    def named_weights(weights: str) -> tuple[str, Path]:
        resolved = tv.resolve_weights(name, weights)
        return resolved.name, tv.fetch_weights(name, resolved)

    return ModelEntry(
        name=name,
        build=lambda weights: tv.build(name, tv.resolve_weights(name, weights or "DEFAULT")),
        adapt=lambda module, pool: tv.adapt(name, module, pool),
        preprocessing=preprocessing,
        needs_weights=True,
        description=f"torchvision {name}, classifier removed",
        spatial=tv.has_spatial_map(name),
        named_weights=named_weights,
    )


for _name in tv.classification_models():
    register_model(_torchvision_entry(_name))


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by an fnmatch ``pattern``."""
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; :class:`ModelError` listing the names if unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5)
        hint = f"close: {', '.join(close)}" if close else "see `tdvideo models`"
        raise ModelError(f"unknown model {name!r}; {hint}") from None


@dataclass
class Backbone:
    """A built per-frame model with its preprocessing and provenance.

    ``module`` takes normalized float frames ``(N, 3, H, W)``; :meth:`frame_model`
    prepends the uint8-to-normalized-float step. ``feature_shape`` is one frame's
    output shape at the preprocessing size.
    """

    name: str
    module: nn.Module
    preprocessing: Preprocessing
    feature_shape: tuple[int, ...]
    pool: Pool
    weights: str | None
    weights_sha256: str | None = None
    random_weights: bool = False
    light: bool = False

    def frame_model(self) -> nn.Module:
        """uint8 ``(N, 3, H, W)`` frames in, features out."""
        p = self.preprocessing
        return nn.Sequential(Normalize(p.mean, p.std), self.module) if p.normalize else self.module

    def metadata(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "random_weights": self.random_weights,
            "pool": self.pool,
            "feature_shape": list(self.feature_shape),
            "preprocessing": self.preprocessing.to_dict(),
        }


def feature_shape(module: nn.Module, preprocessing: Preprocessing) -> tuple[int, ...]:
    """One frame's output shape, from a meta-device pass (no real compute)."""
    size = preprocessing.crop or preprocessing.size or 224
    h, w = (size, size) if isinstance(size, int) else size
    shape = TimeDistributed(module).output_shape((1, 1, 3, h, w), dtype=torch.float32)
    if not isinstance(shape, torch.Size):
        raise ModelError(f"{type(module).__name__} returns {type(shape).__name__}, not one tensor per frame")
    return tuple(shape[2:])


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build modules with their parameters moved to the meta device as they are registered.

    Only one layer's weights exist in memory at a time and initialisers run on meta
    tensors, so describing a 600M-parameter model is cheap. (``with torch.device("meta")``
    is not enough: some constructors compute layer widths with tensors and ``.tolist()``.)
    Not thread-safe: it patches ``nn.Module.register_parameter`` for the duration.
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def describe_model(name: str, *, pool: Pool | None = None) -> dict[str, Any]:
    """Feature shape and inputs of a model without building its weights (meta device)."""
    entry = model_entry(name)
    pool = pool or entry.default_pool
    with _parameters_on_meta():
        module = entry.adapt(entry.build(None), pool).eval()
    pre = entry.preprocessing(None)
    return {
        "name": name,
        "feature_shape": list(feature_shape(module, pre)),
        "needs_weights": entry.needs_weights,
        "spatial": entry.spatial,
        "input_size": pre.crop or pre.size,
        "description": entry.description,
    }


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
    entry = model_entry(name)
    if pool is not None and pool not in ("avg", "none"):
        raise ModelError(f"pool must be 'avg' or 'none', got {pool!r}")
    pool = pool or entry.default_pool
    if pool == "none" and not entry.spatial:
        raise ModelError(f"model {name!r} has no spatial feature map; pool must be 'avg'")
    if weights is None:
        weights = "DEFAULT" if entry.named_weights is not None else "none"
    weights = str(weights)
    named: str | None = None
    if weights == "none":
        path = None
    elif entry.named_weights is not None and not _is_path(weights):
        named, path = entry.named_weights(weights)
    elif _is_path(weights) or Path(weights).exists():
        path = Path(weights)
    else:
        raise WeightsError(f"model {name!r} has no named weights; --weights takes none or a checkpoint path, got {weights!r}")
    module = entry.build(named)
    sha256 = load_state_dict_file(module, path) if path is not None else None
    module = entry.adapt(module, pool).eval()
    preprocessing = entry.preprocessing(named)
    random_weights = entry.needs_weights and path is None
    if random_weights:
        warnings.warn(f"model {name} runs with RANDOM weights (--weights none): its features carry no learned meaning")
    return Backbone(
        name=name,
        module=module,
        preprocessing=preprocessing,
        feature_shape=feature_shape(module, preprocessing),
        pool=pool,
        weights=named or (str(path) if path is not None else None),
        weights_sha256=sha256,
        random_weights=random_weights,
        light=entry.light,
    )


def _is_path(weights: str) -> bool:
    """Whether ``weights`` names a file for certain: it has a folder or a suffix.

    A bare word (``DEFAULT``, ``IMAGENET1K_V2``) is a weights name for models that have
    named weights, even if a file of that name lies in the working directory: the
    meaning of ``--weights DEFAULT`` must not depend on where the command runs
    (``./DEFAULT`` names that file).
    """
    return os.sep in weights or "/" in weights or Path(weights).suffix != ""


def _unwrap_state_dict(obj: Any, path: Path) -> Mapping[str, Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict (a mapping of names to tensors)")
    prefix = "module."
    if obj and all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


def load_state_dict_file(module: nn.Module, path: Path) -> str:
    """Load a checkpoint into ``module`` without executing code from it; return its sha256.

    Accepts a plain state dict or one wrapped under ``state_dict``/``model``, with or
    without ``module.`` prefixes (DataParallel/DDP). Uses ``torch.load(weights_only=True)``,
    so a pickle that would run code is refused before anything in it runs.
    """
    if path.is_dir():
        raise WeightsError(f"weights {show_path(path)} is a folder, not a checkpoint file")
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise WeightsError(f"weights file {show_path(path)} {what}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or others here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: refused to load (only plain tensor checkpoints are allowed): {first}") from exc
    state = _unwrap_state_dict(obj, path)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
    if mismatched:
        problems.append(f"shape mismatch: {', '.join(mismatched[:5])}{' ...' if len(mismatched) > 5 else ''}")
    if problems:
        raise WeightsError(f"{path} does not fit the model: {'; '.join(problems)}")
    module.load_state_dict(state)
    return sha256_file(path)
