"""Models: the VGG family (Table 1), heads, init schemes, checkpoint I/O.

The names below load on first use (PEP 562 module ``__getattr__``), so that importing a
torch-free submodule such as :mod:`vgglocal.models.specs` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["VGG", "VGG_SPECS", "FCHead", "box_outputs", "select_class_boxes", "build_vgg", "copy_from_net_a", "init_weights"]

_LAZY = {
    "VGG": "vgglocal.models.vgg",
    "VGG_SPECS": "vgglocal.models.specs",
    "FCHead": "vgglocal.models.heads",
    "box_outputs": "vgglocal.models.heads",
    "select_class_boxes": "vgglocal.models.heads",
    "build_vgg": "vgglocal.models.vgg",
    "copy_from_net_a": "vgglocal.models.vgg",
    "init_weights": "vgglocal.models.vgg",
}

if TYPE_CHECKING:
    from vgglocal.models.heads import FCHead, box_outputs, select_class_boxes
    from vgglocal.models.specs import VGG_SPECS
    from vgglocal.models.vgg import VGG, build_vgg, copy_from_net_a, init_weights


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vgglocal.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
