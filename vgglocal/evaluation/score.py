"""``vgglocal score``: one scorer for every submission format against every kind of ground truth.

Predictions:

* a Kaggle CSV (``ImageId,PredictionString``) or a devkit localisation text file (one line
  per image, ``<label> <xmin> <ymin> <xmax> <ymax>`` repeated, devkit class ids): the ILSVRC
  devkit's localisation and classification errors (:mod:`vgglocal.evaluation.ilsvrc`);
* a COCO results JSON (``[{"image_id", "category_id", "bbox", "score"}]``): the twelve COCOeval
  statistics and the VOC mAP (:mod:`vgglocal.evaluation.coco`, :mod:`vgglocal.evaluation.voc`).

Ground truth: a Kaggle solution CSV, a COCO instances JSON, or a data root of any supported
layout (``fmt``, default detected; ``split``, default ``val``). A data root is read exactly as
``vgglocal eval`` reads it, so a file ``eval`` wrote scores to the numbers ``eval`` reported:
the devkit text's lines are the split's images in order, and on non-COCO data the COCO ids
are the image's position in the split (the ``ground_truth.json`` ``eval`` writes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vgglocal.config import DataConfig
from vgglocal.data import ClassList, Sample, detect_format, read_split
from vgglocal.evaluation.coco import load_coco
from vgglocal.evaluation.detection import detection_metrics
from vgglocal.evaluation.ilsvrc import (
    Submission,
    SubmissionError,
    read_devkit_txt,
    read_kaggle_csv,
    score_kaggle,
)
from vgglocal.evaluation.voc import voc_from_coco
from vgglocal.evaluation.writers import CocoIds, coco_instances, image_id

__all__ = ["score", "kaggle_truth", "voc_from_coco", "read_root", "read_results", "instances_of", "read_ilsvrc"]


def read_root(root: str, fmt: str | None, split: str | None) -> tuple[list[Sample], ClassList, str]:
    """A data root's split (``fmt`` detected when None, ``split`` default val) as eval reads it:
    (records, classes, format)."""
    fmt = fmt or detect_format(root)
    cfg = DataConfig(format=fmt, root=root)
    records, classes = read_split(cfg, split or cfg.val_split, "loc")
    return records, classes, fmt


def kaggle_truth(records: list[Sample], classes: ClassList) -> Submission:
    """The records' boxes as a Kaggle solution table ``{image id: [(wnid, box), ...]}``."""
    return {image_id(r): [(classes.ids[int(lab)], tuple(b)) for lab, b in zip(np.asarray(r.box_labels).tolist(), np.asarray(r.boxes, np.float64).tolist(), strict=True)]
            for r in records if len(r.boxes)}


def _devkit_as_kaggle(path: str, records: list[Sample], classes: ClassList, labels: bool = False) -> Submission:
    rows = read_devkit_txt(path, labels=labels)
    if len(rows) != len(records):
        raise SubmissionError(f"{path}: {len(rows)} lines for the {len(records)} images of the split (one line per image, in order)")
    by_devkit = {int(d): classes.ids[i] for i, d in enumerate(classes.devkit_ids or range(1, len(classes) + 1))}
    return {image_id(r): [(by_devkit.get(lab, f"unknown-{lab}"), box) for lab, box in row] for r, row in zip(records, rows, strict=True)}


def read_results(path: str) -> list[dict[str, Any]]:
    """A COCO results JSON, checked to be a list of {image_id, category_id, bbox, score}."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SubmissionError(f"{path}: not a COCO results JSON ({e})") from None
    keys = {"image_id", "category_id", "bbox", "score"}
    if not isinstance(results, list) or not all(isinstance(d, dict) and keys <= set(d) for d in results):
        raise SubmissionError(f"{path}: expected COCO results, a list of {{image_id, category_id, bbox, score}}")
    return results


def instances_of(ground_truth: str, fmt: str | None, split: str | None) -> dict[str, Any]:
    """A COCO instances dict from a COCO JSON file or from a data root of any layout."""
    if not os.path.isdir(ground_truth):
        return load_coco(ground_truth).dataset
    records, classes, fmt = read_root(ground_truth, fmt, split)
    if fmt == "coco" and classes.coco_ids:
        from vgglocal.data.spec import split_spec

        spec = split_spec(DataConfig(format=fmt, root=ground_truth), split or "val")
        return load_coco(spec.annotations or spec.at("annotations", f"instances_{spec.name}.json")).dataset
    ids = CocoIds(classes, native=False).take(records)
    return coco_instances(records, ids, classes, [r.size for r in records])


def score(predictions: str, ground_truth: str, *, fmt: str | None = None, split: str | None = None,
          labels: bool = False) -> dict[str, Any]:
    """The metric dict of ``predictions`` against ``ground_truth`` (module doc). ``labels``: a
    devkit .txt of class ids only (the classification form): classification errors only."""
    kind = Path(predictions).suffix.lower()
    if not Path(predictions).is_file():
        raise SubmissionError(f"file not found: {predictions}")
    if kind == ".json":
        results = read_results(predictions)
        instances = instances_of(ground_truth, fmt, split)
        scope = [int(i["id"]) for i in instances.get("images", [])]
        return detection_metrics(instances, results, scope)
    if kind not in (".csv", ".txt"):
        raise SubmissionError(f"{predictions}: expected a Kaggle .csv, a devkit .txt or a COCO results .json")
    preds, truth = read_ilsvrc(predictions, ground_truth, fmt=fmt, split=split, labels=labels)
    metrics = score_kaggle(preds, truth, str(predictions), str(ground_truth))
    return {k: v for k, v in metrics.items() if "loc" not in k} if labels else metrics


def read_ilsvrc(predictions: str, ground_truth: str, *, fmt: str | None = None, split: str | None = None,
                labels: bool = False) -> tuple[Submission, Submission]:
    """A Kaggle CSV or devkit .txt and its ground truth (a Kaggle solution CSV or a data root),
    both as Kaggle tables ``{image id: [(wnid, box), ...]}`` (module doc); ``labels``: the .txt
    holds class ids only (:func:`~vgglocal.evaluation.ilsvrc.read_devkit_txt`)."""
    kind = Path(predictions).suffix.lower()
    if not Path(predictions).is_file():
        raise SubmissionError(f"file not found: {predictions}")
    if kind not in (".csv", ".txt"):
        raise SubmissionError(f"{predictions}: expected a Kaggle .csv or a devkit .txt")
    if labels and kind != ".txt":
        raise SubmissionError(f"{predictions}: class ids only (--labels) is the devkit .txt form")
    if os.path.isdir(ground_truth):
        records, classes, _ = read_root(ground_truth, fmt, split)
        truth = kaggle_truth(records, classes)
        preds = _devkit_as_kaggle(predictions, records, classes, labels) if kind == ".txt" else read_kaggle_csv(predictions)
    else:
        if Path(ground_truth).suffix.lower() != ".csv":
            raise SubmissionError(f"{ground_truth}: ground truth for a {kind} file is a Kaggle solution .csv or a data root folder")
        if kind == ".txt":
            raise SubmissionError(f"{predictions}: a devkit .txt is scored against the data root (its class ids and image order come from it)")
        truth = read_kaggle_csv(ground_truth, require_boxes=True)
        preds = read_kaggle_csv(predictions)
    if not truth:
        raise SubmissionError(f"{ground_truth}: no images with boxes")
    return preds, truth
