"""The loader side of ``data.pipeline: gpu``: workers read file bytes, draw the window, build
the targets, and leave the decoding and the pixel work to the training device.

Per sample a worker reads the file, parses its JPEG header (Pillow, no decode) for the size,
draws the window with the *same* :meth:`~vgglocal.data.transforms.TrainTransform.draw` as the
cpu pipeline (so the same (seed, epoch, index) gives the same crop, flip and colour shift), and
computes the box target from the header's size. The bytes go to the device, where
:class:`vgglocal.data.device.DeviceWindows` decodes the batch with nvJPEG and cuts the windows.

Files nvJPEG should not be given are decoded here, in the worker, exactly as the cpu pipeline
decodes them (:meth:`SampleDataset.decode`), and travel as pixels: anything that is not a plain
three-channel JPEG (PNG or CMYK under a ``.JPEG`` name, grayscale, Adobe RGB-transform JPEGs,
multi-picture files), progressive JPEGs (which nvJPEG decodes on the host, in the main
process), and any JPEG that does not end with its end-of-image marker or whose scan data
runs into a marker it should not hold (a truncated or overwritten file must get the cpu
pipeline's verdict, not be decoded to whatever a GPU decoder makes of it).
Bad files therefore become the same :class:`~vgglocal.data.loader.BadSample` with the same
message in both pipelines.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageFile
from torch import Tensor
from torch.utils.data import default_collate

from vgglocal.data.errors import DataError
from vgglocal.data.images import ImageLimits, check_size
from vgglocal.data.loader import BadSample, SampleDataset, sample_rng
from vgglocal.data.records import Sample
from vgglocal.data.transforms import TrainTransform

__all__ = ["EncodedDataset", "EncodedImages", "JpegHeader", "collate_encoded", "jpeg_header"]

_EOI = b"\xff\xd9"


class EncodedImages:
    """The JPEG files of a batch: one CPU byte tensor holding them all, with their offsets,
    positions and paths.

    One buffer per batch, not one tensor per file: a worker hands every tensor of a batch to the
    main process as its own shared-memory segment, each with a file descriptor kept open while
    the tensor lives (PyTorch's default ``file_descriptor`` sharing strategy, "Multiprocessing
    best practices" / ``torch.multiprocessing``), and passes each over a socket in its own
    exchange. A tensor per file costs a descriptor and a hand-shake per image, and a few batches
    in flight exhaust a ``ulimit -n`` of 1024. :meth:`views` cuts the files back out without a copy.

    A plain container (not a tensor) so the loader's pin-memory step leaves the bytes alone:
    ``torchvision.io.decode_jpeg`` takes host tensors and copies them itself.

    Attributes:
        data: uint8 ``Tensor[total]``, the files one after another.
        offsets: int64 ``Tensor[k + 1]``: file i is ``data[offsets[i]:offsets[i + 1]]``.
        at: row of each file in the batch.
        paths: the files, for messages and the decode fallback.
    """

    def __init__(self, data: Tensor, offsets: Tensor, at: list[int], paths: list[str]):
        self.data, self.offsets, self.at, self.paths = data, offsets, at, paths

    @classmethod
    def of(cls, files: Sequence[Tensor], at: list[int], paths: list[str]) -> EncodedImages:
        """Concatenate ``files`` (uint8 byte tensors) into one buffer."""
        lengths = torch.tensor([len(f) for f in files], dtype=torch.int64)
        offsets = torch.zeros(len(files) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        data = torch.cat(list(files)) if files else torch.zeros(0, dtype=torch.uint8)
        return cls(data, offsets, at, paths)

    def views(self) -> list[Tensor]:
        """One 1-D uint8 tensor per file, views into :attr:`data` (no copy)."""
        if not len(self):
            return []
        return list(self.data.split(self.offsets.diff().tolist()))

    def pin_memory(self) -> EncodedImages:
        return self

    def __len__(self) -> int:
        return len(self.at)


class JpegHeader(NamedTuple):
    """What the header of a device-decodable JPEG says.

    Attributes:
        size: (height, width) of the stored image.
        decoded: (height, width) the cpu pipeline decodes it to (libjpeg DCT scaling by
            ``factor``, Pillow ``draft``; :func:`vgglocal.data.images.decode_rgb`).
        factor: original pixels per decoded pixel (1, 2, 4 or 8).
    """

    size: tuple[int, int]
    decoded: tuple[int, int]
    factor: int


def jpeg_header(data: bytes | bytearray, min_side: int = 0) -> JpegHeader | None:
    """The header of a file nvJPEG can decode as the cpu pipeline would, else None.

    That is a baseline (sequential DCT, not progressive) JPEG with three YCbCr components, one
    scan, and no marker in its scan data but its restart markers (as many as the restart
    interval asks for) and the final EOI (:func:`_scan_is_plain`). Only the header is parsed
    (Pillow stops at the first scan) and the scan's bytes are searched for markers, nothing is
    decoded. ``min_side``: the short side the transform needs; the reduced size is computed as
    ``decode_rgb`` computes it.
    """
    if not data.endswith(_EOI):
        return None
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=("JPEG",)) as im:
                # Adobe transform 0: the components are RGB, not YCbCr; Pillow converts, a GPU
                # decoder might not.
                adobe_rgb = "adobe" in im.info and im.info.get("adobe_transform") == 0
                # nvJPEG's hardware backend takes baseline JPEGs only (nvJPEG documentation,
                # nvjpegBackend_t); a progressive one is Huffman-decoded on the host, on the
                # calling (main) process's thread, so a worker decodes it instead.
                progressive = bool(im.info.get("progressive") or im.info.get("progression"))
                if im.format != "JPEG" or im.mode != "RGB" or adobe_rgb or progressive:
                    return None
                width, height = im.size
                if not _scan_is_plain(data, (height, width), [(h, v) for _, h, v, _ in im.layer]):
                    return None
                factor = max(1, min(height, width) // min_side) if min_side > 0 else 1
                if factor > 1:
                    im.draft(None, (min_side, min_side))  # sets the DCT scale only, decodes nothing
                    factor = round(width / im.size[0]) if im.size[0] != width else 1
                dw, dh = im.size
                return JpegHeader((int(height), int(width)), (int(dh), int(dw)), int(factor))
    except Exception:  # noqa: BLE001 - not a JPEG Pillow can parse: the worker decodes (or refuses) it
        return None


def _scan_is_plain(data: bytes | bytearray, size: tuple[int, int], sampling: list[tuple[int, int]]) -> bool:
    """Whether the scan data holds no marker but the restart markers it should and the final EOI.

    In entropy-coded data a 0xFF byte is followed by 0x00 (a stuffed byte), 0xD0-0xD7 (RSTn),
    or more 0xFF fill bytes; anything else is a marker (ITU-T T.81, B.1.1.2 and F.1.2.3).
    libjpeg refuses a file whose scan runs into an unknown or out-of-place marker (random bytes
    over the scan, a truncated file with an end marker pasted on), while a GPU decoder need not
    check: such files go to the worker's decode, which gives the cpu pipeline's answer. A file
    with a restart interval (DRI) must have ceil(MCUs / interval) - 1 restart markers; fewer is
    a file cut short, which libjpeg fills with grey, and the worker does the same.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    pos, interval = 2, 0
    while True:  # header segments up to the first start-of-scan (all have a 2-byte length)
        while pos + 1 < len(buf) and buf[pos] == 0xFF and buf[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 3 >= len(buf) or buf[pos] != 0xFF:
            return False
        marker, length = int(buf[pos + 1]), int(buf[pos + 2]) << 8 | int(buf[pos + 3])
        if marker == 0xDD and length == 4 and pos + 5 < len(buf):  # DRI: restart interval in MCUs
            interval = int(buf[pos + 4]) << 8 | int(buf[pos + 5])
        pos += 2 + length
        if marker == 0xDA:
            break
    scan = buf[pos:len(buf) - 2]  # up to the EOI
    after = buf[pos + np.flatnonzero(scan == 0xFF) + 1]  # the byte after each 0xFF (within buf)
    restart = (after & 0xF8) == 0xD0
    if not np.all((after == 0x00) | (after == 0xFF) | restart):
        return False
    if interval:
        hmax, vmax = max(h for h, _ in sampling), max(v for _, v in sampling)
        mcus = -(-size[0] // (8 * vmax)) * -(-size[1] // (8 * hmax))
        return int(restart.sum()) == -(-mcus // interval) - 1
    return True


class EncodedDataset(SampleDataset):
    """:class:`SampleDataset` for ``data.pipeline: gpu``: items carry the file's bytes instead of
    the window's pixels (or, for files decoded in the worker, the decoded image's pixels).

    The header is checked against ``limits`` (``data.max_pixels``, ``data.max_aspect``) before
    the bytes go anywhere, with the cpu pipeline's message. Where the cpu pipeline would decode
    a large JPEG reduced (libjpeg 1/2, 1/4, 1/8 scaling), the window is drawn on the same reduced
    size and the device box-reduces the full decode by the same factor before sampling.

    Items: the keys of :class:`SampleDataset` except ``image``, plus
        jpeg (Tensor[bytes] uint8) and path (str): the file, when the device decodes it; or
        pixels (Tensor[3, h, w] uint8): the decoded image, when the worker did;
        image_size (Tensor[2] int64): (h, w) of the image the window samples (decoded size);
        reduce (int64): box-reduction factor the device applies after decoding (1: none);
        resized (Tensor[2] int64): (height, width) of the rescaled image the window lies in.
    """

    def __init__(self, records: Sequence[Sample], transform: TrainTransform, task: str = "cls", seed: int = 0,
                 limits: ImageLimits | None = None):
        if not isinstance(transform, TrainTransform):
            raise TypeError("the gpu pipeline draws training windows: it needs a TrainTransform")
        super().__init__(records, transform, task, seed, limits)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | BadSample:
        epoch, index, record, bad = self._locate(key)
        if bad is not None:
            return bad
        data, header = _read_jpeg(record.path, self.transform.min_side)
        pixels = None
        try:
            if header is not None:
                check_size(*header.size, self.limits, str(record.path))
                size, decoded, factor = header
            else:
                image = self.decode(record)
                size, decoded, factor = image.size, tuple(image.image.shape[:2]), image.factor
                pixels = torch.from_numpy(np.ascontiguousarray(image.image.transpose(2, 0, 1)))
        except DataError as e:
            return BadSample(index, str(record.path), str(e))
        except OSError as e:
            return BadSample(index, str(record.path), f"{record.path}: {e.strerror or e}")
        g, shift = self.transform.draw(sample_rng(self.seed, epoch, index), *decoded)
        resized = g.size
        if factor != 1:  # as the cpu pipeline: the window's scale is relative to the original
            g = dataclasses.replace(g, scale=g.scale / factor)
        item = self.window_item(record, index, g, size)
        if isinstance(item, BadSample):
            return item
        item["shift"] = torch.from_numpy(shift.astype(np.float32))
        item["std"] = torch.from_numpy(self.transform.std.astype(np.float32))
        item["image_size"] = torch.tensor(decoded, dtype=torch.int64)
        item["resized"] = torch.tensor(resized, dtype=torch.int64)
        item["reduce"] = torch.tensor(factor if pixels is None else 1, dtype=torch.int64)
        if pixels is None:
            item["jpeg"] = torch.frombuffer(data, dtype=torch.uint8)
            item["path"] = str(record.path)
        else:
            item["pixels"] = pixels
        return item


def _read_jpeg(path: str | os.PathLike, min_side: int) -> tuple[bytearray | None, JpegHeader | None]:
    """The file's bytes and header when the device can decode it, else (None, None)."""
    try:
        with open(path, "rb") as f:
            data = bytearray(os.fstat(f.fileno()).st_size)
            if f.readinto(data) != len(data):
                return None, None
    except OSError:
        return None, None  # the worker's decode reports it as the cpu pipeline does
    header = jpeg_header(data, min_side)
    return (data, header) if header is not None else (None, None)


def collate_encoded(items: list[dict[str, Any] | BadSample]) -> dict[str, Any]:
    """Stack the fixed-size keys; concatenate the variable-size files and pixels in batch order.

    Runs in the loader's workers. Every tensor of the batch is one shared-memory segment on its
    way to the main process, so their number is fixed, whatever the batch size.

    Returns a batch with the keys of :func:`vgglocal.data.loader.collate` (``bad``, ``size``)
    and, instead of ``image``: ``jpeg`` (:class:`EncodedImages`: all files in one byte tensor
    plus offsets), ``pixels`` (Tensor[P] uint8,
    the worker-decoded images flattened and concatenated) and ``pixels_at`` (Tensor[k] int64,
    their rows).
    """
    good = [x for x in items if not isinstance(x, BadSample)]
    ragged = ("jpeg", "path", "pixels")
    batch: dict[str, Any] = default_collate([{k: v for k, v in x.items() if k not in ragged} for x in good]) if good else {}
    at = [i for i, x in enumerate(good) if "jpeg" in x]
    batch["jpeg"] = EncodedImages.of([good[i]["jpeg"] for i in at], at, [good[i]["path"] for i in at])
    decoded = [i for i, x in enumerate(good) if "pixels" in x]
    batch["pixels"] = (torch.cat([good[i]["pixels"].reshape(-1) for i in decoded]) if decoded
                       else torch.zeros(0, dtype=torch.uint8))
    batch["pixels_at"] = torch.tensor(decoded, dtype=torch.int64)
    batch["bad"] = [(x.path, x.message) for x in items if isinstance(x, BadSample)]
    batch["size"] = len(good)
    return batch
