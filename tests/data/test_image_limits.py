"""Hostile images: decompression bombs are refused from the header, big JPEGs decode reduced,
16-bit images keep their range."""


import numpy as np
import pytest
from PIL import Image

from vgglocal.data.errors import BadImageError
from vgglocal.data.images import ImageLimits, check_header, decode_rgb, load_rgb, verify_image
from vgglocal.data.loader import BadSample, SampleDataset
from vgglocal.data.records import Sample
from vgglocal.data.transforms import EvalTransform, TrainTransform


def test_a_169_megapixel_header_is_refused_before_decoding(tmp_path, bomb_png):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(13000, 13000))
    for read in (load_rgb, verify_image, lambda p: check_header(p, ImageLimits())):
        with pytest.raises(BadImageError) as e:
            read(bomb)
        msg = str(e.value)
        assert msg.startswith(str(bomb)) and "13000x13000" in msg and "data.max_pixels" in msg and "\n" not in msg
    # the same check on bytes, for pipelines that read the file themselves
    with pytest.raises(BadImageError, match="data.max_pixels"):
        check_header(bomb.read_bytes(), ImageLimits(), name="bytes-of-bomb")


def test_a_thin_image_is_refused_by_the_aspect_bound(tmp_path):
    # 1 x 4000 px: tiny to decode, but rescaling its short side to S makes it S x 4000 S.
    Image.new("RGB", (1, 4000), (10, 20, 30)).save(tmp_path / "thin.png")
    assert (tmp_path / "thin.png").stat().st_size < 200
    with pytest.raises(BadImageError, match=r"thin\.png: .*4000.*data\.max_aspect"):
        load_rgb(tmp_path / "thin.png")
    assert check_header(tmp_path / "thin.png", ImageLimits(max_aspect=5000)) == (4000, 1)


def test_limits_are_configurable_and_a_normal_image_passes(tmp_path):
    Image.new("RGB", (64, 48)).save(tmp_path / "ok.png")
    assert check_header(tmp_path / "ok.png", ImageLimits()) == (48, 64)
    with pytest.raises(BadImageError, match="3072 pixels"):
        load_rgb(tmp_path / "ok.png", ImageLimits(max_pixels=3000))


def test_the_training_dataset_skips_a_bomb_as_a_named_bad_sample(tmp_path, bomb_png):
    (tmp_path / "bomb.png").write_bytes(bomb_png(13000, 13000))
    Image.new("RGB", (1, 4000)).save(tmp_path / "thin.png")
    tf = TrainTransform(32, 40, True, None, (0, 0, 0), (1, 1, 1))
    records = [Sample(str(tmp_path / "bomb.png"), 0), Sample(str(tmp_path / "thin.png"), 0)]
    for item in (SampleDataset(records, tf, "cls")[(0, i)] for i in range(2)):
        assert isinstance(item, BadSample) and ("max_pixels" in item.message or "max_aspect" in item.message)


def test_a_large_jpeg_decodes_reduced_and_the_window_still_maps_to_original_pixels(tmp_path):
    yy, xx = np.mgrid[0:768, 0:1024]
    src = np.stack([xx % 256, yy % 256, (xx // 4) % 256], -1).astype(np.uint8)
    Image.fromarray(src).save(tmp_path / "big.jpg", quality=92)
    full = decode_rgb(tmp_path / "big.jpg")
    small = decode_rgb(tmp_path / "big.jpg", min_side=64)
    assert full.factor == 1 and full.image.shape == (768, 1024, 3)
    assert small.factor == 8 and small.image.shape == (96, 128, 3) and small.size == (768, 1024)
    # A box in original pixels lands on the same place of the window either way.
    box = np.array([[100.0, 200.0, 600.0, 700.0]], np.float32)
    records = [Sample(str(tmp_path / "big.jpg"), 0, box, np.array([0]), (768, 1024))]
    ev = EvalTransform(64, 32, (0, 0, 0), (1, 1, 1))
    assert ev.min_side == 0  # evaluation and validation decode whole images, as eval does
    ev.min_side = 64  # asked for a reduced decode, as the training transforms ask
    item = SampleDataset(records, ev, "loc")[(0, 0)]
    reference = ev(full.image).geometry.encode(box)[0]
    assert np.allclose(item["target"].numpy(), reference.numpy(), atol=0.02)
    assert abs(float(item["scale"]) - 64 / 768) < 1e-6
    # ... and the dataset really decoded the reduced image (its pixels, not the full one's).
    assert np.array_equal(item["image"].numpy(), ev(small.image).image.numpy())


def test_a_16_bit_png_keeps_its_range(tmp_path):
    ramp = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 32).astype(np.uint16)  # 0 .. 65504
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    out = decode_rgb(tmp_path / "deep.png")
    assert out.image.dtype == np.uint8 and out.image.shape == (32, 64, 3)
    np.testing.assert_array_equal(out.image[..., 0], np.round(ramp / 257.0).astype(np.uint8))
    assert out.image.max() == 255 and out.image.min() == 0 and len(np.unique(out.image)) > 200
    assert "16-bit" in out.note
    assert decode_rgb(tmp_path / "deep.png", min_side=8).note == out.note
