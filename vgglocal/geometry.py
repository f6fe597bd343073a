"""Where a network's input window lies in the original image, and the one mapping between the
network's box parameters and image boxes (Appendix A: the regressed box is (cx, cy, w, h) in
the coordinates of the input window, divided by the window side).

A window is its top-left corner (x0, y0) in pixels of the *rescaled* image, the rescale factor
original → rescaled (``Q / min(h, w)``, isotropic), its side, and whether the network saw it
mirrored. The training crop, the centre crop of protocol 1 and every location of a dense map
(paper section 3.2: location (i, j) sees the window at (stride·j, stride·i)) are all windows,
and all go through :func:`encode_windows` / :func:`decode_windows`.

One flip convention everywhere: a mirrored window is a window of the *unmirrored* rescaled
image whose pixels the network saw left-right reversed. Its box parameters describe the
mirrored view, so the centre is mirrored in window units (cx → 1 − cx) before decoding (and
after encoding); y, w and h are unchanged. For a dense map of the mirrored rescaled image
(width W), location (i, j) is the window whose corner in the unmirrored image is
(W − stride·j − side, stride·i): :func:`window_origins` with ``mirrored_width=W``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vgglocal.boxes import decode, encode

__all__ = ["Geometry", "encode_windows", "decode_windows", "window_origins"]


def _mirror(params: Tensor, flipped: bool | Tensor) -> Tensor:
    """cx → 1 − cx where ``flipped`` (a bool, or ``Tensor[...]`` bool over the leading dims)."""
    if isinstance(flipped, Tensor):
        cx = torch.where(flipped.to(params.device), 1.0 - params[..., 0], params[..., 0])
    elif flipped:
        cx = 1.0 - params[..., 0]
    else:
        return params
    return torch.cat([cx.unsqueeze(-1), params[..., 1:]], dim=-1)


def encode_windows(boxes: Tensor, origin: Tensor | tuple[float, float], scale: float | Tensor, side: float,
                   flipped: bool | Tensor = False) -> Tensor:
    """Original-image boxes → the network's targets for their windows.

    Args:
        boxes (Tensor[..., 4]): x1, y1, x2, y2 in original-image pixels.
        origin (Tensor[..., 2] or pair): window corner (x0, y0) in rescaled pixels.
        scale: rescale factor original → rescaled (scalar or ``Tensor[...]``).
        side: window side in rescaled pixels (the crop).
        flipped: the network sees the window mirrored (bool or ``Tensor[...]`` bool).
    Returns:
        Tensor[..., 4]: (cx, cy, w, h) / side in the coordinates the network sees; unclipped.
    """
    return _mirror(encode(boxes, origin, scale, side), flipped)


def decode_windows(params: Tensor, origin: Tensor | tuple[float, float], scale: float | Tensor, side: float,
                   flipped: bool | Tensor = False) -> Tensor:
    """The network's box parameters → original-image boxes; the inverse of :func:`encode_windows`.

    Args:
        params (Tensor[..., 4]): (cx, cy, w, h) / side as the network predicts them.
        origin, scale, side, flipped: the windows, as in :func:`encode_windows`.
    Returns:
        Tensor[..., 4]: x1, y1, x2, y2 in original-image pixels.
    """
    return decode(_mirror(params, flipped), origin, scale, side)


def window_origins(h: int, w: int, stride: int, *, side: int = 0, mirrored_width: int | None = None,
                   device: torch.device | None = None) -> Tensor:
    """Corners (x0, y0) in rescaled pixels of the windows of an ``h x w`` dense map:
    ``Tensor[h * w, 2]`` float32, row-major (location (i, j) → (stride·j, stride·i)).

    ``mirrored_width=W``: the map came from the mirrored rescaled image of width W; the corners
    are those of the same windows in the unmirrored image, (W − stride·j − side, stride·i).
    """
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    corners = (torch.stack([xs, ys], dim=-1).reshape(-1, 2) * stride).float()
    if mirrored_width is not None:
        corners[:, 0] = float(mirrored_width - side) - corners[:, 0]
    return corners


@dataclass(frozen=True)
class Geometry:
    """One window of one image (the training crop, or the evaluation centre crop / whole image).

    Attributes:
        origin: (x0, y0), the window's top-left corner in pixels of the rescaled image.
        scale: rescale factor original → rescaled, ``S / min(h, w)`` (isotropic; the long side
            is rounded to whole pixels by the resize, an error of at most 0.5 rescaled pixel).
        side: window side in rescaled pixels (the crop); 0 for the whole rescaled image.
        flipped: whether the window was mirrored horizontally (after cropping).
        size: (height, width) of the rescaled image.
    """

    origin: tuple[float, float]
    scale: float
    side: int
    flipped: bool
    size: tuple[int, int]

    @property
    def width(self) -> int:
        """Width of the output image in pixels (the crop side, or the rescaled width)."""
        return self.side or self.size[1]

    def window(self) -> np.ndarray:
        """The window in original-image pixels: ndarray[4] x1, y1, x2, y2 (float64)."""
        x0, y0 = self.origin
        w = self.side or self.size[1]
        h = self.side or self.size[0]
        return np.array([x0, y0, x0 + w, y0 + h], np.float64) / self.scale

    def to_window(self, boxes: np.ndarray | Tensor) -> Tensor:
        """Original-image boxes → output-image boxes, unclipped, mirrored with the image.

        Args:
            boxes (ndarray or Tensor[K, 4]): x1, y1, x2, y2 in original-image pixels.
        Returns:
            Tensor[K, 4] float32: x1, y1, x2, y2 in pixels of the network's input.
        """
        b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) * self.scale
        x0, y0 = self.origin
        b = b - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        if self.flipped:
            b = torch.stack([self.width - b[:, 2], b[:, 1], self.width - b[:, 0], b[:, 3]], dim=1)
        return b

    def encode(self, boxes: np.ndarray | Tensor) -> Tensor:
        """Original-image boxes ``[K, 4]`` → network targets ``Tensor[K, 4]`` (:func:`encode_windows`)."""
        if not self.side:
            raise ValueError("encode needs a fixed-size window (side > 0)")
        b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        return encode_windows(b, self.origin, self.scale, float(self.side), self.flipped)

    def decode(self, params: Tensor) -> Tensor:
        """Network outputs ``Tensor[K, 4]`` → original-image boxes x1y1x2y2 (:func:`decode_windows`)."""
        if not self.side:
            raise ValueError("decode needs a fixed-size window (side > 0)")
        p = params.reshape(-1, 4).to(torch.float32)
        return decode_windows(p, self.origin, self.scale, float(self.side), self.flipped)
