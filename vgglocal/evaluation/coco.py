"""COCO detection results and pycocotools' COCOeval.

Results are ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`` (COCO's own
format, written by :mod:`vgglocal.evaluation.writers`).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vgglocal.data.records import ClassList, Sample
from vgglocal.errors import UserError
from vgglocal.evaluation.writers import CocoSplit, detection_records
from vgglocal.inference.results import Detections, ImageResult

__all__ = ["COCO_KEYS", "load_coco", "coco_eval", "COCOEvaluator"]


# The twelve COCOeval bbox statistics (``COCOeval.stats`` order) under their metrics.json keys.
COCO_KEYS = ("coco_ap", "coco_ap50", "coco_ap75", "coco_ap_small", "coco_ap_medium", "coco_ap_large",
             "coco_ar1", "coco_ar10", "coco_ar100", "coco_ar_small", "coco_ar_medium", "coco_ar_large")


def load_coco(annotations: str | Path | dict[str, Any]) -> Any:
    """A pycocotools ``COCO`` from an instances JSON file or an instances dict."""
    from pycocotools.coco import COCO

    if isinstance(annotations, dict):
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = {"info": {}, "licenses": [], **annotations}
            gt.createIndex()
        return gt
    path = Path(annotations)
    if not path.is_file():
        raise UserError(f"COCO annotations not found: {path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(str(path))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a COCO instances file ({type(e).__name__}: {e})") from None


def coco_eval(annotations: str | Path | dict[str, Any], detections: list[dict[str, Any]] | str | Path,
              image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """pycocotools' COCOeval (bbox) of ``detections`` (a results list or a JSON file) against
    ``annotations`` (an instances JSON file or dict), over ``image_ids`` (default: all images
    of the annotations). Returns the twelve statistics under :data:`COCO_KEYS`; a statistic is
    -1 where COCOeval has nothing to score (its convention), and every one is 0 without any
    detection.

    COCOeval evaluates every (image, category) pair, which at ILSVRC scale (50,000 images x
    1,000 classes) means 200M Python calls and gigabytes of per-pair records. Its per-category
    results do not depend on the images where a category has neither an object nor a
    detection, so each category is evaluated over just those images and the per-category
    precision/recall tables are stacked before COCOeval's own ``summarize``: the same numbers
    as one plain run, at the cost of the pairs that exist.
    """
    from pycocotools.cocoeval import COCOeval

    gt = load_coco(annotations)
    dets = detections if not isinstance(detections, (str, Path)) else json.loads(Path(detections).read_text())
    if not dets:
        return dict.fromkeys(COCO_KEYS, 0.0)
    scope = set(int(i) for i in image_ids) if image_ids is not None else set(gt.getImgIds())
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(list(dets))
        images_of: dict[int, set[int]] = {}
        for index in (gt.catToImgs, dt.catToImgs):
            for cat, imgs in index.items():
                images_of.setdefault(int(cat), set()).update(i for i in imgs if i in scope)
        precision, recall, ev = [], [], None
        for cat in sorted(gt.getCatIds()):
            imgs = images_of.get(cat)
            if not imgs:
                continue  # neither objects nor detections: COCOeval's -1, left out of every mean
            ev = COCOeval(gt, dt, "bbox")
            ev.params.catIds, ev.params.imgIds = [cat], sorted(imgs)
            ev.evaluate()
            ev.accumulate()
            precision.append(ev.eval["precision"])
            recall.append(ev.eval["recall"])
        if ev is None:
            return dict.fromkeys(COCO_KEYS, -1.0)
        ev.eval["precision"] = np.concatenate(precision, axis=2)  # [T, R, K, A, M]
        ev.eval["recall"] = np.concatenate(recall, axis=1)  # [T, K, A, M]
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_KEYS, ev.stats, strict=True)}


class COCOEvaluator:
    """Collects the detections of each processed record (an unreadable image: none, so its
    objects count as missed); ``summarize`` gives :func:`coco_eval` over the images seen.

    ``annotations``: the data set's instances JSON (COCO data: image and category ids are the
    data set's own), or None to score against the records themselves
    (:func:`vgglocal.evaluation.writers.coco_instances`: ids by split position and
    :func:`vgglocal.evaluation.writers.category_ids`).
    """

    def __init__(self, classes: ClassList, annotations: str | Path | None = None, floor: float = 0.0) -> None:
        self.classes = classes
        self.annotations = Path(annotations) if annotations is not None else None
        self.floor = floor
        self.reset()

    def reset(self) -> None:
        self.split = CocoSplit(self.classes, native=self.annotations is not None)
        self.results: list[dict[str, Any]] = []
        self.image_ids: list[int] = []

    def process(self, records: Sequence[Sample], outputs: Sequence[ImageResult | None]) -> None:
        ids = self.split.add(records, outputs)
        self.image_ids.extend(ids)
        for image_id, out in zip(ids, outputs, strict=True):
            d = out.detections if out is not None and out.detections is not None else Detections.empty()
            self.results.extend(detection_records(image_id, self.split.category_ids, d.boxes, d.scores, d.labels, self.floor))

    def summarize(self) -> dict[str, float]:
        return coco_eval(self.annotations if self.annotations is not None else self.split.instances, self.results, self.image_ids)
