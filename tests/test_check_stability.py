"""bin/check-stability's bookkeeping (no training): leaving-chance epochs from metrics.jsonl,
resumed epochs counted once, spreads and the targets."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def cs(bin_script):
    return bin_script("check_stability")


def test_left_chance_is_the_first_epoch_below_half_and_resumed_epochs_count_once(cs, tmp_path):
    lines = [{"kind": "step", "epoch": 1, "loss": 2.3},
             {"kind": "epoch", "epoch": 1, "val_top1_cls_error": 0.9},
             {"kind": "epoch", "epoch": 2, "val_top1_cls_error": 0.6},
             {"kind": "epoch", "epoch": 2, "val_top1_cls_error": 0.45},  # the resumed run's epoch 2
             {"kind": "epoch", "epoch": 3, "val_top1_cls_error": 0.5},
             {"kind": "epoch", "epoch": 4, "val_top1_cls_error": 0.3}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    epochs = cs.epoch_lines(path)
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert cs.left_chance(epochs) == 2
    assert cs.left_chance(epochs[:1]) is None


def run(name, left, dense, loc=None, joint=None):
    r = {"name": name, "seed": 0, "kernel_path": "avx2", "left_chance_epoch": left, "val_images": 2000,
         "center_crop_top1_cls_error": dense + 0.05, "cls_dense_top1_cls_error": dense, "cls_dense_top5_cls_error": dense / 4}
    if loc is not None:
        r.update(loc_center_crop_top5_cls_error=dense / 2, loc_center_crop_loc_error=loc + 0.1, loc_full_top1_cls_error=dense, loc_full_top5_cls_error=dense / 4,
                 loc_full_top1_loc_error=loc + 0.02, loc_full_top5_loc_error=loc)
    if joint is not None:
        r.update(joint_full_top1_cls_error=joint, joint_full_top5_cls_error=joint / 4, joint_full_top1_loc_error=joint + 0.2,
                 joint_full_top5_loc_error=joint + 0.1)
    return r


def test_targets_spread_and_table(cs):
    good = cs.summarise([run("a", 2, 0.10, 0.30), run("b", 3, 0.115, 0.32)], loc=True)
    assert good["cls_dense_top1_cls_error_spread"] == pytest.approx(0.015)
    assert good["targets_met"] and all(good["targets"].values())
    late = cs.summarise([run("a", 2, 0.10), run("b", 4, 0.10)], loc=False)
    assert not late["targets_met"] and late["targets"]["every run leaves chance by epoch 3"] is False
    never = cs.summarise([run("a", None, 0.10), run("b", 1, 0.40)], loc=False)
    assert never["targets"] == {"every run leaves chance by epoch 3": False, "cls-dense top-1 spread <= 2 points": False}
    text = cs.table(never, loc=False)
    assert "| a | 0 | avx2 | never |" in text and "| spread (max - min) | | | | 30.0 | 30.0 | 7.5 |" in text


def test_joint_columns_and_which_saved_runs_are_complete(cs):
    both = cs.summarise([run("a", 2, 0.10, 0.30, joint=0.12), run("b", 3, 0.11, 0.31, joint=0.16)], loc=True, joint=True)
    assert both["joint_full_top1_cls_error_mean"] == pytest.approx(0.14)
    assert both["joint_full_top5_loc_error_spread"] == pytest.approx(0.04)
    assert "joint_full_top5_loc_error" not in "".join(both["targets"])  # reported, not a target
    text = cs.table(both, loc=True, joint=True)
    assert "joint: full top-5 loc |" in text.splitlines()[0]
    assert text.splitlines()[2].endswith("| 2.5 | 40.0 | 32.0 | 30.0 | 12.0 | 22.0 |")
    saved = run("a", 2, 0.10, 0.30)  # a run saved by `--loc`, read back by `--loc --joint`
    args = lambda loc, joint: type("Args", (), {"loc": loc, "joint": joint})()  # noqa: E731
    assert all(k in saved for k in cs.wanted_keys(args(True, False)))
    assert not all(k in saved for k in cs.wanted_keys(args(True, True)))
    del saved["val_images"]  # a run saved before the image count was recorded is completed too
    assert not all(k in saved for k in cs.wanted_keys(args(True, False)))
    assert both["val_images"] == [2000]


def test_the_avx2_path_holds_onednn_and_mkl_to_avx2_too(cs, bin_script, monkeypatch):
    assert cs.path_env("avx2") == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                   "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert cs.path_env("default") == {"ATEN_CPU_CAPABILITY": "default"}
    stages = bin_script("_stages")
    for key, value in cs.path_env("avx2").items():
        monkeypatch.setenv(key, value)
    assert stages.machine(kernels=True).endswith(", AVX2 kernels (oneDNN AVX2, MKL AVX2)")
    assert "kernels" not in stages.machine()
