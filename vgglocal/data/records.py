"""The one record type every reader produces, and the class list that goes with a data set."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Sample", "ClassList"]


@dataclass(frozen=True)
class Sample:
    """One image of a split.

    Attributes:
        path: absolute path of the image file.
        label: class index of the image (ILSVRC: its one class; VOC/COCO: the class of its
            largest box); -1 when unknown (a test split).
        boxes (ndarray[K, 4] float32): x1, y1, x2, y2 in original-image pixels, every object.
        box_labels (ndarray[K] int64): class index of each box.
        size: (height, width) of the image as annotated (0, 0 when not known before decoding).
        source_id: the data set's own id (ILSVRC ImageId, VOC file id, COCO image id as text).
        difficult (ndarray[K] bool, or empty): PASCAL VOC's ``<difficult>`` flag per box; empty
            when no box of the image is marked (the other formats have no such flag). Read it
            with :meth:`difficult_mask`.
    """

    path: str
    label: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    box_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    size: tuple[int, int] = (0, 0)
    source_id: str = ""
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))

    def difficult_mask(self) -> np.ndarray:
        """``ndarray[K] bool``: True for the boxes marked difficult."""
        return self.difficult if len(self.difficult) == len(self.boxes) else np.zeros(len(self.boxes), bool)


@dataclass(frozen=True)
class ClassList:
    """Classes in index order (ILSVRC: sorted wnids).

    Attributes:
        ids: wnids (ILSVRC), VOC class names, or COCO category names, index order.
        names: human-readable names, index order.
        devkit_ids: ILSVRC devkit class id (1..1000) per index, for devkit submissions; None
            when the data set has none.
        coco_ids: COCO category id per index; None unless the data is COCO.
    """

    ids: list[str]
    names: list[str]
    devkit_ids: list[int] | None = None
    coco_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.ids)
