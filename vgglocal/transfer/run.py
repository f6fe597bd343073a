"""``vgglocal transfer``: one Appendix B protocol from files on disk to metrics.

:func:`run_transfer` runs one protocol: features of the training and test items (cached in a
folder and reused when the settings match, :func:`vgglocal.transfer.features.cached_features`),
linear SVMs with C chosen on held-out training data (:mod:`vgglocal.transfer.svm`), and the
protocol's metrics:

* ``voc-cls``: train on ``data.train_split``, test on ``data.val_split``; ``voc07_cls_map``
  (11-point AP, the VOC2007 devkit), ``voc_cls_map`` (area AP, VOC2010+), per-class AP.
* ``caltech``: ``transfer.splits`` random splits of ``transfer.train_per_class`` training and
  at most ``transfer.test_per_class`` test images per class; ``mean_class_recall`` (mean over
  the splits) and ``mean_class_recall_std`` (population std over the splits).
* ``voc-action``: train on ``data.train_split``, test on ``data.val_split``, one item per
  person; the image-only setting (``voc_action_map_image``) and the image + box setting
  (``voc_action_map``: the box's descriptor stacked with the image's), area AP over the ten
  scored actions (``other`` is not scored, as in the devkit).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vgglocal.config import Config
from vgglocal.data.caltech import caltech_splits
from vgglocal.data.voc_labels import SCORED_ACTIONS
from vgglocal.transfer.features import FeatureSet, Log, TransferError, cached_features
from vgglocal.transfer.svm import choose_c, fit_svms, mean_class_recall, min_per_class, voc_cls_aps

__all__ = ["TransferRequest", "run_transfer", "TransferError"]


@dataclass
class TransferRequest:
    """What ``vgglocal transfer`` was asked: the protocol, the nets (several: late fusion), how to
    aggregate the scales, the scales (empty: ``transfer.scales``), random weights instead of the
    trained ones (a baseline), and the feature cache folder (default ``OUT/features``)."""

    protocol: str
    checkpoints: list[str]
    aggregate: str
    scales: tuple[int, ...] = ()
    random_weights: bool = False
    cache: str | None = None


def run_transfer(cfg: Config, req: TransferRequest, out: str | Path, *, progress: bool = True,
                 log: Log | None = None) -> dict[str, Any]:
    """Features, SVMs and metrics of one protocol; writes ``out/metrics.json`` and
    ``out/per_class.csv``; returns the metrics."""
    log = log or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(req.cache) if req.cache else out / "features"
    t = cfg.transfer
    scales = tuple(req.scales or t.scales)
    start = time.time()

    def feats(split: str, boxes: bool = False) -> FeatureSet:
        return cached_features(cfg, req.checkpoints, split, cache, protocol=req.protocol, scales=scales, boxes=boxes,
                               random_weights=req.random_weights, progress=progress, log=log)

    common: dict[str, Any] = {"protocol": req.protocol, "checkpoints": list(req.checkpoints),
                              "random_weights": req.random_weights, "scales": list(scales), "aggregate": req.aggregate,
                              "flip": t.flip, "svm_c_candidates": list(t.svm_c), "val_fraction": t.val_fraction,
                              "seed": cfg.seed}
    if req.protocol == "caltech":
        metrics, rows = _caltech(cfg, feats(cfg.data.train_split), req.aggregate, log)
    elif req.protocol == "voc-cls":
        metrics, rows = _voc_cls(cfg, feats(cfg.data.train_split), feats(cfg.data.val_split), req.aggregate, log)
    elif req.protocol == "voc-action":
        metrics, rows = _voc_action(cfg, feats(cfg.data.train_split, True), feats(cfg.data.val_split, True), req.aggregate, log)
    else:
        raise TransferError(f"unknown protocol {req.protocol!r}; choose voc-cls, caltech or voc-action")
    metrics = {**metrics, **common, "seconds": round(time.time() - start, 1)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    header, body, *per_image = rows
    _write_csv(out / "per_class.csv", header, body)
    if per_image:  # Caltech: every test image of every split, for paired tests between runs
        _write_csv(out / "predictions.csv", *per_image)
    return metrics


def _write_csv(path: Path, header: list[str], body: list[list[Any]]) -> None:
    with open(path, "w", newline="") as f:  # csv quotes a name with a comma in it
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(body)


def _fit_predict(cfg: Config, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, kind: str, n_classes: int,
                 seed: int, classes: Sequence[int] | None = None) -> tuple[np.ndarray, float, dict[float, float], bool]:
    t = cfg.transfer
    c, held = choose_c(x_train, y_train, t.svm_c, kind, n_classes, val_fraction=t.val_fraction, seed=seed, classes=classes)
    svms = fit_svms(x_train, y_train, c, kind, n_classes, seed)
    return svms.decision_function(x_test), c, held, svms.converged


def _caltech(cfg: Config, fs: FeatureSet, how: str, log: Log) -> tuple[dict[str, Any], tuple[list[str], list[list[Any]]]]:
    t = cfg.transfer
    x, y, n_classes = fs.descriptors(how), fs.targets.astype(np.int64), len(fs.classes)
    if len(np.unique(y)) != n_classes:
        missing = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
        raise TransferError(f"class {fs.classes[missing[0]]!r} has no usable image ({len(missing)} classes empty)")
    need = min_per_class(n_classes, t.val_fraction)
    if t.train_per_class < need:  # C is chosen on a stratified hold-out of each split's training images
        raise TransferError(f"transfer.train_per_class {t.train_per_class}: too few training images per class to hold out "
                            f"transfer.val_fraction {t.val_fraction:g} of them over {n_classes} classes for choosing C; "
                            f"use at least {need}")
    splits = caltech_splits(y, t.train_per_class, t.test_per_class, t.splits, cfg.seed, fs.classes)
    means, recalls, chosen, held_scores, predictions = [], [], [], [], []
    for k, (train, test) in enumerate(splits):
        scores, c, held, converged = _fit_predict(cfg, x[train], y[train], x[test], "multiclass", n_classes, cfg.seed + k)
        predicted = scores.argmax(1)
        mean, per_class = mean_class_recall(y[test], predicted, n_classes)
        predictions += [[k, fs.ids[i], fs.classes[y[i]], fs.classes[p]] for i, p in zip(test.tolist(), predicted.tolist(),
                                                                                        strict=True)]
        means.append(mean)
        recalls.append(per_class)
        chosen.append(c)
        held_scores.append(held)
        log(f"split {k}: {len(train)} train / {len(test)} test images, C={c:g}, mean class recall {100 * mean:.1f}%"
            + ("" if converged else " (liblinear did not fully converge)"))
    per_class = np.mean(recalls, axis=0)
    metrics = {"mean_class_recall": float(np.mean(means)), "mean_class_recall_std": float(np.std(means)),
               "split_mean_class_recall": [float(m) for m in means], "svm_c": chosen,
               "heldout_mean_class_recall": [{str(c): s for c, s in h.items()} for h in held_scores],
               "n_classes": n_classes, "n_images": len(fs), "n_unreadable": len(fs.bad),
               "train_per_class": t.train_per_class, "test_per_class": t.test_per_class, "splits": t.splits,
               "n_train": int(len(splits[0][0])), "n_test": int(len(splits[0][1]))}
    rows = [[name, f"{r:.4f}"] for name, r in zip(fs.classes, per_class.tolist(), strict=True)]
    return metrics, (["class", "mean_recall"], rows, ["split", "image", "class", "predicted"], predictions)


def _multilabel(cfg: Config, train: FeatureSet, test: FeatureSet, how: str, part: str,
                scored: Sequence[int]) -> tuple[np.ndarray, np.ndarray, float, dict[float, float], bool]:
    if train.classes != test.classes:
        raise TransferError(f"the training and test splits have different classes ({train.classes[:3]}... vs {test.classes[:3]}...)")
    n_classes = len(train.classes)
    scores, c, held, converged = _fit_predict(cfg, train.descriptors(how, part), train.targets, test.descriptors(how, part),
                                              "multilabel", n_classes, cfg.seed, scored)
    ap11 = voc_cls_aps(scores, test.targets, eleven_point=True, classes=scored)
    ap = voc_cls_aps(scores, test.targets, eleven_point=False, classes=scored)
    return ap11, ap, c, held, converged


def _voc_cls(cfg: Config, train: FeatureSet, test: FeatureSet, how: str, log: Log):
    scored = list(range(len(train.classes)))
    ap11, ap, c, held, converged = _multilabel(cfg, train, test, how, "image", scored)
    log(f"{len(train)} train / {len(test)} test images, C={c:g}: mAP {100 * ap11.mean():.1f}% (11-point), "
        f"{100 * ap.mean():.1f}% (area)" + ("" if converged else " (liblinear did not fully converge)"))
    metrics = {"voc07_cls_map": float(ap11.mean()), "voc_cls_map": float(ap.mean()), "svm_c": c,
               "heldout_map": {str(k): v for k, v in held.items()}, "n_train": len(train), "n_test": len(test),
               "n_images": len(test), "n_unreadable": len(train.bad) + len(test.bad),
               "per_class_ap": dict(zip(train.classes, ap.tolist(), strict=True)),
               "per_class_ap11": dict(zip(train.classes, ap11.tolist(), strict=True))}
    rows = [[name, f"{a11:.4f}", f"{a:.4f}"] for name, a11, a in zip(train.classes, ap11.tolist(), ap.tolist(), strict=True)]
    return metrics, (["class", "ap_11point", "ap_area"], rows)


def _voc_action(cfg: Config, train: FeatureSet, test: FeatureSet, how: str, log: Log):
    scored = [train.classes.index(a) for a in SCORED_ACTIONS]
    results = {}
    for part, key in (("image", "voc_action_map_image"), ("image+box", "voc_action_map")):
        _, ap, c, held, converged = _multilabel(cfg, train, test, how, part, scored)
        results[key] = (ap, c, held)
        log(f"{part}: {len(train)} train / {len(test)} test people, C={c:g}: mAP {100 * ap.mean():.1f}%"
            + ("" if converged else " (liblinear did not fully converge)"))
    metrics: dict[str, Any] = {key: float(ap.mean()) for key, (ap, _, _) in results.items()}
    metrics.update({"svm_c": {key: c for key, (_, c, _) in results.items()},
                    "heldout_map": {key: {str(k): v for k, v in held.items()} for key, (_, _, held) in results.items()},
                    "n_train": len(train), "n_test": len(test), "n_unreadable": len(train.bad) + len(test.bad)})
    img, box = results["voc_action_map_image"][0], results["voc_action_map"][0]
    rows = [[name, f"{a:.4f}", f"{b:.4f}"] for name, a, b in zip(SCORED_ACTIONS, img.tolist(), box.tolist(), strict=True)]
    return metrics, (["action", "ap_image", "ap_image_box"], rows)
