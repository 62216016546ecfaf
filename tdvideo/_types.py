"""Small shared type aliases, kept apart so sibling modules need not import each other."""

from __future__ import annotations

from typing import Literal

Size = int | tuple[int, int]
"""A resize/crop target: ``S`` (the short side, or a square crop) or ``(H, W)``."""

Interpolation = Literal["bilinear", "bicubic", "area", "nearest", "lanczos", "fast_bilinear"]

Pool = Literal["avg", "none"]
"""``avg``: one vector per frame; ``none``: the last spatial feature map."""

Format = Literal["npy", "npz", "pt"]
"""The array file format of an output."""

OutputDType = Literal["float32", "float16"]
Precision = Literal["fp32", "fp16", "bf16"]
OnError = Literal["raise", "keep"]
"""A video damaged part-way: ``raise`` (it fails) or ``keep`` the frames decoded before."""
Balance = Literal["static", "claim"]
"""How processes sharing an output folder split the videos: a fixed hash share each, or
one video at a time through claim files."""
Engine = Literal["local", "ray"]
"""Where a run works: this process and its decoding workers, or a Ray cluster (Ray Data)."""
FpsRows = Literal["distinct", "grid"]
"""With an fps grid: one row per distinct frame kept, or one row per grid point."""
