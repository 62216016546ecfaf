"""One picture of a video's features: do they make sense?

:func:`plot` (``tdvideo show OUT/clip``) draws, over the video's time in seconds:

- a strip of frame thumbnails decoded from the source at a few timestamps (a note instead
  when the source has moved);
- the cosine self-similarity matrix of the features (shots are bright squares, repeats
  bright off-diagonal blocks, a static stretch one flat square);
- a timeline coloured by the first three principal components (RGB);
- the frame-to-frame feature change (1 - cosine similarity), its peaks marked: likely cuts;
- given a query (a sentence, a picture or a vector, as ``tdvideo search`` takes), each
  step's cosine similarity to it, its best ``k`` moments marked by rank.

Spatial maps are averaged over their positions and clip windows over their frames before
any of this. :func:`similarity`, :func:`changes` and :func:`peaks` are the numbers the
picture shows. matplotlib comes with the ``tdvideo[plot]`` extra.

Any output, however long: past :data:`MAX_BINS` steps, consecutive steps are pooled into
at most that many bins (each the mean of its steps) for the matrix and the timeline, and
the change curve, computed on every step, shows each bin's largest change, so a cut is
never averaged away; the cuts are found on every step. The picture says when steps were
pooled. Steps holding NaN or inf are left out of every number and marked in the picture.
Thumbnails are decoded by seeking to their times, not by decoding the whole source.
"""

from __future__ import annotations

import math
import os
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._files import Leftovers, publish
from .errors import OutputError, UsageError, VideoError, first_line, show_path
from .storage import Url, is_url, location
from .writers import FORMATS, Features, load

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["changes", "describe", "peaks", "plot", "similarity", "vectors"]

THUMBNAILS = 6
# The matrix is drawn about 650 pixels a side, fewer than this; its memory grows with bins²
# (drawing it takes matplotlib about 75 MB at 1000 bins, 165 MB at 1500).
MAX_BINS = 1000
# Rows are worked on in blocks of about this many bytes (as float64), so that no
# temporary grows with the video's length.
BLOCK_BYTES = 8 * 2**20
# The colour range of the matrix spans at least this much below 1: a 4e-5 spread of
# near-identical features is shown as the near-uniform brightness it is, not as structure.
SIMILARITY_SPAN = 0.01
# A principal component reaches full colour at this fraction of the rows' mean norm (or at
# the largest component, when larger): variation far below it stays near grey.
COLOUR_SPREAD = 0.1
BAD_COLOUR = "tab:cyan"  # steps that hold NaN or inf: not a colour of magma
DPI = 80
MAX_MARKED = 50  # a query's best moments marked in the picture: more would be a smear of numbers
# What names an output file rather than being part of the output's own name.
OUTPUT_SUFFIXES = frozenset({".json", *(f".{fmt}" for fmt in FORMATS)})


def vectors(features: Features) -> tuple[np.ndarray, np.ndarray]:
    """One vector per timestep ``(T, D)`` and its time in seconds ``(T,)``: spatial maps
    averaged over their positions, tokens over the sequence, clip windows over their frames
    (time: the window's middle). float64 features stay float64, others become float32:
    a copy in float64 would double the memory a long output takes."""
    array = np.asarray(features.array)
    array = array if array.dtype == np.float64 else array.astype(np.float32, copy=False)
    times = np.asarray(features.timestamps, dtype=np.float64)
    if times.ndim not in (1, 2) or len(times) != len(array):
        raise UsageError(f"{len(array)} rows of features with timestamps of shape {list(times.shape)}: expected one time per row")
    if times.ndim == 2:  # clip windows: a window's time is its middle
        if features.metadata.get("features_per") != "window" and array.ndim > 2:
            array = array.mean(axis=1)  # per-frame features in a window: their mean
        times = times.mean(axis=1)
    if array.ndim == 1:  # one number a step
        array = array[:, None]
    elif array.ndim == 3:  # tokens (N, D): their mean
        array = array.mean(axis=1)
    elif array.ndim > 3:  # a map (C, H, W ...): the mean over its positions
        array = array.reshape(len(array), array.shape[1], -1).mean(axis=2)
    return array, times


def _block_rows(x: np.ndarray) -> int:
    return max(1, BLOCK_BYTES // (8 * max(1, x.shape[1])))


def _unit(block: np.ndarray) -> np.ndarray:
    """Rows of ``block`` as float64 unit vectors: zero rows stay zero, rows holding NaN or
    inf become NaN. Each row is first divided by its largest value, so that no square
    overflows."""
    rows = block.astype(np.float64)
    bad = ~np.isfinite(rows).all(axis=1)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        rows[bad] = np.nan
        scale = np.abs(rows).max(axis=1, keepdims=True, initial=0.0)
        rows /= np.where(scale > 0, scale, 1.0)
        norm = np.sqrt(np.einsum("ij,ij->i", rows, rows))[:, None]
        rows /= np.where(norm > 0, norm, 1.0)
    return rows


def similarity(x: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows of ``x`` ``(T, D)``: ``(T, T)`` in [-1, 1]
    (NaN for a row holding NaN or inf). Memory grows with T²: :func:`plot` passes at most
    :data:`MAX_BINS` rows."""
    unit = _unit(np.asarray(x))
    return np.clip(unit @ unit.T, -1.0, 1.0)


def changes(x: np.ndarray) -> np.ndarray:
    """``1 - cos(x[t], x[t + 1])`` for each step: ``(T - 1,)``, 0 for identical rows, NaN
    next to a row holding NaN or inf. Computed a block of rows at a time: memory beyond
    the result does not grow with T."""
    x = np.asarray(x)
    out = np.empty(max(len(x) - 1, 0), dtype=np.float64)
    rows = _block_rows(x)
    for a in range(0, len(out), rows):
        b = min(len(x), a + rows + 1)  # one row of overlap: the step from block to block
        unit = _unit(x[a:b])
        out[a : b - 1] = 1.0 - np.clip(np.einsum("ij,ij->i", unit[1:], unit[:-1]), -1.0, 1.0)
    return out


def peaks(change: np.ndarray, *, factor: float = 4.0, floor: float = 0.01) -> np.ndarray:
    """Steps whose change stands out, the largest of their neighbours: above ``factor`` times
    the median change, a tenth of the largest, and ``floor`` (a cosine of 0.99 is no cut).
    Indices into ``change``; NaN steps (next to rows holding NaN or inf) are none."""
    change = np.asarray(change, dtype=np.float64)
    known = np.isfinite(change)
    if not known.any():
        return np.zeros(0, dtype=int)
    level = max(factor * float(np.median(change[known])), 0.1 * float(change[known].max()), floor)
    filled = np.where(known, change, -np.inf)  # a step beside a gap can still be a peak
    padded = np.concatenate([[-np.inf], filled, [-np.inf]])
    local = (filled >= padded[:-2]) & (filled > padded[2:])
    return np.flatnonzero(local & (filled > level))


def _finite_rows(x: np.ndarray) -> np.ndarray:
    """Which rows hold only finite numbers, a block at a time."""
    finite = np.empty(len(x), dtype=bool)
    rows = _block_rows(x)
    for a in range(0, len(x), rows):
        finite[a : a + rows] = np.isfinite(x[a : a + rows]).all(axis=1)
    return finite


def _bin_sums(values: np.ndarray, per: int) -> np.ndarray:
    """Sums of ``values`` over consecutive bins of ``per`` (the last may be shorter)."""
    return np.add.reduceat(values, np.arange(0, len(values), per), axis=0)


def _bin_max(values: np.ndarray, per: int) -> np.ndarray:
    """The largest of ``values`` in each bin of ``per`` (NaN only where a bin holds no number)."""
    return np.fmax.reduceat(values, np.arange(0, len(values), per))


def _pool(x: np.ndarray, finite: np.ndarray, per: int) -> np.ndarray:
    """Means of consecutive bins of ``per`` rows (in float64), over their finite rows; NaN
    for a bin with none. Read a block at a time, however long ``x`` is."""
    bins = -(-len(x) // per)
    sums = np.zeros((bins, x.shape[1]))
    counts = np.zeros(bins)
    rows = _block_rows(x)
    for a in range(0, len(x), rows):
        b = min(len(x), a + rows)
        block = x[a:b].astype(np.float64)
        ok = finite[a:b]
        block[~ok] = 0.0
        first, last = a // per, (b - 1) // per
        starts = np.arange(first, last + 1) * per - a
        starts[0] = 0  # a block may begin inside a bin
        sums[first : last + 1] += np.add.reduceat(block, starts, axis=0)
        counts[first : last + 1] += np.add.reduceat(ok.astype(np.float64), starts)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        means = sums / counts[:, None]
    means[~np.isfinite(means).all(axis=1)] = np.nan
    return means


def _principal_colours(x: np.ndarray) -> np.ndarray:
    """Each row's first three principal components as RGB around mid-grey, all three on one
    scale: the largest component, or :data:`COLOUR_SPREAD` of the rows' mean norm when that
    is larger. So three scenes are three colours, while noise on nearly constant features
    stays near grey. Rows holding NaN get :data:`BAD_COLOUR`."""
    from matplotlib.colors import to_rgb

    colours = np.full((len(x), 3), 0.5)
    good = np.isfinite(x).all(axis=1)
    colours[~good] = to_rgb(BAD_COLOUR)
    rows = x[good].astype(np.float64)
    if len(rows) < 2:
        return colours
    top = np.abs(rows).max()
    if top > 0:
        rows /= top  # no overflow in the squares; the colours do not depend on the scale
    centred = rows - rows.mean(axis=0)
    if not np.any(centred):
        return colours
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = centred @ vt[:3].T
    pcs = np.pad(pcs, ((0, 0), (0, 3 - pcs.shape[1])))
    spread = max(float(np.abs(pcs).max()), COLOUR_SPREAD * float(np.linalg.norm(rows, axis=1).mean()))
    colours[good] = 0.5 + 0.5 * pcs / spread
    return colours


def _thumbnails(source: str | None, times: np.ndarray) -> tuple[list[tuple[float, np.ndarray]], str | None]:
    """Frames of the source at a few of ``times`` (each the last frame shown at its time),
    or why there are none. One pass that seeks from one time to the next, so a long
    source is not decoded whole; NumPy frames, so torch (half a gigabyte) is not imported."""
    if not source or (not is_url(source) and not Path(source).is_file()):  # a URL: read it to know
        return [], f"source not found ({show_path(source or '?')}): no thumbnails"
    from .sampling import MAX_FPS, Sampling
    from .video import ReadOptions, read_chunks

    first, last = float(times.min()), float(times.max())
    count = min(THUMBNAILS, len(times)) if (last - first) * MAX_FPS > THUMBNAILS else 1
    frames: list[tuple[float, np.ndarray]] = []
    try:
        if count > 1:
            step = (last - first) / (count - 1)
            sampling = Sampling(fps=1 / step, start=first if first > 0 else None, end=last + step / 2)
        else:
            sampling = Sampling(start=first if first > 0 else None)
        with closing(read_chunks(source, ReadOptions(sampling=sampling, size=96, chunk_frames=1))) as chunks:
            for chunk in chunks:
                frames += zip(chunk.timestamps.tolist(), chunk.frames)
                if len(frames) >= count:
                    break
    except (VideoError, UsageError) as exc:  # shown in the picture, in the thumbnails' place
        return [], f"source unreadable ({first_line(exc)}): no thumbnails"
    return frames[:count], None


@dataclass
class _Picture:
    """What the picture draws: every step's changes and cuts, the matrix and timeline of bins."""

    steps: int
    span: tuple[float, float]  # the first step's time and the last's
    per: int  # steps a bin (1: not pooled)
    bins: np.ndarray  # (B, D) float64: bin means, NaN for bins of no finite step
    bin_times: np.ndarray  # (B,)
    bad_bins: np.ndarray  # (B,) bool: a bin holding a step with NaN or inf
    bad_steps: int
    change: np.ndarray  # (T - 1,) every step
    times: np.ndarray  # (T,) every step's time
    mid: np.ndarray  # (T - 1,) the time of each change
    cuts: np.ndarray  # indices into change


def _measure(x: np.ndarray, times: np.ndarray) -> _Picture:
    finite = _finite_rows(x)
    per = max(1, math.ceil(len(x) / MAX_BINS))
    sizes = _bin_sums(np.ones(len(x)), per)
    change = changes(x)
    return _Picture(
        steps=len(x),
        span=(float(times[0]), float(times[-1])),
        per=per,
        bins=_pool(x, finite, per),
        bin_times=_bin_sums(times, per) / sizes,
        bad_bins=_bin_sums((~finite).astype(np.float64), per) > 0,
        bad_steps=int((~finite).sum()),
        change=change,
        times=times,
        mid=(times[1:] + times[:-1]) / 2,
        cuts=peaks(change),
    )


def _output_beside(where: Path) -> Path:
    """``<name>.png`` beside an output: only an output file's own suffix is dropped, so
    ``clip.v1`` and ``clip.v2`` get ``clip.v1.png`` and ``clip.v2.png``."""
    base = where.with_suffix("") if where.suffix in OUTPUT_SUFFIXES else where
    return base.with_name(base.name + ".png")


def _output_path(output: str | os.PathLike[str] | Url, where: Path | Url | None) -> Path | Url:
    """The PNG ``output`` names: a file, or a folder (one that exists, or a name ending in a
    slash), which then gets ``<name>.png`` as beside the features; or a store's object."""
    if isinstance(output, Url) or is_url(output):
        return location(output)
    text = os.fspath(output)
    if not text.endswith(os.sep) and not Path(text).is_dir():
        return Path(text)
    if not Path(text).is_dir():
        raise UsageError(f"{show_path(text)}: no such folder to write the picture in")
    if where is None:
        raise UsageError(f"{show_path(text)}: a folder; plot(features) of features in memory needs a file name")
    return Path(text) / _output_beside(where).name


def _check_folder(output: Path | Url) -> None:
    if isinstance(output, Url):
        return  # a store has no folders to make: the PUT says whether it can be written
    folder = output.parent
    if not folder.is_dir():
        why = f"{show_path(folder)} is not a folder" if folder.exists() else f"no folder {show_path(folder)} to write it in"
        raise UsageError(f"{show_path(output)}: {why}")


def _save(fig: Figure, output: Path) -> None:
    """Write the PNG through a temporary renamed into place: a kill leaves the old picture
    (or none), and a link or a FIFO under the name is refused, not written through."""
    try:
        Leftovers().remove(output.parent, [output.name])  # temporaries of killed runs of show
        publish(output, lambda fh: fig.savefig(fh, format="png", dpi=DPI))
    except OSError as exc:  # a full disk, a read-only folder: the file, then why
        raise OutputError(f"{show_path(output)}: cannot be written ({exc.strerror or first_line(exc)})") from None


def plot(
    features: Features | str | Path | Url,
    output: str | Path | Url | None = None,
    *,
    query: str | None = None,
    image: str | Path | None = None,
    vector: Any = None,
    k: int = 5,
) -> Path | Url:
    """Draw ``features`` (or the output at that path) to a PNG; return its path (default:
    beside the features, ``<name>.png``: ``OUT/clip.v1`` gets ``OUT/clip.v1.png``).

    With a ``query`` (a sentence), an ``image`` or a ``vector``, the picture also shows each
    step's similarity to it and marks the ``k`` best moments, those :func:`tdvideo.search`
    finds in this output.

    Memory and time stay bounded however long the output (see the module's docstring).
    The PNG is written to a temporary and renamed into place.

    Raises:
        UsageError: no matplotlib, no folder for the PNG, nothing to draw, a query these
            features cannot be compared with (see :func:`tdvideo.search`).
        OutputError: a damaged output (see :func:`~tdvideo.load`; timestamps of NaN), a
            PNG name that is a link, a FIFO or a folder, or a PNG that cannot be written.
    """
    try:
        # A Figure of its own, not pyplot: no backend is switched and no global figure kept
        # for a caller (a notebook) that has its own.
        import matplotlib  # first: a missing package fails here even if a submodule is cached
        import matplotlib.figure
    except ImportError:
        raise UsageError("tdvideo show needs matplotlib: pip install 'tdvideo[plot]'") from None
    asked = any(q is not None for q in (query, image, vector))
    if asked:
        from .moments import check_query

        check_query(query, image, vector, k)
        if k > MAX_MARKED:
            raise UsageError(f"show marks at most {MAX_MARKED} moments, got k={k} (tdvideo search lists any number)")
    where = None if isinstance(features, Features) else location(features) if is_url(features) else Path(features)
    if output is not None:
        output = _output_path(output, where)
        _check_folder(output)  # a slip in the name is told before loading what may be gigabytes
    elif where is not None:
        output = _output_beside(where)
    else:
        raise UsageError("plot(features) of features in memory needs output=PATH")
    features = features if isinstance(features, Features) else load(where)  # type: ignore[arg-type]
    x, times = vectors(features)
    if len(x) == 0 or x.shape[1] == 0:
        raise UsageError(f"{show_path(where or 'features')}: nothing to draw ({x.shape[0]} steps of {x.shape[1]} numbers)")
    if not np.isfinite(times).all():
        raise OutputError(f"{show_path(where or 'features')}: timestamps hold NaN or inf; nothing to draw them against")
    found = _query(features, times, query=query, image=image, vector=vector, k=k) if asked else None
    picture = _measure(x, times)
    source = _text(features.metadata.get("source"), "path")
    thumbs, note = _thumbnails(source, times)
    note = _label(note) if note is not None else None
    fig = matplotlib.figure.Figure(figsize=(10, 11 if found is None else 13), layout="constrained")
    _draw(fig, picture, thumbs, note, title=_title(features, picture, x.shape[1], source), found=found)
    _save(fig, output)
    return output


@dataclass
class _Found:
    """A query's similarity to every step, and its best moments."""

    label: str
    scores: np.ndarray  # (T,): NaN for a step holding NaN or inf
    best: list[tuple[float, float]]  # (time, score) of the best moments, best first


def _query(features: Features, times: np.ndarray, *, query: str | None, image: str | Path | None, vector: Any, k: int) -> _Found:
    from .moments import cosines, query_vector, top_moments

    scores = cosines(features, query_vector(features.metadata, query, image=image, vector=vector))
    found = top_moments(features, scores, k=k)
    label = f"\u201c{query}\u201d" if query is not None else Path(image).name if image is not None else "the vector"
    return _Found(_label(label[:80]), scores, [(float(times[m.row]), m.score) for m in found])


def _draw_query(ax: Axes, p: _Picture, found: _Found) -> None:
    """Each step's similarity to the query (each bin's largest, when pooled) and its best
    moments, numbered by rank."""
    if p.per == 1:
        ax.plot(p.times, found.scores, lw=1, color="tab:green")
    else:
        ax.plot(p.bin_times, _bin_max(found.scores, p.per), lw=1, color="tab:green")
    for rank, (t, score) in enumerate(found.best, 1):
        ax.plot(t, score, "k^")
        ax.annotate(str(rank), (t, score), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=8)
    start, end = p.span
    ax.set_xlim(*((start, end) if end > start else (start - 0.5, start + 0.5)))
    ax.margins(y=0.2)  # room for the ranks above the best
    ax.ticklabel_format(useOffset=False)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("cosine")
    pooled = f" (the largest of each {p.per:,})" if p.per > 1 else ""
    ax.set_title(f"similarity to {found.label}{pooled}; its {len(found.best)} best moments numbered")


def _text(record: object, key: str) -> str | None:
    """``record[key]`` when the metadata holds a string there: metadata is a stranger's file."""
    value = record.get(key) if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def _label(text: str) -> str:
    """``text`` as matplotlib must get it: a file name's undecodable bytes and control
    characters escaped, and ``$`` escaped (it would start mathtext)."""
    return show_path(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")).replace("$", r"\$")


def _title(features: Features, picture: _Picture, dims: int, source: str | None) -> str:
    model = _label(str(features.metadata.get("model", "?"))[:60])
    lines = [f"{_label(Path(source).name) if source else 'features'}: {model}, {picture.steps:,} steps, {dims}-d"]
    if picture.per > 1:
        lines.append(f"{picture.steps:,} steps pooled into {len(picture.bins):,} bins of {picture.per:,}")
    if picture.bad_steps:
        lines.append(f"{picture.bad_steps:,} of {picture.steps:,} steps hold NaN or inf: left out, marked cyan")
    return "\n".join(lines)


def _draw(fig: Figure, p: _Picture, thumbs: list[tuple[float, np.ndarray]], note: str | None, *, title: str, found: _Found | None = None) -> None:
    from matplotlib import colormaps
    from matplotlib.ticker import StrMethodFormatter

    ratios = [1.1, 5, 0.6, 1.6] + ([1.6] if found is not None else [])
    grid = fig.add_gridspec(len(ratios), max(1, THUMBNAILS), height_ratios=ratios)
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
    start, end = p.span
    span = (start, end) if end > start else (start - 0.5, start + 0.5)  # one step, or one time for all

    sim = similarity(p.bins)
    pooled = f" of bins of {p.per:,} steps" if p.per > 1 else ""
    ax = fig.add_subplot(grid[1, :])
    low = float(np.nanmin(sim)) if np.isfinite(sim).any() else 0.0
    vmin = min(low, 1.0 - SIMILARITY_SPAN)  # what is there, but never a spread of noise stretched over the map
    cmap = colormaps["magma"].with_extremes(bad=BAD_COLOUR)
    image = ax.imshow(sim, cmap=cmap, vmin=vmin, vmax=1.0, extent=(*span, span[1], span[0]), aspect="auto")
    ax.set_title(f"cosine self-similarity{pooled}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("time (s)")
    ax.ticklabel_format(useOffset=False)
    decimals = max(1, math.ceil(-math.log10(1.0 - vmin)) + 1)
    fig.colorbar(image, ax=ax, shrink=0.8, format=StrMethodFormatter(f"{{x:.{decimals}f}}"))  # real values, no offset

    ax = fig.add_subplot(grid[2, :])
    ax.imshow(_principal_colours(p.bins)[None], aspect="auto", extent=(*span, 0, 1), interpolation="nearest")
    ax.set_yticks([])
    ax.set_title(f"first three principal components{pooled} as RGB (grey: no variation)", fontsize=9)

    ax = fig.add_subplot(grid[3, :])
    if p.per == 1:
        ax.plot(p.mid, p.change, lw=1)
        cuts = p.cuts
    else:  # each bin's largest change: a cut shows at full height, however many steps a bin holds
        starts = np.arange(0, len(p.change), p.per)
        with np.errstate(invalid="ignore"):
            ax.plot(np.add.reduceat(p.mid, starts) / np.diff(np.append(starts, len(p.change))), _bin_max(p.change, p.per), lw=1)
        # One marker a bin (its largest cut): the count in the legend is every cut.
        order = p.cuts[np.argsort(-p.change[p.cuts], kind="stable")]
        _, first = np.unique(order // p.per, return_index=True)
        cuts = np.sort(order[first])
    ax.plot(p.mid[cuts], p.change[cuts], "rv", label=f"{len(p.cuts):,} likely cuts")
    if p.bad_steps:
        ax.fill_between(
            p.bin_times,
            0,
            1,
            where=p.bad_bins,
            step="mid",
            color=BAD_COLOUR,
            alpha=0.4,
            transform=ax.get_xaxis_transform(),
            label="NaN or inf",
        )
    ax.set_xlim(*span)
    ax.ticklabel_format(useOffset=False)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("1 - cos")
    ax.set_title("change from one step to the next" + (f" (the largest of each {p.per:,})" if p.per > 1 else ""))
    ax.legend(loc="upper right", fontsize=8)
    if found is not None:
        _draw_query(fig.add_subplot(grid[4, :]), p, found)


def describe(features: Features) -> dict[str, Any]:
    """The numbers the picture shows, for a script: the cut times among them (found on
    every step, however long the output), and how many steps hold NaN or inf."""
    x, times = vectors(features)
    change = changes(x)
    mid = (times[1:] + times[:-1]) / 2
    return {"steps": len(x), "cuts": [float(mid[i]) for i in peaks(change)], "non_finite": int((~_finite_rows(x)).sum())}
