"""``vgglocal compare``: is evaluation A's error really lower than B's on the same images?

Two error rates on a few hundred images differ by chance more than intuition says (one image
of 500 is 0.2 points, and a retrained net lands a few points elsewhere), so a comparison is
made image by image: both evaluations are scored per image under the ILSVRC devkit rule (the
files ``vgglocal score`` reads, against the same ground truth), and

* the test is the exact two-sided sign test on the images where A and B differ. With 0/1
  errors, as for every image that holds one labelled class, it is McNemar's exact test
  (McNemar 1947; recommended for comparing two classifiers on one test set by Dietterich,
  *Approximate statistical tests for comparing supervised classification learning
  algorithms*, Neural Computation 1998). Several pairs (A and B trained again with other
  seeds, each A against its own B) score the same images, so the image stays the sample:
  each image's difference is averaged over the pairs and the sign test runs on those
  averages (a sign-flip permutation test of their sum beside it). Pooling every (pair, image)
  as one observation would count an image once per seed although the seeds' errors on it are
  correlated; that pooled p-value, the paired t test over the pairs and how many pairs agree
  are reported beside the verdict, not as it;
* the interval is a paired bootstrap 95 % interval of the mean difference (A - B), images
  resampled with replacement.

A paired test needs the same images under the same rules, so evaluations that differ in what
was measured are refused in one line naming the difference: the split or the number of images
their ``metrics.json`` records, a protocol-1 evaluation
(``center-crop``, which localises the true class, so its guesses are no classification) against
another protocol, or prediction files that cover different images. The classification
protocols and ``full`` all make their own top-5 guesses, so their classification errors
compare (dense against multi-crop is the paper's Table 5 question).

scipy's ``binomtest`` gives the exact p-value. The bootstrap draws multinomial counts of the
distinct per-image differences (a handful of values: -1, 0, 1 for 0/1 errors) rather than
image indices: the same distribution as resampling the images, at no cost per image.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vgglocal.config import CLS_PROTOCOLS, ILSVRC_METRICS
from vgglocal.data.files import shown
from vgglocal.evaluation.ilsvrc import (
    MAX_GUESSES,
    SubmissionError,
    kaggle_tensors,
    localization_errors,
)
from vgglocal.evaluation.score import read_ilsvrc

__all__ = ["METRICS", "per_image_errors", "predictions_file", "paired_test", "holm", "compare"]

METRICS = ILSVRC_METRICS
ALPHA = 0.05


def predictions_file(path: str | Path, labels: bool = False) -> tuple[str, bool]:
    """An eval output folder's ILSVRC predictions (``predictions.csv``, else the devkit
    ``predictions.txt``), or the file itself; with whether it holds class ids only (a folder
    of a ``cls-*`` protocol, by its metrics.json; a file: ``labels``)."""
    p = Path(path)
    if not p.is_dir():
        return str(p), labels
    for name in ("predictions.csv", "predictions.txt"):
        if (p / name).is_file():
            protocol = ""
            if (p / "metrics.json").is_file():
                try:
                    protocol = str(json.loads((p / "metrics.json").read_text()).get("protocol", ""))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                    raise SubmissionError(f"{p / 'metrics.json'}: not the metrics JSON vgglocal eval writes") from None
            return str(p / name), name.endswith(".txt") and protocol in CLS_PROTOCOLS
    raise SubmissionError(f"{p}: no predictions.csv or predictions.txt (not a vgglocal eval folder?)")


def _recorded(path: str | Path) -> dict[str, Any]:
    """What an eval folder's ``metrics.json`` says was measured (protocol, split, n_images);
    empty for a prediction file or a folder without one."""
    p = Path(path) / "metrics.json"
    if not p.is_file():
        return {}
    try:
        metrics = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise SubmissionError(f"{shown(p)}: not the metrics JSON vgglocal eval writes") from None
    if not isinstance(metrics, dict):
        raise SubmissionError(f"{shown(p)}: not the metrics JSON vgglocal eval writes")
    return {k: metrics[k] for k in ("protocol", "split", "n_images") if metrics.get(k) is not None}


def _check_same_split(runs: Sequence[str], seen: Sequence[dict[str, Any]], split: str | None) -> None:
    """Refuse evaluations of another split or number of images than the first (``seen``: what
    each run's metrics.json records), or of another split than ``split``."""
    first, ref = runs[0], seen[0]
    for run, rec in zip(runs, seen, strict=True):
        if split is not None and rec.get("split") not in (None, split):
            raise SubmissionError(f"cannot compare {shown(run)} on --split {split!r}: it was evaluated on split {rec['split']!r}")
        for key in ("split", "n_images"):
            if key in rec and key in ref and rec[key] != ref[key]:
                raise SubmissionError(f"cannot compare {shown(first)} with {shown(run)}: {key} {ref[key]!r} against {rec[key]!r}")


def _check_protocols(runs: Sequence[str], seen: Sequence[dict[str, Any]]) -> None:
    """Refuse center-crop evaluations among others (module doc)."""
    protocols = [(run, str(rec["protocol"])) for run, rec in zip(runs, seen, strict=True) if "protocol" in rec]
    one = [(run, p) for run, p in protocols if p == "center-crop"]
    other = [(run, p) for run, p in protocols if p != "center-crop"]
    if one and other:
        (x, px), (y, py) = sorted([one[0], other[0]], key=lambda rp: runs.index(rp[0]))
        raise SubmissionError(f"cannot compare {shown(x)} with {shown(y)}: protocol {px} against {py} "
                              "(center-crop localises the true class: its errors compare only with center-crop's)")


def _check_same_images(runs: Sequence[str], predicted: Sequence[set[str]]) -> None:
    """Refuse prediction files over different images (one holds rows the other lacks)."""
    for run, ids in zip(runs[1:], predicted[1:], strict=True):
        if ids != predicted[0]:
            only_a, only_b = sorted(predicted[0] - ids), sorted(ids - predicted[0])
            raise SubmissionError(f"cannot compare {shown(runs[0])} with {shown(run)}: they predict different images "
                                  f"({len(predicted[0])} against {len(ids)}; {len(only_a)} only in the first, "
                                  f"{len(only_b)} only in the second, e.g. {shown(repr((only_a or only_b)[0]))})")


def _scored(predictions: str, ground_truth: str, *, fmt: str | None, split: str | None,
            labels: bool) -> tuple[list[str], dict[str, np.ndarray], set[str]]:
    """:func:`per_image_errors` and the image ids the predictions hold."""
    preds, truth = read_ilsvrc(predictions, ground_truth, fmt=fmt, split=split, labels=labels)
    ids, (pl, pb, gl, gb) = kaggle_tensors(preds, truth, str(predictions), str(ground_truth))
    errors: dict[str, np.ndarray] = {}
    for k in (1, MAX_GUESSES):
        cls, loc = localization_errors(pl, pb, gl, gb, topk=k)
        errors[f"top{k}_cls_error"] = cls.numpy()
        if not labels:
            errors[f"top{k}_loc_error"] = loc.numpy()
    return ids, errors, set(preds)


def per_image_errors(predictions: str, ground_truth: str, *, fmt: str | None = None, split: str | None = None,
                     labels: bool = False) -> tuple[list[str], dict[str, np.ndarray]]:
    """The ground truth's image ids and, per metric of :data:`METRICS`, each image's error
    (the fraction of its labelled classes missed; 0 or 1 for one class), as ``score`` counts it.
    ``labels``: a devkit .txt of class ids only, so the classification metrics only."""
    return _scored(predictions, ground_truth, fmt=fmt, split=split, labels=labels)[:2]


def paired_test(a: Sequence[np.ndarray], b: Sequence[np.ndarray], *, bootstrap: int = 10_000, seed: int = 0,
                alpha: float = ALPHA, permutations: int = 100_000) -> dict[str, Any]:
    """Image-level sign test and paired bootstrap (module doc) of per-image errors ``a[j]``
    against ``b[j]`` for each pair ``j`` (seeds), every pair on the same images in the same order.

    The sample is the image, not the (pair, image): seeds score the same images, and their
    errors are strongly correlated (an image one seed misses, another seed tends to miss too),
    so counting each image once per seed would treat copies as independent evidence. Per image
    the difference is averaged over the pairs; the test is the exact two-sided sign test on the
    images where that average is not zero (with one pair: McNemar's exact test), beside a
    sign-flip permutation test of the summed differences (``permutations`` random flips, the
    images' signs drawn independently). Beside them, the views that do not decide the verdict:
    the pooled test that counts every (pair, image) (``pooled_*``), how many pairs' own mean
    differences point the way of the overall one (``pairs_agreeing``), and the paired t test
    over the pairs' error rates (``t_p_value``: the conservative view, a seed a sample).

    Returns a_error, b_error, difference (a - b, means over pairs and images), ci95 (images
    resampled), a_better / b_better (images whose mean difference favours A / B), p_value,
    permutation_p_value, verdict ("a" or "b": lower error at p < alpha, else "not resolved"),
    pair_differences, pairs_agreeing, t_p_value (None for one pair), pooled_a_better,
    pooled_b_better, pooled_p_value.
    """
    from scipy.stats import binomtest, ttest_1samp

    if len(a) != len(b) or not len(a):
        raise ValueError(f"{len(a)} A runs against {len(b)} B runs: give them in pairs")
    diffs = []
    for j, (x, y) in enumerate(zip(a, b, strict=True)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape or x.ndim != 1 or not len(x):
            raise ValueError(f"pair {j + 1}: {x.shape} against {y.shape} per-image errors (same images needed)")
        if diffs and x.shape != diffs[0].shape:
            raise ValueError(f"pair {j + 1}: {len(x)} images against {len(diffs[0])} in pair 1 (every pair on the same images)")
        diffs.append(x - y)
    d = np.stack(diffs)  # [pairs, images]
    per_image = d.mean(0)
    n = per_image.size
    a_better, b_better = int((per_image < 0).sum()), int((per_image > 0).sum())
    p = binomtest(a_better, a_better + b_better, 0.5).pvalue if a_better + b_better else 1.0
    perm_p = _sign_flip_p(per_image, permutations, seed)
    pooled_a, pooled_b = int((d < 0).sum()), int((d > 0).sum())
    pooled_p = binomtest(pooled_a, pooled_a + pooled_b, 0.5).pvalue if pooled_a + pooled_b else 1.0
    rng = np.random.default_rng(seed)
    values, counts = np.unique(per_image, return_counts=True)
    total = rng.multinomial(n, counts / n, size=bootstrap) @ values
    lo, hi = np.quantile(total / n, [0.025, 0.975])
    difference = float(per_image.mean())
    pair_diffs = d.mean(1)
    agreeing = int((np.sign(pair_diffs) == np.sign(difference)).sum()) if difference else 0
    t_p = None
    if len(diffs) > 1:
        if np.ptp(pair_diffs) == 0:  # no spread over the pairs: t is 0/0 (no difference) or infinite
            t_p = 1.0 if not pair_diffs[0] else 0.0
        else:
            t_p = float(ttest_1samp(pair_diffs, 0.0).pvalue)
    verdict = ("a" if difference < 0 else "b") if p < alpha and difference != 0 else "not resolved"
    return {
        "pairs": len(diffs), "images": n,
        "a_error": float(np.mean([np.asarray(x, np.float64).mean() for x in a])),
        "b_error": float(np.mean([np.asarray(y, np.float64).mean() for y in b])),
        "difference": difference, "ci95": [float(lo), float(hi)],
        "a_better": a_better, "b_better": b_better, "p_value": float(p), "permutation_p_value": perm_p,
        "alpha": alpha, "verdict": verdict,
        "pair_differences": [float(v) for v in pair_diffs], "pairs_agreeing": agreeing, "t_p_value": t_p,
        "pooled_a_better": pooled_a, "pooled_b_better": pooled_b, "pooled_p_value": float(pooled_p),
    }


def _sign_flip_p(per_image: np.ndarray, draws: int, seed: int) -> float:
    """Two-sided sign-flip permutation p-value of ``sum(per_image)``: each image's difference
    keeps its size and takes a random sign (no difference between A and B makes both signs
    equally likely), ``(hits + 1) / (draws + 1)``. Only the non-zero differences matter; the
    draws go in blocks so that the memory stays bounded."""
    v = per_image[per_image != 0]
    if not v.size:
        return 1.0
    observed = abs(v.sum()) - 1e-9 * np.abs(v).sum()  # ties with the observed sum count as hits
    rng = np.random.default_rng(seed + 1)
    hits, block = 0, max(1, 2**22 // v.size)
    for lo in range(0, draws, block):
        k = min(block, draws - lo)
        signs = rng.integers(0, 2, size=(k, v.size), dtype=np.int8) * 2 - 1
        hits += int((np.abs(signs @ v) >= observed).sum())
    return (hits + 1) / (draws + 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (Holm 1979) of ``p_values`` tested together: the k-th smallest
    is multiplied by (m - k + 1), made non-decreasing in that order and capped at 1. A verdict
    at adjusted p < alpha holds for the whole family at level alpha (family-wise error rate)."""
    p = np.asarray(p_values, np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return [float(v) for v in out]


def compare(a: Sequence[str], b: Sequence[str], ground_truth: str, *, metrics: Sequence[str] | None = None,
            fmt: str | None = None, split: str | None = None, labels: bool = False, bootstrap: int = 10_000,
            seed: int = 0) -> dict[str, Any]:
    """Paired comparison of the evaluations ``a[j]`` and ``b[j]`` (eval folders or prediction
    files; ``labels``: the files are classification .txt) on ``ground_truth``, for each metric
    (default: all that both sides have): ``{metric: paired_test(...)}``. Evaluations of other
    images, splits or measurements (module doc) raise :class:`SubmissionError`."""
    unknown = [m for m in metrics or () if m not in METRICS]
    if unknown:
        raise SubmissionError(f"unknown metric {unknown[0]!r} (choose from {', '.join(METRICS)})")
    if len(a) != len(b) or not a:
        raise SubmissionError(f"{len(a) + len(b)} evaluations given: give them in pairs, A B [A2 B2 ...]")

    runs = [*a, *b]
    recorded = [_recorded(r) for r in runs]
    _check_same_split(runs, recorded, split)

    def errors(path: str) -> tuple[dict[str, np.ndarray], set[str]]:
        file, only_labels = predictions_file(path, labels)
        return _scored(file, ground_truth, fmt=fmt, split=split, labels=only_labels)[1:]

    scored = [errors(p) for p in runs]
    _check_same_images(runs, [ids for _, ids in scored])
    per_a, per_b = [e for e, _ in scored[: len(a)]], [e for e, _ in scored[len(a):]]
    common = [m for m in METRICS if all(m in e for e in per_a + per_b)]
    missing = [m for m in metrics or () if m not in common]
    if missing:
        raise SubmissionError(f"{missing[0]}: a classification evaluation among the runs has no boxes to compare")
    _check_protocols(runs, recorded)
    chosen = list(metrics) if metrics else common
    return {m: paired_test([e[m] for e in per_a], [e[m] for e in per_b], bootstrap=bootstrap, seed=seed) for m in chosen}
