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

import numpy as np
import torch
from torch import Tensor

from vgglocal.boxes import box_convert
from vgglocal.data.records import ClassList, Sample
from vgglocal.errors import UserError
from vgglocal.inference.results import Detections, ImageResult

__all__ = ["write_kaggle_csv", "write_devkit_txt", "write_devkit_labels", "detection_records", "write_detections", "image_id", "category_ids",
           "CocoIds", "CocoSplit", "coco_instances", "SubmissionWriter"]

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


def write_devkit_labels(path: str | Path, rows: Iterable[Sequence[int]]) -> Path:
    """Write the devkit's classification submission: one line per image, in image order, up
    to five class ids (devkit ids), best first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for labels in rows:
            f.write(" ".join(str(int(lab)) for lab in list(labels)[:MAX_GUESSES]) + "\n")
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


def category_ids(classes: ClassList) -> list[int]:
    """COCO ``category_id`` per class index: the data set's COCO ids, else the ILSVRC devkit
    ids (1..1000), else index + 1."""
    return list(classes.coco_ids or classes.devkit_ids or range(1, len(classes) + 1))


class CocoIds:
    """Integer COCO ids for a split read in order: ``native`` (COCO data) keeps the data set's
    image ids; otherwise an image's id is its 1-based position in the split (the written
    ``ground_truth.json`` maps each id to its file)."""

    def __init__(self, classes: ClassList, native: bool) -> None:
        self.category_ids = category_ids(classes)
        self.native = native
        self._next = 1

    def take(self, records: Sequence[Sample]) -> list[int]:
        """The ids of the next ``records`` of the split."""
        if self.native:
            try:
                return [int(r.source_id) for r in records]
            except ValueError:
                bad = next(r for r in records if not r.source_id.isdigit())
                raise UserError(f"{bad.path}: COCO image id {bad.source_id!r} is not an integer") from None
        ids = list(range(self._next, self._next + len(records)))
        self._next += len(records)
        return ids


def coco_instances(records: Sequence[Sample], ids: Sequence[int], classes: ClassList, sizes: Sequence[tuple[int, int]],
                   first_annotation: int = 1) -> dict[str, list[dict[str, Any]]]:
    """The records as a COCO instances dict (``images``, ``annotations``, ``categories``).

    Boxes go from x1y1x2y2 to COCO's ``[x, y, w, h]`` with ``w = x2 - x1`` (the same conversion
    as the detections, so a detection equal to an object has IoU 1); ``iscrowd`` 0. PASCAL
    VOC's difficult objects are written as ordinary objects with ``"difficult": 1`` beside
    them: COCOeval has no such notion (its only exemption, ``iscrowd``, changes the matching
    rule), so the COCO statistics count them; the VOC mAP ignores them.
    """
    cats = category_ids(classes)
    images, annotations = [], []
    next_id = first_annotation
    for r, image, (h, w) in zip(records, ids, sizes, strict=True):
        images.append({"id": int(image), "file_name": Path(r.path).name, "width": int(w), "height": int(h)})
        if not len(r.boxes):
            continue
        xywh = box_convert(torch.as_tensor(np.asarray(r.boxes, np.float64)).reshape(-1, 4), "xyxy", "xywh").tolist()
        hard = r.difficult_mask().tolist()
        for b, lab, dif in zip(xywh, np.asarray(r.box_labels).tolist(), hard, strict=True):
            ann = {"id": next_id, "image_id": int(image), "category_id": int(cats[int(lab)]), "bbox": [round(v, 2) for v in b],
                   "area": round(b[2] * b[3], 2), "iscrowd": 0}
            if dif:
                ann["difficult"] = 1
            annotations.append(ann)
            next_id += 1
    categories = [{"id": int(c), "name": name, "supercategory": ""} for c, name in zip(cats, classes.ids, strict=True)]
    return {"images": images, "annotations": annotations, "categories": categories}


class CocoSplit:
    """The split as COCO data, built as its records arrive: their integer ids
    (:class:`CocoIds`) and, unless ``native``, the instances dict those ids refer to."""

    def __init__(self, classes: ClassList, native: bool) -> None:
        self.classes, self.native = classes, native
        self.ids = CocoIds(classes, native)
        self.instances = coco_instances([], [], classes, [])

    @property
    def category_ids(self) -> list[int]:
        return self.ids.category_ids

    def add(self, records: Sequence[Sample], outputs: Sequence[ImageResult | None]) -> list[int]:
        """Take the next records (image sizes from their results); returns their image ids."""
        ids = self.ids.take(records)
        if not self.native:
            sizes = [out.size if out is not None else r.size for r, out in zip(records, outputs, strict=True)]
            part = coco_instances(records, ids, self.classes, sizes, first_annotation=len(self.instances["annotations"]) + 1)
            self.instances["images"].extend(part["images"])
            self.instances["annotations"].extend(part["annotations"])
        return ids


class SubmissionWriter:
    """Collects a protocol's per-image results in record order and writes them.

    ``guesses``: ``predictions.csv`` (Kaggle: wnids / class ids) and ``predictions.txt``
    (devkit: the data set's devkit class ids, else index + 1); an image without a result gets
    an empty row. ``labels`` (the classification protocols): ``predictions.txt`` in the
    devkit's classification format, the top-5 class ids per line. ``detections``: ``detections.json`` (COCO results, integer ids from
    :class:`CocoIds`; scores below ``score_floor`` left out) and, unless the data is COCO
    (``native_ids``), ``ground_truth.json``: the split as a COCO instances file those ids
    refer to (without annotations on a split without ground truth), so that plain
    pycocotools scores the detections.
    """

    def __init__(self, classes: ClassList, *, guesses: bool, detections: bool, labels: bool = False, score_floor: float = 0.0,
                 native_ids: bool = False) -> None:
        self.classes = classes
        self.guesses, self.detections, self.labels, self.score_floor, self.native_ids = guesses, detections, labels, score_floor, native_ids
        self.reset()

    def reset(self) -> None:
        self._labels: list[list[int]] = []
        self._rows: list[tuple[str, list[tuple[int, list[float]]]]] = []
        self._dets: list[dict[str, Any]] = []
        self._coco = CocoSplit(self.classes, self.native_ids)

    def process(self, records: Sequence[Sample], outputs: Sequence[ImageResult | None]) -> None:
        if self.labels:
            self._labels.extend(out.labels.tolist() if out is not None else [] for out in outputs)
        if self.guesses:
            for r, out in zip(records, outputs, strict=True):
                g = out.guesses() if out is not None else None
                pairs = list(zip(g[0].tolist(), g[1].double().tolist(), strict=True)) if g is not None else []
                self._rows.append((image_id(r), pairs))
        if self.detections:
            ids = self._coco.add(records, outputs)
            for i, out in zip(ids, outputs, strict=True):
                if out is not None:
                    d = out.detections if out.detections is not None else Detections.empty()
                    self._dets.extend(detection_records(i, self._coco.category_ids, d.boxes, d.scores, d.labels, self.score_floor))

    @property
    def results(self) -> list[dict[str, Any]]:
        """The COCO results collected so far."""
        return self._dets

    def write(self, folder: str | Path) -> list[Path]:
        """Write the files into ``folder``; returns their paths."""
        folder = Path(folder)
        written = []
        devkit_ids = self.classes.devkit_ids or list(range(1, len(self.classes) + 1))
        if self.labels:
            written.append(write_devkit_labels(folder / "predictions.txt", [[devkit_ids[int(lab)] for lab in row] for row in self._labels]))
        if self.guesses:
            ids = self.classes.ids
            written.append(write_kaggle_csv(folder / "predictions.csv", [(i, [(ids[int(lab)], box) for lab, box in pairs]) for i, pairs in self._rows]))
            written.append(write_devkit_txt(folder / "predictions.txt", [[(devkit_ids[int(lab)], box) for lab, box in pairs] for _, pairs in self._rows]))
        if self.detections:
            written.append(write_detections(folder / "detections.json", self._dets))
            if not self.native_ids:
                path = folder / "ground_truth.json"
                path.write_text(json.dumps(self._coco.instances))
                written.append(path)
        return written
