"""Greedy merge of box predictions (OverFeat, Sermanet et al. 2014, section 4.3; SPEC 5).

Repeatedly take the pair of boxes with the lowest match score; stop when it is above the
threshold; otherwise replace the pair by one box at their weight-averaged coordinates whose
weight is the sum of theirs. The result does not depend on the order of the input.

The match score (:func:`match_scores`) is ``|c_a - c_b| / mean(s_a, s_b) + (1 - IoU(a, b))``
with ``c`` the box centre and ``s = (w + h) / 2`` its size: symmetric, scale-invariant, zero
for identical boxes, growing as boxes separate (centre term) or stop overlapping (IoU term).
With ``s`` linear in the coordinates, a merged box's size stays between its parts' sizes, so
the largest input size ``s_max`` bounds every size the procedure ever sees.

Algorithm (exact, not an approximation; ``tests/inference/test_merge.py`` checks it bit for bit
against the literal one-pair-at-a-time procedure):

* Every box caches its nearest neighbour within the threshold (score, index; none: inf). A
  pair above the threshold never merges, so only pairs within it matter. Each pair within the
  threshold is held, with a key no larger than its own, by at least one of its boxes, so the
  smallest cached key (score, lower index, higher index: the procedure's tie rule) is the
  pair the procedure merges next.
* Rounds: the next pairs in key order are proposed as long as they are certain (a walk over
  the cached keys that stops at a box whose neighbour an earlier pair consumes); each proposed
  merged box is scored against the boxes near it, and the longest prefix in which no merged
  box scores within (or ties) a later pair while both exist is merged at once. These are
  exactly the procedure's next merges (the first always is). Clustered inputs merge several
  pairs per round, so Python-level steps are far fewer than merges.
* After a round the merged boxes search for their neighbours, as do boxes whose neighbour was
  merged; no other box needs to hear of a merged box, whose own cache holds their pair.
* Searches never build an N x N matrix: ``score >= |c_a - c_b| / mean(s_a, s_b)``, and merged
  sizes never exceed the largest input size, so a search with a known bound reads only a
  window of boxes from an index sorted by (size class, horizontal band, cx), and scores only
  the pairs whose centre distance passes the exact bound.

Ties go to the lowest index after a canonical sort of the input (weight descending, then
coordinates), which makes the output a function of the set of (box, weight) pairs alone.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["greedy_merge", "match_scores"]

_EPS = 1e-12
_SLACK = 1.0 + 1e-9  # widens pruning radii against rounding: pruning must never drop a tie
_ABS_SLACK = 1e-6  # pixels
_CHUNK = 8192  # pairs per block of vectorised work

# Rows of the feature array: coordinates, centre, size, area.
X1, Y1, X2, Y2, CX, CY, S, AREA = range(8)


def _features(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` x1y1x2y2 → ``[8, N]`` float64 (x1, y1, x2, y2, cx, cy, size, area)."""
    x1, y1, x2, y2 = boxes.T
    w = np.maximum(x2 - x1, 0.0)
    h = np.maximum(y2 - y1, 0.0)
    return np.stack([x1, y1, x2, y2, (x1 + x2) * 0.5, (y1 + y2) * 0.5, (w + h) * 0.5, w * h])


def _take(feat: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Feature columns ``idx`` of ``feat [8, N]`` (``np.take``: several times faster than
    fancy indexing for this layout)."""
    return np.take(feat, idx, axis=1)


def _dist(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Euclidean length (``np.hypot`` is several times slower and the range is pixels)."""
    return np.sqrt(dx * dx + dy * dy)


def _scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Match scores of feature columns ``a [8, ...]`` and ``b [8, ...]`` (broadcasting).

    Every operation is elementwise and commutative in (a, b), so swapping the arguments gives
    the same bits: the tie-breaking of the merge relies on that symmetry.
    """
    dist = _dist(a[CX] - b[CX], a[CY] - b[CY])
    size = np.maximum((a[S] + b[S]) * 0.5, _EPS)
    iw = np.maximum(np.minimum(a[X2], b[X2]) - np.maximum(a[X1], b[X1]), 0.0)
    ih = np.maximum(np.minimum(a[Y2], b[Y2]) - np.maximum(a[Y1], b[Y1]), 0.0)
    inter = iw * ih
    union = np.maximum(a[AREA] + b[AREA] - inter, _EPS)
    return dist / size + (1.0 - inter / union)


def match_scores(a: Tensor, b: Tensor) -> Tensor:
    """Match scores of ``a (Tensor[N, 4])`` and ``b (Tensor[M, 4])`` x1y1x2y2 → ``Tensor[N, M]``
    (float64): centre distance over mean box size plus one minus IoU (module docstring)."""
    fa = _features(a.detach().cpu().double().numpy().reshape(-1, 4))
    fb = _features(b.detach().cpu().double().numpy().reshape(-1, 4))
    return torch.from_numpy(_scores(fa[:, :, None], fb[:, None, :]))


def _radius(size: np.ndarray, bound: np.ndarray | float, s_max: float) -> np.ndarray:
    """The largest |dx| (and |dy|) at which a box of ``size`` can score <= ``bound``.

    Widened by a relative and an absolute slack so that rounding never prunes a tie.
    """
    return np.asarray(bound) * (size + s_max) * 0.5 * _SLACK + _ABS_SLACK


def _within(feat: np.ndarray, q: np.ndarray, c: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Pairs (q, c) whose score can be <= ``bound``: centre distance <= bound * mean size."""
    fs, fx, fy = feat[S], feat[CX], feat[CY]
    lim = (np.take(fs, q) + np.take(fs, c)) * (bound * (0.5 * _SLACK)) + _ABS_SLACK
    return _dist(np.take(fx, q) - np.take(fx, c), np.take(fy, q) - np.take(fy, c)) <= lim


def _nearest_among(feat: np.ndarray, rows: np.ndarray, pos: np.ndarray, ci: np.ndarray, threshold: float, bound: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest neighbour of each of ``rows`` among candidate pairs ``(rows[pos[p]], ci[p])``.

    With ``bound`` (per pair), pairs that cannot score within it are skipped unscored.
    Returns (score, index) per row; scores above ``threshold`` do not count (inf, -1); among
    equal scores the lowest index wins (as ``argmin`` would pick). Works in cache-sized
    chunks: large temporaries cost more in page faults than in arithmetic.
    """
    best_d = np.full(len(rows), np.inf)
    best_i = np.full(len(rows), np.iinfo(np.int64).max)
    found_p, found_c, found_s = [], [], []
    for lo in range(0, len(pos), _CHUNK):
        p, c = pos[lo : lo + _CHUNK], ci[lo : lo + _CHUNK]
        q = rows[p]
        if bound is not None:
            keep = _within(feat, q, c, bound[lo : lo + _CHUNK]) & (c != q)
            p, c, q = p[keep], c[keep], q[keep]
        sc = _scores(_take(feat, q), _take(feat, c))
        ok = sc <= threshold
        found_p.append(p[ok])
        found_c.append(c[ok])
        found_s.append(sc[ok])
    if found_p:
        p, c, sc = np.concatenate(found_p), np.concatenate(found_c), np.concatenate(found_s)
        np.minimum.at(best_d, p, sc)
        tie = sc == best_d[p]
        np.minimum.at(best_i, p[tie], c[tie])
    return best_d, np.where(np.isfinite(best_d), best_i, -1)


def _window_pairs(cx: np.ndarray, cy: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (q, c) that include all with |cx_c - cx_q| <= radius_q and |cy_c - cy_q| <= radius_q
    (and some more, and q = c: callers filter).

    Boxes are binned into horizontal bands (height about twice the median radius) and sorted
    by (band, cx); each query takes a cx range, found by ``searchsorted``, in each band its
    window touches. The work is proportional to the pairs in the windows, not to N^2.
    """
    band = max(2.0 * float(np.median(radius)), _ABS_SLACK)
    y0, x0 = float(cy.min()), float(cx.min())
    row = np.floor((cy - y0) / band).astype(np.int64)
    width = float(cx.max()) - x0 + 2.0 * float(radius.max()) + 1.0  # keeps each range in one band
    order = np.lexsort((cx, row))
    key = (row * width + (cx - x0))[order]
    reach = min(int(np.ceil(float(radius.max()) / band)), int(row.max()))
    queries, starts, counts = [], [], []
    for offset in range(-reach, reach + 1):
        r = row + offset
        touches = (r * band <= cy - y0 + radius) & ((r + 1) * band >= cy - y0 - radius) & (r >= 0)
        q = np.flatnonzero(touches)
        base = r[q] * width + (cx[q] - x0)
        lo = np.searchsorted(key, base - radius[q], side="left")
        hi = np.searchsorted(key, base + radius[q], side="right")
        queries.append(q)
        starts.append(lo)
        counts.append(hi - lo)
    q, start, count = (np.concatenate(a) for a in (queries, starts, counts))
    qi = np.repeat(q, count)
    offsets = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    ci = order[np.repeat(start, count) + offsets]
    return qi, ci


def _initial_nearest(feat: np.ndarray, threshold: float, s_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Every box's nearest neighbour within ``threshold`` (score, index; none: inf, -1).

    A first pass scores each box against its neighbours in two coarse raster orders, a cheap
    upper bound on its nearest score that narrows its search window in the exact pass.
    """
    n = feat.shape[1]
    bound = np.full(n, float(threshold))
    grid = max(0.25 * float(np.median(feat[S])), _ABS_SLACK)
    for raster in (np.lexsort((feat[CX], np.floor(feat[CY] / grid))), np.lexsort((feat[CY], np.floor(feat[CX] / grid)))):
        for shift in range(1, min(8, n - 1) + 1):
            a, b = raster[:-shift], raster[shift:]
            sc = _scores(_take(feat, a), _take(feat, b))
            np.minimum.at(bound, a, sc)
            np.minimum.at(bound, b, sc)
    bound = np.minimum(bound, threshold)
    qi, ci = _window_pairs(feat[CX], feat[CY], _radius(feat[S], bound, s_max))
    return _nearest_among(feat, np.arange(n), qi, ci, threshold, bound[qi])


def _expand(start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranges ``[start_k, start_k + count_k)`` flattened: (range number, value) per element."""
    owner = np.repeat(np.arange(len(count)), count)
    offsets = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    return owner, np.repeat(start, count) + offsets


class _Index:
    """Live boxes as of the last rebuild, for range queries on the centre.

    Boxes are split into size classes (factor 2) and, within a class, into horizontal bands
    of height ``band``; one array sorted by (class, band, cx) holds them all. A query reads
    one cx range per class and band its window touches (``searchsorted``), with the window of
    each class set by that class's largest size. Boxes changed since the rebuild are checked
    directly. The work is about the number of boxes in the true neighbourhood, not N.
    """

    def __init__(self, feat: np.ndarray, alive: np.ndarray, band: float) -> None:
        live = np.flatnonzero(alive)
        self.band = max(float(band), _ABS_SLACK)
        cx, cy, size = feat[CX, live], feat[CY, live], feat[S, live]
        self.x0, self.y0 = (float(cx.min()), float(cy.min())) if len(live) else (0.0, 0.0)
        # Radii are capped at the extent of the boxes (a larger window holds no more boxes);
        # the stride between bands exceeds the x extent plus two capped radii.
        self.cap = (float(cx.max() - cx.min() + cy.max() - cy.min()) + 1.0) if len(live) else 1.0
        self.stride = 3.0 * self.cap
        rows = np.floor((cy - self.y0) / self.band)
        self.n_rows = int(rows.max()) + 1 if len(live) else 1
        cls = np.floor(np.log2(np.maximum(size, 1.0))).astype(np.int64)
        names, cls = np.unique(cls, return_inverse=True)
        self.smax = np.full(len(names), 0.0)
        np.maximum.at(self.smax, cls, size)
        key = (cls * self.n_rows + rows) * self.stride + (cx - self.x0)
        order = np.argsort(key, kind="stable")
        self.members, self.key = live[order], key[order]
        self.moved = np.zeros(len(alive), dtype=bool)
        self.moved_idx: list[np.ndarray] = []
        self.n_moved = 0
        self.n_live = len(live)

    def touch(self, idx: np.ndarray) -> None:
        self.moved[idx] = True
        self.moved_idx.append(idx)
        self.n_moved += len(idx)

    def stale(self) -> bool:
        return self.n_moved > max(32, int(self.n_live**0.5))

    def pairs(self, feat: np.ndarray, rows: np.ndarray, bound: np.ndarray, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in rows, box), never the row itself: see :meth:`pairs_at`."""
        pos, c = self.pairs_at(feat[CX, rows], feat[CY, rows], feat[S, rows], bound, alive)
        keep = c != rows[pos]
        return pos[keep], c[keep]

    def pairs_at(self, qx: np.ndarray, qy: np.ndarray, size: np.ndarray, bound: np.ndarray, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query number, box) for every live box that can score <= ``bound`` with a box of
        centre (``qx``, ``qy``) and ``size`` (a superset: callers apply the exact pair bound)."""
        n_cls = len(self.smax)
        radius = np.minimum((size[:, None] + self.smax) * (bound * (0.5 * _SLACK))[:, None] + _ABS_SLACK, self.cap).ravel()  # [Q*K]
        y = np.repeat(qy - self.y0, n_cls)
        r0 = np.clip(np.floor((y - radius) / self.band), 0, self.n_rows - 1).astype(np.int64)
        r1 = np.clip(np.floor((y + radius) / self.band), -1, self.n_rows - 1).astype(np.int64)
        which, row = _expand(r0, np.maximum(r1 - r0 + 1, 0))  # (query x class, band) ranges
        k = which % n_cls
        base = (k * self.n_rows + row) * self.stride + (qx[which // n_cls] - self.x0)
        lo = np.searchsorted(self.key, base - radius[which], side="left")
        hi = np.searchsorted(self.key, base + radius[which], side="right")
        span, at = _expand(lo, hi - lo)
        pos, c = which[span] // n_cls, self.members[at]
        # Boxes changed since the rebuild sit at old positions: skip them there and pair every
        # query with each of them instead.
        keep = alive[c] & ~self.moved[c]
        pos, c = pos[keep], c[keep]
        if self.n_moved:
            m = np.concatenate(self.moved_idx)
            m = m[alive[m]]
            pos = np.concatenate([pos, np.repeat(np.arange(len(qx)), len(m))])
            c = np.concatenate([c, np.tile(m, len(qx))])
        return pos, c


def _band(feat: np.ndarray, alive: np.ndarray, nn_d: np.ndarray, threshold: float, s_max: float) -> float:
    """Band height of the index: half the median search radius of the live boxes (a window
    then spans a few bands, so little outside it is read)."""
    live = np.flatnonzero(alive)
    if not len(live):
        return 1.0
    return 4.0 * float(np.median(_radius(feat[S, live], np.minimum(nn_d[live], threshold), s_max)))


def _search(feat: np.ndarray, rows: np.ndarray, bound: np.ndarray, threshold: float, s_max: float, index: _Index, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest live neighbour within ``threshold`` of a few ``rows``, each known to have one
    at score <= ``bound`` or none (bound = threshold).

    A window on cx (the ``s_max`` bound) then the exact per-pair bound on the centre distance
    select the candidates.
    """
    pos, c = index.pairs(feat, rows, bound, alive)
    return _nearest_among(feat, rows, pos, c, threshold, bound[pos])


def _batch_candidates(nn_d: np.ndarray, nn_i: np.ndarray, threshold: float, size: int) -> np.ndarray:
    """The first box of each of the next pairs, in the order the procedure merges them.

    Each pair is ranked by (score, lower index, higher index), the procedure's own order
    (its tie rule). The first row's pair is the one the procedure merges now. Walking on in
    that order, a row whose box an earlier pair consumes is skipped, and the walk stops at a
    row whose cached neighbour an earlier pair consumes: that row's next-nearest neighbour is
    unknown and might come first. Returns at most ``size`` rows.
    """
    rows = np.flatnonzero(nn_d <= threshold)
    lo = np.minimum(rows, nn_i[rows])
    hi = np.maximum(rows, nn_i[rows])
    vals = nn_d[rows]
    if len(rows) > 2 * size:
        part = np.argpartition(vals, 2 * size)[: 2 * size + 1]
        rows, lo, hi, vals = rows[part], lo[part], hi[part], vals[part]
        order = np.lexsort((hi, lo, vals))
        rows, vals = rows[order], vals[order]
        # Rows tied with the partition boundary may be missing: keep only those below it.
        sure = rows[vals < vals[-1]]
        rows = sure if len(sure) else rows[:1]
    else:
        rows = rows[np.lexsort((hi, lo, vals))]
    taken: list[int] = []
    consumed: set[int] = set()
    for x, p in zip(rows.tolist(), nn_i[rows].tolist(), strict=True):  # at most 2 * size rows
        if x in consumed:
            continue
        if p in consumed or len(taken) == size:
            break
        taken.append(x)
        consumed.update((x, p))
    return np.array(taken, dtype=np.int64)


def _merge_sorted(boxes: np.ndarray, weights: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The greedy procedure on canonically sorted float64 arrays; returns survivors in order.

    Caches: every live box holds its nearest neighbour as of its last search, and every pair
    within the threshold is held (with a key no larger) by at least one of its two boxes: a
    merged box searches all live boxes, and a box whose neighbour is consumed or moved
    searches again. Older boxes need not learn of a newer box, because the newer box's own
    cache holds their pair. So the smallest cached key is the procedure's next pair.

    Works in rounds. A round proposes the next pairs in the order the one-at-a-time procedure
    would merge them if no merged box interfered (:func:`_batch_candidates`), scores each
    proposed merged box against the boxes near it, and accepts the longest prefix in which no
    merged box comes within (or ties) the score of a later pair while both exist. The accepted
    merges are exactly the next merges of the one-at-a-time procedure; the first is always
    accepted.
    """
    boxes = boxes.copy()
    weights = weights.copy()
    n = len(boxes)
    feat = _features(boxes)
    s_max = float(feat[S].max())
    alive = np.ones(n, dtype=bool)
    nn_d, nn_i = _initial_nearest(feat, threshold, s_max)
    index = _Index(feat, alive, _band(feat, alive, nn_d, threshold, s_max))
    size = 16
    while True:
        a = _batch_candidates(nn_d, nn_i, threshold, size)
        if not len(a):
            break
        a, b = np.minimum(a, nn_i[a]), np.maximum(a, nn_i[a])  # the merged box keeps the lower index
        d = nn_d[a]
        wa, wb = weights[a], weights[b]
        total = wa + wb
        new = (boxes[a] * wa[:, None] + boxes[b] * wb[:, None]) / total[:, None]
        fn = _features(new)
        # Proposed box r against the current boxes y with which it could score <= d[-1].
        r, y = index.pairs_at(fn[CX], fn[CY], fn[S], np.full(len(a), d[-1]), alive)
        keep = _dist(feat[CX, y] - fn[CX, r], feat[CY, y] - fn[CY, r]) <= (feat[S, y] + fn[S, r]) * (d[-1] * 0.5 * _SLACK) + _ABS_SLACK
        r, y = r[keep], y[keep]
        e = _scores(_take(fn, r), _take(feat, y))
        f = _scores(fn[:, :, None], fn[:, None, :])
        np.fill_diagonal(f, np.inf)
        fr, fs = np.nonzero(f <= d[-1])
        # Decision l (0-based) takes pair l. Box r exists from decision r + 1 on; an old box
        # y until the decision that consumes it. Pair l is still next unless some existing
        # pair involving a merged box scores <= d[l]: find the first decision that fails.
        death = np.full(n, len(a))
        death[a] = death[b] = np.arange(len(a))
        first = np.maximum(r + 1, np.searchsorted(d, e, side="left"))
        first = first[first <= np.minimum(death[y], len(a) - 1)]
        first2 = np.maximum(np.maximum(fr, fs) + 1, np.searchsorted(d, f[fr, fs], side="left"))
        accept = int(min(len(a), first.min(initial=len(a)), first2.min(initial=len(a))))
        size = min(2 * size, 256) if accept == len(a) else max(8, 2 * accept)
        a, b, new, fn = a[:accept], b[:accept], new[:accept], fn[:, :accept]
        # Apply the accepted merges: box a takes the merged box, box b dies.
        boxes[a], weights[a], feat[:, a] = new, total[:accept], fn
        alive[b] = False
        index.touch(a)
        gone = np.zeros(n + 1, dtype=bool)  # index -1 (no neighbour) reads the last entry
        gone[a] = gone[b] = True
        # Boxes whose neighbour moved or died search again, bounded by their score to the
        # box that replaced that neighbour; the merged boxes search too.
        stale = np.flatnonzero(gone[nn_i] & ~gone[:n] & alive)
        owner = death[nn_i[stale]]
        bound_stale = np.minimum(_scores(_take(feat, stale), _take(fn, owner)), threshold)
        nn_d[b], nn_i[b] = np.inf, -1
        # A merged box's search is bounded by its scores found so far: to the stale boxes
        # that pointed at its parts, and to the boxes near it scored above.
        bound_new = np.full(accept, threshold)
        np.minimum.at(bound_new, owner, bound_stale)
        sel = (r < accept) & ~gone[y]
        np.minimum.at(bound_new, r[sel], e[sel])
        rows = np.concatenate([stale, a])
        bound = np.concatenate([bound_stale, bound_new])
        nn_d[rows], nn_i[rows] = _search(feat, rows, bound, threshold, s_max, index, alive)
        n_alive = int(alive.sum())
        if n_alive * 3 < n * 2 and n > 64:
            # Compact: dead boxes cost work in every search. Relative order (and so the
            # tie-breaking) is kept; cached indices are renumbered.
            keep = np.flatnonzero(alive)
            renumber = np.cumsum(alive) - 1
            boxes, weights, feat = boxes[keep], weights[keep], feat[:, keep]
            nn_d, nn_i = nn_d[keep], np.where(nn_i[keep] >= 0, renumber[nn_i[keep]], -1)
            alive = np.ones(len(keep), dtype=bool)
            n = len(keep)
            index = _Index(feat, alive, _band(feat, alive, nn_d, threshold, s_max))
        elif index.stale():
            index = _Index(feat, alive, _band(feat, alive, nn_d, threshold, s_max))
    return boxes[alive], weights[alive]


def greedy_merge(boxes: Tensor, weights: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Greedy merge (SPEC 5) of ``boxes (Tensor[N, 4])`` x1y1x2y2 with positive ``weights
    (Tensor[N])`` at match-score ``threshold``.

    Returns ``(Tensor[M, 4], Tensor[M])``: the merged boxes and their accumulated weights, best
    (heaviest) first, in the dtype and on the device of ``boxes``. ``threshold`` 0 merges only
    identical boxes; a huge one leaves one box at the weighted mean of all. Runs on the CPU in
    float64 (a sequential algorithm); the output does not depend on the input order.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [N, 4], got {tuple(boxes.shape)}")
    if weights.shape != boxes.shape[:1]:
        raise ValueError(f"weights must be [{boxes.shape[0]}], got {tuple(weights.shape)}")
    if threshold < 0:
        raise ValueError(f"greedy_merge: threshold {threshold} must be >= 0")
    dtype = boxes.dtype if boxes.is_floating_point() else torch.float32
    if boxes.shape[0] == 0:
        return boxes.to(dtype).reshape(0, 4), weights.to(dtype).reshape(0)
    b = boxes.detach().cpu().double().numpy()
    w = weights.detach().cpu().double().numpy()
    if not (np.isfinite(b).all() and np.isfinite(w).all()):
        raise ValueError("greedy_merge: boxes and weights must be finite")
    if (w <= 0).any():
        raise ValueError("greedy_merge: weights must be positive")
    # Canonical order (weight descending, then x1, y1, x2, y2): the same set of inputs in any
    # order becomes the same arrays, so index-based tie-breaking cannot see the caller's order.
    order = np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], -w))
    # An infinite threshold would make the search radii infinite; 1e100 merges everything too.
    mb, mw = _merge_sorted(b[order], w[order], min(float(threshold), 1e100))
    rank = np.argsort(-mw, kind="stable")  # best first; canonical order among equal weights
    out_b = torch.from_numpy(np.ascontiguousarray(mb[rank])).to(device=boxes.device, dtype=dtype)
    out_w = torch.from_numpy(np.ascontiguousarray(mw[rank])).to(device=boxes.device, dtype=dtype)
    return out_b, out_w
