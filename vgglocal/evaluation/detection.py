"""The detection metrics of protocol 2, computed from the COCO results exactly as
``detections.json`` holds them: the twelve COCOeval statistics (:mod:`vgglocal.evaluation.coco`)
and the VOC mAP (:mod:`vgglocal.evaluation.voc`).

Both ``vgglocal eval`` (:class:`DetectionEvaluator`) and ``vgglocal score`` (on the written
files) call :func:`detection_metrics` on the same results and the same instances, so the
numbers ``eval`` reports are the numbers the files it wrote give: the same score floor, the
same rounding of boxes and scores, the same ground truth (difficult and crowd objects alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vgglocal.data.records import ClassList
from vgglocal.evaluation.coco import COCOEvaluator, coco_eval, load_coco
from vgglocal.evaluation.voc import voc_from_coco

__all__ = ["detection_metrics", "DetectionEvaluator"]


def detection_metrics(instances: dict[str, Any], results: list[dict[str, Any]], image_ids: Sequence[int] | None = None) -> dict[str, Any]:
    """COCOeval's twelve statistics and the VOC mAP (with per-class tables) of COCO ``results``
    against a COCO ``instances`` dict, over ``image_ids`` (default: every image)."""
    return {**coco_eval(instances, results, image_ids), **voc_from_coco(instances, results, image_ids)}


class DetectionEvaluator(COCOEvaluator):
    """Collects each processed record's detections as the COCO results ``detections.json``
    receives (:func:`~vgglocal.evaluation.writers.detection_records`: scores below ``floor``
    left out, boxes and scores rounded as written); ``summarize`` gives
    :func:`detection_metrics` of them over the images seen.

    The floor applies before evaluation rather than only on the way out: the VOC and COCO
    evaluation servers score the file that is submitted, and a user re-running the VOC devkit
    or COCOeval on ``detections.json`` expects the numbers ``eval`` reported. The detection
    libraries do the same (Detectron2's ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``, torchvision's
    ``box_score_thresh``, both 0.05: a test-time threshold inside the detector, before any
    evaluator sees its output).
    """

    def __init__(self, classes: ClassList, annotations: str | Path | None = None, floor: float = 0.0) -> None:
        super().__init__(classes, annotations, floor)

    def summarize(self) -> dict[str, Any]:
        instances = load_coco(self.annotations).dataset if self.annotations is not None else self.split.instances
        return detection_metrics(instances, self.results, self.image_ids)
