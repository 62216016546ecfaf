"""Models by name, with the preprocessing that belongs to their weights.

``_registry`` (names, entries; no torch), ``_catalog`` (what ``tdvideo models`` lists,
stored), ``_preprocessing``, ``_backbone`` (a model ready to run), ``_modules`` (the torch
side: normalization, weights files, shapes on the meta device, layers, windows),
``_builtin``, ``_torchvision`` and ``_timm`` (the families; plugins come through entry
points). The modules are internal; their public names are re-exported here.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._backbone import Backbone, build_backbone, resolve_backbone
    from ._builtin import ColorHistogram, Thumbnail
    from ._catalog import describe_model
    from ._modules import Normalize, load_state_dict_file
    from ._preprocessing import Preprocessing
    from ._registry import DEFAULT_MODEL, ModelEntry, custom_model, layer_names, list_models, model_entry, register_model

# Each module and the public names it defines.
_MODULES = {
    "_backbone": ("Backbone", "build_backbone", "resolve_backbone"),
    "_modules": ("Normalize", "load_state_dict_file"),
    "_builtin": ("ColorHistogram", "Thumbnail"),
    "_catalog": ("describe_model",),
    "_preprocessing": ("Preprocessing",),
    "_registry": ("DEFAULT_MODEL", "ModelEntry", "custom_model", "layer_names", "list_models", "model_entry", "register_model"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _MODULES, globals())
