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

__all__ = ["Detections", "ImageResult", "pack_results", "unpack_results"]


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


def _flat(parts: list[Tensor], shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    return torch.cat(parts).contiguous() if parts else torch.zeros((0, *shape), dtype=dtype)


def pack_results(results: Sequence[ImageResult | None]) -> dict[str, Tensor]:
    """Results of consecutive images (None: no result, an unreadable image) as flat tensors, for
    a file or a message between processes: per image the counts (``k`` labels, ``g`` guesses,
    ``m`` detections; -1 for a field that is None) and sizes, then every image's values
    concatenated. :func:`unpack_results` gives back equal results, bit for bit. Each image
    costs its top-k labels, its guesses and its detections, never a score per class."""
    n = len(results)
    present = torch.tensor([r is not None for r in results], dtype=torch.bool)
    size = torch.tensor([list(r.size) if r is not None else [0, 0] for r in results], dtype=torch.int64).reshape(n, 2)
    real = [r for r in results if r is not None]

    def count(values: list[Tensor | None]) -> Tensor:
        return torch.tensor([-1 if v is None else int(v.shape[0]) for v in values], dtype=torch.int64)

    dets = [r.detections for r in real]
    guesses = [r.guesses() for r in real]
    return {
        "present": present, "size": size,
        "k": count([r.labels for r in real]),
        "labels": _flat([r.labels.cpu().to(torch.int64) for r in real], (), torch.int64),
        "scores": _flat([r.scores.cpu() for r in real], (), torch.float32),
        "g": count([g[0] if g is not None else None for g in guesses]),
        "box_labels": _flat([g[0].cpu().to(torch.int64) for g in guesses if g is not None], (), torch.int64),
        "boxes": _flat([g[1].cpu().reshape(-1, 4) for g in guesses if g is not None], (4,), torch.float32),
        "m": count([d.labels if d is not None else None for d in dets]),
        "det_boxes": _flat([d.boxes.cpu().reshape(-1, 4) for d in dets if d is not None], (4,), torch.float32),
        "det_scores": _flat([d.scores.cpu() for d in dets if d is not None], (), torch.float32),
        "det_labels": _flat([d.labels.cpu() for d in dets if d is not None], (), torch.int64),
    }


def unpack_results(t: dict[str, Tensor]) -> list[ImageResult | None]:
    """The inverse of :func:`pack_results`."""
    cursor = dict.fromkeys(("labels", "g", "m"), 0)

    def take(key: str, n: int, *fields: str) -> list[Tensor]:
        lo = cursor[key]
        cursor[key] = lo + n
        return [t[f][lo : lo + n].clone() for f in fields]

    out: list[ImageResult | None] = []
    real = 0
    for present, size in zip(t["present"].tolist(), t["size"].tolist(), strict=True):
        if not present:
            out.append(None)
            continue
        k, g, m = (int(t[c][real]) for c in ("k", "g", "m"))
        real += 1
        labels, scores = take("labels", k, "labels", "scores")
        boxes = box_labels = detections = None
        if g >= 0:
            box_labels, boxes = take("g", g, "box_labels", "boxes")
        if m >= 0:
            detections = Detections(*take("m", m, "det_boxes", "det_scores", "det_labels"))
        out.append(ImageResult(labels, scores, boxes, box_labels, detections, (int(size[0]), int(size[1]))))
    return out
