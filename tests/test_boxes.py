import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vgglocal import boxes as B


def test_ilsvrc_iou_borderline_is_exactly_half():
    # Devkit: inclusive pixels, width = x2 - x1 + 1. Intersection 7x10 = 70, union 100+110-70.
    a = torch.tensor([[0.0, 0, 9, 9]])
    b = torch.tensor([[3.0, 0, 13, 9]])
    assert B.ilsvrc_iou(a, b).item() == 0.5


def test_ilsvrc_iou_touching_and_disjoint_are_minus_one():
    a = torch.tensor([[0.0, 0, 9, 9]])
    touching = torch.tensor([[10.0, 0, 19, 9]])  # shares no pixel: iw = 9 - 10 + 1 = 0
    sharing_column = torch.tensor([[9.0, 0, 18, 9]])  # shares one pixel column
    far = torch.tensor([[50.0, 50, 60, 60]])
    iou = B.ilsvrc_iou(a, torch.cat([touching, sharing_column, far]))
    assert iou[0, 0].item() == -1 and iou[0, 2].item() == -1
    assert iou[0, 1].item() == pytest.approx(10 / 190)


def test_ilsvrc_iou_hand_computed_values():
    a = torch.tensor([[10.0, 20, 29, 39]])  # 20 x 20 = 400 pixels
    b = torch.tensor([[20.0, 20, 39, 39], [10.0, 20, 29, 39], [15.0, 25, 24, 34]])
    got = B.ilsvrc_iou(a, b)[0]
    torch.testing.assert_close(got, torch.tensor([200 / 600, 1.0, 100 / 400]))


box_strategy = st.tuples(
    st.floats(-500, 500), st.floats(-500, 500), st.floats(1, 400), st.floats(1, 400)
).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@settings(max_examples=200, deadline=None)
@given(st.lists(box_strategy, min_size=1, max_size=6), st.lists(box_strategy, min_size=1, max_size=6))
def test_iou_symmetric_and_one_on_itself(a, b):
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    torch.testing.assert_close(B.ilsvrc_iou(a, b), B.ilsvrc_iou(b, a).T)
    torch.testing.assert_close(torch.diagonal(B.ilsvrc_iou(a, a)), torch.ones(len(a), dtype=torch.float64))
    assert (B.ilsvrc_iou(a, b) <= 1 + 1e-12).all()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(box_strategy, min_size=1, max_size=8),
    st.tuples(st.floats(-300, 300), st.floats(-300, 300)),
    st.floats(0.05, 8.0),
    st.sampled_from([32.0, 64.0, 224.0]),
)
def test_encode_decode_round_trip(boxes, origin, scale, side):
    boxes = torch.tensor(boxes, dtype=torch.float64)
    params = B.encode(boxes, origin, scale, side)
    torch.testing.assert_close(B.decode(params, origin, scale, side), boxes, rtol=1e-9, atol=1e-7)


def test_encode_window_filling_box_is_half_half_one_one():
    # A box that covers exactly the window [32, 64) x [0, 224) at scale 2 → (0.5, 0.5, 1, 1).
    window = torch.tensor([[16.0, 0.0, 16.0 + 112, 112.0]])  # original pixels
    params = B.encode(window, (32.0, 0.0), scale=2.0, side=224)
    torch.testing.assert_close(params, torch.tensor([[0.5, 0.5, 1.0, 1.0]]))


def test_encode_per_box_origin_and_scale():
    boxes = torch.tensor([[0.0, 0, 10, 10], [100.0, 100, 200, 150]])
    origin = torch.tensor([[0.0, 0.0], [64.0, 32.0]])
    scale = torch.tensor([1.0, 0.5])
    params = B.encode(boxes, origin, scale, side=64)
    torch.testing.assert_close(params[0], torch.tensor([5 / 64, 5 / 64, 10 / 64, 10 / 64]))
    # second: centre (150, 125) * 0.5 = (75, 62.5) - (64, 32) = (11, 30.5); size (50, 25)
    torch.testing.assert_close(params[1], torch.tensor([11 / 64, 30.5 / 64, 50 / 64, 25 / 64]))
    torch.testing.assert_close(B.decode(params, origin, scale, side=64), boxes)


def test_convert_and_clip():
    xyxy = torch.tensor([[10.0, 20, 30, 60]])
    torch.testing.assert_close(B.box_convert(xyxy, "xyxy", "xywh"), torch.tensor([[10.0, 20, 20, 40]]))
    torch.testing.assert_close(B.box_convert(xyxy, "xyxy", "cxcywh"), torch.tensor([[20.0, 40, 20, 40]]))
    torch.testing.assert_close(B.clip_boxes(torch.tensor([[-5.0, 3, 120, 90]]), (80, 100)), torch.tensor([[0.0, 3, 100, 80]]))
    assert B.box_convert(torch.zeros(2, 3, 4), "xyxy", "xywh").shape == (2, 3, 4)  # batched shapes kept
