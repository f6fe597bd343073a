"""The CPU fast path of dense evaluation: the FC heads as matrix products over the locations of
every size group at once (VGG.maps_batched), batch norm folded (eval.fold_bn), on the demo's
nets; the same maps within float32 rounding, and a location's maps independent of which other
images share the chunk, to the bit."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from vgglocal.config import load_config
from vgglocal.inference.dense import dense_maps
from vgglocal.inference.nets import Net, speed_up
from vgglocal.inference.options import InferenceOptions
from vgglocal.inference.protocols import RunOptions, full
from vgglocal.models.build import build_model
from vgglocal.models.vgg import VGG, build_vgg

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-4  # stated tolerance: |a - b| <= TOL * max|a| + 1e-6, maps of the fast path vs the reference


def randomise_bn(net: VGG, seed: int) -> VGG:
    """Running statistics and affine parameters far from (0, 1), as a trained net's are."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.3)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return net.eval()


def demo_nets() -> tuple[VGG, VGG]:
    """The demo's classifier and PCR localiser as configs/demo/*.yaml build them (VGG-D at 1/8
    width with batch norm, crop 96, 10 classes), with random weights and BN statistics."""
    cfg = load_config(ROOT / "configs/demo/loc.yaml")
    norm = {"mean": list(cfg.data.mean), "std": list(cfg.data.std)}
    torch.manual_seed(0)
    cls, loc = build_model(cfg.model), build_model(cfg.model, box_head="pcr")
    for k, net in enumerate((cls, loc)):
        randomise_bn(net, k)
        net.normalization = norm
    return cls, loc


def demo_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """Images of the demo's kind of sizes (around 128 px; two share a size)."""
    rng = np.random.default_rng(seed)
    sizes = [(128, 171), (171, 128), (128, 171), (120, 160), (96, 140), (140, 96)][:n]
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def per_group(model: VGG, xs, block: int = 0) -> list[dict]:
    """The reference: maps() batch by batch, the heads as convolutions."""
    return [model.maps(x) for x in xs]


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= TOL * a.abs().max() + 1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("crop", [32, 64])
def test_heads_over_rows_give_the_maps_of_the_convolutions(channels_last, crop):
    torch.manual_seed(0)
    net = build_vgg("A", num_classes=7, width=0.125, fc_width=24, crop=crop, init="kaiming", box_head="pcr").eval()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    # batches of different sizes, one smaller than the crop (the net pads it to one window)
    xs = [torch.randn(2, 3, crop + 40, crop + 70), torch.randn(1, 3, crop - 5, crop + 33), torch.randn(3, 3, crop, crop)]
    want = per_group(net, xs)
    got = net.maps_batched(iter(xs))
    tiny_blocks = net.maps_batched(xs, block=1)  # one image per product
    for w, g, t in zip(want, got, tiny_blocks, strict=True):
        assert w.keys() == g.keys() == {"scores", "boxes"}
        for key in w:
            assert g[key].shape == w[key].shape
            assert close(w[key], g[key]), key
            assert torch.equal(g[key], t[key]), key  # blocking does not change a location's result
    net.train()  # in training mode it is maps() itself (dropout, batch statistics)
    assert [m.keys() for m in net.maps_batched(xs[:1])] == [{"scores", "boxes"}]


def test_a_location_does_not_depend_on_the_other_images_of_the_chunk():
    # Sharded evaluation and any eval.batch_size split a data set into other chunks: every
    # image's maps must stay the same to the bit whatever shares its matrix products.
    cls, loc = demo_nets()
    loc = speed_up(loc, InferenceOptions())
    imgs = demo_images(6)
    together = dense_maps(loc, imgs, [112, 144], InferenceOptions(batch_size=4))
    for k in (0, 3, 5):
        alone = dense_maps(loc, [imgs[k]], [112, 144], InferenceOptions(batch_size=1))[0]
        for a, b in zip(alone, together[k], strict=True):
            assert torch.equal(a.scores, b.scores) and torch.equal(a.boxes, b.boxes)


def test_default_eval_options_give_the_reference_predictions_on_the_demo_nets(monkeypatch):
    """The default eval options (eval.fold_bn on, the heads over rows) against the plain path
    (batch norm kept, each size group's heads as convolutions) on the demo's architecture: dense
    maps within the stated tolerance, and protocol 2's top-5 labels and boxes the same."""
    cls, loc = demo_nets()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in loc.modules())
    imgs = demo_images(6)
    scales = (112, 128, 144)
    opts = RunOptions(flip=True, batch_size=4, topk=5, det_topk=5, merge_threshold=0.6)
    assert opts.fold_bn  # the default

    fast = [speed_up(copy.deepcopy(n), opts) for n in (cls, loc)]
    got_maps = dense_maps(fast[1], imgs, scales, opts)
    got = full(imgs, [Net(fast[0], scales)], [Net(fast[1], scales)], opts)
    monkeypatch.setattr(VGG, "maps_batched", per_group)
    ref = [speed_up(copy.deepcopy(n), InferenceOptions(fold_bn=False)) for n in (cls, loc)]
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in ref[1].modules())
    want_maps = dense_maps(ref[1], imgs, scales, opts)
    want = full(imgs, [Net(ref[0], scales)], [Net(ref[1], scales)], opts)

    for per_w, per_g in zip(want_maps, got_maps, strict=True):
        for w, g in zip(per_w, per_g, strict=True):
            assert close(w.scores, g.scores) and close(w.boxes, g.boxes)
    for w, g in zip(want, got, strict=True):
        assert torch.equal(w.labels, g.labels)
        torch.testing.assert_close(g.scores, w.scores, rtol=1e-4, atol=1e-6)
        assert g.boxes.shape == w.boxes.shape
        torch.testing.assert_close(g.boxes, w.boxes, rtol=0, atol=1e-2)  # pixels


def test_penultimate_over_rows_is_fc7_of_the_convolutions():
    # Appendix B's features (vgglocal features): FC6 and FC7 over the rows, no FC8, no box head
    torch.manual_seed(1)
    net = build_vgg("A", num_classes=5, width=0.125, fc_width=24, crop=64, init="kaiming", box_head="pcr").eval()
    xs = [torch.randn(2, 3, 100, 130), torch.randn(1, 3, 64, 64)]
    got = net.maps_batched(xs, penultimate=True)
    for x, g in zip(xs, got, strict=True):
        assert g.keys() == {"scores"}
        want = net.penultimate(x)
        assert g["scores"].shape == want.shape and close(want, g["scores"])
