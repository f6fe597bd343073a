"""``eval --draw N``: a grid of the first N readable images with their true boxes and the
protocol's first guess (``predictions.png``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vgglocal.data.records import ClassList, Sample
from vgglocal.evaluation.ilsvrc import whole_pixels
from vgglocal.evaluation.images import ImageChunk
from vgglocal.inference.results import ImageResult

__all__ = ["PictureGrid"]


class PictureGrid:
    """Keeps the first ``limit`` decoded images with their top guess; :meth:`write` draws them."""

    def __init__(self, limit: int, classes: ClassList) -> None:
        self.limit, self.classes = limit, classes
        self._drawn: list[tuple[np.ndarray, Sample, torch.Tensor, torch.Tensor]] = []

    def process(self, chunk: ImageChunk, outputs: list[ImageResult | None]) -> None:
        for img, rec, out in zip(chunk.images, chunk.records, outputs, strict=True):
            if len(self._drawn) >= self.limit:
                return
            if img is None:
                continue
            g = out.guesses() if out is not None else None
            labels, boxes = (g[0][:1], whole_pixels(g[1][:1])) if g is not None else (torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4))
            self._drawn.append((img, rec, labels, boxes))

    def _name(self, label: int) -> str:
        return self.classes.names[label] if self.classes.names else self.classes.ids[label]

    def write(self, path: str | Path) -> Path | None:
        from vgglocal.viz import draw_image, save_grid

        if not self._drawn:
            return None
        tiles = []
        for img, rec, labels, boxes in self._drawn:
            names = [self._name(int(lab)) for lab in labels.tolist()]
            true_names = [self._name(int(lab)) for lab in np.asarray(rec.box_labels).tolist()]
            tiles.append(draw_image(img, boxes, names, torch.as_tensor(rec.boxes).reshape(-1, 4), true_names, side=256))
        return save_grid(tiles, path, nrow=min(4, len(tiles)))
