"""Models by name, with the preprocessing that belongs to their weights.

``_registry`` (names, entries; no torch), ``_catalog`` (what ``tdvideo models`` lists,
stored), ``_preprocessing``, ``_backbone`` (a model ready to run), ``_modules`` (the torch
side: normalization, weights files, shapes on the meta device), ``_builtin`` and
``_torchvision`` (the families). The modules are internal; their public names are
re-exported here.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._backbone import Backbone, build_backbone, resolve_backbone
    from ._builtin import ColorHistogram, Thumbnail
    from ._catalog import describe_model
    from ._modules import Normalize, load_state_dict_file
    from ._preprocessing import Preprocessing
    from ._registry import DEFAULT_MODEL, ModelEntry, list_models, model_entry, register_model

_NAMES = {
    "Backbone": "_backbone",
    "Normalize": "_modules",
    "build_backbone": "_backbone",
    "load_state_dict_file": "_modules",
    "resolve_backbone": "_backbone",
    "ColorHistogram": "_builtin",
    "Thumbnail": "_builtin",
    "describe_model": "_catalog",
    "Preprocessing": "_preprocessing",
    "DEFAULT_MODEL": "_registry",
    "ModelEntry": "_registry",
    "list_models": "_registry",
    "model_entry": "_registry",
    "register_model": "_registry",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES, globals())
__all__ = sorted(_NAMES)
