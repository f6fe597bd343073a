"""COCO detection results and pycocotools' COCOeval (SPEC 5, "Detection").

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

from vgglocal.data.records import Sample
from vgglocal.errors import UserError
from vgglocal.evaluation.writers import coco_image_id, detection_records
from vgglocal.inference.results import Detections, ImageResult

__all__ = ["coco_eval", "COCOEvaluator"]


def coco_eval(annotations: str | Path, detections: list[dict[str, Any]] | str | Path, image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """COCOeval (bbox) of ``detections`` (a results list or a JSON file) against the instances
    JSON ``annotations``, over ``image_ids`` (default: all images of the annotations).

    Returns ``coco_ap`` (AP at IoU .50:.95), ``coco_ap50``, ``coco_ap75``; AP is -1 where
    COCOeval has nothing to score (its convention).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations = Path(annotations)
    if not annotations.is_file():
        raise UserError(f"COCO annotations not found: {annotations}")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO(str(annotations))
        dets = detections if not isinstance(detections, (str, Path)) else json.loads(Path(detections).read_text())
        if not dets:
            return {"coco_ap": 0.0, "coco_ap50": 0.0, "coco_ap75": 0.0}
        dt = gt.loadRes(list(dets))
        ev = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"coco_ap": float(ev.stats[0]), "coco_ap50": float(ev.stats[1]), "coco_ap75": float(ev.stats[2])}


class COCOEvaluator:
    """Collects the detections of each processed record (an unreadable image: none, so its
    objects count as missed); ``summarize`` runs :func:`coco_eval` over the images seen."""

    def __init__(self, annotations: str | Path, category_ids: Sequence[int], floor: float = 0.0) -> None:
        self.annotations = Path(annotations)
        self.category_ids = list(category_ids)
        self.floor = floor
        self.reset()

    def reset(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.image_ids: list[int] = []

    def process(self, records: Sequence[Sample], outputs: Sequence[ImageResult | None]) -> None:
        for r, out in zip(records, outputs, strict=True):
            image_id = int(coco_image_id(r))
            self.image_ids.append(image_id)
            d = out.detections if out is not None and out.detections is not None else Detections.empty()
            self.results.extend(detection_records(image_id, self.category_ids, d.boxes, d.scores, d.labels, self.floor))

    def summarize(self) -> dict[str, float]:
        return coco_eval(self.annotations, self.results, self.image_ids)
