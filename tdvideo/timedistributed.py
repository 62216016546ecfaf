"""``TimeDistributed``: apply a per-frame module to every timestep of a sequence.

PyTorch has no such wrapper (pytorch/pytorch#1927). The usual hand-rolled one does
``x.contiguous().view(B * T, ...)``, which copies every non-contiguous input, and loops
per step to save memory. This one folds with ``flatten``/``unflatten`` views, folds
time-major tensors in their own memory order, bounds memory with ``chunk_size``, skips
padded steps, and keeps the container type of tuple/list/dict/NamedTuple outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["TimeDistributed"]


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


def _tree_map(fn: Callable[[Tensor], Any], obj: Any) -> Any:
    """Apply ``fn`` to every tensor in a (nested) tensor/tuple/list/dict/NamedTuple, keeping types."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if _is_namedtuple(obj):
        return type(obj)(*(_tree_map(fn, v) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_tree_map(fn, v) for v in obj)
    if isinstance(obj, Mapping):
        return type(obj)((k, _tree_map(fn, v)) for k, v in obj.items())
    return obj


def _tree_cat(parts: Sequence[Any]) -> Any:
    """Concatenate a list of same-structured outputs along dim 0, leaf by leaf."""
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(parts, dim=0)
    if _is_namedtuple(first):
        return type(first)(*(_tree_cat(leaves) for leaves in zip(*parts)))
    if isinstance(first, (tuple, list)):
        return type(first)(_tree_cat(leaves) for leaves in zip(*parts))
    if isinstance(first, Mapping):
        return type(first)((k, _tree_cat([p[k] for p in parts])) for k in first)
    return first


def _foldable(x: Tensor) -> bool:
    """True when dims 0 and 1 can be merged into one without a copy."""
    return x.size(1) == 1 or x.size(0) == 1 or x.stride(0) == x.stride(1) * x.size(1)


class TimeDistributed(nn.Module):
    """Apply ``module`` independently to every timestep of ``(B, T, ...)`` inputs.

    The batch and time axes are folded into one (``B * T`` rows), the module runs once on
    the folded batch, and every tensor it returns is unfolded back to ``(B, T, ...)``.
    In eval mode the result equals ``torch.stack([module(x[:, t]) for t in range(T)], 1)``,
    only faster.

    Args:
        module: any ``nn.Module`` taking a batch of frames (or of steps) as its first
            dimension. Its parameters are used as they are, shared across all steps.
        time_dim: ``1`` for batch-first ``(B, T, ...)`` inputs (the default) or ``0``
            for time-first ``(T, B, ...)``. Outputs use the same layout as the inputs.
        chunk_size: run the folded batch in pieces of at most this many rows to bound
            peak memory (activations of one chunk at a time). ``None`` runs it in one go.

    Memory layout:
        Folding uses ``flatten(0, 1)``, a view whenever the two leading dims can merge.
        A contiguous input therefore reaches the module without a copy, channels_last
        frames stay channels_last, and a batch-first view of a time-major tensor
        (``x_tbchw.transpose(0, 1)``) is folded in its own memory order - also without a
        copy - and returned as the matching transposed view. Outputs are never forced
        contiguous.

    Padding:
        ``forward(x, lengths=...)`` or ``forward(x, mask=...)`` runs the module only on
        valid steps (exactly ``sum(lengths)`` rows) and fills padded positions with
        ``fill_value``. ``lengths`` is ``(B,)``; ``mask`` is a boolean ``(B, T)`` tensor,
        batch-first whatever ``time_dim`` is, ``True`` marking valid steps.

    BatchNorm:
        Folding makes a ``BatchNorm2d`` inside ``module`` normalise over all ``B * T``
        frames of the call in training mode, and its running statistics update once per
        forward (not once per step), as if the frames were one big batch. With
        ``chunk_size`` in training mode, statistics are per chunk and running stats
        update once per chunk. In eval mode none of this matters.

    Compilation:
        The plain path (no ``chunk_size``, no ``lengths``/``mask``) compiles with
        ``torch.compile(fullgraph=True)`` with dynamic B and T, and exports with
        ``torch.export`` using dynamic B and T. The chunked path loops in Python over a
        data-dependent number of chunks, and the padded path selects a data-dependent
        number of rows: both are eager-only (they still run under ``torch.compile`` with
        graph breaks, not with ``fullgraph=True``).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        time_dim: Literal[0, 1] = 1,
        chunk_size: int | None = None,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"TimeDistributed wraps an nn.Module, got {type(module).__name__}: {module!r}"
            )
        if time_dim not in (0, 1):
            raise ValueError(f"time_dim must be 0 or 1, got {time_dim!r}")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        super().__init__()
        self.module = module
        self.time_dim = time_dim
        self.chunk_size = chunk_size

    def extra_repr(self) -> str:
        return f"time_dim={self.time_dim}, chunk_size={self.chunk_size}"

    # -- folding -------------------------------------------------------------------

    def _leading(self, inputs: Sequence[Tensor]) -> tuple[int, int]:
        """Validate the inputs and return their two leading sizes, in input order."""
        if not inputs:
            raise TypeError("TimeDistributed.forward() needs at least one input tensor")
        lead: tuple[int, int] | None = None
        for i, x in enumerate(inputs):
            if not isinstance(x, Tensor):
                raise TypeError(
                    f"TimeDistributed positional inputs must be tensors; input {i} is "
                    f"{type(x).__name__} (pass non-tensor arguments as keywords)"
                )
            if x.dim() < 3:
                layout = "(T, B, ...)" if self.time_dim == 0 else "(B, T, ...)"
                raise ValueError(
                    f"TimeDistributed input {i} must have rank >= 3 {layout}, "
                    f"got shape {tuple(x.shape)}"
                )
            if lead is None:
                lead = (x.size(0), x.size(1))
            elif (x.size(0), x.size(1)) != lead:
                names = "(T, B)" if self.time_dim == 0 else "(B, T)"
                raise ValueError(
                    f"TimeDistributed inputs disagree on {names}: input 0 has {lead}, "
                    f"input {i} has {(x.size(0), x.size(1))}"
                )
        assert lead is not None
        return lead

    def _run(self, folded: list[Tensor], kwargs: dict[str, Any]) -> Any:
        rows = folded[0].size(0)
        if self.chunk_size is None or rows <= self.chunk_size:
            return self.module(*folded, **kwargs)
        parts = [
            self.module(*(f[start : start + self.chunk_size] for f in folded), **kwargs)
            for start in range(0, rows, self.chunk_size)
        ]
        return _tree_cat(parts)

    def forward(
        self,
        *inputs: Tensor,
        lengths: Tensor | None = None,
        mask: Tensor | None = None,
        fill_value: float = 0.0,
        **kwargs: Any,
    ) -> Any:
        """Run the module on every step of ``inputs``; see the class docstring.

        Args:
            *inputs: one or more tensors sharing their two leading dims.
            lengths: ``(B,)`` integer valid lengths (steps ``t < lengths[b]`` are valid).
            mask: ``(B, T)`` boolean, ``True`` where a step is valid. Not with ``lengths``.
            fill_value: value written at padded positions of every output tensor.
            **kwargs: passed unchanged to every call of the module.
        """
        d0, d1 = self._leading(inputs)
        # Fold in memory order: a batch-first view of a time-major tensor merges its
        # leading dims without a copy once they are swapped back.
        swap = not _foldable(inputs[0]) and _foldable(inputs[0].transpose(0, 1))
        if swap:
            inputs = tuple(x.transpose(0, 1) for x in inputs)
            d0, d1 = d1, d0
        folded = [x.flatten(0, 1) for x in inputs]

        def unfold(y: Tensor, rows: Tensor | None = None) -> Tensor:
            if y.dim() == 0 or y.size(0) != (folded[0].size(0) if rows is None else rows.numel()):
                raise ValueError(
                    "TimeDistributed: every tensor the module returns must keep the folded "
                    f"batch as its first dim; got shape {tuple(y.shape)}"
                )
            if rows is not None:
                full = y.new_full((d0 * d1, *y.shape[1:]), fill_value)
                full[rows] = y
                y = full
            y = y.unflatten(0, (d0, d1))
            return y.transpose(0, 1) if swap else y

        valid = self._valid_rows(lengths, mask, d0, d1, swap, inputs[0].device)
        if valid is None:
            return _tree_map(unfold, self._run(folded, kwargs))
        rows = valid.nonzero().squeeze(1)
        out = self._run([f.index_select(0, rows) for f in folded], kwargs)
        return _tree_map(lambda y: unfold(y, rows), out)

    def _valid_rows(
        self,
        lengths: Tensor | None,
        mask: Tensor | None,
        d0: int,
        d1: int,
        swap: bool,
        device: torch.device,
    ) -> Tensor | None:
        """The (d0 * d1,) boolean validity of folded rows, or None when nothing is padded."""
        if lengths is None and mask is None:
            return None
        if lengths is not None and mask is not None:
            raise ValueError("TimeDistributed: pass lengths or mask, not both")
        # The logical (B, T) sizes, whatever the memory order of the inputs.
        batch_major = (self.time_dim == 1) != swap
        B, T = (d0, d1) if batch_major else (d1, d0)
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=device)
            if lengths.shape != (B,) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
                raise ValueError(
                    f"TimeDistributed: lengths must be an integer tensor of shape ({B},), "
                    f"got {lengths.dtype} {tuple(lengths.shape)}"
                )
            if bool((lengths < 0).any()) or bool((lengths > T).any()):
                raise ValueError(
                    f"TimeDistributed: lengths must lie in [0, {T}], got {lengths.tolist()}"
                )
            mask = torch.arange(T, device=device) < lengths.unsqueeze(1)
        else:
            assert mask is not None
            mask = torch.as_tensor(mask, device=device)
            if mask.dtype != torch.bool or mask.shape != (B, T):
                raise ValueError(
                    f"TimeDistributed: mask must be a bool tensor of shape (B, T) = ({B}, {T}), "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )
        return (mask if batch_major else mask.T).reshape(-1)

    # -- shapes --------------------------------------------------------------------

    def output_shape(self, *input_shapes: Sequence[int], dtype: torch.dtype | None = None) -> Any:
        """Output shape(s) for inputs of the given shape(s), computed on the meta device.

        No real compute runs and no weights are copied: parameters and buffers are
        replaced by meta tensors of the same shape for the call. Returns a
        ``torch.Size`` for a tensor output, or the module's container of them.
        """
        if not input_shapes:
            raise TypeError("output_shape() needs at least one input shape")
        if dtype is None:
            first = next(self.module.parameters(), None)
            dtype = first.dtype if first is not None else torch.get_default_dtype()
        meta_state = {
            name: torch.empty_like(t, device="meta")
            for name, t in [*self.module.named_parameters(), *self.module.named_buffers()]
        }
        inputs = [torch.empty(tuple(s), dtype=dtype, device="meta") for s in input_shapes]
        wrapped = _MetaCall(self.module, meta_state)
        out = TimeDistributed(wrapped, time_dim=self.time_dim)(*inputs)
        return _tree_map(lambda y: y.shape, out)


class _MetaCall(nn.Module):
    """Calls ``module`` with its parameters and buffers swapped for meta tensors."""

    def __init__(self, module: nn.Module, state: dict[str, Tensor]) -> None:
        super().__init__()
        self.inner = [module]  # a list keeps it out of this module's children
        self.state = state

    def forward(self, *args: Tensor, **kwargs: Any) -> Any:
        return functional_call(self.inner[0], self.state, args, kwargs)
