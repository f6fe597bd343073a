"""COCO results and COCOeval on a hand-made instances file."""

from __future__ import annotations

import json

import pytest
import torch

from vgglocal.data.records import ClassList, Sample
from vgglocal.evaluation.coco import COCO_KEYS, COCOEvaluator, coco_eval
from vgglocal.evaluation.writers import detection_records, write_detections
from vgglocal.inference.results import Detections, ImageResult

GT = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}, {"id": 2, "file_name": "b.jpg", "width": 60, "height": 60}],
    "categories": [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 10, 40, 30], "area": 1200, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [50, 20, 30, 40], "area": 1200, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 5, "bbox": [0, 0, 60, 60], "area": 3600, "iscrowd": 0},
    ],
}


CLASSES = ClassList(ids=["cat", "dog"], names=["cat", "dog"], coco_ids=[5, 9])


def dets(image_id, boxes, scores, labels):
    """One record with COCO id ``image_id`` and a result holding these detections."""
    result = ImageResult(torch.zeros(0, dtype=torch.int64), torch.zeros(0), detections=Detections(boxes, scores, labels))
    return [Sample(f"{image_id}.jpg", 0, source_id=str(image_id))], [result]


@pytest.fixture
def ann(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(GT))
    return path


def test_detection_records_convert_boxes_and_drop_low_scores():
    recs = detection_records(7, [5, 9], torch.tensor([[10.0, 10.0, 50.0, 40.0], [0.0, 0.0, 1.0, 1.0]]), torch.tensor([0.9, 0.001]), torch.tensor([0, 1]), floor=0.01)
    assert recs == [{"image_id": 7, "category_id": 5, "bbox": [10.0, 10.0, 40.0, 30.0], "score": 0.9}]


def test_perfect_detections_score_one_and_shifted_ones_less(ann, tmp_path):
    ev = COCOEvaluator(CLASSES, ann)
    ev.process(*dets(1, torch.tensor([[10.0, 10.0, 50.0, 40.0], [50.0, 20.0, 80.0, 60.0]]), torch.tensor([0.9, 0.8]), torch.tensor([0, 1])))
    ev.process(*dets(2, torch.tensor([[0.0, 0.0, 60.0, 60.0]]), torch.tensor([0.7]), torch.tensor([0])))
    assert ev.summarize()["coco_ap"] == pytest.approx(1.0)
    ev.reset()
    # The dog box shifted by 8 px: IoU 0.6 (AP50 still 1, AP over .50:.95 below 1).
    ev.process(*dets(1, torch.tensor([[10.0, 10.0, 50.0, 40.0], [58.0, 20.0, 88.0, 60.0]]), torch.tensor([0.9, 0.8]), torch.tensor([0, 1])))
    ev.process(*dets(2, torch.tensor([[0.0, 0.0, 60.0, 60.0]]), torch.tensor([0.7]), torch.tensor([0])))
    m = ev.summarize()
    assert m["coco_ap50"] == pytest.approx(1.0) and 0.5 < m["coco_ap"] < 1.0
    # The same results through a file give the same numbers.
    path = write_detections(tmp_path / "d.json", ev.results)
    assert coco_eval(ann, path) == m
    # Only the images processed count: image 2 alone, perfect.
    only = COCOEvaluator(CLASSES, ann)
    only.process(*dets(2, torch.tensor([[0.0, 0.0, 60.0, 60.0]]), torch.tensor([0.7]), torch.tensor([0])))
    assert only.summarize()["coco_ap"] == pytest.approx(1.0)


def test_all_twelve_statistics_equal_one_plain_cocoeval_run(ann):
    """coco_eval evaluates each category over its own images; the numbers must be COCOeval's."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    g = torch.Generator().manual_seed(0)
    results = []
    for _ in range(40):
        image, cat = int(torch.randint(1, 3, (1,), generator=g)), [5, 9][int(torch.randint(0, 2, (1,), generator=g))]
        x, y = (torch.rand(2, generator=g) * 40).tolist()
        w, h = (torch.rand(2, generator=g) * 40 + 2).tolist()
        results.append({"image_id": image, "category_id": cat, "bbox": [x, y, w, h], "score": float(torch.rand(1, generator=g))})
    results.append({"image_id": 1, "category_id": 5, "bbox": [10, 10, 40, 30], "score": 0.99})
    got = coco_eval(ann, results)
    assert list(got) == list(COCO_KEYS)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert got == pytest.approx(dict(zip(COCO_KEYS, ev.stats.tolist(), strict=True)))
    assert 0 < got["coco_ap50"] <= 1 and got["coco_ar100"] > 0
