"""VOC average precision, hand-computed."""

from __future__ import annotations

import numpy as np
import pytest

from vgglocal.evaluation.ap import average_precision, ranked_average_precision


def test_area_ap_by_hand():
    # ranks: hit, miss, hit; 2 positives → recall .5 .5 1, precision 1 .5 .667
    # envelope: 1, .667, .667 → area .5*1 + .5*.667
    ap = ranked_average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]), 2, eleven_point=False)
    assert ap == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_eleven_point_ap_by_hand():
    # same list: t in 0..0.5 → max precision 1 (6 points), t in .6..1 → 2/3 (5 points)
    ap = ranked_average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]), 2, eleven_point=True)
    assert ap == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_missed_positives_cap_recall_and_ignored_items_drop_out():
    # 4 positives, only one found at rank 1 → area .25; the ignored top item changes nothing
    scores = np.array([0.99, 0.9, 0.5])
    hits = np.array([0, 1, 0])
    ignore = np.array([1, 0, 0])
    assert ranked_average_precision(scores, hits, 4, eleven_point=False, ignore=ignore) == pytest.approx(0.25)
    assert ranked_average_precision(scores, hits, 4, eleven_point=False) == pytest.approx(0.25 * 0.5)
    # 11-point: recall .25 reaches t = 0, .1, .2 → 3/11
    assert ranked_average_precision(scores, hits, 4, eleven_point=True, ignore=ignore) == pytest.approx(3 / 11)


def test_no_positives_and_no_items():
    assert ranked_average_precision(np.array([0.5]), np.array([0]), 0, eleven_point=False) == 0.0
    assert ranked_average_precision(np.array([]), np.array([], dtype=bool), 3, eleven_point=True) == 0.0
    with pytest.raises(ValueError):
        average_precision(np.zeros(2), np.zeros(3), eleven_point=False)
