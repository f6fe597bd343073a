"""Pure box math. Tensor in, tensor out; no config, no logging, no device guesses.

The canonical box everywhere in vgglocal is ``(x1, y1, x2, y2)`` in pixels of the original
image, float. The network's own ``(cx, cy, w, h) / window side`` parameters exist
only between :func:`encode` and :func:`decode` (Appendix A: the box in window coordinates over the window side).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert as _tv_box_convert
from torchvision.ops import box_iou as _tv_box_iou
from torchvision.ops import clip_boxes_to_image

__all__ = [
    "box_convert",
    "ilsvrc_iou",
    "clip_boxes",
    "has_area",
    "encode",
    "decode",
]


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``boxes (Tensor[..., 4])`` between ``xyxy``, ``xywh`` (COCO) and ``cxcywh``."""
    shape = boxes.shape
    return _tv_box_convert(boxes.reshape(-1, 4), in_fmt, out_fmt).reshape(shape)


def ilsvrc_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU under the ILSVRC devkit's convention → ``Tensor[N, M]``.

    Coordinates are inclusive pixel indices, so a box spans ``x2 - x1 + 1`` pixels; pairs whose
    intersection is empty (``iw <= 0`` or ``ih <= 0``, touching boxes included) get overlap -1,
    as ``eval_localization.m`` leaves them. Implemented by shifting x2/y2 by one pixel and
    reusing torchvision's ``box_iou``.
    """
    one = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=a.dtype if a.is_floating_point() else torch.float64, device=a.device)
    iou = _tv_box_iou(a.to(one.dtype) + one, b.to(one.dtype) + one)
    return torch.where(iou > 0, iou, torch.full_like(iou, -1.0))


def clip_boxes(boxes: Tensor, size: tuple[int, int] | Tensor) -> Tensor:
    """Clip ``boxes (Tensor[..., 4])`` x1y1x2y2 to an image of ``size = (height, width)``
    (x to [0, width], y to [0, height], as torchvision's ``clip_boxes_to_image``), or each
    box of ``boxes (Tensor[N, 4])`` to its own image, ``size (Tensor[N, 2])`` (height, width)."""
    if not isinstance(size, Tensor):
        return clip_boxes_to_image(boxes, size)
    hw = size.to(boxes.device, boxes.dtype)
    upper = torch.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], dim=1)  # [N, 4]: w, h, w, h
    return torch.minimum(boxes.clamp(min=0), upper)


def has_area(boxes: Tensor) -> Tensor:
    """``Tensor[...] bool``: True where ``boxes (Tensor[..., 4])`` x1y1x2y2 has positive width
    and height. torchvision's ``remove_small_boxes(boxes, min_size)`` keeps ``w >= min_size``,
    so no ``min_size`` of it drops exactly the empty boxes and keeps every other."""
    return (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])


def encode(boxes: Tensor, origin: Tensor | tuple[float, float], scale: float | Tensor = 1.0, side: float = 224.0) -> Tensor:
    """Image boxes → network targets.

    Args:
        boxes (Tensor[..., 4]): x1, y1, x2, y2 in original-image pixels.
        origin (Tensor[..., 2] or pair): the window's top-left corner (x0, y0) in pixels of the
            *rescaled* image.
        scale: the rescale factor from original to rescaled image (scalar or broadcastable).
        side: the window side in rescaled pixels (the crop, 224 in the paper).

    Returns:
        Tensor[..., 4]: (cx, cy, w, h) in window coordinates divided by ``side``; a box that
        fills the window is (0.5, 0.5, 1, 1). Not clipped to the window.
    """
    origin = torch.as_tensor(origin, dtype=boxes.dtype, device=boxes.device)
    scale = torch.as_tensor(scale, dtype=boxes.dtype, device=boxes.device)
    if scale.ndim:
        scale = scale.unsqueeze(-1)
    cxcywh = box_convert(boxes, "xyxy", "cxcywh") * scale
    centre = (cxcywh[..., :2] - origin) / side
    return torch.cat([centre, cxcywh[..., 2:] / side], dim=-1)


def decode(params: Tensor, origin: Tensor | tuple[float, float], scale: float | Tensor = 1.0, side: float = 224.0) -> Tensor:
    """Network outputs → image boxes; the exact inverse of :func:`encode` (same arguments).

    Adds the window origin, multiplies the normalised sizes by the window side and divides by
    the rescale factor. Returns x1y1x2y2 original pixels.
    """
    origin = torch.as_tensor(origin, dtype=params.dtype, device=params.device)
    scale = torch.as_tensor(scale, dtype=params.dtype, device=params.device)
    if scale.ndim:
        scale = scale.unsqueeze(-1)
    centre = params[..., :2] * side + origin
    size = params[..., 2:] * side
    cxcywh = torch.cat([centre, size], dim=-1) / scale
    return box_convert(cxcywh, "cxcywh", "xyxy")
