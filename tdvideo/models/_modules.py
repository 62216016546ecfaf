"""The torch side of the models: building modules, loading weights safely, shapes on the meta device."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._system import sha256_file
from .._types import Pool
from ..errors import ModelError, WeightsError, first_line, show_path
from ..timedistributed import TimeDistributed
from ._preprocessing import Preprocessing
from ._registry import ModelEntry

__all__ = [
    "NodeOutput",
    "Normalize",
    "PoolMap",
    "WindowModel",
    "build_module",
    "describe_live",
    "feature_shape",
    "layer_names",
    "load_state_dict_file",
    "parameters_on_meta",
    "take_node",
]


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


def feature_shape(module: nn.Module, preprocessing: Preprocessing, *, clip_len: int | None = None) -> tuple[int, ...]:
    """One output's shape: a frame's, or with ``clip_len`` a window's (the module then takes
    ``(N, C, T, H, W)``). From a meta-device pass (no real compute); a module that keeps
    plain CPU tensors beside its parameters (EVA's rotary embeddings) gets one real pass
    on a single zero frame or window instead."""
    size = preprocessing.crop or preprocessing.size or 224
    h, w = (size, size) if isinstance(size, int) else size
    one = (3, h, w) if clip_len is None else (3, clip_len, h, w)
    try:
        shape = TimeDistributed(module).output_shape((1, 1, *one), dtype=torch.float32)
        shape = shape[1:] if isinstance(shape, torch.Size) else shape
    except RuntimeError:
        with torch.no_grad():
            out = module(torch.zeros((1, *one)))
        shape = out.shape if isinstance(out, Tensor) else out
    except (ValueError, AttributeError, TypeError) as exc:  # an output that is no tensor per frame
        raise ModelError(f"{type(module).__name__} does not give one tensor per {'frame' if clip_len is None else 'window'}: {_first_line(exc)}") from exc
    if not isinstance(shape, torch.Size):
        raise ModelError(f"{type(module).__name__} returns {type(shape).__name__}, not one tensor per {'frame' if clip_len is None else 'window'}")
    return tuple(shape[1:])


class PoolMap(nn.Module):
    """``module``'s ``(N, C, ...)`` map averaged over everything after C: ``(N, C)``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        y = self.module(x)
        return y.flatten(2).mean(2)


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


def describe_live(entry: ModelEntry, *, pool: Pool | None = None, meta: bool = True) -> dict[str, Any]:
    """Feature shape and inputs of a model, built on the meta device (no weights, no compute);
    with ``meta=False``, built for real and run once on a zero frame (for the few models that
    cannot be built on the meta device: slow, for catalogs made once)."""
    pool = pool or entry.default_pool
    with parameters_on_meta() if meta else nullcontext():
        module = entry.adapt(entry.build(None), pool).eval()
    pre = entry.preprocessing(None)
    from ._catalog import describe_row

    return describe_row(entry, pre, feature_shape(module, pre, clip_len=entry.clip_len if entry.kind == "window" else None))


def build_module(
    entry: ModelEntry, named: str | None, path: Path | None, pool: Pool, layer: str | None = None
) -> tuple[nn.Module, str | None]:
    """``entry``'s feature module for weights ``named`` or at ``path``, and the file's sha256.

    With ``layer``, the module is cut at that node of its graph (``pool`` is then the
    caller's), after the weights are loaded: checkpoints are saved from the whole model.
    """
    module = _checked(entry, entry.build(named))
    # A family that loads its named weights itself (weights_folder) has them in already.
    sha256 = load_state_dict_file(module, path) if path is not None and not entry.weights_folder else None
    if layer is None:
        return entry.adapt(module, pool).eval(), sha256
    take = entry.layer or _default_layer
    return take(module.eval(), layer).eval(), sha256


def _default_layer(module: nn.Module, node: str) -> nn.Module:
    from ._torchvision import take_layer

    return take_layer(module, node)


def layer_names(entry: ModelEntry) -> list[str]:
    """The node names ``--layer`` takes for ``entry``'s model (built on the meta device)."""
    with parameters_on_meta():
        module = _checked(entry, entry.build(None)).eval()
    if entry.layer_names is None:
        from ._torchvision import layer_names as fx_names
    try:
        return (entry.layer_names or fx_names)(module)
    except Exception as exc:  # FX cannot trace every model (data-dependent control flow)
        raise ModelError(f"model {entry.name}: its graph cannot be traced, so it has no layers to take ({_first_line(exc)})") from exc


def _checked(entry: ModelEntry, module: Any) -> nn.Module:
    if not isinstance(module, nn.Module):
        raise ModelError(f"model {entry.name}: its build gave {type(module).__name__}, not a torch.nn.Module")
    return module


def _first_line(exc: BaseException) -> str:
    return first_line(exc)[:300]


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


def _is_safetensors(path: Path) -> bool:
    """By content, whatever the name: an 8-byte little-endian header length, then JSON."""
    with path.open("rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    """A ``.safetensors`` file's tensors (a format that holds tensors only: nothing to run)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise WeightsError(f"{show_path(path)}: reading .safetensors needs the safetensors package: pip install safetensors") from None
    return load_file(str(path), device="cpu")


def load_state_dict_file(module: nn.Module, path: Path) -> str:
    """Load a checkpoint into ``module`` without executing code from it; return its sha256.

    Accepts a ``.safetensors`` file, or a plain state dict or one wrapped under
    ``state_dict``/``model``, with or without ``module.`` prefixes (DataParallel/DDP).
    Uses ``torch.load(weights_only=True)``, so a pickle that would run code is refused
    before anything in it runs.
    """
    if path.is_dir():
        raise WeightsError(f"weights {show_path(path)} is a folder, not a checkpoint file")
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise WeightsError(f"weights file {show_path(path)} {what}")
    try:
        obj = _read_safetensors(path) if _is_safetensors(path) else torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError or others here
        text = str(exc)
        named = re.search(r"GLOBAL ([\w.]+)", text)
        if named:
            # The pickle names something other than tensors and plain containers: loading
            # it would run that code, so it is refused (nothing in it has run).
            raise WeightsError(
                f"{show_path(path)}: refused, loading it would run code from the file (it calls {named.group(1)}); nothing in it has run"
            ) from exc
        # torch wraps the unpickler's own reason (a bad load key, a short file) in advice that
        # does not apply here: show the reason.
        reason = next((line.split("error:", 1)[1].strip() for line in text.splitlines() if "Unpickler error:" in line), _first_line(exc))
        raise WeightsError(f"{show_path(path)}: not a readable checkpoint (damaged, cut short, or another format): {reason}") from exc
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


class WindowModel(nn.Module):
    """A video model on uint8 windows ``(N, T, C, H, W)``: normalized frame by frame, then
    given to ``module`` as ``(N, C, T, H, W)``, as torchvision's video models take them."""

    def __init__(self, module: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.normalize = TimeDistributed(Normalize(preprocessing.mean, preprocessing.std)) if preprocessing.normalize else None
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        x = self.normalize(x) if self.normalize is not None else x.float()
        return self.module(x.transpose(1, 2))


class NodeOutput(nn.Module):
    """The one output of a feature extractor made for a single node."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: Tensor) -> Tensor:
        return self.extractor(x)["out"]


def take_node(
    model: nn.Module, node: str, *, create: Callable[..., nn.Module], names_of: Callable[[nn.Module], list[str]]
) -> nn.Module:
    """``model`` cut at graph node ``node`` (one of ``names_of(model)``) by the FX
    feature-extractor factory ``create``; its output as it is. A submodule's name
    (``layer2``) stands for its last node, as in torchvision."""
    try:
        names = names_of(model)
    except Exception as exc:  # FX cannot trace every model (data-dependent control flow)
        raise ModelError(f"{type(model).__name__}: its graph cannot be traced, so it has no layers to take ({_first_line(exc)})") from exc
    modules = {name.rsplit(".", i)[0] for name in names for i in range(1, name.count(".") + 1)}
    if node not in names and node not in modules:
        close = difflib.get_close_matches(node, [*modules, *names], n=5)
        hint = f"close: {', '.join(close)}" if close else "`tdvideo models` with the model's name and --layers lists them"
        shown = node if len(node) <= 80 else node[:80] + "..."
        raise ModelError(f"no layer {shown!r} in {type(model).__name__}; {hint}")
    try:
        return NodeOutput(create(model.eval(), return_nodes={node: "out"}))
    except Exception as exc:  # FX cannot trace every model (data-dependent control flow)
        raise ModelError(f"cannot cut {type(model).__name__} at {node!r}: its graph cannot be traced ({_first_line(exc)})") from exc
