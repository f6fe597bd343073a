"""What the test protocols return: one :class:`ImageResult` per image.

Every protocol (:mod:`vgglocal.inference.protocols`) fills the same record, so evaluators,
submission writers and the Python API read one type: the classification system's top labels
with their posteriors; for the localisation protocols the (label, box) guesses; for protocol 2
("full") every merged box as a scored detection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Detections", "ImageResult"]


@dataclass
class Detections:
    """Scored boxes of one image.

    Attributes:
        boxes (Tensor[M, 4] float32): x1, y1, x2, y2 in original-image pixels.
        scores (Tensor[M] float32): detection scores (higher is more confident).
        labels (Tensor[M] int64): class index of each box.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))

    @classmethod
    def cat(cls, parts: Sequence[Detections]) -> Detections:
        """Concatenate in the order given (an empty list gives :meth:`empty`)."""
        if not parts:
            return cls.empty()
        return cls(torch.cat([p.boxes for p in parts]), torch.cat([p.scores for p in parts]), torch.cat([p.labels for p in parts]))


@dataclass
class ImageResult:
    """One image's result under one protocol.

    Attributes:
        labels (Tensor[K] int64): the classification system's top classes, best first (K = 5,
            or fewer classes).
        scores (Tensor[K] float32): their image posteriors.
        boxes (Tensor[G, 4] float32 or None): localisation guesses, x1, y1, x2, y2 in
            original-image pixels, clipped to the image, best first; None for the
            classification protocols.
        box_labels (Tensor[G] int64 or None): the class of each guess: the top-5 labels in
            protocol 2, the ground-truth class in protocol 1 (center-crop).
        detections: every merged box of the labels considered (protocol 2), else None.
        size: (height, width) of the image in pixels.
    """

    labels: Tensor
    scores: Tensor
    boxes: Tensor | None = None
    box_labels: Tensor | None = None
    detections: Detections | None = None
    size: tuple[int, int] = (0, 0)

    def guesses(self) -> tuple[Tensor, Tensor] | None:
        """The (labels ``[G]``, boxes ``[G, 4]``) guesses, or None without boxes."""
        if self.boxes is None or self.box_labels is None:
            return None
        return self.box_labels, self.boxes
