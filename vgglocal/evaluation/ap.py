"""Average precision from a ranked list, as the PASCAL VOC devkit computes it.

One home for the step shared by VOC detection mAP and VOC classification mAP: both reduce
to a ranked list of hits and misses, then to a precision/recall curve, then to one number.
"""

from __future__ import annotations

import numpy as np

__all__ = ["average_precision", "ranked_average_precision"]


def average_precision(recall: np.ndarray, precision: np.ndarray, *, eleven_point: bool) -> float:
    """AP of a precision/recall curve (``recall``, ``precision``: float arrays [K], in rank order).

    ``eleven_point=True`` is the VOC2007 devkit (``VOCevaldet.m``/``VOCevalcls.m`` of 2007):
    the mean over t in {0, 0.1, ..., 1} of the highest precision at recall >= t (0 when no
    point reaches t). ``False`` is the VOC2010+ devkit's ``VOCap.m``: precision is made
    monotonically non-increasing from the right and the area under that envelope is summed
    at each point where recall changes.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.shape != precision.shape or recall.ndim != 1:
        raise ValueError(f"recall and precision must be equal-length 1-d arrays; got {recall.shape} and {precision.shape}")
    if eleven_point:
        ap = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            above = precision[recall >= t]
            ap += (above.max() if above.size else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    change = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[change] - mrec[change - 1]) * mpre[change]))


def ranked_average_precision(scores: np.ndarray, hits: np.ndarray, n_positives: int, *, eleven_point: bool,
                             ignore: np.ndarray | None = None) -> float:
    """AP of scored items: ``hits[i]`` True where item i is a true positive, ``n_positives``
    the number of positives to find (recall's denominator), ``ignore[i]`` True for items that
    count neither way (VOC ``difficult``). Items are ranked by descending score; ties keep
    their input order (a stable sort, like the devkit's ``sort(..., 'descend')``).

    Returns 0.0 when nothing is to be found (``n_positives == 0``), as the devkits do.
    """
    scores = np.asarray(scores, dtype=np.float64)
    hits = np.asarray(hits, dtype=bool)
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        scores, hits = scores[keep], hits[keep]
    if n_positives <= 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    fp = np.cumsum(~hits[order])
    recall = tp / n_positives
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return average_precision(recall, precision, eleven_point=eleven_point)
