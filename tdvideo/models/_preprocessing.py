"""How frames must look before a model sees them; travels with the model's weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .._types import Interpolation, Size

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def input_size(self) -> Size | None:
        """The size of the frames the model sees: the crop, else the resize target."""
        return self.crop or self.size
