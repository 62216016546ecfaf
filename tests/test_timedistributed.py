"""TimeDistributed: every behaviour of the checklist in DESIGN.md section 3."""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import pytest
import torch
import torchvision
from torch import Tensor, nn

from tdvideo import TimeDistributed


def loop(module: nn.Module, x: Tensor, time_dim: int = 1) -> Tensor:
    """The reference: the module applied step by step."""
    steps = [module(x.select(time_dim, t)) for t in range(x.size(time_dim))]
    return torch.stack(steps, time_dim)


class Spy(nn.Module):
    """Records what reaches it, then applies ``inner`` (identity by default)."""

    def __init__(self, inner: nn.Module | None = None) -> None:
        super().__init__()
        self.inner = inner or nn.Identity()
        self.seen: list[Tensor] = []
        self.kwargs: list[dict] = []

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        self.seen.append(x)
        self.kwargs.append(kwargs)
        return self.inner(x)


# 1. any nn.Module; parameters are the module's own -----------------------------------


def test_rejects_non_modules() -> None:
    with pytest.raises(TypeError, match="wraps an nn.Module, got function"):
        TimeDistributed(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time_dim must be 0 or 1, got 2"):
        TimeDistributed(nn.Identity(), time_dim=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size must be a positive int or None, got 0"):
        TimeDistributed(nn.Identity(), chunk_size=0)


def test_parameters_are_the_modules_own_and_shared_across_steps() -> None:
    linear = nn.Linear(4, 3)
    td = TimeDistributed(linear)
    assert [p for p in td.parameters()] == [linear.weight, linear.bias]
    td(torch.randn(2, 5, 4)).sum().backward()
    # One weight receives the gradient of all B * T steps.
    x = torch.randn(2, 5, 4)
    linear.zero_grad()
    td(x).sum().backward()
    assert torch.allclose(linear.weight.grad, torch.ones(3, 1) * x.sum((0, 1)))


# 2. rank >= 3; T may change; nothing cached ------------------------------------------


def test_rank_below_three_is_a_clear_error() -> None:
    td = TimeDistributed(nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"rank >= 3 \(B, T, ...\), got shape \(5, 4\)"):
        td(torch.randn(5, 4))


def test_time_length_may_change_between_calls() -> None:
    td = TimeDistributed(nn.Linear(4, 2)).eval()
    for t in (3, 7, 1):
        x = torch.randn(2, t, 4)
        assert torch.allclose(td(x), loop(td.module, x))


# 3. equals the per-step loop ----------------------------------------------------------


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.Conv2d(3, 8, 3, padding=1), (2, 4, 3, 10, 12)),
        (nn.Linear(6, 5), (3, 4, 6)),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()), (2, 3, 3, 9, 9)),
        (nn.Conv2d(3, 16, 3), (2, 5, 3, 16, 16)),  # spatial maps out
    ],
    ids=["conv", "linear", "conv-bn-pool", "spatial"],
)
def test_equals_the_per_step_loop(module: nn.Module, shape: tuple[int, ...]) -> None:
    module.eval()
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(TimeDistributed(module)(x), loop(module, x))


def test_equals_the_loop_for_a_torchvision_backbone() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(TimeDistributed(model)(x), loop(model, x), rtol=1e-4, atol=1e-5)


# 4. zero-copy fold and unfold ---------------------------------------------------------


def test_contiguous_input_reaches_the_module_without_a_copy() -> None:
    spy = Spy()
    x = torch.randn(2, 3, 4, 5)
    out = TimeDistributed(spy)(x)
    assert spy.seen[0].data_ptr() == x.data_ptr() and spy.seen[0].shape == (6, 4, 5)
    assert out.data_ptr() == x.data_ptr()  # identity module: the unfold is a view too


def test_time_major_input_is_folded_in_memory_order_without_a_copy() -> None:
    spy = Spy(nn.Linear(5, 2))
    x_tb = torch.randn(7, 3, 5)  # (T, B, F) in memory
    x = x_tb.transpose(0, 1)  # viewed as (B, T, F): not contiguous
    td = TimeDistributed(spy).eval()
    out = td(x)
    assert spy.seen[0].data_ptr() == x_tb.data_ptr()
    assert out.shape == (3, 7, 2)
    torch.testing.assert_close(out, loop(spy.inner, x))


def test_channels_last_frames_stay_channels_last() -> None:
    spy = Spy()
    frames = torch.randn(6, 3, 8, 8).to(memory_format=torch.channels_last).unflatten(0, (2, 3))
    TimeDistributed(spy)(frames)
    assert spy.seen[0].is_contiguous(memory_format=torch.channels_last)
    assert spy.seen[0].data_ptr() == frames.data_ptr()


def test_output_is_never_forced_contiguous() -> None:
    class Transposed(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.transpose(1, 2)

    x = torch.randn(2, 3, 4, 5)
    out = TimeDistributed(Transposed())(x)
    assert out.shape == (2, 3, 5, 4) and not out.is_contiguous()
    assert out.data_ptr() == x.data_ptr()


# 5. time_dim ---------------------------------------------------------------------------


def test_time_first_inputs() -> None:
    module = nn.Conv2d(3, 4, 3).eval()
    x = torch.randn(5, 2, 3, 8, 8)  # (T, B, C, H, W)
    td = TimeDistributed(module, time_dim=0)
    with torch.no_grad():
        torch.testing.assert_close(td(x), loop(module, x, time_dim=0))
    assert td.output_shape((5, 2, 3, 8, 8)) == (5, 2, 4, 6, 6)


# 6. chunk_size -------------------------------------------------------------------------


def test_chunks_bound_rows_per_call_and_match_unchunked() -> None:
    spy = Spy(nn.Conv2d(3, 4, 3))
    x = torch.randn(3, 7, 3, 8, 8)
    td = TimeDistributed(spy, chunk_size=5).eval()
    with torch.no_grad():
        chunked = td(x)
        assert [s.shape[0] for s in spy.seen] == [5, 5, 5, 5, 1]
        # Equal up to the rounding of kernels that block differently by batch size.
        torch.testing.assert_close(chunked, TimeDistributed(spy.inner)(x), rtol=1e-6, atol=1e-6)
    linear = nn.Linear(3, 2)
    y = torch.randn(3, 7, 3)
    with torch.no_grad():
        # Not bit-exact: a GEMM may block differently for 4 rows than for 21 on another CPU.
        torch.testing.assert_close(TimeDistributed(linear, chunk_size=4)(y), TimeDistributed(linear)(y))


@pytest.mark.needs_cuda
def test_chunks_lower_peak_memory_on_cuda() -> None:
    module = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).cuda()
    x = torch.randn(4, 64, 3, 64, 64, device="cuda")
    peaks = []
    for chunk in (None, 16):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            TimeDistributed(module, chunk_size=chunk)(x)
        peaks.append(torch.cuda.max_memory_allocated())
    assert peaks[1] < peaks[0] / 4


# 7. lengths and mask -------------------------------------------------------------------


def test_lengths_run_only_valid_steps_and_fill_the_rest() -> None:
    spy = Spy(nn.Linear(4, 3))
    x = torch.randn(3, 6, 4)
    lengths = torch.tensor([6, 2, 0])
    td = TimeDistributed(spy).eval()
    with torch.no_grad():
        out = td(x, lengths=lengths, fill_value=-1.0)
        full = TimeDistributed(spy.inner)(x)
    assert spy.seen[0].shape[0] == int(lengths.sum()) == 8
    torch.testing.assert_close(out[0], full[0])
    torch.testing.assert_close(out[1, :2], full[1, :2])
    assert torch.all(out[1, 2:] == -1.0) and torch.all(out[2] == -1.0)


def test_mask_and_chunks_and_time_major_together() -> None:
    inner = nn.Linear(4, 3).eval()
    spy = Spy(inner)
    x_tb = torch.randn(5, 2, 4)
    mask = torch.tensor([[True, False, True, True, False], [False, False, False, True, True]])
    td = TimeDistributed(spy, chunk_size=2)
    with torch.no_grad():
        out = td(x_tb.transpose(0, 1), mask=mask)  # batch-first view of time-major memory
        full = loop(inner, x_tb.transpose(0, 1))
    assert sum(s.shape[0] for s in spy.seen) == 5 and max(s.shape[0] for s in spy.seen) <= 2
    torch.testing.assert_close(out[mask], full[mask])
    assert torch.all(out[~mask] == 0)


def test_lengths_with_time_first_layout() -> None:
    inner = nn.Linear(4, 2).eval()
    x = torch.randn(6, 2, 4)  # (T, B, F)
    with torch.no_grad():
        out = TimeDistributed(inner, time_dim=0)(x, lengths=torch.tensor([6, 3]))
        full = loop(inner, x, time_dim=0)
    torch.testing.assert_close(out[:, 0], full[:, 0])
    torch.testing.assert_close(out[:3, 1], full[:3, 1])
    assert torch.all(out[3:, 1] == 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lengths": torch.tensor([1, 7])}, r"lengths must lie in \[0, 4\]"),
        ({"lengths": torch.tensor([1.0, 2.0])}, r"lengths must be an integer tensor of shape \(2,\)"),
        ({"mask": torch.ones(2, 3, dtype=torch.bool)}, r"mask must be a bool tensor of shape \(B, T\) = \(2, 4\)"),
        ({"lengths": torch.tensor([1, 2]), "mask": torch.ones(2, 4, dtype=torch.bool)}, "not both"),
    ],
)
def test_bad_lengths_or_mask(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TimeDistributed(nn.Linear(3, 3))(torch.randn(2, 4, 3), **kwargs)


# 8. several inputs; kwargs -------------------------------------------------------------


class Pair(nn.Module):
    def forward(self, x: Tensor, y: Tensor, *, scale: float = 1.0) -> Tensor:
        return (x * y.sum(-1, keepdim=True)) * scale


def test_several_inputs_are_folded_together_and_kwargs_reach_the_module() -> None:
    x, y = torch.randn(2, 3, 4), torch.randn(2, 3, 5)
    expected = torch.stack([Pair()(x[:, t], y[:, t], scale=2.0) for t in range(3)], 1)
    for td, extra in [
        (TimeDistributed(Pair()), {}),
        (TimeDistributed(Pair(), chunk_size=2), {}),
        (TimeDistributed(Pair()), {"lengths": torch.tensor([3, 3])}),
    ]:
        torch.testing.assert_close(td(x, y, scale=2.0, **extra), expected)


def test_kwargs_reach_the_module_in_every_mode() -> None:
    spy = Spy()
    x = torch.randn(2, 4, 3)
    TimeDistributed(spy)(x, flag=1)
    TimeDistributed(spy, chunk_size=3)(x, flag=2)
    TimeDistributed(spy)(x, lengths=torch.tensor([1, 2]), flag=3)
    assert [k["flag"] for k in spy.kwargs] == [1, 2, 2, 2, 3]


def test_mismatched_leading_dims_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"inputs disagree on \(B, T\): input 0 has \(2, 3\), input 1 has \(2, 4\)"):
        TimeDistributed(Pair())(torch.randn(2, 3, 4), torch.randn(2, 4, 5))


# 9. container outputs ------------------------------------------------------------------


class Out(NamedTuple):
    a: Tensor
    b: Tensor


class Multi(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: Tensor):
        a, b = x * 2, x.sum(-1)
        if self.kind == "tuple":
            return a, b
        if self.kind == "list":
            return [a, b]
        if self.kind == "dict":
            return OrderedDict(a=a, b=b)
        if self.kind == "namedtuple":
            return Out(a, b)
        return {"nested": (a, [b])}


@pytest.mark.parametrize("kind", ["tuple", "list", "dict", "namedtuple", "nested"])
def test_container_outputs_keep_their_type(kind: str) -> None:
    x = torch.randn(2, 3, 4)
    out = TimeDistributed(Multi(kind))(x)
    if kind == "nested":
        assert isinstance(out, dict) and isinstance(out["nested"], tuple) and isinstance(out["nested"][1], list)
        a, b = out["nested"][0], out["nested"][1][0]
    else:
        expected_type = {"tuple": tuple, "list": list, "dict": OrderedDict, "namedtuple": Out}[kind]
        assert type(out) is expected_type
        a, b = (out["a"], out["b"]) if kind == "dict" else (out[0], out[1])
    torch.testing.assert_close(a, x * 2)
    torch.testing.assert_close(b, x.sum(-1))
    assert b.shape == (2, 3)
    chunked = TimeDistributed(Multi(kind), chunk_size=4)(x)
    assert type(chunked) is type(out)


def test_outputs_without_the_folded_batch_are_an_error() -> None:
    class Scalar(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.sum()

    with pytest.raises(ValueError, match="must keep the folded batch as its first dim"):
        TimeDistributed(Scalar())(torch.randn(2, 3, 4))


# 10. BatchNorm -------------------------------------------------------------------------


def test_batchnorm_normalizes_over_all_frames_and_updates_once_per_forward() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, momentum=0.5)
    reference = nn.BatchNorm2d(3, momentum=0.5)
    x = torch.randn(2, 4, 3, 5, 5) * 3 + 1
    out = TimeDistributed(bn).train()(x)
    expected = reference.train()(x.flatten(0, 1)).unflatten(0, (2, 4))
    torch.testing.assert_close(out, expected)
    assert int(bn.num_batches_tracked) == 1
    torch.testing.assert_close(bn.running_mean, reference.running_mean)
    torch.testing.assert_close(bn.running_var, reference.running_var)


# 11. torch.compile and torch.export ----------------------------------------------------


def test_compiles_fullgraph_without_recompiling_for_new_b_and_t() -> None:
    torch._dynamo.reset()
    compiles = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs):
        compiles.append(gm)
        return gm.forward

    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    td = TimeDistributed(module)
    compiled = torch.compile(td, backend=counting_backend, fullgraph=True, dynamic=True)
    with torch.no_grad():
        # B and T distinct from C, H, W and each other (dynamo gives equal sizes one symbol),
        # and B * T >= 16: the CPU conv kernel itself guards on batch < 16.
        for b, t in [(2, 9), (6, 7), (5, 11), (10, 2)]:
            x = torch.randn(b, t, 3, 8, 8)
            torch.testing.assert_close(compiled(x), td(x))
    assert len(compiles) == 1


def test_exports_with_dynamic_batch_and_time() -> None:
    td = TimeDistributed(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())).eval()
    B, T = torch.export.Dim("B", min=2, max=64), torch.export.Dim("T", min=2, max=512)
    exported = torch.export.export(td, (torch.randn(2, 3, 3, 8, 8),), dynamic_shapes=(({0: B, 1: T},),))
    x = torch.randn(5, 7, 3, 8, 8)
    torch.testing.assert_close(exported.module()(x), td(x))


# 12. output_shape on the meta device ---------------------------------------------------


def test_output_shape_runs_on_the_meta_device() -> None:
    spy = Spy(torchvision.models.resnet18(weights=None))
    td = TimeDistributed(spy)
    assert td.output_shape((4, 16, 3, 224, 224)) == (4, 16, 1000)
    assert spy.seen[0].device.type == "meta"
    assert next(spy.parameters()).device.type == "cpu"  # the real weights were not moved
    assert TimeDistributed(Multi("tuple")).output_shape((2, 3, 4)) == (torch.Size([2, 3, 4]), torch.Size([2, 3]))


# 13. gradients and repr ----------------------------------------------------------------


def test_gradcheck() -> None:
    module = nn.Sequential(nn.Linear(3, 2), nn.Tanh()).double()
    x = torch.randn(2, 3, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(TimeDistributed(module), (x,))
    assert torch.autograd.gradcheck(lambda v: TimeDistributed(module)(v, lengths=torch.tensor([3, 1])), (x,))


def test_repr_shows_module_time_dim_and_chunk_size() -> None:
    text = repr(TimeDistributed(nn.Conv2d(3, 16, 3), time_dim=0, chunk_size=32))
    assert "Conv2d(3, 16, kernel_size=(3, 3)" in text
    assert "time_dim=0, chunk_size=32" in text
