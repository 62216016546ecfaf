"""The built-in models: weight-free, cheap, and useful on their own.

``colorhist`` (the default) finds shots and near-duplicates from colour alone;
``thumbnail`` keeps a tiny picture of each frame; ``conv2d`` is the seed example of
``TimeDistributed(nn.Conv2d(3, 16, 3))``, with a fixed initialisation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ColorHistogram", "GlobalAvgPool", "Thumbnail", "pooled", "seeded_conv2d"]


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
        _, c, _, _ = x.shape
        if x.dtype == torch.uint8 and c * self.bins <= 256 and self.bins & (self.bins - 1) == 0 and not torch.compiler.is_compiling():
            return self._per_frame_bincount(x)
        return self._flat_index_add(x)

    def _flat_index_add(self, x: Tensor) -> Tensor:
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

    def _per_frame_bincount(self, x: Tensor) -> Tensor:
        """The uint8 case: a channel's bin and the channel fit one byte (channel * bins + bin),
        and a byte-sized bincount per frame is faster than one flat ``index_add_`` over
        the batch (benchmarks/RESULTS.md). Counts are exact either way."""
        _, c, h, w = x.shape
        shift = 9 - self.bins.bit_length()  # v * bins // 256 for a power-of-two bins
        channel = (torch.arange(c, dtype=torch.uint8, device=x.device) * self.bins).view(1, c, 1, 1)
        idx = (x >> shift) + channel
        if idx.is_contiguous(memory_format=torch.channels_last):
            idx = idx.permute(0, 2, 3, 1)  # a histogram ignores order: flatten in memory order
        counts = torch.stack([torch.bincount(frame.reshape(-1), minlength=c * self.bins) for frame in idx])
        return counts.float() / (h * w)

    def extra_repr(self) -> str:
        return f"bins={self.bins}"


class Thumbnail(nn.Module):
    """An ``side`` x ``side`` average-pooled thumbnail of each frame, flattened: ``(N, 3 * side**2)``."""

    def __init__(self, side: int = 8) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(side)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x).flatten(1)


class GlobalAvgPool(nn.Module):
    """Spatial map ``(N, C, H, W)`` to ``(N, C)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


def seeded_conv2d() -> nn.Module:
    # The seed example, with a fixed initialisation so features are reproducible run to run.
    conv = nn.Conv2d(3, 16, kernel_size=3)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bound = 1.0 / (3 * 3 * 3) ** 0.5
        conv.weight.copy_(torch.empty_like(conv.weight).uniform_(-bound, bound, generator=gen))
        conv.bias.copy_(torch.empty_like(conv.bias).uniform_(-bound, bound, generator=gen))
    return conv


def pooled(module: nn.Module) -> nn.Module:
    """``module`` followed by a global average pool: one vector per frame from a spatial map."""
    return nn.Sequential(module, GlobalAvgPool())
