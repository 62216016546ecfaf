"""What ``tdvideo models`` shows, without importing torch or torchvision.

Describing torchvision's 80 classifiers and 9 video models (their feature shapes, on the meta device)
takes seconds of imports and model construction. The description is data that only
changes with torchvision's version, so it is computed once and stored:

- ``catalog.json`` beside this module, made for the torchvision version tdvideo is
  tested with (``python -m tdvideo.models.catalog`` writes it; a test checks it against
  the live computation);
- for another installed version, a catalog computed on first use and kept in
  ``$XDG_CACHE_HOME/tdvideo/`` (``~/.cache/tdvideo/``).

timm's pretrained tags (over 1,800) are described the same way: ``timm_catalog.json``, made
for the timm version tdvideo is tested with (``python -m tdvideo.models._catalog --timm``),
lists each tag with its feature shape (or why it has none), preprocessing and the sizes it
takes, so ``tdvideo models 'timm:*clip*'`` answers without importing timm or torch; with
another timm version, each tag is described on first use and kept in the user cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from .._system import file_mode
from .._types import Pool
from ._preprocessing import Preprocessing
from ._registry import ModelEntry

__all__ = [
    "build_catalog", "build_timm_catalog", "describe_model", "describe_row", "load_catalog", "save_descriptions", "shipped_timm", "torchvision_names",
]

SHIPPED = Path(__file__).with_name("catalog.json")
SHIPPED_TIMM = Path(__file__).with_name("timm_catalog.json")


def _torchvision_version() -> str | None:
    try:
        return metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return None


def _user_cache(name: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "tdvideo" / name


def _user_catalog(version: str) -> Path:
    return _user_cache(f"models-torchvision-{version}.json")


_loaded: dict[str, Any] | None = None


def load_catalog() -> dict[str, Any]:
    """The catalog for the installed torchvision: ``{"torchvision": version, "models": {name: row}}``.

    Shipped or cached when possible, else computed (and cached for next time). Empty
    when torchvision is not installed.
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    version = _torchvision_version()
    if version is None:
        _loaded = {"torchvision": None, "models": {}}
        return _loaded
    for path in (SHIPPED, _user_catalog(version)):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("torchvision") == version:
            _loaded = data
            return data
    _loaded = build_catalog()
    _save(_loaded, _user_catalog(version))
    return _loaded


def _save(data: dict[str, Any], path: Path) -> None:
    """Write ``data`` to ``path`` atomically; a cache that cannot be written is only slower."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        print(f"warning: cannot cache the model catalog in {path.parent}: {exc.strerror or exc}", file=sys.stderr)


def torchvision_names() -> list[str]:
    """Names of torchvision's image classification models."""
    return sorted(load_catalog()["models"])


def build_catalog() -> dict[str, Any]:
    """Describe every torchvision image classifier and video model by building it on the
    meta device (slow)."""
    from ._modules import describe_live
    from ._registry import torchvision_entry
    from ._torchvision import classification_models, clip_len, video_models

    entries = [torchvision_entry(n) for n in classification_models()]
    entries += [torchvision_entry(n, {"kind": "window", "clip_len": clip_len(n)}) for n in video_models()]
    return {"torchvision": _torchvision_version(), "models": {e.name: describe_live(e) for e in entries}}


def describe_row(entry: ModelEntry, pre: Preprocessing, shape: tuple[int, ...] | list[int] | None) -> dict[str, Any]:
    """What ``tdvideo models`` shows of a model (``shape`` None: not known)."""
    return {
        "name": entry.name,
        "feature_shape": list(shape) if shape is not None else None,
        "needs_weights": entry.needs_weights,
        "spatial": entry.spatial,
        "input_size": pre.input_size,
        "description": entry.description,
        "kind": entry.kind,
        "clip_len": entry.clip_len,
    }


def describe_model(name: str, *, pool: Pool | None = None) -> dict[str, Any]:
    """Feature shape and inputs of a model, without building its weights.

    ``{"name", "feature_shape", "needs_weights", "spatial", "input_size", "description",
    "kind", "clip_len", "input_sizes"}`` (``input_sizes``: which frame sizes it takes, in
    words, where its family can say more than ``input_size``); from the registry or the catalog where they know, else from the
    meta device (timm's models: computed once, then kept in the user cache beside the
    torchvision catalog).
    """
    from ._registry import HF_PREFIX, TIMM_PREFIX, _late, model_entry

    if name.startswith(HF_PREFIX) and (example := _late("_hf", "describe")(name)) is not None:
        return {**example, "input_sizes": None}
    if name.startswith(TIMM_PREFIX) and pool is None and (shipped := shipped_timm()) is not None and name in shipped:
        return shipped[name]  # no timm, no torch imported
    entry = model_entry(name)
    pool = pool or entry.default_pool
    if pool in entry.feature_shapes:
        row = describe_row(entry, entry.preprocessing(None), entry.feature_shapes[pool])
    elif (known := load_catalog()["models"].get(name)) is not None and pool == entry.default_pool:
        row = known
    elif name.startswith(TIMM_PREFIX) and pool == entry.default_pool:
        row = _timm_rows().describe(entry)
    else:
        from ._modules import describe_live

        row = describe_live(entry, pool=pool)
    # Which sizes it takes: said by its family, not stored (catalogs made before knew none).
    return {**row, "input_sizes": entry.input_sizes}


class _TimmRows:
    """timm models' rows, computed on the meta device once and kept in the user cache."""

    def __init__(self) -> None:
        self.path = _user_cache(f"models-timm-{metadata.version('timm')}.json")
        try:
            self.rows: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.rows = {}
        self.changed = False

    def describe(self, entry: ModelEntry) -> dict[str, Any]:
        if entry.name not in self.rows:
            from ._modules import describe_live

            try:
                self.rows[entry.name] = describe_live(entry)
            except Exception:  # noqa: BLE001 - a model that cannot run on the meta device (any error): listed without a shape
                self.rows[entry.name] = describe_row(entry, entry.preprocessing(None), None)
            self.changed = True
        return self.rows[entry.name]

    def save(self) -> None:
        if self.changed:
            _save(self.rows, self.path)
            self.changed = False


_timm: _TimmRows | None = None


def _timm_rows() -> _TimmRows:
    global _timm
    if _timm is None:
        _timm = _TimmRows()
    return _timm


_shipped_timm: dict[str, Any] | None = None


def shipped_timm() -> dict[str, Any] | None:
    """The shipped timm catalog's rows (``{"timm:NAME": row}``) when it was made for the
    installed timm, else None (timm missing, another version, or no catalog)."""
    global _shipped_timm
    try:
        findable = importlib.util.find_spec("timm") is not None  # present, without importing it
    except (ImportError, ValueError):
        findable = False
    if not findable:
        return None
    if _shipped_timm is None:
        try:
            version = metadata.version("timm")
            data = json.loads(SHIPPED_TIMM.read_text())
        except (metadata.PackageNotFoundError, OSError, ValueError):
            return None
        if data.get("timm") != version:
            return None
        _shipped_timm = data["models"]
    return _shipped_timm


def build_timm_catalog(*, progress: bool = True) -> dict[str, Any]:
    """Describe every timm pretrained tag (slow: minutes). On the meta device where it can
    be built there, else built for real and run once; a tag that gives no feature vector
    (an encoder without a pooled head) is listed with ``feature_shape`` None and the reason."""
    import timm
    from tqdm import tqdm

    from ..errors import first_line
    from ._modules import describe_live
    from ._registry import TIMM_PREFIX, model_entry

    rows: dict[str, Any] = {}
    for name in tqdm(timm.list_models(pretrained=True), desc="describing timm tags", unit="tag", disable=not progress):
        entry = model_entry(TIMM_PREFIX + name)
        row: dict[str, Any] | None = None
        reason = ""
        for meta in (True, False):
            try:
                row = describe_live(entry, meta=meta)
                break
            except Exception as exc:  # noqa: BLE001 - any model's own failure: tried for real next, then its reason is kept
                reason = first_line(exc)[:200]
        if row is None:
            row = {**describe_row(entry, entry.preprocessing(None), None), "reason": reason}
        rows[entry.name] = {**row, "input_sizes": entry.input_sizes}
    return {"timm": metadata.version("timm"), "models": rows}


def save_descriptions() -> None:
    """Keep what was computed for timm models in the user cache."""
    if _timm is not None:
        _timm.save()


def main() -> None:
    """``python -m tdvideo.models._catalog [--timm]``: write the shipped catalog for the
    installed torchvision (or timm)."""
    if "--timm" in sys.argv[1:]:
        data = build_timm_catalog()
        _save(data, SHIPPED_TIMM)
        unknown = sum(row["feature_shape"] is None for row in data["models"].values())
        print(f"{SHIPPED_TIMM}: {len(data['models'])} timm tags ({unknown} without a feature vector, each with its reason), timm {data['timm']}")
        return
    data = build_catalog()
    _save(data, SHIPPED)
    print(f"{SHIPPED}: {len(data['models'])} torchvision models, torchvision {data['torchvision']}")


if __name__ == "__main__":
    main()
