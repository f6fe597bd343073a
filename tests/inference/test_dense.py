"""Dense application: equals the single crop, maps boxes to the right pixels, batches exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from vgglocal.data.transforms import EvalTransform
from vgglocal.geometry import window_origins
from vgglocal.inference.dense import (
    ScaleMaps,
    align_locations,
    decode_box_map,
    dense_maps,
    dense_posteriors,
    rescale,
    rescale_on_device,
)
from vgglocal.inference.multicrop import grid_crops, grid_positions, multicrop_posteriors
from vgglocal.inference.options import InferenceOptions
from vgglocal.models.vgg import build_vgg

NORM = {"mean": [120.0, 110.0, 100.0], "std": [60.0, 60.0, 60.0]}


def tiny(crop=32, classes=3, box_head="pcr", seed=0):
    torch.manual_seed(seed)
    model = build_vgg("A", num_classes=classes, width=0.0625, crop=crop, box_head=box_head, init="kaiming").eval()
    model.normalization = NORM
    return model


def image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def constant_boxes(model, params):
    """Make the box head output ``params`` (cx, cy, w, h) at every location, for every class."""
    with torch.no_grad():
        model.box_head.fc8.weight.zero_()
        model.box_head.fc8.bias.copy_(torch.tensor(params).repeat(model.box_head.fc8.out_channels // 4))
    return model


def test_dense_on_a_crop_sized_image_equals_the_single_crop():
    model = tiny(crop=32)
    img = image(32, 32)
    maps = dense_maps(model, [img], [32], InferenceOptions(flip=False))[0][0]
    assert maps.scores.shape == (1, 3, 1, 1) and maps.boxes.shape == (1, 12, 1, 1)
    crop = EvalTransform(32, 32, NORM["mean"], NORM["std"])(img)
    with torch.no_grad():
        want = model(crop.image[None])
        want_boxes = model.maps(crop.image[None])["boxes"]
    assert_close(maps.scores.flatten(1), want)
    assert_close(maps.boxes, want_boxes)
    assert_close(dense_posteriors([maps]), want.softmax(-1)[0])
    # The decoded dense box equals the crop's decoded box.
    assert_close(decode_box_map(maps.boxes[0, :4], maps.factor, 32)[0], crop.geometry.decode(want_boxes[0, :4, 0, 0])[0])


def test_box_at_location_i_j_maps_to_the_right_pixels():
    # Image 48 x 72 at Q = 128: factor 8/3, rescaled 128 x 192, crop 32: a 4 x 6 map.
    model = constant_boxes(tiny(crop=32), [0.25, 0.75, 0.5, 1.5])
    maps = dense_maps(model, [image(48, 72)], [128], InferenceOptions(flip=True))[0][0]
    assert maps.size == (128, 192) and maps.boxes.shape[-2:] == (4, 6)
    factor = 128 / 48
    assert maps.factor == pytest.approx(factor)
    got = decode_box_map(maps.boxes[0, :4], maps.factor, 32)  # [24, 4]
    got_flip = decode_box_map(maps.boxes[1, :4], maps.factor, 32, flipped=True, width=192)
    for i in range(4):
        for j in range(6):
            # Window at (32 j, 32 i); centre (x0 + 8, y0 + 24), size (16, 48) rescaled px.
            x0, y0 = 32 * j, 32 * i
            want = torch.tensor([x0 + 8 - 8, y0 + 24 - 24, x0 + 8 + 8, y0 + 24 + 24]) / factor
            assert_close(got[i * 6 + j], want.float(), atol=1e-4, rtol=0)
            # Mirrored image: the window at (32 j, 32 i) of the mirror covers rescaled
            # x in [192 - 32 j - 32, 192 - 32 j]; its box mirrors back across the width.
            want_f = torch.tensor([192 - (x0 + 16), y0, 192 - x0, y0 + 48]) / factor
            assert_close(got_flip[i * 6 + j], want_f.float(), atol=1e-4, rtol=0)


def test_groups_of_sizes_give_the_one_at_a_time_result():
    model = tiny(crop=32)
    imgs = [image(40, 56, 1), image(64, 64, 2), image(40, 56, 3), image(30, 20, 4)]
    together = dense_maps(model, imgs, [32, 64], InferenceOptions(flip=True, batch_size=2))
    for img, maps in zip(imgs, together, strict=True):
        alone = dense_maps(model, [img], [32, 64], InferenceOptions(flip=True, batch_size=1))[0]
        for a, b in zip(maps, alone, strict=True):
            assert a.size == b.size
            assert_close(a.scores, b.scores, atol=1e-5, rtol=1e-5)
            assert_close(a.boxes, b.boxes, atol=1e-5, rtol=1e-5)
    # A rescaled side below the crop (Q = 16 < 32) is padded into one window, not rejected.
    small = dense_maps(model, [imgs[0]], [16], InferenceOptions(flip=False))[0][0]
    assert small.scores.shape[-2:] == (1, 1)


def test_rescale_on_the_device_matches_opencv_and_gives_the_same_maps():
    # The GPU evaluation path (uint8 uploaded once, bilinear resize there), run on the CPU.
    imgs = [image(40, 56, 1), image(75, 61, 2), image(32, 48, 3)]
    for img in imgs:
        for q in (24, 32, 77):
            want, factor, size = rescale(img, q, NORM)
            got, f2, s2 = rescale_on_device(torch.from_numpy(img).permute(2, 0, 1), q, NORM)
            assert (f2, s2) == (factor, size) and got.shape == want.shape
            # OpenCV's fixed-point bilinear vs float: within about one grey level (std 60).
            assert float((got - want).abs().max()) * 60 <= 1.01
    model = tiny(crop=32)
    host = dense_maps(model, imgs, [32, 48], InferenceOptions(flip=True, batch_size=2))
    dev = dense_maps(model, imgs, [32, 48], InferenceOptions(flip=True, batch_size=2), resize_on_device=True)
    for a_img, b_img in zip(host, dev, strict=True):
        for a, b in zip(a_img, b_img, strict=True):
            assert (a.size, a.factor) == (b.size, b.factor)
            # maps of magnitude ~0.1-0.2 here; a grey level of input noise moves them ~0.002
            assert_close(a.scores, b.scores, atol=0.01, rtol=0)
            assert_close(a.boxes, b.boxes, atol=0.01, rtol=0)


def test_device_resize_builds_the_normalisation_once_per_call(monkeypatch):
    # On a GPU every torch.tensor(mean/std, device=) is a pageable host-to-device copy that
    # waits for the device: one (mean, std) pair per dense_maps call, not per image and scale.
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(1) or real(*a, **k))
    imgs = [image(40, 56, 1), image(75, 61, 2), image(32, 48, 3)]
    maps = dense_maps(tiny(crop=32), imgs, [32, 48, 64], InferenceOptions(batch_size=2), resize_on_device=True)
    assert len(made) == 2 and len(maps) == 3
    # and the result is that of rescale_on_device with the plain lists, bit for bit
    monkeypatch.setattr(torch, "tensor", real)
    want, _, _ = rescale_on_device(torch.from_numpy(imgs[1]).permute(2, 0, 1), 48, NORM)
    x = torch.stack([want, want.flip(-1)])
    model = tiny(crop=32)
    assert_close(maps[1][1].scores, model.maps(x)["scores"], rtol=0, atol=1e-5)


def test_posteriors_average_spatial_logits_then_softmax_then_flips_and_scales():
    logits = torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]]])  # F=1, C=2, 1 x 2 map
    a = ScaleMaps(256, 1.0, (32, 64), 32, logits, None)
    b = ScaleMaps(288, 1.0, (32, 64), 32, torch.tensor([[[[5.0]], [[0.0]]], [[[0.0]], [[5.0]]]]), None)
    # Map a: mean logits (1, 1) → (0.5, 0.5). Map b: (5, 0) and its mirror (0, 5) → mean 0.5.
    assert_close(dense_posteriors([a]), torch.tensor([0.5, 0.5]))
    assert_close(dense_posteriors([a, b]), torch.tensor([0.5, 0.5]))
    c = ScaleMaps(256, 1.0, (32, 32), 32, torch.tensor([[[[2.0]], [[0.0]]]]), None)
    p = torch.tensor([2.0, 0.0]).softmax(0)
    assert_close(dense_posteriors([a, c]), (torch.tensor([0.5, 0.5]) + p) / 2)


def test_window_origins_and_alignment():
    assert window_origins(2, 3, 32).tolist() == [[0, 0], [32, 0], [64, 0], [0, 32], [32, 32], [64, 32]]
    # The same windows of a 100-px-wide mirrored image, placed in the image itself.
    assert window_origins(1, 3, 32, side=32, mirrored_width=100).tolist() == [[68, 0], [36, 0], [4, 0]]
    assert align_locations((2, 3), 32, (2, 3), 32).tolist() == list(range(6))
    # A 64-crop loc window at (i, j) has its centre at a 32-crop window (i + 0.5, j + 0.5):
    # rounded up, clamped to the 32-crop map (3 x 4 for the same image).
    assert align_locations((2, 3), 64, (3, 4), 32).tolist() == [5, 6, 7, 9, 10, 11]
    # And the other way round: a 32 window's centre is half a stride before the 64 window at
    # the same (i, j), so (i - 0.5, j - 0.5) rounds up to (i, j), clamped to the 2 x 3 map.
    assert align_locations((3, 4), 32, (2, 3), 64).tolist() == [0, 1, 2, 2, 3, 4, 5, 5, 3, 4, 5, 5]


def test_multicrop_grid_and_posteriors():
    assert grid_positions(100, 32) == [0, 17, 34, 51, 68]
    assert grid_positions(32, 32) == [0]
    t = torch.arange(3 * 64 * 96, dtype=torch.float32).reshape(3, 64, 96)
    crops = grid_crops(t, 32)
    assert crops.shape == (50, 3, 32, 32)
    assert_close(crops[1], t[:, 0:32, 16:48])  # second column of the first row
    assert_close(crops[25], crops[0].flip(-1))  # mirrors follow
    model = tiny(crop=32, box_head=None)
    img = image(40, 60)
    got = multicrop_posteriors(model, [img, image(33, 33, 5)], [32, 48], InferenceOptions(flip=True, batch_size=1))
    x = torch.cat([grid_crops(EvalTransform(q, None, NORM["mean"], NORM["std"])(img).image, 32) for q in (32, 48)])
    with torch.no_grad():
        want = model(x).softmax(-1).mean(0)
    assert_close(got[0], want)
    assert_close(got.sum(1), torch.ones(2))
