"""greedy_merge refuses NaN / negative thresholds and non-finite inputs, and merges huge weights."""

import math

import pytest
import torch

from vgglocal.inference.merge import greedy_merge

BOXES = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [100.0, 100.0, 120.0, 130.0]])


@pytest.mark.parametrize("threshold", [math.nan, -1.0, -math.inf])
def test_bad_thresholds_are_value_errors(threshold):
    with pytest.raises(ValueError, match="threshold"):
        greedy_merge(BOXES, torch.ones(3), threshold)


@pytest.mark.parametrize("boxes, weights", [
    (BOXES.clone().index_put_((torch.tensor([0]), torch.tensor([1])), torch.tensor(math.nan)), torch.ones(3)),
    (BOXES, torch.tensor([1.0, math.inf, 1.0])),
    (BOXES, torch.tensor([1.0, math.nan, 1.0])),
])
def test_non_finite_inputs_are_value_errors(boxes, weights):
    with pytest.raises(ValueError, match="finite"):
        greedy_merge(boxes, weights, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_weights_merge_like_small_ones(dtype):
    top = torch.finfo(dtype).max
    small_b, small_w = greedy_merge(BOXES.to(dtype), torch.tensor([1.0, 3.0, 2.0], dtype=dtype), 0.5)
    huge = torch.tensor([top / 3, top, top / 3 * 2], dtype=dtype)  # the sum of any two overflows
    huge_b, huge_w = greedy_merge(BOXES.to(dtype), huge, 0.5)
    assert len(huge_b) == len(small_b) == 2
    torch.testing.assert_close(huge_b, small_b)
    assert torch.isfinite(huge_w).all() and huge_w[0] >= huge_w[1] > 0
