"""Pictures of boxes: predicted (with labels and scores) and ground truth in another colour.

Uses ``torchvision.utils.draw_bounding_boxes`` and ``make_grid``; images are letterboxed into
square tiles first so that a grid of differently sized images lines up.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid

__all__ = ["PRED_COLOR", "TRUE_COLOR", "draw_image", "tile", "save_png", "save_grid"]

PRED_COLOR = "#ff3030"
TRUE_COLOR = "#30e030"


def tile(image: np.ndarray | Tensor, side: int) -> tuple[Tensor, float, tuple[int, int]]:
    """Letterbox an RGB image (``[H, W, 3]`` uint8 array or ``[3, H, W]`` tensor) into a
    ``side x side`` uint8 tensor; returns (tile, scale, (x offset, y offset))."""
    t = torch.as_tensor(image)
    if t.ndim == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
        t = t.permute(2, 0, 1)
    h, w = t.shape[-2:]
    scale = side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = torch.nn.functional.interpolate(t[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    out = torch.zeros(3, side, side, dtype=torch.uint8)
    oy, ox = (side - nh) // 2, (side - nw) // 2
    out[:, oy : oy + nh, ox : ox + nw] = small.round().clamp(0, 255).to(torch.uint8)
    return out, scale, (ox, oy)


def draw_image(
    image: np.ndarray | Tensor,
    boxes: Tensor | None = None,
    labels: Sequence[str] | None = None,
    true_boxes: Tensor | None = None,
    true_labels: Sequence[str] | None = None,
    side: int | None = None,
) -> Tensor:
    """Draw predicted ``boxes (Tensor[K, 4])`` x1y1x2y2 original pixels (red, with ``labels``)
    and ground truth ``true_boxes`` (green) on an image; letterboxed to ``side`` when given.
    Returns ``Tensor[3, H, W]`` uint8."""
    if side is not None:
        canvas, scale, (ox, oy) = tile(image, side)
    else:
        canvas, scale, (ox, oy) = tile(image, max(np.asarray(image).shape[:2]))
    shift = torch.tensor([ox, oy, ox, oy], dtype=torch.float32)
    width = max(1, canvas.shape[-1] // 160)
    for b, text, colour in ((true_boxes, true_labels, TRUE_COLOR), (boxes, labels, PRED_COLOR)):
        if b is None or len(b) == 0:
            continue
        xy = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) * scale + shift
        xy = torch.stack([xy[:, 0], xy[:, 1], torch.maximum(xy[:, 2], xy[:, 0] + 1), torch.maximum(xy[:, 3], xy[:, 1] + 1)], 1)
        canvas = draw_bounding_boxes(canvas, xy, labels=list(text) if text is not None else None, colors=colour, width=width)
    return canvas


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write a ``[3, H, W]`` uint8 tensor as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(path)
    return path


def save_grid(tiles: Sequence[Tensor], path: str | Path, nrow: int = 4) -> Path:
    """Write equally sized ``[3, S, S]`` uint8 tiles as one PNG grid."""
    grid = make_grid(torch.stack(list(tiles)), nrow=nrow, padding=4, pad_value=255)
    return save_png(grid, path)
