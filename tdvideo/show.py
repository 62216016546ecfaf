"""One picture of a video's features: do they make sense?

:func:`plot` (``tdvideo show OUT/clip``) draws, over the video's time in seconds:

- a strip of frame thumbnails decoded from the source at a few timestamps (a note instead
  when the source has moved);
- the cosine self-similarity matrix of the features (shots are bright squares, repeats
  bright off-diagonal blocks, a static stretch one flat square);
- a timeline coloured by the first three principal components (RGB);
- the frame-to-frame feature change (1 - cosine similarity), its peaks marked: likely cuts.

Spatial maps are averaged over their positions and clip windows over their frames before
any of this. :func:`similarity`, :func:`changes` and :func:`peaks` are the numbers the
picture shows. matplotlib comes with the ``tdvideo[plot]`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError, VideoError, show_path
from .writers import Features, load

__all__ = ["changes", "describe", "peaks", "plot", "similarity", "vectors"]

THUMBNAILS = 6


def vectors(features: Features) -> tuple[np.ndarray, np.ndarray]:
    """One vector per timestep ``(T, D)`` and its time in seconds ``(T,)``: spatial maps
    averaged over their positions, tokens over the sequence, clip windows over their frames
    (time: the window's middle)."""
    array = np.asarray(features.array, dtype=np.float64)
    times = np.asarray(features.timestamps, dtype=np.float64)
    if times.ndim == 2:  # clip windows: a window's time is its middle
        if features.metadata.get("features_per") != "window":
            array = array.mean(axis=1)  # per-frame features in a window: their mean
        times = times.mean(axis=1)
    if array.ndim == 3:  # tokens (N, D): their mean
        array = array.mean(axis=1)
    elif array.ndim > 3:  # a map (C, H, W ...): the mean over its positions
        array = array.reshape(len(array), array.shape[1], -1).mean(axis=2)
    return array, times


def similarity(x: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows of ``x`` ``(T, D)``: ``(T, T)`` in [-1, 1]."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def changes(x: np.ndarray) -> np.ndarray:
    """``1 - cos(x[t], x[t + 1])`` for each step: ``(T - 1,)``, 0 for identical rows."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return 1.0 - np.clip((unit[1:] * unit[:-1]).sum(axis=1), -1.0, 1.0)


def peaks(change: np.ndarray, *, factor: float = 4.0, floor: float = 0.01) -> np.ndarray:
    """Steps whose change stands out, the largest of their neighbours: above ``factor`` times
    the median change, a tenth of the largest, and ``floor`` (a cosine of 0.99 is no cut).
    Indices into ``change``."""
    if len(change) == 0:
        return np.zeros(0, dtype=int)
    level = max(factor * float(np.median(change)), 0.1 * float(change.max()), floor)
    padded = np.concatenate([[-np.inf], change, [-np.inf]])
    local = (change >= padded[:-2]) & (change > padded[2:])
    return np.flatnonzero(local & (change > level))


def _principal_colours(x: np.ndarray) -> np.ndarray:
    """Each row's first three principal components, scaled to [0, 1] RGB."""
    centred = x - x.mean(axis=0)
    if len(x) < 2 or not np.any(centred):
        return np.full((len(x), 3), 0.5)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = centred @ vt[:3].T
    pcs = np.pad(pcs, ((0, 0), (0, 3 - pcs.shape[1])))
    low, high = pcs.min(axis=0), pcs.max(axis=0)
    return (pcs - low) / np.where(high > low, high - low, 1.0)


def _thumbnails(source: str | None, times: np.ndarray) -> tuple[list[tuple[float, np.ndarray]], str | None]:
    """Frames of the source near a few of ``times``, or why there are none."""
    from .video import read_video

    if not source or not Path(source).is_file():
        return [], f"source not found ({show_path(source or '?')}): no thumbnails"
    wanted = np.linspace(times[0], times[-1], min(THUMBNAILS, len(times))) if len(times) else []
    try:
        clip = read_video(source, size=96)
    except VideoError as exc:
        return [], f"source unreadable ({exc}): no thumbnails"
    stamps = np.asarray(clip.timestamps)
    frames = clip.frames.permute(0, 2, 3, 1).numpy()
    return [(float(stamps[i]), frames[i]) for i in (int(np.abs(stamps - t).argmin()) for t in wanted)], None


def plot(features: Features | str | Path, output: str | Path | None = None) -> Path:
    """Draw ``features`` (or the output at that path) to a PNG; return its path (default:
    beside the features, ``<name>.png``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("tdvideo show needs matplotlib: pip install 'tdvideo[plot]'") from None
    where: Path | None = None
    if not isinstance(features, Features):
        where = Path(features)
        features = load(where)
    if output is None:
        if where is None:
            raise UsageError("plot(features) of features in memory needs output=PATH")
        output = where.with_suffix("").with_suffix(".png") if where.suffix else where.with_suffix(".png")
    x, times = vectors(features)
    if len(x) == 0:
        raise UsageError("no timesteps to draw")
    sim = similarity(x)
    change = changes(x)
    cuts = peaks(change)
    source = (features.metadata.get("source") or {}).get("path")
    thumbs, note = _thumbnails(source, times)

    fig = plt.figure(figsize=(10, 11), constrained_layout=True)
    grid = fig.add_gridspec(4, max(1, THUMBNAILS), height_ratios=[1.1, 5, 0.6, 1.6])
    title = f"{Path(source).name if source else 'features'}: {features.metadata.get('model', '?')}, {len(x)} steps, {x.shape[1]}-d"
    fig.suptitle(title)
    for i, (t, frame) in enumerate(thumbs):
        ax = fig.add_subplot(grid[0, i])
        ax.axis("off")
        ax.imshow(frame)
        ax.set_title(f"{t:.2f} s", fontsize=8)
    if note:
        ax = fig.add_subplot(grid[0, :])
        ax.axis("off")
        ax.text(0.5, 0.5, note, fontsize=9, ha="center", va="center")
    span = (float(times[0]), float(times[-1]) if len(times) > 1 else float(times[0]) + 1.0)
    ax = fig.add_subplot(grid[1, :])
    low = float(sim.min())  # the scale spans what is there: near-identical features still show their structure
    image = ax.imshow(sim, cmap="magma", vmin=low if low < 1.0 else 0.0, vmax=1.0, extent=(*span, span[1], span[0]), aspect="auto")
    ax.set_title("cosine self-similarity")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("time (s)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax = fig.add_subplot(grid[2, :])
    ax.imshow(_principal_colours(x)[None], aspect="auto", extent=(*span, 0, 1))
    ax.set_yticks([])
    ax.set_title("first three principal components as RGB", fontsize=9)
    ax = fig.add_subplot(grid[3, :])
    mid = (times[1:] + times[:-1]) / 2
    ax.plot(mid, change, lw=1)
    ax.plot(mid[cuts], change[cuts], "rv", label=f"{len(cuts)} likely cuts")
    ax.set_xlim(*span)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("1 - cos")
    ax.set_title("change from one step to the next")
    ax.legend(loc="upper right", fontsize=8)
    output = Path(output)
    fig.savefig(output, dpi=80)
    plt.close(fig)
    return output


def describe(features: Features) -> dict[str, Any]:
    """The numbers the picture shows, for a script: the cut times among them."""
    x, times = vectors(features)
    change = changes(x)
    mid = (times[1:] + times[:-1]) / 2
    return {"steps": len(x), "cuts": [float(mid[i]) for i in peaks(change)]}
