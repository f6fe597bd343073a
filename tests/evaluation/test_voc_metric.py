"""VOC detection AP (VOCevaldet.m's matching) on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vgglocal.data.records import ClassList, Sample
from vgglocal.evaluation.detection import DetectionEvaluator
from vgglocal.evaluation.voc import match_detections, voc_metrics
from vgglocal.inference.results import Detections, ImageResult

A, B, C, FAR, OTHER = [0, 0, 9, 9], [20, 20, 29, 29], [0, 0, 9, 9], [60, 60, 69, 69], [50, 50, 59, 59]
CLASSES = ["cat", "dog", "cow"]


def case(difficult_b=True):
    # Image 0: cat A, cat B (difficult); image 1: cat C, dog OTHER. No cow anywhere.
    gts = (torch.tensor([0, 0, 1, 1]), torch.tensor([A, B, C, OTHER], dtype=torch.float64), torch.tensor([0, 0, 0, 1]),
           torch.tensor([False, difficult_b, False, False]))
    # Cat detections, best first: A (hit), A again (duplicate), B (difficult: ignored), a miss in
    # image 1, C (hit). One cow detection (a class without ground truth). No dog detection.
    dets = (torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([A, A, B, FAR, C, A], dtype=torch.float64), torch.tensor([0, 0, 0, 0, 0, 2]),
            torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.95]))
    return dets, gts


def test_matching_marks_duplicates_false_and_difficult_ignored():
    (di, db, dl, ds), (gi, gb, gl, gd) = case()
    hits, ignored = match_detections(di, db, dl, ds, gi, gb, gl, gd)
    assert hits.tolist() == [True, False, False, False, True, False]
    assert ignored.tolist() == [False, False, True, False, False, False]


def test_ap_by_hand_11_point_and_area():
    dets, gts = case()
    m = voc_metrics(dets, gts, CLASSES)
    # Cat, ignoring the difficult one: TP FP FP TP over 2 objects: recall .5 .5 .5 1, precision
    # 1 .5 .33 .5. Area: .5 * 1 + .5 * .5 = .75. 11-point: recall >= 0 .. .5 (6 points) reach
    # precision 1, the other 5 points .5: 8.5 / 11.
    assert m["voc_ap_per_class"] == {"cat": pytest.approx(0.75), "dog": 0.0, "cow": None}
    assert m["voc07_ap_per_class"]["cat"] == pytest.approx(8.5 / 11)
    # Dog has objects and no detection: AP 0, in the mean; cow has no objects: left out.
    assert m["voc_map"] == pytest.approx(0.375) and m["voc07_map"] == pytest.approx(8.5 / 22)


def test_a_difficult_object_counts_when_not_flagged():
    dets, gts = case(difficult_b=False)
    m = voc_metrics(dets, gts, CLASSES)
    # B is an ordinary object now: TP FP TP FP TP over 3: recall 1/3 1/3 2/3 2/3 1, precision
    # 1 .5 2/3 .5 .6. Area: 1/3 * 1 + 1/3 * 2/3 + 1/3 * .6.
    assert m["voc_ap_per_class"]["cat"] == pytest.approx((1 + 2 / 3 + 0.6) / 3)


def test_evaluator_reads_records_and_results():
    dets, gts = case()
    records = [
        Sample("0.jpg", 0, np.array([A, B], np.float32), np.array([0, 0]), difficult=np.array([False, True])),
        Sample("1.jpg", 0, np.array([C, OTHER], np.float32), np.array([0, 1])),
        Sample("2.jpg", 1, np.array([OTHER], np.float32), np.array([1])),  # unreadable: its dog is missed
    ]
    di, db, dl, ds = dets
    outputs = [ImageResult(torch.zeros(0, dtype=torch.int64), torch.zeros(0), detections=Detections(db[di == i].float(), ds[di == i].float(), dl[di == i]))
               for i in (0, 1)] + [None]
    ev = DetectionEvaluator(ClassList(ids=CLASSES, names=CLASSES))
    ev.process(records[:1], outputs[:1])
    ev.process(records[1:], outputs[1:])
    m = ev.summarize()
    assert m["voc_ap_per_class"] == {"cat": pytest.approx(0.75), "dog": 0.0, "cow": None}
    ev.reset()
    ev.process(records[:1], [None])
    assert ev.summarize()["voc_map"] == 0.0


def devkit_loop(dets, gts, c):
    """VOCevaldet.m's loop for class ``c``, written out: tp/fp per detection in rank order."""
    (di, db, dl, ds), (gi, gb, gl, gd) = dets, gts
    from vgglocal.boxes import ilsvrc_iou

    sel = torch.nonzero(dl == c).flatten()
    order = sel[torch.argsort(-ds[sel], stable=True)]
    taken = set()
    verdict = {}
    for d in order.tolist():
        objs = torch.nonzero((gi == di[d]) & (gl == c)).flatten().tolist()
        if not objs:
            verdict[d] = "fp"
            continue
        ov = ilsvrc_iou(db[d : d + 1], gb[objs])[0]
        j = objs[int(torch.argmax(ov))]
        if float(ov.max()) >= 0.5:
            verdict[d] = "ignore" if bool(gd[j]) else ("fp" if j in taken else "tp")
            if verdict[d] == "tp":
                taken.add(j)
        else:
            verdict[d] = "fp"
    return verdict


def test_vectorised_matching_equals_the_devkit_loop():
    g = torch.Generator().manual_seed(1)
    n_gt, n_det = 60, 400
    gi = torch.randint(0, 20, (n_gt,), generator=g)
    xy = torch.randint(0, 40, (n_gt, 2), generator=g).double()
    gb = torch.cat([xy, xy + torch.randint(5, 30, (n_gt, 2), generator=g)], 1)
    gl = torch.randint(0, 3, (n_gt,), generator=g)
    gd = torch.rand(n_gt, generator=g) < 0.2
    pick = torch.randint(0, n_gt, (n_det,), generator=g)
    di, dl = gi[pick], torch.where(torch.rand(n_det, generator=g) < 0.8, gl[pick], torch.randint(0, 3, (n_det,), generator=g))
    db = gb[pick] + torch.randint(-6, 7, (n_det, 4), generator=g)
    ds = torch.randint(0, 50, (n_det,), generator=g).double() / 50  # many ties
    hits, ignored = match_detections(di, db, dl, ds, gi, gb, gl, gd)
    for c in range(3):
        for d, v in devkit_loop((di, db, dl, ds), (gi, gb, gl, gd), c).items():
            assert (bool(hits[d]), bool(ignored[d])) == {"tp": (True, False), "fp": (False, False), "ignore": (False, True)}[v], d
