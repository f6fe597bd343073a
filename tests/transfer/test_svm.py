"""Appendix B classifiers and metrics: VOC classification AP on hand-computed cases, mean class
recall, linear SVMs one-vs-rest, and C chosen on held-out training data."""

import numpy as np
import pytest

from vgglocal.transfer.svm import (
    choose_c,
    fit_svms,
    holdout_split,
    mean_class_recall,
    voc_cls_aps,
)


def test_voc_cls_ap_by_hand():
    # ranked: +, -, +, (difficult-only: ignored); 2 positives
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    labels = np.array([[1], [-1], [1], [0]], np.int8)
    # area: recall 0.5 at precision 1, recall 1 at precision 2/3
    np.testing.assert_allclose(voc_cls_aps(scores, labels, eleven_point=False), [0.5 * 1 + 0.5 * 2 / 3])
    # 11-point: t = 0..0.5 → 1 (six points), t = 0.6..1 → 2/3 (five points)
    np.testing.assert_allclose(voc_cls_aps(scores, labels, eleven_point=True), [(6 + 5 * 2 / 3) / 11])


def test_voc_cls_ap_ignores_difficult_only_images_wherever_they_rank():
    labels = np.array([[0, 1], [1, -1], [-1, 1], [1, 0]], np.int8)
    scores = np.array([[0.99, 0.1], [0.8, 0.9], [0.7, 0.5], [0.1, 0.95]])
    ap = voc_cls_aps(scores, labels, eleven_point=False)
    # class 0 without its ignored top item: +, -, + → (1 + 2/3) / 2; class 1: ranked 0.9 (-),
    # 0.5 (+), 0.1 (+): precision 1/2 then 2/3, and the devkit's envelope lifts the first to 2/3
    np.testing.assert_allclose(ap, [(1 + 2 / 3) / 2, 2 / 3])
    as_negative = np.where(labels == 0, -1, labels)
    assert voc_cls_aps(scores, as_negative, eleven_point=False)[0] < ap[0]  # counting it as a miss would lower AP
    np.testing.assert_allclose(voc_cls_aps(scores, labels, eleven_point=False, classes=[1]), ap[1:])


def test_mean_class_recall_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 2, 2])
    predicted = np.array([0, 0, 1, 2, 1, 2, 0])
    mean, per_class = mean_class_recall(labels, predicted, 4)
    np.testing.assert_allclose(per_class[:3], [0.5, 1.0, 0.5])
    assert np.isnan(per_class[3])  # no test image of class 3
    assert mean == pytest.approx((0.5 + 1.0 + 0.5) / 3)  # not the accuracy 4/7


def blobs(n_per_class, classes, dim=8, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 2
    y = np.repeat(np.arange(classes), n_per_class)
    return (centres[y] + rng.normal(size=(len(y), dim)) * spread).astype(np.float32), y


def test_svms_one_vs_rest_multiclass_and_multilabel():
    x, y = blobs(20, 3)
    svm = fit_svms(x, y, 1.0, "multiclass", 4)
    assert svm.weight.shape == (4, 8) and svm.bias[3] == -np.inf  # class 3 has no training image
    assert (svm.decision_function(x).argmax(1) == y).mean() == 1.0
    targets = np.where(np.eye(3, dtype=np.int8)[y] > 0, 1, -1).astype(np.int8)
    targets[0, 1] = 0  # ignored item: must not enter class 1's training set
    ml = fit_svms(x, targets, 1.0, "multilabel", 3)
    assert (voc_cls_aps(ml.decision_function(x), targets, eleven_point=False) == 1.0).all()
    x2, y2 = blobs(15, 2, seed=3)  # two classes: liblinear gives one weight vector
    two = fit_svms(x2, y2, 1.0, "multiclass", 2)
    np.testing.assert_allclose(two.weight[0], -two.weight[1])
    assert (two.decision_function(x2).argmax(1) == y2).mean() == 1.0


def test_holdout_split_is_stratified_and_reproducible():
    y = np.repeat(np.arange(3), [10, 20, 30])
    fit, held = holdout_split(y, 0.2, seed=4, kind="multiclass")
    assert len(held) == 12 and len(set(fit) | set(held)) == 60 and not set(fit) & set(held)
    assert np.bincount(y[held]).tolist() == [2, 4, 6]
    again = holdout_split(y, 0.2, seed=4, kind="multiclass")
    np.testing.assert_array_equal(held, again[1])


def test_c_is_chosen_on_the_held_out_part():
    # Noisy labels: a large C fits the noise of the 80% and is scored on the other 20%.
    x, y = blobs(25, 3, dim=30, seed=5, spread=6.0)
    cs = [1e-4, 0.01, 1.0, 100.0]
    best, scores = choose_c(x, y, cs, "multiclass", 3, val_fraction=0.2, seed=7)
    assert sorted(scores) == cs
    fit, held = holdout_split(y, 0.2, seed=7, kind="multiclass")
    for c in cs:  # every candidate was trained on `fit` and scored on `held`, nothing else
        svm = fit_svms(x[fit], y[fit], c, "multiclass", 3, seed=7)
        assert scores[c] == pytest.approx(mean_class_recall(y[held], svm.decision_function(x[held]).argmax(1), 3)[0])
    assert scores[best] == max(scores.values())
    assert best == min(c for c in cs if scores[c] == max(scores.values()))  # ties go to the smaller C
    assert len(set(scores.values())) > 1  # the candidates really differ here


@pytest.mark.parametrize("n_classes,fraction", [(3, 0.2), (3, 0.5), (4, 0.9), (102, 0.2), (7, 0.33)])
def test_min_per_class_is_the_least_that_holdout_split_accepts(n_classes, fraction):
    from vgglocal.transfer.svm import holdout_split, min_per_class

    need = min_per_class(n_classes, fraction)
    y = np.repeat(np.arange(n_classes), need)
    fit, held = holdout_split(y, fraction, 0, "multiclass")
    assert set(y[fit]) == set(y[held]) == set(range(n_classes))  # every class on both sides
    if need > 2:  # one fewer per class: scikit-learn refuses the stratified split
        with pytest.raises(ValueError):
            holdout_split(np.repeat(np.arange(n_classes), need - 1), fraction, 0, "multiclass")
