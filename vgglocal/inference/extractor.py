"""``vgglocal.FeatureExtractor``: Appendix B descriptors of any images from Python, the same
numbers ``vgglocal features`` writes (it runs through this class)::

    import vgglocal
    fx = vgglocal.FeatureExtractor(["vgg16.pt", "vgg19.pt"], scales=(256, 384, 512), aggregate="average")
    x = fx.describe(["a.jpg", "b.jpg"])          # ndarray[2, 8192] float32, rows of unit norm

Images are file paths, PIL images, ``[H, W, 3]`` uint8 arrays or uint8 tensors
(:func:`vgglocal.inference.predictor.as_rgb`). The nets' own input normalisation is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vgglocal.config import AGGREGATES, PRECISIONS, TransferConfig
from vgglocal.errors import UserError
from vgglocal.inference.features import aggregate, fuse, scale_descriptors
from vgglocal.inference.options import InferenceOptions
from vgglocal.inference.predictor import ImageInput, as_rgb
from vgglocal.models.io import load_model
from vgglocal.models.vgg import VGG
from vgglocal.runtime import resolve_device

__all__ = ["FeatureExtractor"]


class FeatureExtractor:
    """FC7 descriptors of Appendix B: each net applied densely at every Q, globally pooled,
    averaged with the mirror image, aggregated over the scales, L2-normalised; several nets
    stacked (late fusion). See :mod:`vgglocal.inference.features` for the normalisation order.

    Args:
        checkpoints: classification checkpoint path(s), or loaded :class:`VGG` models.
        scales: the Q values (default ``transfer.scales``: 256, 384, 512).
        aggregate: ``average`` or ``stack`` the per-scale descriptors (default ``transfer.aggregate``).
        flip: average with the mirror image's descriptor.
        device: ``"cpu"``, ``"cuda"``, a ``torch.device``, or None (CUDA when available).
        precision: ``"fp32"`` or ``"bf16"`` (autocast).
        batch_size: images per forward pass (default ``transfer.batch_size``).
    """

    def __init__(
        self,
        checkpoints: str | os.PathLike | VGG | Sequence[str | os.PathLike | VGG],
        scales: int | Sequence[int] | None = None,
        aggregate: str | None = None,
        *,
        flip: bool | None = None,
        device: str | torch.device | None = None,
        precision: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        defaults = TransferConfig()
        self.aggregate = aggregate or defaults.aggregate
        if self.aggregate not in AGGREGATES:
            raise UserError(f"aggregate {self.aggregate!r}: choose from {', '.join(AGGREGATES)}")
        precision = precision or defaults.precision
        if precision not in PRECISIONS:
            raise UserError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
        self.scales = (int(scales),) if isinstance(scales, int) else tuple(int(q) for q in (scales or defaults.scales))
        if not self.scales or any(q <= 0 for q in self.scales):
            raise UserError(f"scales {self.scales}: expected positive sizes")
        size = int(batch_size or defaults.batch_size)
        if size < 1:
            raise UserError(f"batch_size {size}: must be at least 1")
        dev = device if isinstance(device, torch.device) else resolve_device(device or "auto", key="FeatureExtractor device")
        items = [checkpoints] if isinstance(checkpoints, (str, os.PathLike, VGG)) else list(checkpoints)
        if not items:
            raise UserError("FeatureExtractor: give at least one checkpoint")
        self.nets = [(m if isinstance(m, VGG) else load_model(m)).to(dev).eval() for m in items]
        self.options = InferenceOptions(flip=defaults.flip if flip is None else bool(flip), device=dev, batch_size=size,
                                        precision=precision)

    @property
    def device(self) -> torch.device:
        return self.options.device

    @property
    def dims(self) -> list[int]:
        """Each net's per-scale descriptor width (its FC7 width)."""
        return [m.cls_head.fc7.out_channels for m in self.nets]

    def per_scale(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Decoded ``[H, W, 3]`` uint8 RGB images → per net ``ndarray[N, S, D] float32``: the
        flip-averaged, globally pooled FC7 at each scale, before aggregation."""
        return [scale_descriptors(net, list(images), self.scales, self.options).numpy() for net in self.nets]

    def combine(self, per_scale: Sequence[np.ndarray]) -> np.ndarray:
        """Per-net per-scale descriptors → final ``ndarray[N, D] float32`` (aggregated, fused)."""
        return fuse([aggregate(torch.from_numpy(np.asarray(p)), self.aggregate) for p in per_scale]).numpy()

    def describe(self, images: ImageInput | Iterable[ImageInput]) -> np.ndarray:
        """Final descriptors ``ndarray[N, D] float32`` (rows of unit norm) of ``images`` (one, or an
        iterable of paths, PIL images, uint8 arrays or tensors), decoded a few batches at a
        time. An unreadable file raises its one-line error."""
        single = isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, Tensor))
        items = [images] if single else list(images)  # type: ignore[arg-type]
        chunk = 4 * self.options.batch_size
        parts = [self.per_scale([as_rgb(x) for x in items[lo : lo + chunk]]) for lo in range(0, len(items), chunk)]
        if not parts:
            return np.zeros((0, sum(self.dims) * (len(self.scales) if self.aggregate == "stack" else 1)), np.float32)
        return self.combine([np.concatenate(p) for p in zip(*parts, strict=True)])

    def __repr__(self) -> str:
        return (f"FeatureExtractor({len(self.nets)} net(s), FC7 {self.dims}, scales {list(self.scales)}, "
                f"{self.aggregate}, on {self.device})")
