"""Greedy merge (OverFeat section 4.3): properties, and equality with a one-pair-at-a-time reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from vgglocal.inference.merge import greedy_merge, match_scores


def reference_merge(boxes: np.ndarray, weights: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The rule literally: recompute every pair's score, merge the lowest pair (ties: lowest
    indices after the canonical order), stop above the threshold. O(N^3); tiny N only."""
    order = np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], -weights))
    b, w = boxes[order].astype(np.float64), weights[order].astype(np.float64)
    alive = np.ones(len(b), dtype=bool)
    while alive.sum() > 1:
        d = match_scores(torch.from_numpy(b), torch.from_numpy(b)).numpy()
        d[~alive] = np.inf
        d[:, ~alive] = np.inf
        np.fill_diagonal(d, np.inf)
        i, j = np.unravel_index(d.argmin(), d.shape)
        if d[i, j] > threshold:
            break
        i, j = min(i, j), max(i, j)
        total = w[i] + w[j]
        b[i] = (b[i] * w[i] + b[j] * w[j]) / total
        w[i] = total
        alive[j] = False
    b, w = b[alive], w[alive]
    rank = np.argsort(-w, kind="stable")
    return b[rank], w[rank]


def random_case(rng: np.random.Generator, n: int, kind: int) -> tuple[np.ndarray, np.ndarray]:
    centre = rng.uniform(0, 200, (n, 2))
    size = rng.uniform(5, 60, (n, 2))
    if kind == 1:  # on a grid: many exactly tied scores and duplicate boxes
        centre = np.round(centre / 20) * 20
        size = np.round(size / 20) * 20 + 10
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    weights = rng.uniform(0.1, 1.0, n) if kind != 2 else np.ones(n)
    return boxes, weights


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.8, 1.5, 1e9])
def test_equals_one_pair_at_a_time_reference(threshold):
    rng = np.random.default_rng(int(threshold * 10) % 7)
    for trial in range(24):
        boxes, weights = random_case(rng, int(rng.integers(1, 50)), trial % 3)
        want_b, want_w = reference_merge(boxes, weights, threshold)
        got_b, got_w = greedy_merge(torch.from_numpy(boxes), torch.from_numpy(weights), threshold)
        # Same arithmetic in the same order: bit-identical, not merely close.
        assert np.array_equal(got_b.numpy(), want_b), (trial, threshold)
        assert np.array_equal(got_w.numpy(), want_w), (trial, threshold)


def test_equals_reference_on_a_larger_clustered_set():
    # Enough boxes that the batched rounds, the index rebuilds and compaction all happen.
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 400, (6, 2))
    pick = rng.integers(0, 6, 300)
    centre = centres[pick] + rng.normal(0, 8, (300, 2))
    size = rng.uniform(40, 80, (300, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    weights = rng.uniform(0.1, 1.0, 300)
    want_b, want_w = reference_merge(boxes, weights, 0.7)
    got_b, got_w = greedy_merge(torch.from_numpy(boxes), torch.from_numpy(weights), 0.7)
    assert np.array_equal(got_b.numpy(), want_b)
    assert np.array_equal(got_w.numpy(), want_w)


@pytest.mark.parametrize("threshold", [1.5, 1e9])
def test_equals_reference_with_many_ties_past_compaction(threshold):
    # Grid boxes with equal weights: many exactly tied scores and duplicates, and more than 64
    # boxes so that the compiled loop's lazy bounds and array compaction are exercised.
    rng = np.random.default_rng(11)
    centre = np.round(rng.uniform(0, 200, (160, 2)) / 20) * 20
    size = np.round(rng.uniform(5, 60, (160, 2)) / 20) * 20 + 10
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    weights = np.ones(160)
    want_b, want_w = reference_merge(boxes, weights, threshold)
    got_b, got_w = greedy_merge(torch.from_numpy(boxes), torch.from_numpy(weights), threshold)
    assert len(want_b) < 80  # enough merges that compaction ran
    assert np.array_equal(got_b.numpy(), want_b)
    assert np.array_equal(got_w.numpy(), want_w)


def test_identical_boxes_become_one_with_summed_weight():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 80.0]]).repeat(5, 1)
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    merged, w = greedy_merge(boxes, weights, 0.0)
    assert merged.shape == (1, 4)
    assert_close(merged[0], boxes[0])
    assert_close(w, torch.tensor([1.5]))


def test_two_far_clusters_give_their_weighted_means_heavier_first():
    g = torch.Generator().manual_seed(0)
    light = torch.tensor([10.0, 10.0, 50.0, 50.0]) + torch.randn(6, 4, generator=g)
    heavy = torch.tensor([300.0, 300.0, 380.0, 360.0]) + torch.randn(8, 4, generator=g)
    wl = torch.rand(6, generator=g) + 0.1
    wh = torch.rand(8, generator=g) + 0.5
    boxes = torch.cat([light, heavy]).double()
    weights = torch.cat([wl, wh]).double()
    merged, w = greedy_merge(boxes, weights, 1.0)
    assert merged.shape == (2, 4)
    mean_heavy = (heavy.double() * wh.double()[:, None]).sum(0) / wh.double().sum()
    mean_light = (light.double() * wl.double()[:, None]).sum(0) / wl.double().sum()
    assert_close(merged[0], mean_heavy)
    assert_close(merged[1], mean_light)
    assert_close(w, torch.stack([wh.double().sum(), wl.double().sum()]))


def test_threshold_zero_merges_only_identical_boxes():
    boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.001], [1.0, 0.0, 11.0, 10.0]]
    )
    merged, w = greedy_merge(boxes, torch.ones(4), 0.0)
    assert len(merged) == 3
    assert_close(w, torch.tensor([2.0, 1.0, 1.0]))
    assert_close(merged[0], boxes[0])


def test_huge_threshold_gives_the_weighted_mean_of_all():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(40, 2, generator=g) * 500
    boxes = torch.cat([xy, xy + 20 + torch.rand(40, 2, generator=g) * 100], 1).double()
    weights = torch.rand(40, generator=g).double() + 0.01
    merged, w = greedy_merge(boxes, weights, 1e12)
    assert merged.shape == (1, 4)
    assert_close(merged[0], (boxes * weights[:, None]).sum(0) / weights.sum())
    assert_close(w[0], weights.sum())
    merged_inf, _ = greedy_merge(boxes, weights, float("inf"))
    assert_close(merged_inf, merged)


def test_output_does_not_depend_on_input_order():
    rng = np.random.default_rng(5)
    boxes, weights = random_case(rng, 120, 1)  # the grid case is full of ties
    b, w = torch.from_numpy(boxes), torch.from_numpy(weights)
    base_b, base_w = greedy_merge(b, w, 0.9)
    for seed in range(5):
        perm = torch.randperm(len(b), generator=torch.Generator().manual_seed(seed))
        got_b, got_w = greedy_merge(b[perm], w[perm], 0.9)
        assert torch.equal(got_b, base_b) and torch.equal(got_w, base_w)


def test_output_is_best_first_and_keeps_dtype_and_total_weight():
    rng = np.random.default_rng(7)
    boxes, weights = random_case(rng, 60, 0)
    b, w = torch.from_numpy(boxes).float(), torch.from_numpy(weights).float()
    merged, mw = greedy_merge(b, w, 0.6)
    assert merged.dtype == torch.float32 and mw.dtype == torch.float32
    assert torch.all(mw[:-1] >= mw[1:])
    assert_close(mw.sum(), w.sum())


def test_match_score_properties():
    a = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 25.0, 30.0], [100.0, 0.0, 110.0, 20.0]])
    s = match_scores(a, a)
    assert_close(s, s.T)  # symmetric
    assert_close(s.diagonal(), torch.zeros(3, dtype=torch.float64))  # zero on identical boxes
    assert_close(match_scores(a * 7.5, a * 7.5), s)  # scale-invariant
    assert s[0, 2] > s[0, 1] > 0  # grows as boxes separate
    # Centre distance over mean size (w + h) / 2 plus 1 - IoU, by hand for boxes 0 and 1.
    dist = ((15.0 - 5.0) ** 2 + (17.5 - 10.0) ** 2) ** 0.5
    size = (15.0 + 22.5) / 2
    iou = (5.0 * 15.0) / (200.0 + 500.0 - 75.0)
    assert s[0, 1].item() == pytest.approx(dist / size + 1 - iou)


def test_bad_input_and_empty_input():
    with pytest.raises(ValueError, match="positive"):
        greedy_merge(torch.zeros(2, 4), torch.tensor([1.0, 0.0]), 1.0)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        greedy_merge(torch.zeros(2, 3), torch.ones(2), 1.0)
    with pytest.raises(ValueError, match="finite"):
        greedy_merge(torch.tensor([[0.0, 0.0, float("nan"), 1.0]]), torch.ones(1), 1.0)
    merged, w = greedy_merge(torch.zeros(0, 4), torch.zeros(0), 1.0)
    assert merged.shape == (0, 4) and w.shape == (0,)
    one, w1 = greedy_merge(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([0.5]), 1.0)
    assert_close(one, torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert_close(w1, torch.tensor([0.5]))
