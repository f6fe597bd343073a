"""The paired comparison of two evaluations (`vgglocal compare`): sign test counts and p-values
by hand, pooling over pairs, the bootstrap interval, and the CLI on Kaggle files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from vgglocal.cli import cli
from vgglocal.evaluation.compare import paired_test


def test_counts_difference_and_exact_p_by_hand():
    a, b = np.array([0, 1, 1, 0, 1.0]), np.array([1, 1, 0, 0, 0.0])
    t = paired_test([a], [b])
    assert (t["a_better"], t["b_better"], t["images"]) == (1, 2, 5)
    assert t["difference"] == pytest.approx(0.2) and t["a_error"] == pytest.approx(0.6) and t["b_error"] == pytest.approx(0.4)
    assert t["p_value"] == pytest.approx(1.0) and t["verdict"] == "not resolved"  # 1 against 2: P(X <= 1 | 3) * 2 = 1
    one_sided = paired_test([np.zeros(12)], [np.r_[np.ones(10), np.zeros(2)]])
    assert one_sided["p_value"] == pytest.approx(2 * 0.5 ** 10) and one_sided["verdict"] == "a"
    assert paired_test([np.ones(4)], [np.ones(4)])["p_value"] == 1.0  # no discordant image


def test_pairs_pool_into_one_test():
    """5 images better in each of two seeds: each alone is p = 1/16, together p = 1/512."""
    a, b = np.zeros(8), np.r_[np.ones(5), np.zeros(3)]
    alone, pooled = paired_test([a], [b]), paired_test([a, a], [b, b])
    assert alone["p_value"] == pytest.approx(2 * 0.5 ** 5) and alone["verdict"] == "not resolved"
    assert pooled["p_value"] == pytest.approx(2 * 0.5 ** 10) and pooled["verdict"] == "a"
    assert pooled["pairs"] == 2 and pooled["images"] == 16
    with pytest.raises(ValueError, match="pair 1"):
        paired_test([np.zeros(3)], [np.zeros(4)])


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
