"""The paired comparison of two evaluations (`vgglocal compare`): sign test counts and p-values
by hand, seeds tested image by image (not pooled), Holm's adjustment, the bootstrap interval, and the CLI on Kaggle files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from vgglocal.cli import cli
from vgglocal.evaluation.compare import holm, paired_test


def test_counts_difference_and_exact_p_by_hand():
    a, b = np.array([0, 1, 1, 0, 1.0]), np.array([1, 1, 0, 0, 0.0])
    t = paired_test([a], [b])
    assert (t["a_better"], t["b_better"], t["images"]) == (1, 2, 5)
    assert t["difference"] == pytest.approx(0.2) and t["a_error"] == pytest.approx(0.6) and t["b_error"] == pytest.approx(0.4)
    assert t["p_value"] == pytest.approx(1.0) and t["verdict"] == "not resolved"  # 1 against 2: P(X <= 1 | 3) * 2 = 1
    one_sided = paired_test([np.zeros(12)], [np.r_[np.ones(10), np.zeros(2)]])
    assert one_sided["p_value"] == pytest.approx(2 * 0.5 ** 10) and one_sided["verdict"] == "a"
    assert paired_test([np.ones(4)], [np.ones(4)])["p_value"] == 1.0  # no discordant image


def test_seeds_on_the_same_images_are_one_sample_per_image():
    """Two seeds that are copies of each other are no more evidence than one: 5 images better
    is p = 1/16 alone and still 1/16 with the copy (pooling over (seed, image) said 1/512)."""
    a, b = np.zeros(8), np.r_[np.ones(5), np.zeros(3)]
    alone, twice = paired_test([a], [b]), paired_test([a, a], [b, b])
    assert alone["p_value"] == pytest.approx(2 * 0.5 ** 5) and alone["verdict"] == "not resolved"
    assert twice["p_value"] == pytest.approx(2 * 0.5 ** 5) and twice["verdict"] == "not resolved"
    assert twice["pooled_p_value"] == pytest.approx(2 * 0.5 ** 10)  # the old, pooled view, reported beside
    assert twice["pairs"] == 2 and twice["images"] == 8 and twice["pairs_agreeing"] == 2
    assert twice["t_p_value"] == 0.0  # both seeds the same difference: no spread over seeds
    with pytest.raises(ValueError, match="pair 1"):
        paired_test([np.zeros(3)], [np.zeros(4)])
    with pytest.raises(ValueError, match="pair 2: 4 images against 3"):
        paired_test([np.zeros(3), np.zeros(4)], [np.zeros(3), np.zeros(4)])


def test_correlated_seeds_pooled_significant_image_level_not():
    """Three seeds whose errors fall on the same images (as retrained nets' do): A is right
    where B is wrong on 7 images and the reverse on 1, in every seed. Pooled over the seeds that
    is 21 against 3, p = 0.0003 < 0.05; per image it is 7 against 1, p = 0.070: not resolved."""
    b = np.zeros(300)
    b[:7] = 1  # B misses images 0-6
    a = np.zeros(300)
    a[7] = 1   # A misses image 7
    a[50:80] = b[50:80] = 1  # both miss 30 more
    t = paired_test([a] * 3, [b] * 3)
    assert (t["pooled_a_better"], t["pooled_b_better"]) == (21, 3) and t["pooled_p_value"] < 0.05
    assert (t["a_better"], t["b_better"]) == (7, 1)
    assert t["p_value"] == pytest.approx(18 / 256) and t["verdict"] == "not resolved"  # P(X <= 1 or >= 7 | 8)
    # the sign-flip test on the per-image sums: 8 differences of equal size, the same exact p
    assert t["permutation_p_value"] == pytest.approx(18 / 256, abs=0.004)


def test_independent_seeds_add_images_and_the_views_beside_the_verdict():
    """Seeds that miss different images do add evidence: each seed alone is 5 against 0
    (p = 1/16), three seeds on disjoint images are 15 against 0 per image."""
    a, bs = np.zeros(40), []
    for j in range(3):
        b = np.zeros(40)
        b[5 * j : 5 * j + 5] = 1
        bs.append(b)
    t = paired_test([a] * 3, bs)
    assert (t["a_better"], t["b_better"]) == (15, 0)
    assert t["p_value"] == pytest.approx(2 * 0.5 ** 15) and t["verdict"] == "a"
    assert t["permutation_p_value"] < 0.001 and t["pairs_agreeing"] == 3
    assert t["pair_differences"] == pytest.approx([-5 / 40] * 3)
    mixed = paired_test([a, a, bs[0]], [bs[0], bs[1], a])  # two seeds one way, the third the other
    assert mixed["pairs_agreeing"] == 2 and mixed["t_p_value"] > 0.05


def test_holm_adjusts_the_family():
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped
    assert holm([0.001]) == pytest.approx([0.001])
    # a verdict that survives at 0.05 alone but not among four tests
    assert holm([0.02, 0.5, 0.6, 0.7])[0] == pytest.approx(0.08)


def test_bootstrap_interval_matches_resampling_images():
    """The multinomial shortcut has the spread of resampling the images themselves."""
    rng = np.random.default_rng(1)
    a, b = (rng.random(400) < 0.3).astype(float), (rng.random(400) < 0.4).astype(float)
    t = paired_test([a], [b], bootstrap=20_000)
    d = a - b
    direct = d[rng.integers(0, len(d), size=(20_000, len(d)))].mean(1)
    lo, hi = np.quantile(direct, [0.025, 0.975])
    assert t["ci95"][0] == pytest.approx(lo, abs=0.006) and t["ci95"][1] == pytest.approx(hi, abs=0.006)
    assert t["ci95"][0] < t["difference"] < t["ci95"][1]


def test_cli_on_kaggle_files_and_bad_input(tmp_path):
    truth = tmp_path / "solution.csv"
    rows = [f"img{i},n0000000{1 + i % 2} 10 10 50 50" for i in range(20)]
    truth.write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    # good: right label and box everywhere; bad: right label, box off for the first 12 images
    good.write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    bad.write_text("ImageId,PredictionString\n" + "\n".join(
        r.replace(" 10 10 50 50", " 60 60 90 90") if i < 12 else r for i, r in enumerate(rows)) + "\n")
    r = CliRunner().invoke(cli, ["compare", str(good), str(bad), "--data", str(truth), "--metric", "top1_loc_error",
                                 "--metric", "top1_cls_error"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    loc, cls = out["top1_loc_error"], out["top1_cls_error"]
    assert (loc["a_error"], loc["b_error"], loc["a_better"], loc["b_better"]) == (0.0, 0.6, 12, 0)
    assert loc["p_value"] == pytest.approx(2 * 0.5 ** 12) and loc["verdict"] == "a"
    assert cls["difference"] == 0 and cls["verdict"] == "not resolved"
    r = CliRunner().invoke(cli, ["compare", str(good), "--data", str(truth)])
    assert r.exit_code == 2 and "give them in pairs" in r.output
    r = CliRunner().invoke(cli, ["compare", str(good), str(tmp_path / "missing.csv"), "--data", str(truth)])
    assert r.exit_code != 0 and "missing.csv" in r.output and "Traceback" not in r.output


def _eval_folder(path, rows, **recorded):
    """An eval output folder as `vgglocal eval` leaves it: metrics.json and predictions.csv."""
    path.mkdir()
    metrics = {"protocol": "full", "split": "val", "n_images": len(rows), "top1_loc_error": 0.0,
               "data": {"root": "/data/ilsvrc", "format": "ilsvrc-kaggle"}, **recorded}
    (path / "metrics.json").write_text(json.dumps(metrics))
    (path / "predictions.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    return str(path)


def test_evaluations_of_other_images_splits_or_measurements_are_refused_in_one_line(tmp_path):
    truth = tmp_path / "solution.csv"
    rows = [f"img{i},n0000000{1 + i % 2} 10 10 50 50" for i in range(20)]
    truth.write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    a = _eval_folder(tmp_path / "a", rows)

    def run(*args):
        return CliRunner().invoke(cli, ["compare", *map(str, args), "--data", str(truth)])

    r = run(a, _eval_folder(tmp_path / "same", rows))
    assert r.exit_code == 0, r.output  # the baseline: the same images, split and protocol
    r = run(a, _eval_folder(tmp_path / "cls", rows, protocol="cls-dense"))
    assert r.exit_code == 0, r.output  # both make their own guesses: their classification errors compare
    cases = [
        (_eval_folder(tmp_path / "train", rows, split="train"), "split 'val' against 'train'"),
        (_eval_folder(tmp_path / "fewer", rows[:15]), "n_images 20 against 15"),
        (_eval_folder(tmp_path / "cc", rows, protocol="center-crop"), "protocol full against center-crop"),
        (_eval_folder(tmp_path / "other", rows[1:], n_images=None), "they predict different images (20 against 19"),
    ]
    for b, what in cases:
        r = run(a, b)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith(f"error: cannot compare {a} with {b}: {what}"), r.output
    r = run(a, cases[0][0], "--split", "val")
    assert r.exit_code == 2 and "it was evaluated on split 'train'" in r.output, r.output
    # prediction files (no metrics.json): their rows say which images they cover
    partial = tmp_path / "partial.csv"
    partial.write_text("ImageId,PredictionString\n" + "\n".join(rows[:18]) + "\n")
    r = run(truth, partial)
    assert r.exit_code == 2 and "(20 against 18; 2 only in the first, 0 only in the second, e.g. 'img18')" in r.output, r.output
    # a later pair is held to the first one's images too
    r = run(a, tmp_path / "same", a, cases[1][0])
    assert r.exit_code == 2 and "n_images 20 against 15" in r.output, r.output
