"""RunOptions.from_config: the one path from the config's ``eval`` section to the options of
``vgglocal eval`` and of the Predictor."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from vgglocal.config import EvalConfig
from vgglocal.inference.nets import EvalError
from vgglocal.inference.protocols import TOPK, RunOptions

DEVICE = torch.device("cuda", 1)  # only compared, never used: no GPU needed
# A non-default value for every key RunOptions takes from the eval section.
EV = EvalConfig(flip=False, batch_size=7, precision="bf16", channels_last=True, compile=True, fold_bn=False, topk=3, det_topk=4,
                merge_threshold=0.25, cls_method="multicrop")


def test_from_config_maps_every_key_of_the_eval_section():
    opts = RunOptions.from_config(EV, DEVICE)
    assert opts == RunOptions(flip=False, device=DEVICE, batch_size=7, precision="bf16", channels_last=True, compile=True, fold_bn=False,
                              topk=3, det_topk=4, merge_threshold=0.25, cls_method="multicrop")
    # every field differs from both defaults, so a key dropped (left at its default) fails here
    for f in fields(RunOptions):
        value = getattr(opts, f.name)
        assert value != getattr(RunOptions(), f.name), f.name
        if f.name != "device":
            assert value != getattr(EvalConfig(), f.name), f.name
    assert RunOptions.from_config(EV, DEVICE).device is DEVICE


def test_from_config_overrides_only_the_keywords_given():
    opts = RunOptions.from_config(EV, DEVICE, flip=True, precision="fp32", merge_threshold=0.0, cls_method="both", topk=8)
    assert (opts.flip, opts.precision, opts.merge_threshold, opts.cls_method, opts.topk) == (True, "fp32", 0.0, "both", 8)
    assert (opts.batch_size, opts.channels_last, opts.compile, opts.det_topk) == (7, True, True, 4)  # from the config
    assert RunOptions.from_config(EV, DEVICE, flip=None, merge_threshold=None) == RunOptions.from_config(EV, DEVICE)


def test_from_config_caps_eval_topk_at_the_devkit_guesses():
    assert RunOptions.from_config(EvalConfig(topk=9), DEVICE).topk == TOPK == 5
    assert RunOptions.from_config(EvalConfig(topk=9), DEVICE, topk=9).topk == 9  # asked for explicitly


def test_from_config_refuses_a_negative_threshold_and_unknown_names():
    with pytest.raises(EvalError, match=r"^eval\.merge_threshold -0\.5: must be >= 0$"):
        RunOptions.from_config(EvalConfig(merge_threshold=-0.5), DEVICE)
    with pytest.raises(EvalError, match=r"^merge_threshold -1: must be >= 0$"):
        RunOptions.from_config(EV, DEVICE, merge_threshold=-1)
    with pytest.raises(EvalError, match="precision 'fp16': choose from fp32, bf16"):
        RunOptions.from_config(EV, DEVICE, precision="fp16")
    with pytest.raises(EvalError, match="cls_method 'sparse': choose from dense, multicrop, both"):
        RunOptions.from_config(EvalConfig(cls_method="sparse"), DEVICE)
