"""The GPU speed switches on the CPU: eval.compile (inductor; the graph count over scales and
image sizes like the real ones), bf16 autocast and channels_last in dense evaluation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters
from torch.testing import assert_close

from vgglocal.inference.dense import dense_maps
from vgglocal.inference.nets import speed_up
from vgglocal.inference.options import InferenceOptions
from vgglocal.models.vgg import build_vgg, fold_batch_norm

NORM = {"mean": [120.0, 110.0, 100.0], "std": [60.0, 60.0, 60.0]}
# ILSVRC-like shapes at a tenth of the size (500x375, 375x500, 500x333, a square, odd ones)
# and three scales from Q = crop up, as the paper's {S-32, S, S+32} with crop 224 gives: at
# Q = crop a head map side is 1.
SIZES = [(38, 50), (50, 38), (33, 50), (50, 50), (45, 61), (64, 48), (29, 40)]
SCALES = (64, 80, 96)


def tiny(box_head=None, seed=0, crop=64):
    torch.manual_seed(seed)
    model = build_vgg("A", num_classes=3, width=0.0625, fc_width=16, crop=crop, box_head=box_head, init="kaiming").eval()
    model.normalization = NORM
    return model


def images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def test_eval_compile_keeps_the_graph_count_small_over_scales_sizes_and_nets():
    # Two nets (classification and localisation, as protocol 2 runs them), three scales,
    # groups of one image without mirrors (a batch of 1) and of several with them.
    plain = [tiny(), tiny("scr", seed=1)]
    compiled = [speed_up(tiny(), InferenceOptions(compile=True)), speed_up(tiny("scr", seed=1), InferenceOptions(compile=True))]
    torch._dynamo.reset()
    counters.clear()
    for flip, sizes in ((True, SIZES[:4]), (False, SIZES[4:])):
        opts = InferenceOptions(flip=flip, batch_size=4)
        for p, c in zip(plain, compiled, strict=True):
            want = dense_maps(p, images(sizes), SCALES, opts)
            got = dense_maps(c, images(sizes), SCALES, opts)
            for wi, gi in zip(want, got, strict=True):
                for w, g in zip(wi, gi, strict=True):
                    assert_close(g.scores, w.scores, rtol=1e-4, atol=1e-4)
                    if w.boxes is not None:
                        assert_close(g.boxes, w.boxes, rtol=1e-4, atol=1e-4)
    graphs = counters["stats"]["unique_graphs"]
    assert 1 <= graphs <= 2 * len(compiled), dict(counters["stats"])
    assert not counters["recompiles"], dict(counters["recompiles"])


def test_channels_last_and_bf16_dense_maps():
    model = tiny("pcr")
    want = dense_maps(model, images(SIZES[:3]), SCALES[:2], InferenceOptions())
    fast = speed_up(tiny("pcr"), InferenceOptions(channels_last=True))
    assert fast.features.conv1_1.weight.is_contiguous(memory_format=torch.channels_last)
    same = dense_maps(fast, images(SIZES[:3]), SCALES[:2], InferenceOptions(channels_last=True))
    half = dense_maps(fast, images(SIZES[:3]), SCALES[:2], InferenceOptions(channels_last=True, precision="bf16"))
    for wi, si, hi in zip(want, same, half, strict=True):
        for w, s, h in zip(wi, si, hi, strict=True):
            assert_close(s.scores, w.scores, rtol=1e-4, atol=1e-5)
            assert_close(s.boxes, w.boxes, rtol=1e-4, atol=1e-5)
            # bf16 autocast: float32 maps back, within bf16's 8-bit mantissa of the fp32 ones.
            assert h.scores.dtype == torch.float32 and h.boxes.dtype == torch.float32
            scale = w.scores.abs().max()
            assert (h.scores - w.scores).abs().max() <= 0.05 * scale
            assert not torch.equal(h.scores, w.scores)  # it really ran in bf16


def test_folded_batch_norm_gives_the_dense_maps_of_the_unfolded_net_within_float32_rounding():
    """eval.fold_bn (on by default): each batch norm folded into its convolution changes the dense
    maps by float32 rounding only (stated tolerance: 1e-4 relative to the maps' scale), so the
    top-5 labels and boxes stay those of the unfolded net; a net without batch norm is untouched."""
    torch.manual_seed(0)
    net = build_vgg("A", num_classes=10, width=0.125, fc_width=32, crop=32, batch_norm=True, init="kaiming", box_head="pcr")
    for m in net.modules():  # running statistics far from (0, 1), as a trained net's are
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-2, 2)
            m.running_var.uniform_(0.2, 5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    net.eval()
    net.normalization = {"mean": [120.0] * 3, "std": [60.0] * 3}
    folded = speed_up(copy.deepcopy(net), InferenceOptions())  # the default options fold
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    images = [np.random.default_rng(k).integers(0, 256, (40 + 8 * k, 52, 3), dtype=np.uint8) for k in range(3)]
    a = dense_maps(net, images, [32, 48])
    b = dense_maps(folded, images, [32, 48])
    for ma, mb in zip((m for per in a for m in per), (m for per in b for m in per), strict=True):
        for key in ("scores", "boxes"):
            x, y = getattr(ma, key), getattr(mb, key)
            assert (x - y).abs().max() <= 1e-4 * x.abs().max() + 1e-6, key
            assert not torch.equal(x, torch.zeros_like(x))
    plain = build_vgg("A", num_classes=10, width=0.125, fc_width=32, crop=32).eval()
    names = [n for n, _ in plain.features.named_children()]
    assert [n for n, _ in fold_batch_norm(plain).features.named_children()] == names
    with pytest.raises(ValueError, match="training mode"):
        fold_batch_norm(net.train())
