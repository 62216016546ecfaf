"""Small shared type aliases, kept apart so sibling modules need not import each other."""

from __future__ import annotations

from typing import Literal

Size = int | tuple[int, int]
"""A resize/crop target: ``S`` (the short side, or a square crop) or ``(H, W)``."""

Interpolation = Literal["bilinear", "bicubic", "area", "nearest", "lanczos", "fast_bilinear"]

Pool = Literal["avg", "none"]
"""``avg``: one vector per frame; ``none``: the last spatial feature map."""
