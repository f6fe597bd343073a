"""Appendix B's classifiers and metrics: one-vs-rest linear SVMs on fixed deep features, the SVM's
C chosen on a held-out part of the training data, VOC classification AP and mean class recall.

Linear SVMs are scikit-learn's ``LinearSVC`` (liblinear; squared hinge loss, L2 penalty). Two
kinds of targets:

* ``multiclass`` (Caltech): ``targets [N]`` class indices; one ``LinearSVC`` one-vs-rest over
  all classes; the prediction is the class of the highest decision value; the metric is the
  mean class recall (the mean over classes of the fraction of its test images predicted as it,
  which compensates for the different numbers of test images per class).
* ``multilabel`` (VOC classification and action): ``targets [N, C]`` in {1, 0, -1}; one binary
  ``LinearSVC`` per class on the items whose label is not 0 (``difficult``-only images carry no
  label for that class); the metric is the devkit's AP per class
  (:func:`vgglocal.evaluation.ap.ranked_average_precision`, 0-labelled items ignored).

C is chosen once for all classes: every candidate is trained on 80% of the training items and
scored on the other 20% (Appendix B: "20% of the training images were used as a validation
set for hyper-parameter selection"), the best (the smaller C on ties) is retrained on all of
them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vgglocal.evaluation.ap import ranked_average_precision

__all__ = ["KINDS", "LinearSVMs", "fit_svms", "choose_c", "voc_cls_aps", "mean_class_recall", "holdout_split", "min_per_class"]

KINDS = ("multiclass", "multilabel")
_MAX_ITER = 10_000


@dataclass
class LinearSVMs:
    """Trained one-vs-rest linear SVMs: ``weight [C, D]`` and ``bias [C]`` (float64). A class
    without training items has weight 0 and bias -inf (``multiclass``: never predicted) or -1
    (``multilabel`` without both positives and negatives: one constant score)."""

    weight: np.ndarray
    bias: np.ndarray
    C: float
    converged: bool

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Scores ``[N, C]`` of features ``x [N, D]``."""
        return np.asarray(x, np.float64) @ self.weight.T + self.bias


def _svc(c: float, seed: int):
    from sklearn.svm import LinearSVC

    return LinearSVC(C=c, dual="auto", max_iter=_MAX_ITER, random_state=seed)


def fit_svms(x: np.ndarray, targets: np.ndarray, c: float, kind: str, n_classes: int, seed: int = 0) -> LinearSVMs:
    """One-vs-rest linear SVMs on features ``x [N, D]`` (module doc for ``targets`` per kind)."""
    from sklearn.exceptions import ConvergenceWarning

    x = np.asarray(x, np.float32)
    weight = np.zeros((n_classes, x.shape[1]), np.float64)
    bias = np.full(n_classes, -np.inf if kind == "multiclass" else -1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if kind == "multiclass":
            present = np.unique(targets)
            if len(present) >= 2:
                svm = _svc(c, seed).fit(x, targets)
                coef = svm.coef_ if len(present) > 2 else np.concatenate([-svm.coef_, svm.coef_])
                icpt = svm.intercept_ if len(present) > 2 else np.concatenate([-svm.intercept_, svm.intercept_])
                weight[svm.classes_], bias[svm.classes_] = coef, icpt
        elif kind == "multilabel":
            for k in range(n_classes):
                col = targets[:, k]
                use = col != 0
                if (col[use] > 0).any() and (col[use] < 0).any():
                    svm = _svc(c, seed).fit(x[use], col[use] > 0)
                    weight[k], bias[k] = svm.coef_[0], svm.intercept_[0]
        else:
            raise ValueError(f"unknown target kind {kind!r}; choose from {', '.join(KINDS)}")
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return LinearSVMs(weight, bias, float(c), converged)


def voc_cls_aps(scores: np.ndarray, targets: np.ndarray, *, eleven_point: bool, classes: Sequence[int] | None = None) -> np.ndarray:
    """AP per class of scores ``[N, C]`` against VOC labels ``targets [N, C]`` in {1, 0, -1}:
    1 a positive, -1 a negative, 0 ignored (``VOCevalcls.m``: such images are neither true nor
    false positives). ``eleven_point``: VOC2007's 11-point AP, else VOC2010+'s area.
    ``classes``: the columns to score (default all). Returns ``ndarray[len(classes)]``."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    cols = range(targets.shape[1]) if classes is None else classes
    return np.asarray([ranked_average_precision(scores[:, k], targets[:, k] > 0, int((targets[:, k] > 0).sum()),
                                                eleven_point=eleven_point, ignore=targets[:, k] == 0)
                       for k in cols], np.float64)


def mean_class_recall(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> tuple[float, np.ndarray]:
    """(mean over the classes present in ``labels`` of their recall, recall per class
    ``ndarray[n_classes]``, NaN for a class without test items)."""
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
    total = np.bincount(labels, minlength=n_classes).astype(np.float64)
    hits = np.bincount(labels[labels == predicted], minlength=n_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(total > 0, hits / total, np.nan)
    return float(np.nanmean(recall)), recall


def min_per_class(n_classes: int, fraction: float) -> int:
    """The fewest training items per class (the same number in every class) from which
    :func:`holdout_split` can hold out ``fraction`` stratified: every class needs an item on
    each side, and scikit-learn's ``train_test_split`` wants at least ``n_classes`` items on
    each side (it holds out ``ceil(fraction * n)``, computed in floating point as here)."""
    per_class = 2
    while True:
        n = per_class * n_classes
        held = math.ceil(fraction * n)
        if held >= n_classes and n - held >= n_classes:
            return per_class
        per_class += 1


def holdout_split(targets: np.ndarray, fraction: float, seed: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices): ``fraction`` of the items held out, stratified by class
    for ``multiclass`` targets (every class keeps training items), at random for ``multilabel``."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(targets))
    stratify = targets if kind == "multiclass" and np.bincount(targets).min(initial=2) >= 2 else None
    fit, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(fit), np.sort(held)


def _score(svms: LinearSVMs, x: np.ndarray, targets: np.ndarray, kind: str, n_classes: int,
           classes: Sequence[int] | None) -> float:
    scores = svms.decision_function(x)
    if kind == "multiclass":
        return mean_class_recall(targets, scores.argmax(1), n_classes)[0]
    return float(np.mean(voc_cls_aps(scores, targets, eleven_point=False, classes=classes)))


def choose_c(x: np.ndarray, targets: np.ndarray, cs: Sequence[float], kind: str, n_classes: int, *,
             val_fraction: float = 0.2, seed: int = 0, classes: Sequence[int] | None = None) -> tuple[float, dict[float, float]]:
    """The C of ``cs`` whose SVMs, trained on ``1 - val_fraction`` of the items, score best on
    the rest (mean class recall, or mean area AP over ``classes``); ties go to the smaller C.

    Returns (best C, {C: held-out score}).
    """
    fit, held = holdout_split(targets, val_fraction, seed, kind)
    scores = {float(c): _score(fit_svms(x[fit], targets[fit], c, kind, n_classes, seed), x[held], targets[held], kind,
                               n_classes, classes) for c in sorted(cs)}
    best = max(scores.values())
    return next(c for c, s in scores.items() if s == best), scores
