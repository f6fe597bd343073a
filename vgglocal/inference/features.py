"""Appendix B image descriptors: the very deep net as a fixed feature extractor.

The last FC layer is removed and the penultimate (FC7) activations are the feature. The image
is rescaled so its smallest side is Q and the net is applied densely over the whole image (all
weight layers as convolutions, :func:`vgglocal.inference.dense.dense_maps`); the FC7 map is
global-average-pooled into one descriptor, which is averaged with the horizontally flipped
image's. Over several Q the per-scale descriptors are averaged (Appendix B's choice for VOC)
or stacked (its choice for Caltech), and the result is L2-normalised. Late fusion of two nets
stacks their descriptors.

Normalisation order, which the paper leaves open: ``average`` takes the mean of the raw
per-scale descriptors, then L2-normalises; ``stack`` L2-normalises each scale's descriptor
before stacking (so no scale dominates by its activation size), then the stack; fusion
normalises each net's descriptor, stacks, and normalises again. Every final descriptor has
unit norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from vgglocal.config import AGGREGATES
from vgglocal.inference.dense import dense_maps
from vgglocal.inference.options import InferenceOptions
from vgglocal.models.vgg import VGG

__all__ = ["AGGREGATES", "scale_descriptors", "aggregate", "fuse", "l2_normalize", "box_region"]



class _PooledFC7:
    """A VGG seen through :func:`dense_maps` as a net whose only output is its spatially averaged
    FC7 map, ``[N, hidden, 1, 1]``. dense_maps does the rescaling, the grouping of equal sizes
    into batches, the mirror images and autocast; pooling here, on the device, keeps a few KB per
    image instead of the whole 4096-channel map."""

    box_head = None

    def __init__(self, model: VGG) -> None:
        self.model = model
        self.crop = model.crop
        self.normalization = getattr(model, "normalization", None)

    def maps(self, x: Tensor) -> dict[str, Tensor]:
        return {"scores": self.model.penultimate(x).float().mean(dim=(-2, -1), keepdim=True)}

    def maps_batched(self, xs) -> list[dict[str, Tensor]]:
        """:meth:`maps` of several batches, FC6 and FC7 as matrix products over the locations of
        all of them (:meth:`vgglocal.models.vgg.VGG.maps_batched`: on the CPU, each weight
        read once for the chunk's size groups, not once per group)."""
        return [{"scores": m["scores"].float().mean(dim=(-2, -1), keepdim=True)}
                for m in self.model.maps_batched(xs, penultimate=True)]


@torch.no_grad()
def scale_descriptors(
    model: VGG,
    images: Sequence[np.ndarray],
    scales: Sequence[int],
    opts: InferenceOptions | None = None,
) -> Tensor:
    """Per-scale descriptors of each image, before aggregation and normalisation.

    Args:
        model: a :class:`VGG` in eval mode on ``device``; its ``normalization`` is used.
        images: uint8 ``[H, W, 3]`` RGB arrays.
        scales: the Q values.
        opts: how the net runs; ``opts.flip``: average with the mirror image's descriptor.

    Returns:
        Tensor[N, S, D] float32 on the CPU: the global average of the FC7 map at each scale
        (flip-averaged), D the hidden FC width (4096 at full width).
    """
    if not images:
        return torch.zeros(0, len(scales), model.cls_head.fc7.out_channels)
    maps = dense_maps(_PooledFC7(model), images, scales, opts, boxes=False,  # type: ignore[arg-type]
                      normalization=getattr(model, "normalization", None))
    return torch.stack([torch.stack([m.scores.flatten(1).mean(0) for m in per_image]) for per_image in maps])


def l2_normalize(x: Tensor, dim: int = -1) -> Tensor:
    """``x / ||x||_2`` along ``dim`` (a zero vector stays zero)."""
    return torch.nn.functional.normalize(x, p=2.0, dim=dim)


def aggregate(per_scale: Tensor, how: str) -> Tensor:
    """``Tensor[N, S, D]`` per-scale descriptors → ``Tensor[N, D]`` (``average``) or
    ``Tensor[N, S * D]`` (``stack``, scale-major), L2-normalised (module doc)."""
    if how == "average":
        return l2_normalize(per_scale.mean(dim=1))
    if how == "stack":
        return l2_normalize(l2_normalize(per_scale).flatten(1))
    raise ValueError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATES)}")


def fuse(descriptors: Sequence[Tensor]) -> Tensor:
    """Late fusion: ``[N, D_k]`` descriptors of several nets → ``[N, sum D_k]``, each part
    L2-normalised, then the whole. One net: its descriptor, normalised."""
    if len(descriptors) == 1:
        return l2_normalize(descriptors[0])
    return l2_normalize(torch.cat([l2_normalize(d) for d in descriptors], dim=1))


def box_region(image: np.ndarray, box: np.ndarray | Sequence[float]) -> np.ndarray:
    """The pixels of ``box`` (x1, y1, x2, y2, inclusive pixel numbers as annotated) as an image of
    its own, at least 1x1: ``ndarray[h, w, 3]`` uint8 (a contiguous copy). VOC's 1-based numbers shift the
    region by one pixel, which does not matter for a descriptor."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    c1, r1 = min(max(int(np.floor(x1)), 0), w - 1), min(max(int(np.floor(y1)), 0), h - 1)
    c2, r2 = min(max(int(np.ceil(x2)) + 1, c1 + 1), w), min(max(int(np.ceil(y2)) + 1, r1 + 1), h)
    return np.ascontiguousarray(image[r1:r2, c1:c2])
