"""Parameter and multiply-add counts, without running the network (meta tensors)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from vgglocal.models.vgg import STRIDE, VGG

__all__ = ["summarize"]


def summarize(hparams: dict[str, Any], image: int | None = None) -> dict[str, Any]:
    """``params`` and ``macs`` (conv multiply-adds, FCs included) for one ``image``-sized input."""
    with torch.device("meta"):
        model = VGG(**hparams)
    crop = model.crop
    side = max(image or crop, crop)
    params = sum(p.numel() for p in model.parameters())
    x = torch.empty(1, 3, side, side, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.maps(x)
    return {
        **model.hparams,
        "params": params,
        "macs": counter.get_total_flops() // 2,
        "image": side,
        "map": side // STRIDE - crop // STRIDE + 1,
    }
