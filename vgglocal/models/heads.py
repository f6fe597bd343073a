"""Heads held as convolutions: FC6 (kernel crop/32), FC7 and FC8 (1x1).

The classification head ends in ``classes`` outputs; the box head (Appendix A) in 4 (SCR:
one box shared by all classes) or 4 per class (PCR). Both return raw maps ``[N, out, h, w]``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

__all__ = ["FCHead", "box_outputs", "select_class_boxes"]


class FCHead(nn.Sequential):
    """FC6 → ReLU → dropout → FC7 → ReLU → dropout → FC8, as convolutions."""

    def __init__(self, in_channels: int, hidden: int, outputs: int, kernel: int, dropout: float = 0.5) -> None:
        super().__init__(
            OrderedDict(
                fc6=nn.Conv2d(in_channels, hidden, kernel),
                relu6=nn.ReLU(inplace=True),
                drop6=nn.Dropout(dropout),
                fc7=nn.Conv2d(hidden, hidden, 1),
                relu7=nn.ReLU(inplace=True),
                drop7=nn.Dropout(dropout),
                fc8=nn.Conv2d(hidden, outputs, 1),
            )
        )
        self.fc6: nn.Conv2d
        self.fc7: nn.Conv2d
        self.fc8: nn.Conv2d


def box_outputs(kind: str, num_classes: int) -> int:
    """Number of box-head outputs: 4 for SCR, 4 per class for PCR."""
    if kind == "scr":
        return 4
    if kind == "pcr":
        return 4 * num_classes
    raise ValueError(f"unknown regression {kind!r}; choose scr or pcr")


def select_class_boxes(boxes: Tensor, labels: Tensor) -> Tensor:
    """Pick each sample's class box from a box map.

    Args:
        boxes (Tensor[N, 4 or 4C, ...]): box-head output (SCR or PCR).
        labels (Tensor[N] or Tensor[N, K]): class indices.

    Returns:
        Tensor[N, 4, ...] (or [N, K, 4, ...]): the four parameters of each label; SCR maps are
        shared by every class.
    """
    n = boxes.shape[0]
    per_class = boxes.reshape(n, -1, 4, *boxes.shape[2:])
    if per_class.shape[1] == 1:  # SCR
        if labels.ndim == 2:
            return per_class.expand(n, labels.shape[1], *per_class.shape[2:])
        return per_class[:, 0]
    squeeze = labels.ndim == 1
    idx = labels.reshape(n, -1)
    idx = idx.reshape(*idx.shape, *([1] * (per_class.ndim - 2))).expand(-1, -1, *per_class.shape[2:])
    out = torch.gather(per_class, 1, idx)
    return out[:, 0] if squeeze else out
