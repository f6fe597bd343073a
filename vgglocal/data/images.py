"""Image decoding: every image becomes an RGB ``uint8`` array, or a one-line ``BadImageError``.

Real ILSVRC files are messy: a few "JPEG"s are PNG or CMYK JPEG, some are
grayscale, some are truncated. Pillow (with libjpeg-turbo) decodes by content, not by file
name, so a PNG under ``.JPEG`` decodes as PNG; CMYK (including Adobe's inverted CMYK) and
grayscale are converted to RGB. Truncated files must fail, never load half grey: Pillow's
``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False (checked at import and on every error).

EXIF orientation is *not* applied: ILSVRC, VOC and COCO boxes are annotated on the stored
pixel grid, so rotating the pixels would move them off their boxes.

Hostile files: a PNG of a few hundred bytes can claim 13000 x 13000 pixels (a decompression
bomb), and a 1 x 4000 strip costs nothing to decode but becomes S x 4000 S once its short side
is rescaled to S. :func:`check_header` reads only the header and refuses both
(``data.max_pixels``, ``data.max_aspect``) before a pixel is decoded; every decoder here calls
it. Pillow's own ``MAX_IMAGE_PIXELS`` guard only warns below 179 Mpx, so it is not relied on.

Reduced decoding: when the caller needs only ``min_side`` pixels on the short side (the largest
training or test scale), a JPEG is decoded by libjpeg's DCT scaling (Pillow ``draft``, 1/2,
1/4 or 1/8) and other formats are box-reduced (``Image.reduce``) right after decoding, by the
largest factor that keeps the short side at least ``min_side``. :class:`Decoded` says by how much
(``factor``) so geometry is still computed in original pixels.

High bit depth: Pillow's ``convert("RGB")`` clips 16-bit grayscale (``I;16``) to 255, so such
images are scaled from their real range (0..65535 → 0..255) instead, and the conversion is
reported in :attr:`Decoded.note` (``data check`` lists it).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from vgglocal.config import DataConfig
from vgglocal.data.errors import BadImageError, DataError

__all__ = ["load_rgb", "decode_rgb", "Decoded", "image_size", "verify_image", "check_header", "check_size",
           "verify_image_noted", "conversion_note", "unreadable_reason",
           "ImageLimits", "MAX_PIXELS", "MAX_ASPECT", "BadImageError", "DataError", "IMAGE_EXTENSIONS"]

# Default limits: the config's (data.max_pixels, data.max_aspect; the reasons are given there).
# At 40 Mpx a full-resolution decode costs at most 160 MB even at 4 bytes a pixel.
MAX_PIXELS = DataConfig.max_pixels
MAX_ASPECT = DataConfig.max_aspect

# Formats identified by their magic bytes (JPEG covers MPO camera files). Pillow's catch-all plugins (TGA, ...) have no magic
# and would "decode" random bytes named .JPEG into noise, so they are not tried.
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")

# File name endings accepted when scanning image folders (case-insensitive).
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")

if ImageFile.LOAD_TRUNCATED_IMAGES:  # pragma: no cover - only if a third party flipped it
    warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was True; vgglocal resets it so truncated "
                  "images raise instead of loading half grey", stacklevel=1)
    ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class ImageLimits:
    """What an image header may claim before it is decoded (``data.max_pixels``, ``data.max_aspect``)."""

    max_pixels: int = MAX_PIXELS
    max_aspect: float = MAX_ASPECT

    @classmethod
    def of(cls, data_cfg: DataConfig) -> ImageLimits:
        """The limits of a ``data`` config section."""
        return cls(int(data_cfg.max_pixels), float(data_cfg.max_aspect))


_DEFAULT_LIMITS = ImageLimits()


class Decoded(NamedTuple):
    """A decoded image.

    Attributes:
        image (ndarray[h, w, 3] uint8): RGB pixels, writable.
        size: (height, width) of the stored image, from its header.
        factor: original pixels per decoded pixel (1: full resolution; 2, 4, 8, ...: reduced).
        note: a conversion that changed the pixel range ("16-bit grayscale ... scaled"), or "".
    """

    image: np.ndarray
    size: tuple[int, int]
    factor: int
    note: str


def check_size(height: int, width: int, limits: ImageLimits | None = None, name: str = "image") -> None:
    """Raise :class:`BadImageError` naming ``name`` when ``height x width`` exceeds ``limits``."""
    limits = limits or _DEFAULT_LIMITS
    if height < 1 or width < 1:
        raise BadImageError(f"{name}: image header claims {width}x{height} pixels")
    pixels = height * width
    if pixels > limits.max_pixels:
        raise BadImageError(f"{name}: image is {width}x{height} = {pixels} pixels, more than data.max_pixels "
                            f"{limits.max_pixels} (a decompression bomb or an unusually large image); skipped")
    aspect = max(height, width) / min(height, width)
    if aspect > limits.max_aspect:
        raise BadImageError(f"{name}: image is {width}x{height}, aspect ratio {aspect:.4g} above data.max_aspect "
                            f"{limits.max_aspect:g} (rescaling its short side would make it enormous); skipped")


def check_header(source: str | os.PathLike | bytes, limits: ImageLimits | None = None, name: str | None = None) -> tuple[int, int]:
    """Read only an image's header and check its size: (height, width), or one-line :class:`BadImageError`.

    Args:
        source: a file path, or the file's bytes (pipelines that read files themselves and decode
            elsewhere, e.g. on the GPU, check the same bounds before decoding).
        limits: the bounds (default :class:`ImageLimits`).
        name: how to name the image in the message (default: the path, or "image").
    """
    label = name or (os.fspath(source) if not isinstance(source, (bytes, bytearray, memoryview)) else "image")
    try:
        with _open(source) as im:
            width, height = im.size
    except Exception as e:  # noqa: BLE001
        raise _bad(label, e) from None
    check_size(int(height), int(width), limits, label)
    return int(height), int(width)


def _bad(path: str | os.PathLike, error: BaseException) -> BadImageError:
    if isinstance(error, FileNotFoundError):
        return BadImageError(f"{os.fspath(path)}: no such image file")
    if isinstance(error, PermissionError):  # not "cannot decode": nothing was read
        return BadImageError(f"{os.fspath(path)}: permission denied")
    if isinstance(error, UnidentifiedImageError):
        return BadImageError(f"{os.fspath(path)}: not an image (no JPEG/PNG/GIF/BMP/TIFF/WebP/PPM header)")
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return BadImageError(f"{os.fspath(path)}: cannot decode image ({reason})")


def _open(source: str | os.PathLike | bytes) -> Image.Image:
    # The safety of the truncation check depends on this global; someone may have set it.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    with warnings.catch_warnings():
        # Pillow warns (DecompressionBombWarning) from 89 Mpx; check_size decides instead.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(source, formats=_FORMATS)


# 16-bit (and 32-bit integer) grayscale modes: scaled from 0..65535, not clipped at 255.
# (16-bit RGB PNGs already arrive as 8-bit RGB: Pillow keeps the high bytes.)
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _scaled_gray(im: Image.Image) -> Image.Image:
    """A 16-bit / 32-bit grayscale image as 8-bit ``L``, scaled from its real range, not clipped.

    Integer modes map 0..65535 to 0..255 (rounded: (v * 255 + 32767) // 65535); float ("F",
    TIFF) maps [0, 1] when the values fit there, else 0..255. Done in row blocks so a 40-Mpx
    image needs no full-size 32-bit temporary.
    """
    values = np.asarray(im)
    if im.mode == "F":
        top = 1.0 if float(values.max(initial=0.0)) <= 1.0 else 255.0
    out = np.empty(values.shape, np.uint8)
    rows = max(1, (1 << 22) // max(1, values.shape[1]))
    for r in range(0, values.shape[0], rows):
        block = values[r:r + rows]
        if im.mode == "F":
            out[r:r + rows] = np.clip(np.rint(block * (255.0 / top)), 0, 255)
        else:
            out[r:r + rows] = (np.clip(block, 0, 65535).astype(np.uint32) * 255 + 32767) // 65535
    return Image.fromarray(out, "L")


def _prepare(im: Image.Image) -> tuple[Image.Image, str]:
    """A loaded image in a mode ``Image.reduce`` and ``convert("RGB")`` handle without losing its
    range, and the note for a range conversion ("" if none)."""
    note = conversion_note(im.mode)
    if note:
        return _scaled_gray(im), note
    if im.mode in ("P", "PA", "1"):  # no reduce for these: expand first
        with warnings.catch_warnings():
            # palette-with-transparency notice: alpha is dropped on purpose
            warnings.simplefilter("ignore", UserWarning)
            return im.convert("L" if im.mode == "1" else "RGB"), ""
    return im, ""


def _to_rgb(im: Image.Image) -> np.ndarray:
    """RGB uint8 pixels ``[H, W, 3]`` (writable) of a prepared image."""
    if im.mode != "RGB":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            im = im.convert("RGB")
    # np.array (not asarray): Pillow's buffer is read-only, augmentations write in place.
    return np.array(im)


def _reduction(size: tuple[int, int], min_side: int) -> int:
    """Largest integer factor that keeps the short side of ``size`` at least ``min_side``."""
    return max(1, min(size) // min_side) if min_side > 0 else 1


def decode_rgb(path: str | os.PathLike | bytes, limits: ImageLimits | None = None, min_side: int = 0,
               name: str | None = None) -> Decoded:
    """Check the header against ``limits``, then decode to RGB, reduced when ``min_side`` allows.

    Args:
        path: image file (JPEG, PNG, CMYK JPEG, grayscale, palette, 16-bit; any name), or its bytes.
        limits: header bounds (default :class:`ImageLimits`).
        min_side: the short side the caller needs (0: full resolution). A JPEG at least twice
            that is decoded at 1/2, 1/4 or 1/8 by libjpeg; other formats are box-reduced.
        name: how to name the image in errors (default: the path).

    Returns:
        :class:`Decoded` (pixels ``[h, w, 3]`` uint8, original size, reduction factor, note).

    Raises:
        BadImageError: missing, truncated, corrupt, not an image, or over the limits; one line.
    """
    label = name or (os.fspath(path) if not isinstance(path, (bytes, bytearray, memoryview)) else "image")
    try:
        with _open(path) as im:
            width, height = im.size
            check_size(height, width, limits, label)
            factor = _reduction((height, width), min_side)
            if factor > 1 and im.format == "JPEG":
                # DCT-domain scaling: the largest of 1/2, 1/4, 1/8 not below min_side; the pixel
                # pitch is exactly that power of two (Pillow rounds the size up).
                drafted = im.draft(None, (min_side, min_side))  # (mode, (0, 0, W / s, H / s)) or None
                factor = round(width / drafted[1][2]) if drafted else 1
            is_jpeg = im.format == "JPEG"
            im.load()  # full decode: a truncated file raises here, not later
            im, note = _prepare(im)
            if not is_jpeg and factor > 1:
                try:
                    im = im.reduce(factor)  # box filter; the pitch is exactly `factor`
                except ValueError:  # a mode Image.reduce does not support
                    factor = 1
            return Decoded(_to_rgb(im), (int(height), int(width)), int(factor), note)
    except BadImageError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure means "bad image file"
        raise _bad(label, e) from None


def load_rgb(path: str | os.PathLike, limits: ImageLimits | None = None) -> np.ndarray:
    """Decode an image file to RGB at full resolution (header checked against ``limits``).

    Args:
        path: image file (JPEG, PNG, CMYK JPEG, grayscale, palette, 16-bit; any name).

    Returns:
        ndarray[H, W, 3] uint8, writable, in the file's stored orientation.

    Raises:
        BadImageError: missing, truncated or corrupt file, not an image, or over the limits;
            one line naming it.
    """
    return decode_rgb(path, limits).image


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from the file header only (no decode; cannot detect truncation)."""
    try:
        with _open(path) as im:
            width, height = im.size
            return int(height), int(width)
    except Exception as e:  # noqa: BLE001
        raise _bad(path, e) from None


def verify_image(path: str | os.PathLike, limits: ImageLimits | None = None) -> tuple[int, int]:
    """Fully decode an image (as training would) without converting it; returns (height, width).

    Cheaper than :func:`load_rgb` for ``data check``: no RGB conversion, no array copy. The
    header is checked against ``limits`` first. :func:`conversion_note` says whether training
    will have to rescale its range.
    """
    return verify_image_noted(path, limits)[:2]


def verify_image_noted(path: str | os.PathLike, limits: ImageLimits | None = None) -> tuple[int, int, str]:
    """:func:`verify_image` plus the note of a range conversion training applies ("" if none)."""
    try:
        with _open(path) as im:
            width, height = im.size
            check_size(height, width, limits, os.fspath(path))
            im.load()
            return int(height), int(width), conversion_note(im.mode)
    except BadImageError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _bad(path, e) from None


def conversion_note(mode: str) -> str:
    """What :func:`decode_rgb` does to an image of Pillow ``mode`` beyond a plain RGB conversion."""
    if mode in _DEEP_MODES:
        return f"16-bit grayscale ({mode}) scaled from 0..65535 to 8 bits"
    if mode == "F":
        return "32-bit float grayscale (F) scaled from [0, 1] (or 0..255) to 8 bits"
    return ""


def unreadable_reason(message: str) -> str:
    """A short reason for a bad-image message of this module: ``missing``, ``too large``,
    ``not an image``, ``cannot decode`` (or ``unreadable`` for anything else)."""
    for phrase, reason in (("no such image file", "missing"), ("data.max_pixels", "too large"),
                           ("data.max_aspect", "too large"), ("not an image", "not an image"),
                           ("cannot decode", "cannot decode")):
        if phrase in message:
            return reason
    return "unreadable"
