"""Table 1 as data: the six VGG configurations (``VGG_SPECS``) and the network's stride.

Plain Python, no torch, so that config validation and the command line's ``--help`` can name
the configurations without importing torch; :mod:`vgglocal.models.vgg` builds networks from it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VGGSpec", "VGG_SPECS", "STRIDE", "TORCHVISION_ARCHS"]


@dataclass(frozen=True)
class VGGSpec:
    """Five blocks of (kernel, channels) conv layers, a 2x2 max-pool after each block."""

    blocks: tuple[tuple[tuple[int, int], ...], ...]
    lrn: bool = False  # LRN after the first conv (A-LRN only; Krizhevsky's settings)


def _c3(*channels: int) -> tuple[tuple[int, int], ...]:
    return tuple((3, c) for c in channels)


# Table 1. C adds a 1x1 conv as the third layer of blocks 3, 4 and 5.
VGG_SPECS: dict[str, VGGSpec] = {
    "A": VGGSpec((_c3(64), _c3(128), _c3(256, 256), _c3(512, 512), _c3(512, 512))),
    "A-LRN": VGGSpec((_c3(64), _c3(128), _c3(256, 256), _c3(512, 512), _c3(512, 512)), lrn=True),
    "B": VGGSpec((_c3(64, 64), _c3(128, 128), _c3(256, 256), _c3(512, 512), _c3(512, 512))),
    "C": VGGSpec(
        (
            _c3(64, 64),
            _c3(128, 128),
            _c3(256, 256) + ((1, 256),),
            _c3(512, 512) + ((1, 512),),
            _c3(512, 512) + ((1, 512),),
        )
    ),
    "D": VGGSpec((_c3(64, 64), _c3(128, 128), _c3(256, 256, 256), _c3(512, 512, 512), _c3(512, 512, 512))),
    "E": VGGSpec(
        (_c3(64, 64), _c3(128, 128), _c3(256, 256, 256, 256), _c3(512, 512, 512, 512), _c3(512, 512, 512, 512))
    ),
}

STRIDE = 32  # five 2x2 pools

# torchvision builder name ↔ Table 1 configuration (`vgglocal import-weights --arch`).
TORCHVISION_ARCHS = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}
