"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package lists its public names and the private module each lives in; a name is
imported when first used. So ``import tdvideo`` and ``tdvideo --help`` never load torch,
and a decoding worker that imports ``tdvideo.video.reader`` loads only PyAV and NumPy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(
    package: str, modules: Mapping[str, Sequence[str]], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``.

    ``modules`` maps each ``.module`` of the package to the public names it defines.
    Each name is looked up once; after that it is a plain attribute of the package.
    """
    owner = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = owner.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *owner})

    return __getattr__, __dir__, sorted(owner)
