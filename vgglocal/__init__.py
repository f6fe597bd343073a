"""vgglocal: object localisation and detection with very deep VGG ConvNets.

Reproduces Appendix A of Simonyan & Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition" (ICLR 2015), with the paper's classification stack under it.

``load_model``, ``Predictor`` and ``FeatureExtractor`` are imported on first use (PEP 562 module ``__getattr__``),
so ``import vgglocal`` and the command line's ``--help`` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# albumentations asks PyPI for its latest version when imported (a network call whose DNS
# lookup its 2 s timeout does not cover) unless this is set (albumentations/__init__.py,
# check_version.py). Set before any vgglocal module imports it; inherited by the loader
# workers and every subprocess. A user's own setting wins.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
__all__ = ["load_model", "Predictor", "FeatureExtractor", "__version__"]

# public name -> module that defines it
_LAZY = {
    "load_model": "vgglocal.models.io",
    "Predictor": "vgglocal.inference.predictor",
    "FeatureExtractor": "vgglocal.inference.extractor",
}

if TYPE_CHECKING:  # for type checkers and IDEs; not executed
    from vgglocal.inference.extractor import FeatureExtractor
    from vgglocal.inference.predictor import Predictor
    from vgglocal.models.io import load_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'vgglocal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
