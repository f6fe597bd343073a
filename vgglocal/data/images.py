"""Image decoding: every image becomes an RGB ``uint8`` array, or a one-line ``BadImageError``.

Real ILSVRC files are messy (SPEC section 6): a few "JPEG"s are PNG or CMYK JPEG, some are
grayscale, some are truncated. Pillow (with libjpeg-turbo) decodes by content, not by file
name, so a PNG under ``.JPEG`` decodes as PNG; CMYK (including Adobe's inverted CMYK) and
grayscale are converted to RGB. Truncated files must fail, never load half grey: Pillow's
``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False (checked at import and on every error).

EXIF orientation is *not* applied: ILSVRC, VOC and COCO boxes are annotated on the stored
pixel grid, so rotating the pixels would move them off their boxes.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from vgglocal.data.errors import BadImageError, DataError

__all__ = ["load_rgb", "image_size", "verify_image", "BadImageError", "DataError", "IMAGE_EXTENSIONS"]

# Formats identified by their magic bytes (JPEG covers MPO camera files). Pillow's catch-all plugins (TGA, ...) have no magic
# and would "decode" random bytes named .JPEG into noise, so they are not tried.
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")

# File name endings accepted when scanning image folders (case-insensitive).
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")

if ImageFile.LOAD_TRUNCATED_IMAGES:  # pragma: no cover - only if a third party flipped it
    warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was True; vgglocal resets it so truncated "
                  "images raise instead of loading half grey", stacklevel=1)
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def _bad(path: str | os.PathLike, error: BaseException) -> BadImageError:
    if isinstance(error, FileNotFoundError):
        return BadImageError(f"{os.fspath(path)}: no such image file")
    if isinstance(error, UnidentifiedImageError):
        return BadImageError(f"{os.fspath(path)}: not an image (no JPEG/PNG/GIF/BMP/TIFF/WebP/PPM header)")
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return BadImageError(f"{os.fspath(path)}: cannot decode image ({reason})")


def _open(path: str | os.PathLike) -> Image.Image:
    # The safety of the truncation check depends on this global; someone may have set it.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    return Image.open(path, formats=_FORMATS)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB.

    Args:
        path: image file (JPEG, PNG, CMYK JPEG, grayscale, palette; any name).

    Returns:
        ndarray[H, W, 3] uint8, writable, in the file's stored orientation.

    Raises:
        BadImageError: missing, truncated or corrupt file, or not an image; one line naming it.
    """
    try:
        with _open(path) as im:
            im.load()  # full decode: a truncated file raises here, not later
            if im.mode != "RGB":
                with warnings.catch_warnings():
                    # palette-with-transparency notice: alpha is dropped on purpose
                    warnings.simplefilter("ignore", UserWarning)
                    rgb = im.convert("RGB")
            else:
                rgb = im
            # np.array (not asarray): Pillow's buffer is read-only, augmentations write in place.
            return np.array(rgb)
    except Exception as e:  # noqa: BLE001 - any decoder failure means "bad image file"
        raise _bad(path, e) from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from the file header only (no decode; cannot detect truncation)."""
    try:
        with _open(path) as im:
            width, height = im.size
            return int(height), int(width)
    except Exception as e:  # noqa: BLE001
        raise _bad(path, e) from None


def verify_image(path: str | os.PathLike) -> tuple[int, int]:
    """Fully decode an image (as training would) without converting it; returns (height, width).

    Cheaper than :func:`load_rgb` for ``data check``: no RGB conversion, no array copy.
    """
    try:
        with _open(path) as im:
            im.load()
            width, height = im.size
            return int(height), int(width)
    except Exception as e:  # noqa: BLE001
        raise _bad(path, e) from None
