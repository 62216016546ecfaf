"""The torch side of the models: building modules, loading weights safely, shapes on the meta device."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._system import sha256_file
from .._types import Pool
from ..errors import ModelError, WeightsError, show_path
from ..timedistributed import TimeDistributed
from ._preprocessing import Preprocessing
from ._registry import ModelEntry

__all__ = ["Normalize", "build_module", "describe_live", "feature_shape", "load_state_dict_file", "parameters_on_meta"]


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


def feature_shape(module: nn.Module, preprocessing: Preprocessing) -> tuple[int, ...]:
    """One frame's output shape, from a meta-device pass (no real compute)."""
    size = preprocessing.crop or preprocessing.size or 224
    h, w = (size, size) if isinstance(size, int) else size
    shape = TimeDistributed(module).output_shape((1, 1, 3, h, w), dtype=torch.float32)
    if not isinstance(shape, torch.Size):
        raise ModelError(f"{type(module).__name__} returns {type(shape).__name__}, not one tensor per frame")
    return tuple(shape[2:])


@contextmanager
def parameters_on_meta() -> Iterator[None]:
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


def describe_live(entry: ModelEntry, *, pool: Pool | None = None) -> dict[str, Any]:
    """Feature shape and inputs of a model, built on the meta device (no weights, no compute)."""
    name = entry.name
    pool = pool or entry.default_pool
    with parameters_on_meta():
        module = entry.adapt(entry.build(None), pool).eval()
    pre = entry.preprocessing(None)
    return {
        "name": name,
        "feature_shape": list(feature_shape(module, pre)),
        "needs_weights": entry.needs_weights,
        "spatial": entry.spatial,
        "input_size": pre.input_size,
        "description": entry.description,
    }


def build_module(entry: ModelEntry, named: str | None, path: Path | None, pool: Pool) -> tuple[nn.Module, str | None]:
    """``entry``'s per-frame module for weights ``named`` or at ``path``, and the file's sha256."""
    module = entry.build(named)
    sha256 = load_state_dict_file(module, path) if path is not None else None
    return entry.adapt(module, pool).eval(), sha256


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
