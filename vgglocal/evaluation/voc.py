"""PASCAL VOC detection AP, as the VOC devkit's ``VOCevaldet.m`` computes it.

Per class, the detections of every image are ranked by descending confidence (ties keep their
order: MATLAB's ``sort`` is stable). Each detection is matched to the ground-truth box of its
class in its image with the highest overlap, where overlap is the devkit's inclusive-pixel IoU
(width = x2 - x1 + 1; the same formula as the ILSVRC devkit's, :func:`vgglocal.boxes.ilsvrc_iou`).
With overlap >= 0.5:

* a ``difficult`` object: the detection is ignored, neither true nor false positive;
* an object not yet detected by a higher-ranked detection: a true positive;
* an object already detected: a false positive (a duplicate).

Otherwise the detection is a false positive. Recall's denominator is the number of
non-difficult objects of the class. The devkit assigns each detection to its best-overlap
object even when that object is already taken (it does not fall back to the second best), so
"already detected" only depends on the higher-ranked detections assigned to the same object:
the matching is computed for all detections at once, without a loop over them.

AP: ``voc07_map`` is the VOC2007 devkit's 11-point interpolated AP, ``voc_map`` the VOC2010+
devkit's area under the monotone precision envelope (:mod:`vgglocal.evaluation.ap`). A class
without any non-difficult object has no AP (None in the per-class tables) and is left out of
the mean, as COCOeval leaves out categories without ground truth; the devkit itself would
divide by zero there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import vmap

from vgglocal.boxes import ilsvrc_iou
from vgglocal.evaluation.ap import ranked_average_precision
from vgglocal.evaluation.ilsvrc import pad_ragged

__all__ = ["VOC_IOU", "match_detections", "voc_class_ap", "voc_metrics", "voc_from_coco"]

VOC_IOU = 0.5  # VOCopts.minoverlap
_CHUNK = 65536  # detections per block of the overlap computation (bounds [D, G] memory)


def match_detections(det_image: Tensor, det_boxes: Tensor, det_labels: Tensor, det_scores: Tensor, gt_image: Tensor, gt_boxes: Tensor,
                     gt_labels: Tensor, gt_difficult: Tensor, iou_threshold: float = VOC_IOU) -> tuple[Tensor, Tensor]:
    """The devkit's verdict on every detection.

    Args:
        det_image (Tensor[D] int64): image index of each detection (any integers).
        det_boxes (Tensor[D, 4]): x1, y1, x2, y2 (inclusive pixel coordinates).
        det_labels (Tensor[D] int64), det_scores (Tensor[D]): class and confidence.
        gt_image (Tensor[G] int64), gt_boxes (Tensor[G, 4]), gt_labels (Tensor[G] int64),
        gt_difficult (Tensor[G] bool): the ground-truth objects.
    Returns:
        (hits Tensor[D] bool, ignored Tensor[D] bool): true positives, and detections of
        difficult objects (neither true nor false positives). The rest are false positives.
    """
    d = len(det_labels)
    hits = torch.zeros(d, dtype=torch.bool)
    ignored = torch.zeros(d, dtype=torch.bool)
    if d == 0 or len(gt_labels) == 0:
        return hits, ignored
    # Pad the ground truth per image: [I, K, ...] with label -1 as padding.
    images, gt_img = torch.unique(torch.cat([gt_image, det_image]), return_inverse=True)
    gt_img, det_img = gt_img[: len(gt_image)], gt_img[len(gt_image):]
    order = torch.argsort(gt_img, stable=True)
    counts = torch.bincount(gt_img, minlength=len(images))
    k = int(counts.max())
    pad_boxes = pad_ragged(counts, gt_boxes[order].double(), k, 0.0)
    pad_labels = pad_ragged(counts, gt_labels[order].long(), k, -1)
    pad_difficult = pad_ragged(counts, gt_difficult[order].bool(), k, False)
    best = torch.empty(d, dtype=torch.float64)
    arg = torch.empty(d, dtype=torch.int64)
    boxes = det_boxes.double()
    for lo in range(0, d, _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        rows = det_img[sl]
        iou = vmap(ilsvrc_iou)(boxes[sl, None, :], pad_boxes[rows])[:, 0]  # [B, K]
        iou = torch.where(pad_labels[rows] == det_labels[sl, None], iou, torch.full_like(iou, -math.inf))
        best[sl], arg[sl] = iou.max(dim=1)  # ties: the first object, as the devkit's strict '>'
    above = best >= iou_threshold
    ignored = above & pad_difficult[det_img, arg]
    candidate = above & ~ignored
    # Rank order (stable on ties); among the candidates assigned to one object, the first wins.
    rank = torch.argsort(-det_scores.double(), stable=True)
    cand_ranked = rank[candidate[rank]]
    if len(cand_ranked):
        obj = (det_img * k + arg)[cand_ranked].numpy()
        _, first = np.unique(obj, return_index=True)
        hits[cand_ranked[torch.from_numpy(first)]] = True
    return hits, ignored


def voc_class_ap(det_labels: Tensor, det_scores: Tensor, hits: Tensor, ignored: Tensor, gt_labels: Tensor, gt_difficult: Tensor,
                 num_classes: int, *, eleven_point: bool) -> np.ndarray:
    """Per-class AP ``ndarray[C]`` float64 from :func:`match_detections`' verdicts; NaN for a
    class without non-difficult objects."""
    positives = torch.bincount(gt_labels[~gt_difficult.bool()].long(), minlength=num_classes)[:num_classes]
    out = np.full(num_classes, np.nan)
    labels = det_labels.numpy()
    scores, hits_np, ignored_np = det_scores.double().numpy(), hits.numpy(), ignored.numpy()
    for c in np.flatnonzero(positives.numpy() > 0):
        sel = labels == c
        out[c] = ranked_average_precision(scores[sel], hits_np[sel], int(positives[c]), eleven_point=eleven_point, ignore=ignored_np[sel])
    return out


def _mean(ap: np.ndarray) -> float | None:
    valid = ap[~np.isnan(ap)]
    return float(valid.mean()) if valid.size else None


def voc_metrics(dets: tuple[Tensor, Tensor, Tensor, Tensor], gts: tuple[Tensor, Tensor, Tensor, Tensor], classes: Sequence[str]) -> dict[str, Any]:
    """``voc07_map``, ``voc_map`` and the per-class tables ``voc07_ap_per_class``,
    ``voc_ap_per_class`` (class id → AP, None without objects).

    Args:
        dets: (image Tensor[D], boxes Tensor[D, 4], labels Tensor[D], scores Tensor[D]).
        gts: (image Tensor[G], boxes Tensor[G, 4], labels Tensor[G], difficult Tensor[G] bool).
        classes: class ids in index order (the per-class tables' keys).
    """
    det_image, det_boxes, det_labels, det_scores = dets
    gt_image, gt_boxes, gt_labels, gt_difficult = gts
    hits, ignored = match_detections(det_image, det_boxes, det_labels, det_scores, gt_image, gt_boxes, gt_labels, gt_difficult)
    out: dict[str, Any] = {}
    for key, eleven in (("voc07", True), ("voc", False)):
        ap = voc_class_ap(det_labels, det_scores, hits, ignored, gt_labels, gt_difficult, len(classes), eleven_point=eleven)
        out[f"{key}_map"] = _mean(ap)
        out[f"{key}_ap_per_class"] = {c: (None if np.isnan(v) else float(v)) for c, v in zip(classes, ap.tolist(), strict=True)}
    return {k: out[k] for k in ("voc07_map", "voc_map", "voc07_ap_per_class", "voc_ap_per_class")}


def voc_from_coco(instances: dict[str, Any], results: list[dict[str, Any]], image_ids: Sequence[int] | None = None) -> dict[str, Any]:
    """:func:`voc_metrics` of COCO results against a COCO instances dict, over ``image_ids``
    (default: every image); the inputs as :func:`voc_inputs` builds them."""
    return voc_metrics(*voc_inputs(instances, results, image_ids))


def voc_inputs(instances: dict[str, Any], results: list[dict[str, Any]], image_ids: Sequence[int] | None = None
               ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], list[str]]:
    """(dets, gts, class names) of :func:`voc_metrics` from COCO results and instances. Boxes go
    from ``[x, y, w, h]`` to x1y1x2y2; objects marked ``difficult`` or ``iscrowd`` are ignored
    (VOC ignores difficult ones; a crowd region is not one object to find); classes are the
    categories in file order, named by their ``name``."""
    cats = [c["id"] for c in instances.get("categories", [])]
    index = {c: i for i, c in enumerate(cats)}
    names = [str(c.get("name", c["id"])) for c in instances.get("categories", [])]
    scope = None if image_ids is None else {int(i) for i in image_ids}

    def wanted(d: dict[str, Any]) -> bool:
        return d.get("category_id") in index and (scope is None or int(d["image_id"]) in scope)

    def xyxy(b: list[float]) -> list[float]:
        return [b[0], b[1], b[0] + b[2], b[1] + b[3]]

    anns = [a for a in instances.get("annotations", []) if wanted(a)]
    gts = (torch.tensor([int(a["image_id"]) for a in anns], dtype=torch.int64),
           torch.tensor([xyxy(a["bbox"]) for a in anns], dtype=torch.float64).reshape(-1, 4),
           torch.tensor([index[a["category_id"]] for a in anns], dtype=torch.int64),
           torch.tensor([bool(a.get("difficult") or a.get("iscrowd")) for a in anns], dtype=torch.bool))
    dets_in = [d for d in results if wanted(d)]
    dets = (torch.tensor([int(d["image_id"]) for d in dets_in], dtype=torch.int64),
            torch.tensor([xyxy(d["bbox"]) for d in dets_in], dtype=torch.float64).reshape(-1, 4),
            torch.tensor([index[d["category_id"]] for d in dets_in], dtype=torch.int64),
            torch.tensor([float(d["score"]) for d in dets_in], dtype=torch.float64))
    return dets, gts, names
