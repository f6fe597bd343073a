"""Heads held as convolutions: FC6 (kernel crop/32), FC7 and FC8 (1x1).

The classification head ends in ``classes`` outputs; the box head (Appendix A) in 4 (SCR:
one box shared by all classes) or 4 per class (PCR). Both return raw maps ``[N, out, h, w]``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["FCHead", "ROW_ALIGN", "box_outputs", "select_class_boxes"]

ROW_ALIGN = 16  # FCHead.over_rows pads its rows to a multiple of this


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

    def row_weights(self) -> tuple[list[Tensor], bool]:
        """FC6-FC8's weights as matrices ``[out, in]`` (views, no copy) and whether FC6's rows
        are read in channels-last order ((ky, kx, C), when its weight is stored so)."""
        w6 = self.fc6.weight
        channels_last = not w6.is_contiguous() and w6.is_contiguous(memory_format=torch.channels_last)
        m6 = w6.permute(0, 2, 3, 1).reshape(w6.shape[0], -1) if channels_last else w6.reshape(w6.shape[0], -1)
        return [m6, *(conv.weight.reshape(conv.weight.shape[0], -1) for conv in (self.fc7, self.fc8))], channels_last

    def over_rows(self, rows: Tensor, weights: list[Tensor] | None = None, upto: str = "fc8") -> Tensor:
        """The head on unrolled FC6 windows ``rows [P, C*k*k]`` (eval mode: dropout is the
        identity): ``[P, outputs]``; ``upto="fc7"``: FC7's activations after its ReLU
        ``[P, hidden]`` (Appendix B's feature).

        The rows are zero-padded to a multiple of :data:`ROW_ALIGN`: MKL's matrix product
        takes another path (another rounding) for a product of a few rows, and from 8 rows on
        a row's result is the same whatever the number of rows (checked on its AVX2 and
        AVX-512 paths, 1 and 2 threads, for FC shapes from 10 x 512 to 4096 x 4608). So a
        location's result depends on that location only, not on how many other images share
        the product: sharded evaluation and any chunking give the same maps to the bit.
        """
        w6, w7, w8 = weights or self.row_weights()[0]
        n = rows.shape[0]
        pad = -n % ROW_ALIGN
        if pad:
            rows = torch.cat([rows, rows.new_zeros(pad, rows.shape[1])])
        x = torch.relu_(F.linear(rows, w6, self.fc6.bias))
        x = torch.relu_(F.linear(x, w7, self.fc7.bias))
        if upto == "fc7":
            return x[:n]
        return F.linear(x, w8, self.fc8.bias)[:n]


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
