"""How frames must look before a model sees them; travels with the model's weights."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, get_args

from .._types import Interpolation, Size
from ..errors import UsageError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "UNIT_MEAN", "UNIT_STD", "Preprocessing"]

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

    def __post_init__(self) -> None:
        for name in ("size", "crop"):
            value = getattr(self, name)
            ok = value is None or (_count(value) if not isinstance(value, (tuple, list)) else len(value) == 2 and all(map(_count, value)))
            if not ok:
                raise UsageError(f"Preprocessing {name} must be a positive integer or (height, width), got {value!r}")
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for name in ("mean", "std"):
            value = getattr(self, name)
            numbers = tuple(value) if isinstance(value, (tuple, list)) else ()
            if len(numbers) != 3 or not all(_finite(v) for v in numbers) or (name == "std" and min(numbers) <= 0):
                what = "3 positive numbers" if name == "std" else "3 numbers"
                raise UsageError(f"Preprocessing {name} must be {what} (one per RGB channel), got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in numbers))
        if self.interpolation not in get_args(Interpolation):
            raise UsageError(f"Preprocessing interpolation must be one of {', '.join(get_args(Interpolation))}; got {self.interpolation!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def input_size(self) -> Size | None:
        """The size of the frames the model sees: the crop, else the resize target."""
        return self.crop or self.size


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
