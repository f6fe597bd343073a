"""Image decoding: every valid variant becomes RGB uint8; every broken file one BadImageError line."""

import numpy as np
import pytest
from PIL import Image, ImageFile

from vgglocal.data.errors import BadImageError, DataError
from vgglocal.data.images import image_size, load_rgb, verify_image
from vgglocal.errors import UserError


def _pattern(h=24, w=32):
    """A smooth RGB pattern that JPEG keeps close to the original."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full((h, w), 90)], -1).astype(np.uint8)


def test_rgb_jpeg_decodes_to_hwc_uint8(tmp_path):
    src = _pattern()
    Image.fromarray(src).save(tmp_path / "a.JPEG", quality=95)
    rgb = load_rgb(tmp_path / "a.JPEG")
    assert rgb.shape == (24, 32, 3) and rgb.dtype == np.uint8 and rgb.flags.writeable
    assert np.abs(rgb.astype(int) - src).mean() < 4
    assert image_size(tmp_path / "a.JPEG") == (24, 32) == verify_image(tmp_path / "a.JPEG")


def test_png_under_jpeg_name_decodes_exactly(tmp_path):
    src = _pattern()
    Image.fromarray(src).save(tmp_path / "png.JPEG", format="PNG")
    np.testing.assert_array_equal(load_rgb(tmp_path / "png.JPEG"), src)


def test_cmyk_jpeg_decodes_to_rgb(tmp_path):
    Image.new("RGB", (20, 10), (200, 30, 40)).convert("CMYK").save(tmp_path / "cmyk.JPEG", quality=95)
    assert Image.open(tmp_path / "cmyk.JPEG").mode == "CMYK"
    rgb = load_rgb(tmp_path / "cmyk.JPEG")
    assert rgb.shape == (10, 20, 3)
    np.testing.assert_allclose(rgb.reshape(-1, 3).mean(0), (200, 30, 40), atol=12)


def test_grayscale_and_palette_decode_to_three_equal_or_rgb_channels(tmp_path):
    gray = (np.arange(24 * 32).reshape(24, 32) % 256).astype(np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "gray.JPEG", format="PNG")
    rgb = load_rgb(tmp_path / "gray.JPEG")
    assert rgb.shape == (24, 32, 3)
    np.testing.assert_array_equal(rgb[..., 0], gray)
    np.testing.assert_array_equal(rgb[..., 1], rgb[..., 2])
    Image.fromarray(_pattern()).convert("P").save(tmp_path / "pal.JPEG", format="PNG", transparency=0)
    assert load_rgb(tmp_path / "pal.JPEG").shape == (24, 32, 3)
    Image.fromarray(_pattern()).convert("L").save(tmp_path / "grayjpeg.JPEG", quality=90)
    assert load_rgb(tmp_path / "grayjpeg.JPEG").shape == (24, 32, 3)


def test_truncated_jpeg_raises_one_line_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.JPEG", quality=90)
    data = (tmp_path / "t.JPEG").read_bytes()
    (tmp_path / "t.JPEG").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError) as e:
        load_rgb(tmp_path / "t.JPEG")
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "t.JPEG")) and "truncated" in msg and "\n" not in msg
    assert isinstance(e.value, DataError) and isinstance(e.value, UserError)
    with pytest.raises(BadImageError):
        verify_image(tmp_path / "t.JPEG")


def test_truncated_jpeg_raises_even_if_someone_enabled_truncated_loading(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.JPEG")
    data = (tmp_path / "t.JPEG").read_bytes()
    (tmp_path / "t.JPEG").write_bytes(data[: len(data) // 2])
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(BadImageError, match="truncated"):
            load_rgb(tmp_path / "t.JPEG")
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_random_bytes_named_jpeg_and_missing_file_raise(tmp_path):
    (tmp_path / "r.JPEG").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(BadImageError, match=r"r\.JPEG: not an image"):
        load_rgb(tmp_path / "r.JPEG")
    with pytest.raises(BadImageError, match="no such image file"):
        load_rgb(tmp_path / "missing.JPEG")
    with pytest.raises(BadImageError):
        image_size(tmp_path / "r.JPEG")
