"""Top-k classification error, hand-computed."""

from __future__ import annotations

import pytest
import torch

from vgglocal.data.records import Sample
from vgglocal.evaluation.base import EvaluatorList
from vgglocal.evaluation.classification import ClassificationEvaluator, ranked_hits, topk_correct
from vgglocal.inference.results import ImageResult


def records(*labels):
    return [Sample(f"{i}.jpg", lab) for i, lab in enumerate(labels)]


def ranked(*labels):
    return ImageResult(torch.tensor(labels), torch.ones(len(labels)))


def test_topk_correct_by_hand():
    scores = torch.tensor(
        [
            [0.9, 0.05, 0.03, 0.02, 0.0, 0.0],  # label 0: top-1 right
            [0.1, 0.2, 0.3, 0.15, 0.05, 0.2],  # label 3: rank 4 (top-5 right, top-1 wrong)
            [0.5, 0.1, 0.1, 0.1, 0.1, 0.1],  # label 5: tied at rank 2..6
            [0.0, 0.0, 0.0, 0.0, 0.1, 0.9],  # label 4: rank 2
        ]
    )
    labels = torch.tensor([0, 3, 5, 4])
    c1, c5 = topk_correct(scores, labels)
    assert c1.tolist() == [True, False, False, False]
    assert c5.tolist()[:2] == [True, True] and c5[3].item()
    (c2,) = ranked_hits(torch.tensor([[2, 0], [3, -1], [-1, -1]]), torch.tensor([0, 3, 1]), ks=(2,))
    assert c2.tolist() == [True, True, False]  # -1 pads "no guess"


def test_evaluator_accumulates_batches_and_k_beyond_classes():
    ev = ClassificationEvaluator()
    ev.process(records(1, 1), [ranked(1, 0), ranked(0, 1)])
    ev.process(records(0, 0), [ranked(1, 0), None])  # None: an unreadable image, wrong at every k
    assert ev.summarize() == {"top1_cls_error": pytest.approx(3 / 4), "top5_cls_error": 0.25, "n_images": 4}
    both = EvaluatorList(ev, ClassificationEvaluator(ks=(2,)))
    both.reset()
    both.process(records(0), [ranked(1, 0)])
    assert both.summarize() == {"top1_cls_error": 1.0, "top5_cls_error": 0.0, "top2_cls_error": 0.0, "n_images": 1}


def test_bad_shapes():
    with pytest.raises(ValueError):
        topk_correct(torch.zeros(3), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError):
        topk_correct(torch.zeros(3, 4), torch.zeros(2, dtype=torch.int64))
