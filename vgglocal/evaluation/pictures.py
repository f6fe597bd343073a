"""``eval --draw N``: a grid of the first N readable images (``predictions.png``) with their
ground truth (dashed) and the protocol's guesses: the labelled boxes of the localisation
protocols, the top-5 labels with their posteriors for the classification protocols (listed in
each tile's legend). Drawing is :func:`vgglocal.viz.draw_image`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vgglocal.data.records import ClassList, Sample
from vgglocal.evaluation.ilsvrc import whole_pixels
from vgglocal.inference.results import ImageResult

__all__ = ["PictureGrid", "TILE"]

TILE = 320  # tile height in pixels: 14-px text (vgglocal.viz scales the font to the tile)


def _guesses(out: ImageResult) -> tuple[Tensor, Tensor | None, list[float | None]]:
    """(labels [G], boxes [G, 4] or None, score per label) to draw for one result: the
    (label, box) guesses, scored by the label's posterior where it is among the top labels
    (protocol 1's ground-truth class may not be); the top labels without boxes otherwise."""
    g = out.guesses()
    posterior = dict(zip(out.labels.tolist(), out.scores.tolist(), strict=True))
    if g is None:
        return out.labels, None, [float(s) for s in out.scores.tolist()]
    labels, boxes = g
    return labels, whole_pixels(boxes), [posterior.get(int(lab)) for lab in labels.tolist()]


class PictureGrid:
    """Keeps the first ``limit`` decoded images with their guesses; :meth:`write` draws them."""

    def __init__(self, limit: int, classes: ClassList) -> None:
        self.limit, self.classes = limit, classes
        self._drawn: list[tuple[np.ndarray, Sample, Tensor, Tensor | None, list[float | None]]] = []

    @property
    def full(self) -> bool:
        return len(self._drawn) >= self.limit

    def add(self, img: np.ndarray, rec: Sample, out: ImageResult | None) -> None:
        """Keep one decoded image with its result (None: nothing was predicted) while there is room."""
        if self.full:
            return
        labels, boxes, scores = _guesses(out) if out is not None else (torch.zeros(0, dtype=torch.int64), None, [])
        self._drawn.append((img, rec, labels, boxes, scores))

    def _name(self, label: int) -> str:
        return self.classes.names[label] if self.classes.names else self.classes.ids[label]

    def write(self, path: str | Path) -> Path | None:
        from vgglocal.viz import draw_image, save_grid

        if not self._drawn:
            return None
        tiles = []
        for img, rec, labels, boxes, scores in self._drawn:
            true_labels = np.asarray(rec.box_labels).tolist()
            if not true_labels and rec.label >= 0:  # classification data: the image's class
                true_labels = [rec.label]
            tiles.append(draw_image(img, boxes, [self._name(int(lab)) for lab in labels.tolist()],
                                    torch.as_tensor(rec.boxes).reshape(-1, 4), [self._name(int(lab)) for lab in true_labels],
                                    side=TILE, scores=scores, classes=labels, true_classes=true_labels))
        return save_grid(tiles, path, nrow=min(4, len(tiles)))
