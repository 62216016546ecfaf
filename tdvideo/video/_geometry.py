"""From a decoded frame to an output frame: resize, rotate, crop, in one swscale call.

Frames are converted and resized together (``to_ndarray(width=, height=)``), on one
scaler thread; the display rotation is applied after, and a center crop last. Sizes are
limited: a few bytes of header can claim any frame size, and a short-side resize of a
2 x 4096 video would be 112 x 229376.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from .._types import Size
from ..errors import UnsupportedVideoError, UsageError

__all__ = [
    "CODED_LIMIT",
    "INTERPOLATIONS",
    "MAX_WINDOW_BYTES",
    "OUTPUT_LIMIT",
    "FrameLimit",
    "Geometry",
    "check_size",
    "displayed",
    "resolve_size",
]


@dataclass(frozen=True)
class FrameLimit:
    """The largest frame allowed: at most ``pixels`` in all and ``side`` pixels a side."""

    pixels: int
    side: int

    def allows(self, height: int, width: int) -> bool:
        return max(height, width) <= self.side and height * width <= self.pixels

    def __str__(self) -> str:
        return f"at most {self.side} px a side and {self.pixels / 1e6:.1f} Mpx"


# Decoded frames may be 8192 x 8192 (8K UHD and 8192 x 4096 panoramas fit); frames for the
# model 4096 x 4096 (48 MiB in RGB; models take far less).
CODED_LIMIT = FrameLimit(pixels=8192 * 8192, side=16384)
OUTPUT_LIMIT = FrameLimit(pixels=4096 * 4096, side=8192)
# A clip window is one piece of memory; more than this is refused.
MAX_WINDOW_BYTES = 2**30

_SWS_INTERPOLATION: dict[str, str] = {
    "bilinear": "BILINEAR",
    "bicubic": "BICUBIC",
    "area": "AREA",
    "nearest": "POINT",
    "lanczos": "LANCZOS",
    "fast_bilinear": "FAST_BILINEAR",
}
INTERPOLATIONS: tuple[str, ...] = tuple(_SWS_INTERPOLATION)

_UNSPECIFIED = 2  # AVCOL_SPC_UNSPECIFIED, AVCOL_PRI_UNSPECIFIED and AVCOL_TRC_UNSPECIFIED alike


def displayed(width: int, height: int, rotation: int) -> tuple[int, int]:
    """(width, height) of a ``width`` x ``height`` frame shown turned by ``rotation`` degrees."""
    return (height, width) if rotation in (90, 270) else (width, height)


def resolve_size(size: Size | None, *, height: int, width: int) -> tuple[int, int]:
    """Output (H, W) for a displayed frame of ``height`` x ``width``.

    ``size=S`` scales the short side to ``S`` keeping the aspect ratio; ``(H, W)`` is
    taken as is; ``None`` keeps the frame's size.
    """
    if size is None:
        return height, width
    if isinstance(size, int):
        scale = size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    return size


def check_size(name: str, value: Size | None) -> None:
    """Validate a ``size``/``crop`` value: a positive int or an (H, W) pair, within the frame limits."""
    if value is None:
        return
    ok = (isinstance(value, int) and not isinstance(value, bool) and value > 0) or (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )
    if not ok:
        raise UsageError(f"{name} must be a positive int or an (H, W) pair of positive ints, got {value!r}")
    h, w = (value, value) if isinstance(value, int) else value
    if not OUTPUT_LIMIT.allows(h, w):
        raise UsageError(f"{name} {h}x{w} is over the frame limits ({OUTPUT_LIMIT})")


@dataclass(frozen=True)
class Geometry:
    """How to turn a decoded frame into an output frame: one swscale call, then rot90 and crop."""

    sws_width: int
    sws_height: int
    rot90: int  # counter-clockwise quarter turns
    crop: tuple[int, int, int, int] | None  # top, left, height, width in the rotated frame

    @classmethod
    def plan(
        cls,
        path: str,
        *,
        coded_width: int,
        coded_height: int,
        sample_aspect_ratio: float,
        rotation: int,
        size: Size | None,
        crop: Size | None,
    ) -> Geometry:
        """The geometry for frames of ``coded_width`` x ``coded_height``; raises
        :class:`UnsupportedVideoError` for output over :data:`OUTPUT_LIMIT` and for a crop
        larger than the frame."""
        # The display size honours the sample aspect ratio (a 2:1 SAR frame shows twice as wide).
        disp_w, disp_h = displayed(round(coded_width * sample_aspect_ratio), coded_height, rotation)
        if size is None:
            out_w, out_h = displayed(coded_width, coded_height, rotation)
        else:
            out_h, out_w = resolve_size(size, height=max(1, disp_h), width=max(1, disp_w))
        if not OUTPUT_LIMIT.allows(out_h, out_w):
            raise UnsupportedVideoError(
                path,
                f"frames resized to {out_h}x{out_w} would be over the frame limits ({OUTPUT_LIMIT}); "
                f"the video is {disp_w}x{disp_h}: give an exact size HxW, or a smaller one",
            )
        box = None
        if crop is not None:
            ch, cw = (crop, crop) if isinstance(crop, int) else crop
            if ch > out_h or cw > out_w:
                raise UnsupportedVideoError(path, f"crop {ch}x{cw} is larger than the frame {out_h}x{out_w}")
            box = ((out_h - ch) // 2, (out_w - cw) // 2, ch, cw)
        # Always an explicit output size: a stream whose frame size changes part-way still
        # gives frames of one size (swscale does no scaling when sizes match).
        sws_w, sws_h = displayed(out_w, out_h, rotation)
        return cls(sws_width=sws_w, sws_height=sws_h, rot90=rotation // 90, crop=box)

    @property
    def out_shape(self) -> tuple[int, int]:
        """(H, W) of the output frames."""
        if self.crop is not None:
            return self.crop[2], self.crop[3]
        width, height = displayed(self.sws_width, self.sws_height, 90 * self.rot90)
        return height, width

    @property
    def frame_bytes(self) -> int:
        """Bytes of one output RGB frame."""
        h, w = self.out_shape
        return h * w * 3

    def apply(self, frame: av.VideoFrame, interpolation: str, threads: int = 1) -> np.ndarray:
        """The output frame (H, W, 3), uint8. Raises ``av.FFmpegError`` if swscale cannot convert it.

        ``interpolation`` is one of :data:`INTERPOLATIONS`.
        """
        options = {
            "width": self.sws_width,
            "height": self.sws_height,
            "format": "rgb24",
            "interpolation": _SWS_INTERPOLATION[interpolation],
        }
        try:
            arr = frame.to_ndarray(**options, threads=threads)
        except av.FFmpegError:
            # Damaged colour tags (a colour space of 243) make swscale refuse the frame:
            # convert it as untagged, as FFmpeg treats unknown tags elsewhere.
            frame.colorspace = frame.color_primaries = frame.color_trc = _UNSPECIFIED
            arr = frame.to_ndarray(**options, threads=threads)
        if self.rot90:
            arr = np.rot90(arr, self.rot90, axes=(0, 1))
        if self.crop is not None:
            top, left, h, w = self.crop
            arr = arr[top : top + h, left : left + w]
        return arr
