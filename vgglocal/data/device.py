"""Batches on the training device: the host-to-device move with normalisation there, the
device half of ``data.pipeline: gpu``, and one-batch-ahead preparation on a side CUDA stream.

* :func:`to_device` moves a collated batch (pinned host memory, ``non_blocking``) and turns the
  uint8 crops into the network's float input on the device (both pipelines ship uint8).
* :class:`DeviceWindows` takes a batch of JPEG bytes from :mod:`vgglocal.data.encoded`, decodes
  it with one batched ``torchvision.io.decode_jpeg(list, device=...)`` call (nvJPEG on a GPU,
  libjpeg-turbo on the CPU), and cuts every sample's window (rescale to S, crop, flip) with one
  vectorised bilinear gather over the whole batch, then normalises: a fixed number of kernels
  per batch, independent of its size.
* :class:`DevicePrefetcher` runs a ``prepare`` function on a side CUDA stream for the next
  batch while the current step trains on the default stream (``wait_stream`` before use,
  ``record_stream`` so the caching allocator keeps the memory until the training stream is done
  with it). On the CPU the same code runs in order.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from vgglocal.data.errors import DataError
from vgglocal.data.images import load_rgb
from vgglocal.data.transforms import normalise_batch

__all__ = ["to_device", "window_coords", "resample_windows", "DeviceWindows", "DevicePrefetcher"]


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """Move a batch's tensors to ``device``; uint8 ``image`` → float32 ``(image - shift) / std``.

    The layout change to channels_last happens on the uint8 crops (a quarter of the bytes); the
    float conversion keeps it. Batches already on the device (prefetched) pass through.
    ``image``'s batch dimension is marked dynamic for ``torch.compile`` (:func:`_dynamic_batch`).
    """
    out = {}
    for key, value in batch.items():
        if isinstance(value, Tensor):
            value = value.to(device, non_blocking=True)
        out[key] = value
    image = out.get("image")
    if image is not None:
        if channels_last and image.ndim == 4:
            image = image.contiguous(memory_format=torch.channels_last)
        if image.dtype == torch.uint8:
            image = normalise_batch(image, out.pop("shift"), out.pop("std"))
        out["image"] = _dynamic_batch(image)
    return out


def _dynamic_batch(image: Tensor) -> Tensor:
    """Mark the batch dimension dynamic for ``torch.compile`` (``train.compile``).

    Batches shrink when bad samples are skipped; a compiled step first specialises on the batch
    size it sees and recompiles for the next one ("Dynamic shapes" in the torch.compile docs:
    ``torch._dynamo.maybe_mark_dynamic`` compiles the first graph with a symbolic size instead).
    Marking is an attribute on the tensor, free when nothing is compiled; ``torch._dynamo`` is
    only imported once ``torch.compile`` has been called, so eager runs do not pay its import.
    """
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None and image.ndim == 4:
        dynamo.maybe_mark_dynamic(image, 0)
    return image


def window_coords(origin: Tensor, resized: Tensor, image_size: Tensor, flipped: Tensor, side: int) -> tuple[Tensor, Tensor]:
    """Where each output pixel of each window samples its source image (OpenCV's convention).

    ``cv2.resize`` maps output pixel ``d`` of a ``W -> w`` resize to source ``(d + 0.5) * W / w
    - 0.5``; the window starts at ``origin`` in the resized image, and a mirrored window reads
    its columns right to left.

    Args:
        origin (Tensor[N, 2]): x0, y0 in resized pixels. resized, image_size (Tensor[N, 2]):
            (height, width) of the rescaled and of the stored image. flipped (Tensor[N] bool).
        side: the window's side in output pixels.
    Returns:
        xs (Tensor[N, side]), ys (Tensor[N, side]) float64 source coordinates.
    """
    d = torch.arange(side, device=origin.device, dtype=torch.float64) + 0.5
    o = origin.to(torch.float64)
    fy = image_size[:, 0].to(torch.float64) / resized[:, 0].to(torch.float64)
    fx = image_size[:, 1].to(torch.float64) / resized[:, 1].to(torch.float64)
    xs = (o[:, 0:1] + d) * fx[:, None] - 0.5
    ys = (o[:, 1:2] + d) * fy[:, None] - 0.5
    xs = torch.where(flipped.to(torch.bool)[:, None], xs.flip(1), xs)
    return xs, ys


def _taps(coords: Tensor, limit: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear taps along one axis: (low index, high index, weight of high), clamped like
    ``cv2.BORDER_REPLICATE`` (and ``roi_align``'s own border rule)."""
    top = (limit - 1).to(coords.dtype)[:, None]
    c = torch.minimum(coords.clamp(min=0), top)
    low = c.floor()
    weight = (c - low).to(torch.float32)
    low = low.to(torch.int64)
    high = torch.minimum(low + 1, (limit - 1)[:, None])
    return low, high, weight


def resample_windows(flat: Tensor, starts: Tensor, image_size: Tensor, xs: Tensor, ys: Tensor,
                     channels_last: bool = False) -> Tensor:
    """Bilinear samples of many differently sized images in one gather: crop + resize + flip.

    Why not ``torchvision.ops.roi_align``: it samples exactly this way with ``aligned=True,
    sampling_ratio=1`` (the tests check it), but it needs the images in one ``[N, C, H, W]``
    tensor, i.e. padded to the largest in the batch; ILSVRC photographs range from under 100 to
    several thousand pixels a side, so the padding would cost far more memory and time than the
    windows. Here the images stay ragged, concatenated in one flat buffer, and every output pixel
    reads its four neighbours by index.

    Args:
        flat (Tensor[P] uint8): the images, each ``[3, H, W]`` contiguous, flattened and concatenated.
        starts (Tensor[N] int64): offset of each image in ``flat``.
        image_size (Tensor[N, 2] int64): (H, W) of each image.
        xs, ys (Tensor[N, w], Tensor[N, h]): source coordinates of the output columns and rows
            (:func:`window_coords`).
        channels_last: return a channels_last tensor (computed in that order, no extra copy).
    Returns:
        Tensor[N, 3, h, w] float32 in 0..255 units.
    """
    h, w = image_size[:, 0], image_size[:, 1]
    x0, x1, lx = _taps(xs, w)
    y0, y1, ly = _taps(ys, h)
    channel = torch.arange(3, device=flat.device, dtype=torch.int64)
    base = starts[:, None] + channel[None, :] * (h * w)[:, None]  # [N, 3]
    r0, r1 = y0 * w[:, None], y1 * w[:, None]  # [N, h]
    if channels_last:  # index order [N, h, w, 3]: the result's permute is channels_last memory
        def gather(rows: Tensor, cols: Tensor) -> Tensor:
            idx = base[:, None, None, :] + rows[:, :, None, None] + cols[:, None, :, None]
            return flat[idx].to(torch.float32)
        wx, wy = lx[:, None, :, None], ly[:, :, None, None]
    else:
        def gather(rows: Tensor, cols: Tensor) -> Tensor:
            idx = base[:, :, None, None] + rows[:, None, :, None] + cols[:, None, None, :]
            return flat[idx].to(torch.float32)
        wx, wy = lx[:, None, None, :], ly[:, None, :, None]
    top = gather(r0, x0)
    top = top.add_((gather(r0, x1) - top).mul_(wx))
    bottom = gather(r1, x0)
    bottom = bottom.add_((gather(r1, x1) - bottom).mul_(wx))
    out = top.add_((bottom - top).mul_(wy))
    return out.permute(0, 3, 1, 2) if channels_last else out


def _decode_jpeg(data: Tensor | list[Tensor], device: torch.device) -> Any:
    with warnings.catch_warnings():
        # torchvision 0.29 announces the move of its decoders to TorchCodec; they still work, and
        # the GPU machines this is for run torchvision releases without the notice.
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def _box_reduce(image: Tensor, factor: int) -> Tensor:
    """``[3, H, W]`` uint8 → ``[3, ceil(H/f), ceil(W/f)]``: the mean of each f x f block (edge
    blocks: of the pixels they hold), where the cpu pipeline lets libjpeg decode at 1/f.

    Only large photographs (short side at least twice the largest S) take this, one small
    kernel each; decoding them at full size and sampling directly would alias.
    """
    pooled = torch.nn.functional.avg_pool2d(image[None].to(torch.float32), factor, ceil_mode=True)
    return pooled[0].round_().to(torch.uint8)


class DeviceWindows:
    """The device half of ``data.pipeline: gpu``: JPEG bytes → normalised training windows.

    Call with a batch from :func:`vgglocal.data.encoded.collate_encoded`; returns a batch like
    :func:`to_device`'s, on ``device``: ``image`` float32 ``[n, 3, crop, crop]`` and the other
    keys. A file the batched decoder rejects is retried alone, then decoded on the host as the cpu
    pipeline would (Pillow); one that fails there too is dropped from the batch and listed under
    ``bad``, as the cpu pipeline's worker would have.

    Attributes:
        counts: images decoded so far ``{"device": .., "worker": .., "host_fallback": ..}``
            ("worker": PNG, CMYK, grayscale... decoded by the loader's workers).
    """

    _FIXED = ("label", "target", "target_label", "index", "origin", "scale", "flipped", "image_hw")

    def __init__(self, device: torch.device | str, crop: int, channels_last: bool = False):
        self.device = torch.device(device)
        self.crop = int(crop)
        self.channels_last = channels_last
        self.counts = {"device": 0, "worker": 0, "host_fallback": 0}

    def _decode(self, jpeg: Any) -> tuple[list[Tensor | None], list[tuple[str, str]]]:
        """Decode the batch's files on the device: one image per file, None where it was bad."""
        if not len(jpeg):
            return [], []
        if self.device.type == "cuda":
            # nvJPEG's hardware engine can write its outputs before work already queued on the
            # stream has run, and the caching allocator may hand it memory such work still reads
            # (pytorch/vision#9606): let this stream's queue drain first.
            torch.cuda.current_stream(self.device).synchronize()
        files = jpeg.views()
        try:
            images: list[Tensor | None] = list(_decode_jpeg(files, self.device))
            self.counts["device"] += len(images)
            return images, []
        except RuntimeError:
            pass  # one bad file fails the whole batched call: find it
        images, bad = [], []
        for data, path in zip(files, jpeg.paths, strict=True):
            try:
                images.append(_decode_jpeg(data, self.device))
                self.counts["device"] += 1
                continue
            except RuntimeError:
                pass
            try:
                pixels = torch.from_numpy(load_rgb(path)).permute(2, 0, 1).contiguous()
                images.append(pixels.to(self.device))
                self.counts["host_fallback"] += 1
            except (DataError, OSError) as e:
                images.append(None)
                bad.append((path, str(e) if isinstance(e, DataError) else f"{path}: {e.strerror or e}"))
        return images, bad

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"bad": list(batch.get("bad", [])), "size": int(batch.get("size", 0))}
        n = out["size"]
        if not n:
            return out
        dev = self.device
        moved = {k: batch[k].to(dev, non_blocking=True) for k in (*self._FIXED, "shift", "std", "image_size", "resized")}
        images: list[Tensor | None] = [None] * n
        jpeg = batch["jpeg"]
        decoded, bad = self._decode(jpeg)
        for row, image in zip(jpeg.at, decoded, strict=True):
            images[row] = image
        pixels_at = batch["pixels_at"].tolist()
        if pixels_at:
            self.counts["worker"] += len(pixels_at)
            sizes = batch["image_size"][pixels_at]
            flat = batch["pixels"].to(dev, non_blocking=True)
            parts = flat.split((sizes[:, 0] * sizes[:, 1] * 3).tolist())
            for row, part, (h, w) in zip(pixels_at, parts, sizes.tolist(), strict=True):
                images[row] = part.view(3, h, w)
        for row in torch.nonzero(batch["reduce"] > 1).flatten().tolist():
            if images[row] is not None:
                images[row] = _box_reduce(images[row], int(batch["reduce"][row]))
        keep = [i for i, im in enumerate(images) if im is not None]
        if bad:
            out["bad"] += bad
            out["size"] = len(keep)
            rows = torch.tensor(keep, dtype=torch.int64, device=dev)
            moved = {k: v.index_select(0, rows) for k, v in moved.items()}
            images = [images[i] for i in keep]
            if not keep:
                return out
        # Sizes from the decoded tensors (the header's, unless the decoder disagrees).
        image_size = torch.tensor([tuple(im.shape[1:]) for im in images], dtype=torch.int64, device=dev)
        numel = image_size[:, 0] * image_size[:, 1] * 3
        starts = torch.cumsum(numel, 0) - numel
        flat = torch.cat([im.reshape(-1) for im in images])
        xs, ys = window_coords(moved["origin"], moved["resized"], image_size, moved["flipped"], self.crop)
        windows = resample_windows(flat, starts, image_size, xs, ys, self.channels_last)
        std = moved["std"].to(torch.float32)
        image = windows.sub_(moved["shift"].to(torch.float32)[:, :, None, None]).div_(std[:, :, None, None])
        for k in ("shift", "std", "resized"):
            moved.pop(k)
        moved["image_size"] = image_size
        out.update(moved)
        out["image"] = image
        return out


def _tensors(batch: dict[str, Any]) -> Iterator[Tensor]:
    for value in batch.values():
        if isinstance(value, Tensor):
            yield value


class DevicePrefetcher:
    """Iterate ``loader``, running ``prepare(batch)`` one batch ahead on a side CUDA stream.

    While the training step of batch k runs on the current stream, batch k+1's copies, decode and
    augmentation run on the side stream. Before batch k is handed over the current stream waits
    for the side stream (``wait_stream``), and each of its tensors is marked as used by the
    current stream (``record_stream``) so its memory is not reused while training still reads it.
    On a CPU device ``prepare`` simply runs in order.

    Args:
        loader: batches (an :class:`~vgglocal.data.loader.EpochLoader`, positioned already).
        prepare: host batch → device batch (:func:`to_device` or :class:`DeviceWindows`).
        device: the training device.
    """

    def __init__(self, loader: Iterable[dict[str, Any]], prepare: Callable[[dict[str, Any]], dict[str, Any]],
                 device: torch.device | str):
        self.loader = loader
        self.prepare = prepare
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        # set_epoch, batches_per_epoch, ... of the wrapped loader
        return getattr(self.__dict__["loader"], name)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        current = torch.cuda.current_stream(self.device) if cuda else None

        def ready(batch: dict[str, Any]) -> dict[str, Any]:
            if stream is None:
                return self.prepare(batch)
            with torch.cuda.stream(stream):
                return self.prepare(batch)

        batches = iter(self.loader)
        if stream is not None:
            stream.wait_stream(current)  # the model's initial weights etc. are in place
        nxt = next(batches, None)
        prepared = ready(nxt) if nxt is not None else None
        while prepared is not None:
            if stream is not None:
                current.wait_stream(stream)
                for t in _tensors(prepared):
                    t.record_stream(current)
            nxt = next(batches, None)
            following = ready(nxt) if nxt is not None else None
            yield prepared
            prepared = following
