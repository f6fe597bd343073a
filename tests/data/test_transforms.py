"""Transforms keep the network's window tied to the original image."""

import json

import albumentations as A
import numpy as np
import pytest
import torch
from torch.testing import assert_close

from vgglocal.boxes import box_convert
from vgglocal.config import DataConfig
from vgglocal.data.transforms import (
    EvalTransform,
    Geometry,
    PCALighting,
    TrainTransform,
    build_eval_transform,
    build_train_transform,
    crop_target,
    normalise_batch,
    normalization_of,
)

CROP = 32
ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def random_case(rng):
    """An image (h, w in 40..120, either orientation) with 1-3 boxes inside it."""
    h, w = (int(v) for v in rng.integers(40, 121, 2))
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    k = int(rng.integers(1, 4))
    x = np.sort(rng.uniform(0, w, (k, 2)), axis=1)
    y = np.sort(rng.uniform(0, h, (k, 2)), axis=1)
    boxes = np.stack([x[:, 0], y[:, 0], x[:, 1] + 1, y[:, 1] + 1], 1).clip(0, [w, h, w, h]).astype(np.float32)
    return image, boxes


def test_geometry_matches_albumentations_bbox_pipeline():
    # The independent reference: albumentations' own bbox-aware pipeline (pascal_voc boxes,
    # clipped to the crop), applied with our draws, must agree with our analytic geometry.
    t = TrainTransform(CROP, list(range(32, 81)), True, None, ZERO, ONE)
    flips = kept = 0
    for i in range(40):
        image, boxes = random_case(np.random.default_rng(1000 + i))
        got = t(image, np.random.default_rng(i))
        g = got.geometry
        s = round(min(image.shape[:2]) * g.scale)
        # albumentations' SmallestMaxSize(S) gives the same rescaled size.
        assert A.SmallestMaxSize(max_size=s)(image=image)["image"].shape[:2] == g.size
        x0, y0 = int(g.origin[0]), int(g.origin[1])
        boxed = A.Compose([A.Resize(*g.size), A.Crop(x0, y0, x0 + CROP, y0 + CROP), A.HorizontalFlip(p=float(g.flipped))],
                          bbox_params=A.BboxParams(format="pascal_voc", label_fields=["idx"], clip=True))
        ref = boxed(image=image, bboxes=boxes, idx=np.arange(len(boxes)))
        # Same parameters: the same pixels (uint8 crop, CHW).
        assert got.image.dtype == torch.uint8
        assert torch.equal(got.image, torch.from_numpy(ref["image"]).permute(2, 0, 1))
        flips += g.flipped
        assert min(g.size) == round(min(image.shape[:2]) * g.scale)
        mine = g.to_window(boxes).clamp(0, CROP)
        keep = ((mine[:, 2] > mine[:, 0]) & (mine[:, 3] > mine[:, 1])).numpy()
        assert list(np.asarray(ref["idx"])) == list(np.flatnonzero(keep))
        theirs = torch.as_tensor(np.asarray(ref["bboxes"]), dtype=torch.float32).reshape(-1, 4)
        # The short side is rescaled exactly; the long side is rounded to whole pixels by the
        # resize, which moves a coordinate by at most 0.5 rescaled pixel.
        short_is_h = image.shape[0] <= image.shape[1]
        exact = [1, 3] if short_is_h else [0, 2]
        rounded = [0, 2] if short_is_h else [1, 3]
        assert_close(theirs[:, exact], mine[keep][:, exact], atol=2e-3, rtol=0)
        assert bool(((theirs[:, rounded] - mine[keep][:, rounded]).abs() <= 0.5 + 2e-3).all())
        kept += int(keep.sum())
    assert 5 < flips < 35 and kept > 30


def test_window_draws_cover_the_valid_origins():
    # RandomCrop's rule: every integer origin from 0 to (side - crop) is possible.
    t = TrainTransform(CROP, 40, False, None, ZERO, ONE)
    origins = {t.draw(np.random.default_rng(i), 40, 44)[0].origin for i in range(400)}
    assert {x for x, _ in origins} == set(range(0, 44 - CROP + 1)) and {y for _, y in origins} == set(range(0, 40 - CROP + 1))


def test_image_content_moves_with_the_box():
    # A white box on black: the bright region of the output is where to_window says it is.
    t = TrainTransform(CROP, list(range(32, 65)), True, None, ZERO, ONE)
    rng = np.random.default_rng(7)
    for i in range(20):
        h, w = (int(v) for v in rng.integers(32, 90, 2))
        image = np.zeros((h, w, 3), np.uint8)
        x1, y1 = int(rng.integers(0, w - 12)), int(rng.integers(0, h - 12))
        x2, y2 = x1 + int(rng.integers(10, w - x1 + 1)), y1 + int(rng.integers(10, h - y1 + 1))
        image[y1:y2, x1:x2] = 255
        out = t(image, np.random.default_rng(i))
        box = out.geometry.to_window(np.array([[x1, y1, x2, y2]], np.float32))[0].clamp(0, CROP)
        bright = out.image[0] > 127.5
        if (box[2] - box[0]) < 2 or (box[3] - box[1]) < 2:
            continue  # box (almost) outside the window
        cols = torch.nonzero(bright.any(0)).flatten()
        rows = torch.nonzero(bright.any(1)).flatten()
        found = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32)
        assert (found - box).abs().max() <= 1.0, (i, found, box)


def test_target_is_encoded_unclipped_and_decodes_back():
    t = TrainTransform(CROP, list(range(32, 97)), True, None, ZERO, ONE)
    for i in range(40):
        image, boxes = random_case(np.random.default_rng(2000 + i))
        labels = np.zeros(len(boxes), np.int64)
        g = t(image, np.random.default_rng(i)).geometry
        target, best = crop_target(boxes, labels, 0, g)
        # In window pixels the target is exactly the analytically moved box, not clipped.
        assert_close(box_convert(target * CROP, "cxcywh", "xyxy"), g.to_window(boxes[best])[0], atol=1e-3, rtol=0)
        assert_close(g.decode(target)[0], torch.from_numpy(boxes[best]), atol=2e-3, rtol=0)


def test_encode_hand_computed_centre_crop_and_flip():
    # 100x200 image, Q=50 → 50x100, central 32 window at x0=(100-32)//2=34, y0=(50-32)//2=9.
    t = EvalTransform(50, CROP, ZERO, ONE)
    g = t(np.zeros((100, 200, 3), np.uint8)).geometry
    assert g.origin == (34.0, 9.0) and g.scale == 0.5 and g.size == (50, 100)
    box = np.array([[60, 20, 100, 60]], np.float32)  # → rescaled [30,10,50,30] → window [-4,1,16,21]
    assert_close(g.encode(box)[0], torch.tensor([6 / 32, 11 / 32, 20 / 32, 20 / 32]))
    flipped = Geometry(g.origin, g.scale, g.side, True, g.size)  # mirrored window: [16,1,36,21]
    assert_close(flipped.to_window(box)[0], torch.tensor([16.0, 1, 36, 21]))
    assert_close(flipped.encode(box)[0], torch.tensor([26 / 32, 11 / 32, 20 / 32, 20 / 32]))
    assert_close(flipped.decode(flipped.encode(box)), torch.from_numpy(box))


def test_target_is_the_class_box_with_largest_intersection():
    g = Geometry((0.0, 0.0), 1.0, 32, False, (64, 64))  # window [0, 0, 32, 32]
    boxes = np.array([
        [0, 0, 64, 64],    # other class, covers the window: ignored
        [20, 20, 60, 60],  # class 1, 12x12 = 144 inside
        [2, 2, 14, 14],    # class 1, 12x12 = 144 inside (tie: the earlier one wins)
        [4, 4, 30, 16],    # class 1, 26x12 = 312 inside: the target
        [40, 40, 63, 63],  # class 1, outside
    ], np.float32)
    labels = np.array([0, 1, 1, 1, 1])
    target, best = crop_target(boxes, labels, 1, g)
    assert best == 3
    assert_close(target, torch.tensor([17 / 32, 10 / 32, 26 / 32, 12 / 32]))
    _, best = crop_target(boxes[[1, 2]], labels[[1, 2]], 1, g)
    assert best == 0
    assert crop_target(boxes, labels, 5, g) is None


def test_scale_jitter_draws_every_size_in_range():
    t = TrainTransform(CROP, list(range(32, 41)), False, None, ZERO, ONE)
    image = np.zeros((50, 70, 3), np.uint8)
    sizes = {min(t(image, np.random.default_rng(i)).geometry.size) for i in range(200)}
    assert sizes == set(range(32, 41))
    fixed = TrainTransform(CROP, 48, False, None, ZERO, ONE)
    g = fixed(image, np.random.default_rng(0)).geometry
    assert g.size == (48, 67) and g.scale == pytest.approx(48 / 50) and not g.flipped


def test_pca_lighting_is_one_offset_along_training_eigenvectors():
    eigvec = np.array([[0.6, 0.8, 0.0], [0.8, -0.6, 0.0], [0.0, 0.0, 1.0]])  # columns
    lighting = PCALighting([20.0, 5.0, 0.0], eigvec, 0.1)
    offsets = np.stack([lighting.offset(np.random.default_rng(i)) for i in range(4000)])
    coeff = offsets @ eigvec  # back to per-component coefficients alpha_k * eigval_k
    np.testing.assert_allclose(coeff[:, 2], 0, atol=1e-9)
    np.testing.assert_allclose(coeff.std(0)[:2], [2.0, 0.5], rtol=0.06)
    np.testing.assert_allclose(coeff.mean(0)[:2], [0, 0], atol=0.1)
    # In the pipeline: every pixel of a flat image moves by the same offset, then normalised.
    mean, std = (100.0, 110.0, 120.0), (2.0, 4.0, 5.0)
    t = TrainTransform(CROP, 40, True, lighting, mean, std)
    out = t(np.full((40, 60, 3), 128, np.uint8), np.random.default_rng(3)).normalised()
    per_channel = out.flatten(1)
    assert_close(per_channel.std(1), torch.zeros(3), atol=1e-5, rtol=0)
    raw = per_channel[:, 0].double() * torch.tensor(std) + torch.tensor(mean) - 128
    assert raw.abs().max() > 1e-3
    assert_close((raw.numpy() @ eigvec)[2], 0.0, atol=1e-4, rtol=0)


def test_normalisation_and_builders_follow_the_config(tmp_path):
    cfg = DataConfig(scale=40, scale_max=0, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0), color_pca=False)
    assert normalization_of(cfg) == {"mean": [10.0, 20.0, 30.0], "std": [2.0, 4.0, 5.0]}
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"mean": [1, 2, 3], "std": [9, 9, 9], "eigval": [3, 2, 1], "eigvec": np.eye(3).tolist()}))
    from_file = DataConfig(scale=40, stats=str(stats), std=(2.0, 4.0, 5.0))
    assert normalization_of(from_file) == {"mean": [1.0, 2.0, 3.0], "std": [2.0, 4.0, 5.0]}
    lighting = build_train_transform(from_file, CROP).lighting
    assert lighting.eigval.tolist() == [3, 2, 1] and lighting.std == from_file.pca_std
    t = build_train_transform(cfg, CROP, "loc")
    out = t(np.full((40, 50, 3), 50, np.uint8), np.random.default_rng(0))
    assert out.image.shape == (3, CROP, CROP) and out.image.dtype == torch.uint8 and out.image.is_contiguous()
    x = out.normalised()
    assert x.dtype == torch.float32
    assert_close(x[:, 0, 0], torch.tensor([20.0, 7.5, 4.0]))
    # Batched on the device: (x - shift) / std per image, keeping channels_last.
    batch = torch.stack([out.image, out.image]).contiguous(memory_format=torch.channels_last)
    y = normalise_batch(batch, torch.stack([out.shift, out.shift + 2]), out.std)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y[0], x) and assert_close(y[1, :, 0, 0], torch.tensor([19.0, 7.0, 3.6]))
    jitter = build_train_transform(DataConfig(scale_min=32, scale_max=64), CROP)
    assert jitter.scales == list(range(32, 65))
    with pytest.raises(ValueError, match="scale"):
        build_train_transform(DataConfig(scale=24), CROP)
    with pytest.raises(ValueError, match="task"):
        build_train_transform(cfg, CROP, "det")


def test_eval_whole_image_and_padding():
    cfg = DataConfig(mean=(10.0, 10.0, 10.0), std=ONE)
    whole = build_eval_transform(cfg, None, 30)
    out = whole(np.full((60, 90, 3), 20, np.uint8))
    assert out.image.shape == (3, 30, 45)
    assert out.geometry.scale == 0.5 and out.geometry.origin == (0.0, 0.0)
    assert_close(out.image, torch.full((3, 30, 45), 10.0))
    # Q below the crop: the window is padded bottom/right with zeros after normalisation.
    small = build_eval_transform(cfg, CROP, 24)(np.full((48, 96, 3), 20, np.uint8))
    assert small.image.shape == (3, CROP, CROP)
    assert small.geometry.origin == (8.0, 0.0)  # (48 - 32) // 2 horizontally, no room vertically
    assert_close(small.image[:, :24, :], torch.full((3, 24, CROP), 10.0))
    assert_close(small.image[:, 24:, :], torch.zeros(3, 8, CROP))


def test_same_generator_same_output():
    t = TrainTransform(CROP, list(range(32, 65)), True, PCALighting([50, 5, 1], np.eye(3), 0.1), (120,) * 3, ONE)
    image, _ = random_case(np.random.default_rng(5))
    a = t(image, np.random.default_rng(11))
    b = t(image, np.random.default_rng(11))
    c = t(image, np.random.default_rng(12))
    assert torch.equal(a.image, b.image) and a.geometry == b.geometry
    assert not torch.equal(a.image, c.image)


def test_importing_the_transforms_makes_no_albumentations_update_check():
    # albumentations asks PyPI for its latest version on import unless NO_ALBUMENTATIONS_UPDATE
    # is set (albumentations/__init__.py); vgglocal sets it, so no process of ours (the spawned
    # loader workers included) makes that network call. The audit hook sees any attempt.
    import os
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "seen = []\n"
        "sys.addaudithook(lambda e, a: seen.append(e) if e.startswith(('urllib.', 'socket.')) else None)\n"
        "import vgglocal.data.transforms\n"
        "print(os.environ.get('NO_ALBUMENTATIONS_UPDATE'), seen)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "[]"], out.stdout
