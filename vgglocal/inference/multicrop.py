"""Multi-crop classification (section 3.2, section 4.3): per scale Q, a 5 x 5 regular grid of
``crop x crop`` windows over the rescaled image and their mirror images (50 crops; three
scales give the paper's 150). The soft-max posteriors of all crops are averaged.

Grid: window corners at ``round(linspace(0, W - crop, 5))`` horizontally (and likewise
vertically), so the outer windows touch the image borders and the grid is regular. A
rescaled side below the crop gives one position there, padded with zeros (as the model pads).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from vgglocal.inference.dense import rescale
from vgglocal.inference.options import MULTICROP_BATCH, InferenceOptions
from vgglocal.models.vgg import VGG

__all__ = ["grid_positions", "grid_crops", "multicrop_posteriors"]

GRID = 5  # 5 x 5 crops per scale (section 3.2)


def grid_positions(length: int, crop: int, n: int = GRID) -> list[int]:
    """Window starts along one side: ``n`` regular positions from 0 to ``length - crop``."""
    if length <= crop:
        return [0]
    return sorted({int(v) for v in np.round(np.linspace(0, length - crop, n))})


def grid_crops(image: Tensor, crop: int, n: int = GRID, flip: bool = True) -> Tensor:
    """``image (Tensor[3, H, W])`` → ``Tensor[K, 3, crop, crop]``: the ``n x n`` grid (fewer
    when a side is short), then the mirror of each crop."""
    h, w = image.shape[-2:]
    if h < crop or w < crop:
        image = torch.nn.functional.pad(image, (0, max(0, crop - w), 0, max(0, crop - h)))
    crops = [image[:, y : y + crop, x : x + crop] for y in grid_positions(h, crop, n) for x in grid_positions(w, crop, n)]
    out = torch.stack(crops)
    return torch.cat([out, out.flip(-1)]) if flip else out


@torch.no_grad()
def multicrop_posteriors(
    model: VGG,
    images: Sequence[np.ndarray],
    scales: Sequence[int],
    opts: InferenceOptions | None = None,
    *,
    normalization: dict[str, Sequence[float]] | None = None,
) -> Tensor:
    """Average soft-max posterior over the grid crops (and mirrors, ``opts.flip``) at every
    scale: ``Tensor[N, C]`` for ``N`` uint8 RGB images. A forward pass takes
    ``MULTICROP_BATCH * opts.batch_size`` crops."""
    opts = opts or InferenceOptions()
    flip, device, batch_size = opts.flip, opts.device, MULTICROP_BATCH * opts.batch_size
    norm = normalization or getattr(model, "normalization", None) or {"mean": [0.0] * 3, "std": [1.0] * 3}
    crops, owner = [], []
    for i, img in enumerate(images):
        for q in scales:
            c = grid_crops(rescale(img, q, norm)[0], model.crop, flip=flip)
            crops.append(c)
            owner.append(torch.full((len(c),), i, dtype=torch.int64))
    x, who = torch.cat(crops), torch.cat(owner)
    probs = []
    for lo in range(0, len(x), batch_size):
        with opts.autocast():
            logits = model(x[lo : lo + batch_size].to(device, non_blocking=True))
        probs.append(logits.float().softmax(dim=-1).cpu())
    p = torch.cat(probs)
    total = torch.zeros(len(images), p.shape[1]).index_add_(0, who, p)
    return total / torch.bincount(who, minlength=len(images)).clamp(min=1)[:, None]
