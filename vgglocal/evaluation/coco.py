"""COCO detection results and pycocotools' COCOeval (SPEC 5, "Detection").

Results are ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`` (COCO's own
format; our x1y1x2y2 boxes are converted once, here, on the way out).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from vgglocal.boxes import box_convert
from vgglocal.errors import UserError

__all__ = ["detection_records", "write_detections", "coco_eval", "COCOEvaluator"]


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(records)))
    return path


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
    """Collects detections per image; ``summarize`` runs :func:`coco_eval` over the images seen."""

    def __init__(self, annotations: str | Path, category_ids: Sequence[int], floor: float = 0.0) -> None:
        self.annotations = Path(annotations)
        self.category_ids = list(category_ids)
        self.floor = floor
        self.reset()

    def reset(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.image_ids: list[int] = []

    def process(self, image_id: int, boxes: Tensor, scores: Tensor, labels: Tensor) -> None:
        self.image_ids.append(int(image_id))
        self.results.extend(detection_records(int(image_id), self.category_ids, boxes, scores, labels, self.floor))

    def summarize(self) -> dict[str, float]:
        return coco_eval(self.annotations, self.results, self.image_ids)

