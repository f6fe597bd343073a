"""Submission and result files: the Kaggle CLS-LOC CSV, the ILSVRC devkit text format and COCO
detection results, and :class:`SubmissionWriter`, which collects them from a protocol's
per-image results.

* Kaggle CSV: ``ImageId,PredictionString`` with ``wnid x1 y1 x2 y2`` repeated (the layout of
  ``LOC_val_solution.csv``); one row per image.
* Devkit text: one line per image in image order, ``<label> <xmin> <ymin> <xmax> <ymax>``
  repeated, devkit class ids (1..1000).
* COCO results: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``; our
  x1y1x2y2 boxes are converted once, here, on the way out.

Boxes in the two localisation formats are whole pixel indices (the devkit and Kaggle
convention), rounded half up; at most five guesses per image count, best first.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from vgglocal.boxes import box_convert
from vgglocal.data.records import ClassList, Sample
from vgglocal.inference.results import Detections, ImageResult

__all__ = ["write_kaggle_csv", "write_devkit_txt", "detection_records", "write_detections", "image_id", "coco_image_id",
           "SubmissionWriter"]

MAX_GUESSES = 5  # devkit/Kaggle: at most five guesses count, best first


def _pixel(v: float) -> int:
    # Kaggle and the devkit use whole pixel indices; round half up, not to even.
    return int(math.floor(v + 0.5))


def write_kaggle_csv(path: str | Path, rows: Iterable[tuple[str, Sequence[tuple[str, Sequence[float]]]]]) -> Path:
    """Write ``(image_id, [(wnid, box x1y1x2y2), ...])`` rows as a Kaggle submission; boxes
    rounded to whole pixels, at most five guesses per image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["ImageId", "PredictionString"])
        for image_id, guesses in rows:
            parts = [f"{lab} " + " ".join(str(_pixel(v)) for v in box) for lab, box in list(guesses)[:MAX_GUESSES]]
            w.writerow([image_id, " ".join(parts)])
    return path


def write_devkit_txt(path: str | Path, rows: Iterable[Sequence[tuple[int, Sequence[float]]]]) -> Path:
    """Write the devkit's localisation submission: one line per image, in image order,
    ``<label> <xmin> <ymin> <xmax> <ymax>`` for up to five guesses (devkit class ids)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for guesses in rows:
            f.write(" ".join(f"{int(lab)} " + " ".join(str(_pixel(v)) for v in box) for lab, box in list(guesses)[:MAX_GUESSES]) + "\n")
    return path


def detection_records(image_id: int | str, category_ids: Sequence[int], boxes: Tensor, scores: Tensor, labels: Tensor, floor: float = 0.0) -> list[dict[str, Any]]:
    """COCO result dicts for one image: ``boxes (Tensor[M, 4])`` x1y1x2y2, ``scores [M]``,
    ``labels [M]`` class indices mapped through ``category_ids``; scores below ``floor`` dropped."""
    keep = scores >= floor
    xywh = box_convert(boxes[keep].double(), "xyxy", "xywh")
    return [
        {"image_id": image_id, "category_id": int(category_ids[int(lab)]), "bbox": [round(float(v), 2) for v in b], "score": round(float(s), 6)}
        for b, s, lab in zip(xywh.tolist(), scores[keep].tolist(), labels[keep].tolist(), strict=True)
    ]


def write_detections(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write COCO results (a list of :func:`detection_records` dicts) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(records)))
    return path


def image_id(record: Sample) -> str:
    """The id a Kaggle submission uses for ``record``: the data set's own id, else the file stem."""
    return record.source_id or Path(record.path).stem


def coco_image_id(record: Sample) -> int | str:
    """The COCO results ``image_id`` of ``record``: the data set's id as an integer when it is one."""
    try:
        return int(record.source_id)
    except ValueError:
        return record.source_id or Path(record.path).stem


class SubmissionWriter:
    """Collects a protocol's per-image results in record order and writes them.

    ``guesses``: ``predictions.csv`` (Kaggle: wnids / class ids) and ``predictions.txt``
    (devkit: the data set's devkit class ids, else index + 1); an image without a result gets
    an empty row. ``detections``: ``detections.json`` (COCO results; category ids the data
    set's COCO ids, else index + 1), scores below ``score_floor`` left out.
    """

    def __init__(self, classes: ClassList, *, guesses: bool, detections: bool, score_floor: float = 0.0) -> None:
        self.classes = classes
        self.guesses, self.detections, self.score_floor = guesses, detections, score_floor
        self.reset()

    def reset(self) -> None:
        self._rows: list[tuple[str, list[tuple[int, list[float]]]]] = []
        self._dets: list[dict[str, Any]] = []

    def process(self, records: Sequence[Sample], outputs: Sequence[ImageResult | None]) -> None:
        for r, out in zip(records, outputs, strict=True):
            if self.guesses:
                g = out.guesses() if out is not None else None
                pairs = list(zip(g[0].tolist(), g[1].double().tolist(), strict=True)) if g is not None else []
                self._rows.append((image_id(r), pairs))
            if self.detections and out is not None:
                d = out.detections if out.detections is not None else Detections.empty()
                cat_ids = self.classes.coco_ids or list(range(1, len(self.classes) + 1))
                self._dets.extend(detection_records(coco_image_id(r), cat_ids, d.boxes, d.scores, d.labels, self.score_floor))

    @property
    def results(self) -> list[dict[str, Any]]:
        """The COCO results collected so far."""
        return self._dets

    def write(self, folder: str | Path) -> list[Path]:
        """Write the files into ``folder``; returns their paths."""
        folder = Path(folder)
        written = []
        if self.guesses:
            ids = self.classes.ids
            devkit_ids = self.classes.devkit_ids or list(range(1, len(self.classes) + 1))
            written.append(write_kaggle_csv(folder / "predictions.csv", [(i, [(ids[int(lab)], box) for lab, box in pairs]) for i, pairs in self._rows]))
            written.append(write_devkit_txt(folder / "predictions.txt", [[(devkit_ids[int(lab)], box) for lab, box in pairs] for _, pairs in self._rows]))
        if self.detections:
            written.append(write_detections(folder / "detections.json", self._dets))
        return written


