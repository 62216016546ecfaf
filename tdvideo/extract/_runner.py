"""The model on its device: uint8 ``(B, T, C, H, W)`` batches in, float32 features on the host out.

Frames cross to the device as uint8 (4x less traffic than float) and become normalized
float there. The model runs through :class:`~tdvideo.TimeDistributed` under
``inference_mode`` and autocast, in channels_last on CUDA, with cuDNN's autotuner on for
the forward pass only (no process-wide setting is changed for good).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from .._types import Precision
from ..errors import TdvideoError, UsageError, first_line
from ..models._backbone import Backbone
from ..timedistributed import TimeDistributed
from ._batcher import Batch

__all__ = ["Runner", "check_device", "resolve_device"]

_AUTOCAST: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_device(device: str) -> None:
    """That ``device`` is ``auto``, ``cpu``, or a ``cuda``/``cuda:N`` that exists here."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise UsageError(f"device must be auto, cpu, cuda or cuda:N; got {device!r}")
    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise UsageError(f"device {device!r} asked for, but CUDA is not available on this machine")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise UsageError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Under torchrun or SLURM, ``auto`` takes the GPU of the local rank (``LOCAL_RANK``,
    ``SLURM_LOCALID``), so each process of a node uses its own.
    """
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local = os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID"))
        index = int(local) % torch.cuda.device_count() if local is not None and local.isdigit() else 0
        return torch.device("cuda", index)
    check_device(device)
    return torch.device(device)


class Runner:
    """Runs ``backbone`` on batches: :meth:`__call__` gives float32 ``(B, T, ...)`` features on
    the host (a window model: ``(B, ...)``, one per window).

    The model is built and moved to the device on the first batch.
    """

    def __init__(self, backbone: Backbone, *, device: str, precision: Precision, compile: bool) -> None:
        self.backbone = backbone
        self.device = resolve_device(device)
        self.autocast = _AUTOCAST[precision]
        self.compile = compile
        self._model: torch.nn.Module | None = None

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            if self.backbone.kind == "window":  # a video model: one output per window (row)
                model = self.backbone.window_model().to(self.device).eval()
            else:
                model = TimeDistributed(self.backbone.frame_model()).to(self.device).eval()
            if self.device.type == "cuda" and self.backbone.kind == "frame":
                model = model.to(memory_format=torch.channels_last)
            self._model = torch.compile(model, dynamic=True) if self.compile else model
        return self._model

    def __call__(self, batch: Batch) -> np.ndarray:
        frames = torch.from_numpy(batch.frames).permute(0, 1, 4, 2, 3)  # (B, T, C, H, W), channels-last
        if self.device.type == "cuda":
            frames = frames.pin_memory()  # then the copy to the GPU does not block
        x = frames.to(self.device, non_blocking=frames.is_pinned())
        # A light model on the CPU takes a fraction of a frame's decoding time: on one
        # torch thread it leaves the cores to the decoder (benchmarks/RESULTS.md).
        threads = 1 if self.backbone.light and self.device.type == "cpu" else None
        kwargs: dict[str, Any] = {} if batch.lengths is None else {"lengths": torch.from_numpy(batch.lengths).to(self.device)}
        try:
            with (
                _torch_threads(threads),
                _cudnn_benchmark(self.device.type == "cuda"),
                torch.inference_mode(),
                torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None),
            ):
                y = self.model(x, **kwargs)
        except (RuntimeError, AssertionError, ValueError) as exc:  # AssertionError: a model's own input checks (timm's)
            raise TdvideoError(f"model {self.backbone.name} failed on frames of shape {tuple(frames.shape)}: {first_line(exc)}") from exc
        # One output per frame (or window), of the shape the model was described with: a
        # module that drops rows or changes its output would otherwise misplace features.
        per_item = tuple(y.shape[1:] if self.backbone.kind == "window" else y.shape[2:])
        leading = tuple(y.shape[:1] if self.backbone.kind == "window" else y.shape[:2])
        expected = tuple(frames.shape[:1] if self.backbone.kind == "window" else frames.shape[:2])
        if leading != expected or per_item != tuple(self.backbone.feature_shape):
            raise TdvideoError(
                f"model {self.backbone.name} gave {tuple(y.shape)} for frames of shape {tuple(frames.shape)}; "
                f"expected {(*expected, *self.backbone.feature_shape)}"
            )
        return y.float().cpu().numpy()


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Run with ``count`` torch intra-op threads (None: unchanged), restoring the setting after."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _cudnn_benchmark(on: bool) -> Iterator[None]:
    """cuDNN's autotuner for the duration (input shapes repeat from batch to batch)."""
    if not on:
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
