"""Find the moments of a folder of features that match a sentence (or an image).

:func:`search` encodes the query with the tower that matches the features' model - the
text tower of the same image-text model for a sentence (Hugging Face CLIP, SigLIP and X-CLIP
features, and timm's OpenAI CLIP tags through the same weights' Hugging Face release), the
very model and preprocessing for an image - and ranks every timestep of every output under
the folder by cosine similarity to it. The folder is read one output at a time, as
:func:`~tdvideo.export.scan_dir` reads it (damaged outputs named, never silently left out),
and only the best ``k`` rows are kept: memory holds one video's features whatever the
folder's size.
"""

from __future__ import annotations

import heapq
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import ModelError, UsageError, show_path
from .export import DamagedOutputsError, scan_dir
from .storage import Url
from .writers import Features

__all__ = ["Moment", "cosines", "query_vector", "search", "top_moments"]

OnDamaged = Literal["raise", "skip"]

# timm's OpenAI CLIP tags and the Hugging Face release of the same weights, whose text
# tower matches their image tower.
_TIMM_TEXT = {
    "timm:vit_base_patch32_clip_224.openai": "openai/clip-vit-base-patch32",
    "timm:vit_base_patch16_clip_224.openai": "openai/clip-vit-base-patch16",
    "timm:vit_large_patch14_clip_224.openai": "openai/clip-vit-large-patch14",
    "timm:vit_large_patch14_clip_336.openai": "openai/clip-vit-large-patch14-336",
}
# What has to be the same in every output searched: the features must be in one space.
_SAME = ("model", "weights", "pool", "layer", "feature_shape")


@dataclass(frozen=True)
class Moment:
    """A timestep that matches the query: ``video`` (the output's name under the folder), its
    ``time`` in seconds (a window: its first frame's, ``end`` its last's), its ``row`` in the
    output, and the cosine ``score``."""

    video: str
    time: float
    end: float | None
    row: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search(
    out: str | Path | Url,
    query: str | None = None,
    *,
    image: str | Path | None = None,
    vector: Any = None,
    k: int = 10,
    on_damaged: OnDamaged = "raise",
) -> list[Moment]:
    """The ``k`` timesteps under ``out`` most like the sentence ``query`` (or the picture
    ``image``, or an embedding ``vector`` of your own, in the features' space), best first.

    Raises :class:`UsageError` when the query cannot be encoded for these features (a model
    with no text tower: pass ``image=``), when outputs under ``out`` come from different
    models, or ``out`` holds none; :class:`DamagedOutputsError` for an output that cannot be
    read, unless ``on_damaged="skip"``.
    """
    check_query(query, image, vector, k)
    if on_damaged not in ("raise", "skip"):
        raise UsageError(f"on_damaged must be 'raise' or 'skip', got {on_damaged!r}")
    best: list[tuple[float, int, Moment]] = []  # a min-heap of the k best so far
    first: dict[str, Any] | None = None
    unit: np.ndarray | None = None
    seen = 0
    for item in scan_dir(out):
        if not isinstance(item, tuple):
            if on_damaged == "raise":
                raise DamagedOutputsError(Path(str(out)), [item], what="nothing was searched")
            warnings.warn(item.line(), stacklevel=2)
            continue
        name, features = item
        meta = features.metadata
        if first is None:
            first = meta
            unit = query_vector(meta, query, image=image, vector=vector)
        else:
            differs = [key for key in _SAME if meta.get(key) != first.get(key)]
            if differs:
                raise UsageError(
                    f"{show_path(name)}: its features are not comparable with the others' "
                    f"(different {', '.join(differs)}): search one model's outputs at a time"
                )
        assert unit is not None
        for moment in top_moments(features, cosines(features, unit, name=name), k=k, video=name):
            if len(best) == k and moment.score <= best[0][0]:
                break  # best first: the rest are no better
            entry = (moment.score, -seen - moment.row, moment)  # ties: the earlier output and row first
            heapq.heappush(best, entry) if len(best) < k else heapq.heapreplace(best, entry)
        seen += len(features.array)
    if first is None:
        raise UsageError(f"{show_path(str(out))}: holds no tdvideo outputs to search")
    return [moment for _, _, moment in sorted(best, key=lambda e: (-e[0], -e[1]))]


def query_vector(meta: dict[str, Any], query: str | None = None, *, image: str | Path | None = None, vector: Any = None) -> np.ndarray:
    """One query - a sentence, a picture or a vector - as a unit vector in the space of the
    features that ``meta`` (an output's metadata) describes."""
    check_query(query, image, vector, 1)
    return _unit(vector if vector is not None else _encode(meta, query, image))


def top_moments(features: Features, scores: np.ndarray, *, k: int, video: str = "") -> list[Moment]:
    """The ``k`` rows of one output with the highest ``scores`` (its :func:`cosines` to a
    query), best first (ties: the earlier row first), named ``video``. Rows holding NaN or
    inf are none of them."""
    _check_k(k)
    finite = np.flatnonzero(np.isfinite(scores))
    rows = finite[_top(scores[finite], k)]
    rows = rows[np.lexsort((rows, -scores[rows]))]
    moments = []
    for row in rows.tolist():
        times = np.atleast_1d(features.timestamps[row])
        moments.append(Moment(video, float(times[0]), float(times[-1]) if times.size > 1 else None, row, float(scores[row])))
    return moments


def cosines(features: Features, unit: np.ndarray, *, name: str = "features") -> np.ndarray:
    """The cosine similarity of every row of ``features`` (flattened) to the unit vector
    ``unit``: ``(T,)``, 0 for a row of zeros."""
    rows = features.array.reshape(len(features.array), -1).astype(np.float32, copy=False)
    if rows.shape[1] != unit.shape[0]:
        raise UsageError(f"{show_path(name)}: {rows.shape[1]} values per row, the query has {unit.shape[0]}")
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    return rows @ unit / np.where(norms > 0, norms, 1.0)


def check_query(query: str | None, image: str | Path | None, vector: Any, k: int) -> None:
    """:class:`UsageError` unless there is exactly one query, it is not blank, and ``k`` is a
    positive integer: what can be told before any output is read."""
    if sum(q is not None for q in (query, image, vector)) != 1:
        raise UsageError("search needs one query: a text, an image or a vector")
    if query is not None and not query.strip():
        raise UsageError("the text query is empty")
    _check_k(k)


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UsageError(f"k must be a positive integer, got {k!r}")


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """The rows of the ``k`` highest scores (in no order)."""
    if len(scores) <= k:
        return np.arange(len(scores))
    return np.argpartition(scores, -k)[-k:]


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    if not vector.size or not np.isfinite(vector).all():
        raise UsageError(f"the query vector must be finite numbers, got {vector.size} value(s) that are not")
    norm = float(np.linalg.norm(vector))
    if norm == 0:
        raise UsageError("the query is a zero vector: it has no direction to compare features with")
    return vector / norm


def _encode(meta: dict[str, Any], query: str | None, image: str | Path | None) -> np.ndarray:
    """The query as a vector in the space of features described by ``meta``."""
    model = str(meta.get("model"))
    if meta.get("random_weights"):
        raise UsageError(f"features of {model} were extracted with random weights: they carry no meaning to search")
    if image is not None:
        return _encode_image(meta, image)
    assert query is not None
    from .models._registry import HF_PREFIX

    weights = meta.get("weights")
    if model.startswith(HF_PREFIX) and meta.get("hf_model_type") in ("clip", "siglip", "siglip2", "xclip") and meta.get("pool") == "avg":
        from .models._hf import text_tower

        return text_tower(str(weights), str(meta["hf_model_type"])).encode([query])[0].numpy()
    if model in _TIMM_TEXT and meta.get("embedding") == "image-text":
        from .models._hf import text_tower

        return text_tower(_TIMM_TEXT[model], "clip").encode([query])[0].numpy()
    raise UsageError(
        f"features of {model} have no text tower to encode a sentence with (image-text models do: hf: CLIP, SigLIP "
        f"and X-CLIP, and timm's OpenAI CLIP tags); search them with an image instead (--image)"
    )


def _encode_image(meta: dict[str, Any], image: str | Path) -> np.ndarray:
    """``image`` through the model and preprocessing the features were extracted with."""
    from .extract import Extractor

    if meta.get("features_per") == "window":
        raise UsageError(f"features of {meta.get('model')} are per window of frames: a single image is no window")
    resize = meta.get("resize") or {}
    try:
        extractor = Extractor(
            model=meta.get("model"), weights=meta.get("weights") or "none", pool=meta.get("pool"), layer=meta.get("layer"),
            size=resize.get("size"), crop=resize.get("crop"), interpolation=resize.get("interpolation"),
        )
    except ModelError as exc:
        raise UsageError(f"cannot rebuild the features' model to encode the image: {exc}") from None
    features = extractor.extract(image)
    if len(features.array) == 0:
        raise UsageError(f"{show_path(str(image))}: gave no frame to encode")
    return features.array[0]
