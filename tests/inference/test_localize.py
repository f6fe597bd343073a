"""Protocols 1 and 2 and the classification systems, with stub heads whose outputs are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from vgglocal.inference.dense import dense_maps, dense_posteriors
from vgglocal.inference.localize import Net, classify
from vgglocal.inference.multicrop import multicrop_posteriors
from vgglocal.inference.protocols import RunOptions, run_protocol
from vgglocal.models.vgg import build_vgg

NORM = {"mean": [120.0, 110.0, 100.0], "std": [60.0, 60.0, 60.0]}


def stub(crop=32, classes=3, box=(0.5, 0.5, 0.5, 0.5), logits=(0.1, 0.5, 0.2), seed=0):
    """A tiny net whose class scores are ``logits`` and whose boxes are ``box`` at every window."""
    torch.manual_seed(seed)
    model = build_vgg("A", num_classes=classes, width=0.0625, crop=crop, box_head="pcr").eval()
    model.normalization = NORM
    with torch.no_grad():
        model.cls_head.fc8.weight.zero_()
        model.cls_head.fc8.bias.copy_(torch.tensor(logits))
        model.box_head.fc8.weight.zero_()
        model.box_head.fc8.bias.copy_(torch.tensor(box).repeat(classes))
    return model


def image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def window_boxes(h, w, q, crop, box, flip):
    """Every window's box at scale q, by hand: the dense geometry of section 3.2, in original pixels."""
    factor = q / min(h, w)
    rh, rw = round(h * factor), round(w * factor)
    cx, cy, bw, bh = box
    out = []
    for i in range((max(rh, crop) - crop) // 32 + 1):
        for j in range((max(rw, crop) - crop) // 32 + 1):
            x0, y0 = 32 * j, 32 * i
            b = [x0 + (cx - bw / 2) * crop, y0 + (cy - bh / 2) * crop, x0 + (cx + bw / 2) * crop, y0 + (cy + bh / 2) * crop]
            if flip:
                b = [rw - b[2], b[1], rw - b[0], b[3]]
            out.append([v / factor for v in b])
    return out


def test_full_protocol_labels_scores_and_merged_box_by_hand():
    box = (0.4, 0.6, 0.5, 0.75)
    net = Net(stub(box=box), (32, 64))
    img = image(48, 80)
    (res,) = run_protocol("full", [img], [net], RunOptions(flip=True, topk=2, merge_threshold=1e9))
    p = torch.tensor([0.1, 0.5, 0.2]).softmax(0)
    assert_close(classify([img], [net], "dense")[0], p)
    assert res.labels.tolist() == [1, 2] and res.size == (48, 80)
    assert_close(res.scores, p[[1, 2]])
    # Equal class scores everywhere: the one merged box is the plain mean of every window's
    # box at both scales and both mirrors, clipped to the image.
    every = [b for q in (32, 64) for f in (False, True) for b in window_boxes(48, 80, q, 32, box, f)]
    want = torch.tensor(every, dtype=torch.float64).mean(0)
    want = torch.stack([want[0].clamp(0, 80), want[1].clamp(0, 48), want[2].clamp(0, 80), want[3].clamp(0, 48)])
    assert_close(res.boxes[0].double(), want, atol=1e-3, rtol=0)
    # One detection per label considered, scored by the posterior times its share (all of it).
    assert res.detections.labels.tolist() == [1, 2]
    assert_close(res.detections.scores[:1], p[1:2])
    assert res.box_labels.tolist() == [1, 2]


def test_full_protocol_merges_per_window_weights_and_keeps_clusters_apart():
    # Two loc nets predict different boxes; their union is merged. A small threshold keeps the
    # two nets' box sets apart (far apart), and the heavier set comes first.
    a = Net(stub(box=(0.5, 0.5, 0.3, 0.3), seed=1), (32,))
    b = Net(stub(box=(0.5, 0.5, 0.3, 0.3), seed=2), (32, 64))
    img = image(32, 32)
    (res,) = run_protocol("full", [img], [a, b], RunOptions(flip=False, topk=1, merge_threshold=0.0), cls_nets=[a])
    # Scale 32 on a 32 x 32 image: one window per net, the same box twice; scale 64: 2 x 2
    # windows of net b. Identical boxes merge at threshold 0: weights 2p (scale 32) vs p each.
    d = res.detections
    boxes, scores = d.boxes[d.labels == res.labels[0]], d.scores[d.labels == res.labels[0]]
    assert len(boxes) == 1 + 4
    assert_close(boxes[0], torch.tensor([11.2, 11.2, 20.8, 20.8]))
    assert scores[0] == pytest.approx(scores[1:].sum().item() / 2, rel=1e-5)


def test_classification_systems_dense_multicrop_both_and_fusion():
    n1 = Net(build_vgg("A", num_classes=3, width=0.0625, crop=32).eval(), (32, 48))
    n2 = Net(build_vgg("A", num_classes=3, width=0.0625, crop=32, init="kaiming").eval(), (40,))
    for n in (n1, n2):
        n.model.normalization = NORM
    imgs = [image(40, 50, 1), image(36, 36, 2)]
    dense = torch.stack([dense_posteriors(m) for m in dense_maps(n1.model, imgs, n1.scales)])
    multi = multicrop_posteriors(n1.model, imgs, n1.scales)
    assert_close(classify(imgs, [n1], "dense"), dense)
    assert_close(classify(imgs, [n1], "multicrop"), multi)
    assert_close(classify(imgs, [n1], "both"), (dense + multi) / 2)
    assert_close(classify(imgs, [n1, n2], "dense"), (dense + classify(imgs, [n2], "dense")) / 2)
    with pytest.raises(ValueError, match="method"):
        classify(imgs, [n1], "sparse")


def test_center_crop_predicts_the_true_class_box_in_original_pixels():
    model = stub(crop=32, box=(0.5, 0.25, 0.5, 0.5))
    # The box head predicts the same parameters for every class; make class 2's differ.
    with torch.no_grad():
        model.box_head.fc8.bias[8:12] = torch.tensor([0.25, 0.5, 0.25, 1.0])
    img = image(40, 60)  # S = 48: factor 1.2, rescaled 48 x 72, centre crop at x0 = 20, y0 = 8
    results = run_protocol("center-crop", [img, img], [Net(model, (48,))], RunOptions(), labels=torch.tensor([0, 2]))
    p = torch.tensor([0.1, 0.5, 0.2]).softmax(0)
    for res in results:  # the classification of the same crop: the labels by posterior
        assert res.labels.tolist() == [1, 2, 0]
        assert_close(res.scores, p[[1, 2, 0]])
    assert [r.box_labels.tolist() for r in results] == [[0], [2]]  # one guess: the true class
    want0 = torch.tensor([20 + 8, 8 + 0, 20 + 24, 8 + 16]) / 1.2
    want2 = torch.tensor([20 + 4, 8 + 0, 20 + 12, 8 + 32]) / 1.2
    boxes = torch.cat([r.boxes for r in results])
    # class 2's box reaches y = 8 + 32 = 40 rescaled, 33.3 original: inside the 40-px image
    assert_close(boxes, torch.stack([want0, want2]).float(), atol=1e-4, rtol=0)


def test_center_crop_clips_boxes_to_the_image():
    model = stub(crop=32, box=(0.25, 0.5, 2.0, 3.0))  # wider and taller than the window
    img = image(40, 60)  # as above: window x 20..52, y 8..40 rescaled; the box x -4..60, y -24..72
    (res,) = run_protocol("center-crop", [img], [Net(model, (48,))], RunOptions(), labels=torch.tensor([1]))
    assert_close(res.boxes[0], torch.tensor([0.0, 0.0, 60 / 1.2, 40.0]), atol=1e-4, rtol=0)


def test_boxes_without_area_once_clipped_are_no_detections_and_do_not_enter_the_merge():
    from vgglocal.boxes import has_area
    from vgglocal.inference.localize import Candidates, merge_candidates

    size = (48, 52)  # height, width
    inside = [[10.0, 10.0, 30.0, 30.0], [11.0, 10.0, 30.0, 31.0]]
    right = [60.0, 5.0, 80.0, 20.0]  # clipped: [52, 5, 52, 20], no width
    above = [-20.0, -20.0, -5.0, -5.0]  # clipped: [0, 0, 0, 0]
    cand = Candidates(labels=torch.tensor([2, 0]), scores=torch.tensor([0.7, 0.2]),
                      boxes=torch.tensor([[*inside, right], [above, above, right]]),
                      weights=torch.tensor([[0.3, 0.3, 0.4], [0.5, 0.2, 0.3]], dtype=torch.float64), size=size)
    res = merge_candidates(cand, threshold=0.5)
    d = res.detections
    assert len(d) > 0 and bool(has_area(d.boxes).all()), d.boxes
    assert d.labels.tolist() == [2] * len(d)  # label 0 predicted only outside: no detection ...
    assert res.boxes.shape == (2, 4) and res.labels.tolist() == [2, 0]  # ... but still its guess
    # The outside box's weight is not counted: the label's detections share all of its posterior.
    assert float(d.scores.sum()) == pytest.approx(0.7)
    assert bool(((d.boxes[:, 2] <= 30.0) & (d.boxes[:, 0] >= 10.0)).all())  # nothing merged with the outside box
    assert has_area(torch.tensor([[0.0, 26.05, 0.0, 48.0], [52.0, 24.97, 52.0, 48.0], [1.0, 1.0, 2.0, 2.0]])).tolist() == [False, False, True]
