"""How the networks run at test time: one options object that travels through dense maps,
multi-crop, features, protocol 1 and protocol 2 (the ``eval`` section, resolved), so the same
four settings are not repeated as keywords in every signature (Detectron2's ``cfg.TEST``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from vgglocal.runtime import autocast

__all__ = ["InferenceOptions", "MULTICROP_BATCH"]

# Multi-crop batches count crops, not images: a 5 x 5 grid with mirrors is 50 crops of one
# image at one scale, so a forward pass takes this many times ``batch_size`` crops.
MULTICROP_BATCH = 8


@dataclass(frozen=True)
class InferenceOptions:
    """Where and how the networks run.

    Attributes:
        flip: also the mirror images (dense maps, multi-crop, features; section 3.2).
        device: where the networks are; images are sent there.
        batch_size: images per forward pass (mirrors ride along in the same pass).
        precision: fp32 | bf16 (autocast; results come back in float32).
        channels_last: the nets' weights in channels-last memory format (``eval.channels_last``).
        compile: the nets through ``torch.compile`` (``eval.compile``).
        fold_bn: batch norm folded into the convolutions before it (``eval.fold_bn``).
    """

    flip: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 8
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    fold_bn: bool = True

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on :attr:`device` for ``precision: bf16``, else nothing."""
        return autocast(self.device, self.precision)
