"""What ``tdvideo models`` shows, without importing torch or torchvision.

Describing all 80 torchvision classifiers (their feature shapes, on the meta device)
takes seconds of imports and model construction. The description is data that only
changes with torchvision's version, so it is computed once and stored:

- ``catalog.json`` beside this module, made for the torchvision version tdvideo is
  tested with (``python -m tdvideo.models.catalog`` writes it; a test checks it against
  the live computation);
- for another installed version, a catalog computed on first use and kept in
  ``$XDG_CACHE_HOME/tdvideo/`` (``~/.cache/tdvideo/``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from .._system import file_mode
from .._types import Pool

__all__ = ["build_catalog", "describe_model", "load_catalog", "torchvision_names"]

SHIPPED = Path(__file__).with_name("catalog.json")


def _torchvision_version() -> str | None:
    try:
        return metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return None


def _user_catalog(version: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "tdvideo" / f"models-torchvision-{version}.json"


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
    """Describe every torchvision classifier by building it on the meta device (slow)."""
    import torchvision

    from ._modules import describe_live
    from ._registry import torchvision_entry

    names = torchvision.models.list_models(module=torchvision.models)
    return {"torchvision": _torchvision_version(), "models": {n: describe_live(torchvision_entry(n)) for n in names}}


def describe_model(name: str, *, pool: Pool | None = None) -> dict[str, Any]:
    """Feature shape and inputs of a model, without building its weights.

    ``{"name", "feature_shape", "needs_weights", "spatial", "input_size", "description"}``;
    from the registry or the catalog where they know, else from the meta device.
    """
    from ._registry import model_entry

    entry = model_entry(name)
    pool = pool or entry.default_pool
    if pool in entry.feature_shapes:
        pre = entry.preprocessing(None)
        return {
            "name": name,
            "feature_shape": list(entry.feature_shapes[pool]),
            "needs_weights": entry.needs_weights,
            "spatial": entry.spatial,
            "input_size": pre.input_size,
            "description": entry.description,
        }
    row = load_catalog()["models"].get(name)
    if row is not None and pool == entry.default_pool:
        return row
    from ._modules import describe_live

    return describe_live(entry, pool=pool)


def main() -> None:
    """``python -m tdvideo.models.catalog``: write the shipped catalog for the installed torchvision."""
    data = build_catalog()
    _save(data, SHIPPED)
    print(f"{SHIPPED}: {len(data['models'])} torchvision models, torchvision {data['torchvision']}")


if __name__ == "__main__":
    main()
