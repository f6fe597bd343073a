"""Appendix B descriptors: shapes, norms, flips, scale aggregation, fusion, and dense FC7 equal
to the FC7 of a crop."""

import numpy as np
import pytest
import torch

from vgglocal.inference.features import aggregate, box_region, fuse, scale_descriptors
from vgglocal.inference.options import InferenceOptions
from vgglocal.models.vgg import build_vgg

NORM = {"mean": [120.0, 115.0, 100.0], "std": [58.0, 57.0, 57.0]}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = build_vgg("D", num_classes=3, width=0.0625, crop=32, batch_norm=True, init="kaiming").eval()
    model.normalization = NORM
    return model


def image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_descriptor_shape_and_unit_norm(net):
    images = [image(40, 56, 1), image(64, 48, 2), image(33, 33, 3)]
    d = scale_descriptors(net, images, (32, 48, 64), InferenceOptions(flip=True))
    assert d.shape == (3, 3, 256) and d.dtype == torch.float32  # FC width round(4096 / 16)
    assert (d >= 0).all()  # FC7 after its ReLU
    avg, stack = aggregate(d, "average"), aggregate(d, "stack")
    assert avg.shape == (3, 256) and stack.shape == (3, 3 * 256)
    torch.testing.assert_close(avg.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(stack.norm(dim=1), torch.ones(3))
    # average: mean over scales, then normalised; stack: each scale normalised, in scale order
    torch.testing.assert_close(avg, torch.nn.functional.normalize(d.mean(1), dim=1))
    per = torch.nn.functional.normalize(d, dim=2)
    torch.testing.assert_close(stack.reshape(3, 3, 256) * 3 ** 0.5, per)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(d, "max")


def test_symmetric_image_same_with_and_without_flip(net):
    half = image(48, 32, 4)
    symmetric = np.ascontiguousarray(np.concatenate([half, half[:, ::-1]], axis=1))  # 48 x 64, mirror-symmetric
    with_flip = scale_descriptors(net, [symmetric], (48, 64), InferenceOptions(flip=True))
    without = scale_descriptors(net, [symmetric], (48, 64), InferenceOptions(flip=False))
    torch.testing.assert_close(with_flip, without, rtol=1e-5, atol=1e-6)


def test_flip_averages_the_mirror_images_descriptor(net):
    img = image(48, 72, 5)
    mirror = np.ascontiguousarray(img[:, ::-1])
    both = scale_descriptors(net, [img], (48,), InferenceOptions(flip=True))
    a = scale_descriptors(net, [img], (48,), InferenceOptions(flip=False))
    b = scale_descriptors(net, [mirror], (48,), InferenceOptions(flip=False))
    assert not torch.allclose(a, b)  # the image is not symmetric: the mirror must matter
    torch.testing.assert_close(both, (a + b) / 2, rtol=1e-5, atol=1e-6)


def test_dense_at_the_crop_size_is_the_fc7_of_the_crop(net):
    img = image(32, 32, 6)
    d = scale_descriptors(net, [img], (32,), InferenceOptions(flip=False))[0, 0]
    x = (torch.from_numpy(img).float().permute(2, 0, 1) - torch.tensor(NORM["mean"])[:, None, None]) / torch.tensor(NORM["std"])[:, None, None]
    with torch.no_grad():
        fc7 = net.penultimate(x[None])  # [1, 256, 1, 1]
        h = net.cls_head
        by_hand = torch.relu(h.fc7(torch.relu(h.fc6(net.features(x[None])))))
    assert fc7.shape == (1, 256, 1, 1)
    torch.testing.assert_close(fc7, by_hand)
    torch.testing.assert_close(d, fc7.flatten(), rtol=1e-4, atol=1e-5)  # float32 summation order


def test_fusion_stacks_the_nets_descriptors(net):
    torch.manual_seed(1)
    other = build_vgg("D", num_classes=3, width=0.125, crop=32, batch_norm=True, init="kaiming").eval()
    other.normalization = NORM
    images = [image(40, 40, 7), image(48, 36, 8)]
    a = aggregate(scale_descriptors(net, images, (32, 40)), "average")
    b = aggregate(scale_descriptors(other, images, (32, 40)), "average")
    fused = fuse([a, b])
    assert fused.shape == (2, 256 + 512)
    torch.testing.assert_close(fused.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(fused[:, :256] * 2 ** 0.5, a)  # each net's part is its own descriptor
    torch.testing.assert_close(fused[:, 256:] * 2 ** 0.5, b)
    torch.testing.assert_close(fuse([a]), a)


def test_box_region_pixels_and_clipping():
    img = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    np.testing.assert_array_equal(box_region(img, [2, 3, 5, 7]), img[3:8, 2:6])  # inclusive corners
    np.testing.assert_array_equal(box_region(img, [-4, -2, 30, 30]), img)  # clipped to the image
    assert box_region(img, [11.5, 9.5, 11.5, 9.5]).shape == (1, 1, 3)  # never empty
    assert box_region(img, [2, 3, 5, 7]).flags.c_contiguous
