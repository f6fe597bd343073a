"""Training and evaluation transforms that keep the network's window tied to the original image.

Training (paper section 3.1, Appendix A): isotropic rescale of the smallest side to S (fixed, or
drawn per image uniformly from the integers in [Smin, Smax]), a random ``crop x crop`` window,
a random horizontal flip, Krizhevsky's PCA colour shift with the *training set's* eigenvectors,
then mean-RGB subtraction (optionally divided by a per-channel std). Evaluation: rescale to Q,
then the central window (protocol 1, "center-crop") or the whole image.

Design (why the pieces are split this way):

* The random draws (S, window origin, flip, colour offset) are made from the image's *size*
  alone (:meth:`TrainTransform.draw`) and kept as a :class:`vgglocal.geometry.Geometry`: window
  origin in the rescaled image, rescale factor, flip. Applying them is separate: on the CPU with
  OpenCV (``cv2.resize`` bilinear, the call albumentations' ``SmallestMaxSize`` makes, then the
  crop and mirror as array views), or on the training device after a batched GPU decode
  (:mod:`vgglocal.data.device`), which computes the same bilinear samples. One draw function
  keeps both pipelines on the same windows for the same (seed, epoch, index).
* The crop leaves the loader as uint8; normalisation runs on the training device
  (:func:`normalise_batch`), so four times fewer bytes cross the loader and the host-to-device
  copy than with float32.
* Boxes do **not** go through albumentations' bbox pipeline. The
  localisation target stays unclipped (a box may extend past the window), while albumentations always
  clips boxes to the crop and drops those that fall outside it; and its ``BboxProcessor``
  (checks after every transform) costs about 0.7 ms per sample, roughly 40% of torchvision's
  whole decode + augment time for a 500x375 JPEG, which would break the loader's speed target.
  Instead the target is computed analytically from the original box and the :class:`Geometry`
  via :func:`vgglocal.geometry.encode_windows`. The tests check this geometry against albumentations'
  own bbox-aware pipeline (``A.BboxParams(format="pascal_voc")``) applied with the same draws.
* The colour shift is our own :class:`PCALighting`, not ``A.FancyPCA``: FancyPCA computes the
  principal components of *each image's* pixels and scales the noise by every pixel's deviation
  from that image's mean, whereas the paper (following Krizhevsky et al. 2012) adds one RGB
  offset per image along the eigenvectors of the *training set's* RGB covariance. Being a
  constant offset it is folded into the mean subtraction (``shift = mean - offset``).

Randomness: a transform takes a ``numpy.random.Generator`` per call (the loader derives it from
(seed, epoch, sample index)), so a given sample gets the same crop in any process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch import Tensor

from vgglocal.config import TRAIN_TASKS, ConfigError, DataConfig
from vgglocal.data.stats import resolve_stats
from vgglocal.geometry import Geometry

__all__ = [
    "Geometry",
    "Augmented",
    "PCALighting",
    "TrainTransform",
    "EvalTransform",
    "build_train_transform",
    "build_eval_transform",
    "normalization_of",
    "color_stats_of",
    "crop_target",
    "normalise_batch",
]

TASKS = TRAIN_TASKS


def crop_target(boxes: np.ndarray, box_labels: np.ndarray, label: int, geometry: Geometry) -> tuple[Tensor, int] | None:
    """The localisation target of a training window (Appendix A).

    Among the image's ground-truth boxes of class ``label`` (PCR trains the true class's
    outputs), the one with the largest intersection with the window, encoded unclipped.

    Args:
        boxes (ndarray[K, 4]): x1, y1, x2, y2 in original-image pixels.
        box_labels (ndarray[K]): class of each box.
        label: the image's class.
        geometry: the window.
    Returns:
        (Tensor[4] float32 (cx, cy, w, h)/side, index of the chosen box in ``boxes``), or None
        when the image has no box of that class.
    """
    candidates = np.flatnonzero(np.asarray(box_labels) == label)
    if candidates.size == 0:
        return None
    b = np.asarray(boxes, np.float64)[candidates]
    w = geometry.window()
    iw = np.clip(np.minimum(b[:, 2], w[2]) - np.maximum(b[:, 0], w[0]), 0, None)
    ih = np.clip(np.minimum(b[:, 3], w[3]) - np.maximum(b[:, 1], w[1]), 0, None)
    best = int(candidates[int(np.argmax(iw * ih))])  # ties: first in annotation order
    return geometry.encode(boxes[best])[0], best


# ----------------------------------------------------------------------------- colour


class PCALighting:
    """Krizhevsky's PCA colour shift with fixed (training-set) eigenvectors, section 3.1.

    For each image draws ``alpha ~ N(0, std)`` (3 values) and adds the same RGB offset
    ``eigvec @ (alpha * eigval)`` to every pixel. ``eigvec`` holds the eigenvectors as
    *columns*; ``eigval`` and the offset are in 0..255 pixel units (the convention of
    fb.resnet.torch, whose ImageNet values are the config defaults).
    """

    def __init__(self, eigval: Any, eigvec: Any, std: float):
        self.eigval = np.asarray(eigval, np.float64).reshape(3)
        self.eigvec = np.asarray(eigvec, np.float64).reshape(3, 3)
        self.std = float(std)

    def offset(self, rng: np.random.Generator) -> np.ndarray:
        """One image's RGB offset: ndarray[3] float64."""
        alpha = rng.normal(0.0, self.std, 3)
        return self.eigvec @ (alpha * self.eigval)


def _normalise(image: np.ndarray, mean: np.ndarray, std: np.ndarray, offset: np.ndarray | None) -> Tensor:
    """uint8 HWC → float32 CHW ``(x + offset - mean) / std`` in one pass (contiguous)."""
    shift = mean if offset is None else mean - offset
    chw = torch.from_numpy(image).permute(2, 0, 1)
    out = torch.empty(chw.shape, dtype=torch.float32)
    out.copy_(chw)
    out.sub_(torch.from_numpy(shift.astype(np.float32)).view(3, 1, 1))
    out.mul_(torch.from_numpy((1.0 / std).astype(np.float32)).view(3, 1, 1))
    return out


def normalise_batch(images: Tensor, shift: Tensor, std: Tensor) -> Tensor:
    """uint8 crops → network input ``(x - shift) / std``, on whatever device they are.

    Args:
        images (Tensor[N, 3, H, W] uint8): crops (any memory format; the result keeps it).
        shift (Tensor[N, 3]): per image ``mean - colour offset`` (0..255 units).
        std (Tensor[N, 3] or [3]): per-channel divisor.
    Returns:
        Tensor[N, 3, H, W] float32.
    """
    std = std.reshape(-1, 3)
    x = images.to(torch.float32)
    return x.sub_(shift.to(torch.float32)[:, :, None, None]).div_(std.to(torch.float32)[:, :, None, None])


# ----------------------------------------------------------------------------- transforms


@dataclass
class Augmented:
    """A transformed image and the window it came from.

    Attributes:
        image (Tensor[3, H, W]): training windows: the uint8 crop (``H = W = crop``), normalised on
            the training device with ``shift`` and ``std`` (4x fewer bytes through the loader and
            the host-to-device copy than float32); evaluation: the normalised float32 input.
        geometry: the window (origin, scale, flip) to encode targets / decode predictions.
        shift (Tensor[3] float32 or None): ``mean - colour offset``; the network input is
            ``(image - shift) / std`` (None: ``image`` is already normalised).
        std (Tensor[3] float32 or None): the normalisation's divisor.
    """

    image: Tensor
    geometry: Geometry
    shift: Tensor | None = None
    std: Tensor | None = None

    def normalised(self) -> Tensor:
        """The network input, float32 ``[3, H, W]``."""
        if self.shift is None:
            return self.image
        return normalise_batch(self.image[None], self.shift[None], self.std)[0]


class TrainTransform:
    """Training augmentation (section 3.1): rescale to S, random crop, flip, colour shift.

    All random draws happen in :meth:`draw`, from the image's size alone, so the same draws can
    be applied to the pixels here (OpenCV, on the CPU) or later on the training device
    (:mod:`vgglocal.data.device`, ``data.pipeline: gpu``): both pipelines see the same window of
    the same sample for a given generator. Call with an RGB ``uint8`` array ``[H, W, 3]`` and a
    ``numpy.random.Generator``.

    The draws follow albumentations' ``SmallestMaxSize`` (S uniform over the list; the sides
    ``round(side * S / min(h, w))``), ``RandomCrop`` (an integer origin uniform over the valid
    positions) and ``HorizontalFlip(p=0.5)``; the tests check the result against albumentations'
    bbox-aware pipeline applied with the same parameters.
    """

    def __init__(self, crop: int, scales: int | list[int], flip: bool, lighting: PCALighting | None,
                 mean: Any, std: Any):
        self.crop = int(crop)
        self.scales = scales
        # The largest S: an image decoded reduced to this short side loses nothing (images.decode_rgb).
        self.min_side = max(scales) if isinstance(scales, (list, tuple)) else int(scales)
        self.flip = bool(flip)
        self.lighting = lighting
        self.mean = np.asarray(mean, np.float64)
        self.std = np.asarray(std, np.float64)
        self._std = torch.from_numpy(self.std.astype(np.float32))
        choices = scales if isinstance(scales, list) else [scales]
        if min(choices) < self.crop:
            raise ValueError(f"scale {min(choices)} is below the crop {self.crop}")
        self._scale_range = (int(min(choices)), int(max(choices)))
        if list(choices) != list(range(self._scale_range[0], self._scale_range[1] + 1)):
            raise ValueError(f"scales must be one size or a consecutive range, got {scales!r}")

    def draw(self, rng: np.random.Generator, height: int, width: int) -> tuple[Geometry, np.ndarray]:
        """The random window of an image of ``height`` x ``width`` pixels.

        Returns:
            (geometry, shift): the window, and ``mean - colour offset`` (ndarray[3] float64, 0..255
            units) that the normalisation subtracts.
        """
        lo, hi = self._scale_range
        s = int(rng.integers(lo, hi + 1)) if hi > lo else lo
        scale = s / min(height, width)
        rh, rw = max(1, round(height * scale)), max(1, round(width * scale))
        y0 = int(rng.integers(0, rh - self.crop + 1))
        x0 = int(rng.integers(0, rw - self.crop + 1))
        flipped = self.flip and bool(rng.random() < 0.5)
        geometry = Geometry((float(x0), float(y0)), float(scale), self.crop, flipped, (int(rh), int(rw)))
        offset = self.lighting.offset(rng) if self.lighting is not None else None
        return geometry, self.mean if offset is None else self.mean - offset

    def apply(self, image: np.ndarray, geometry: Geometry) -> Tensor:
        """The window's pixels: uint8 ``[3, crop, crop]`` (contiguous) from an RGB ``[H, W, 3]`` image.

        ``cv2.resize`` bilinear (``INTER_LINEAR``, what albumentations' ``SmallestMaxSize`` calls),
        then the crop and the mirror as views, one copy into CHW order.
        """
        rh, rw = geometry.size
        if image.shape[:2] != (rh, rw):
            image = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_LINEAR)
        x0, y0 = int(geometry.origin[0]), int(geometry.origin[1])
        window = image[y0:y0 + self.crop, x0:x0 + self.crop]
        if geometry.flipped:
            window = window[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(window.transpose(2, 0, 1)))

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> Augmented:
        rng = rng if rng is not None else np.random.default_rng()
        geometry, shift = self.draw(rng, int(image.shape[0]), int(image.shape[1]))
        return Augmented(self.apply(image, geometry), geometry, torch.from_numpy(shift.astype(np.float32)), self._std)


class EvalTransform:
    """Evaluation: rescale the smallest side to Q, then the central ``crop`` window or the whole image.

    A window larger than the rescaled image (Q < crop) is zero-padded bottom/right *after*
    normalisation, as the model pads (padded, not rejected).
    """

    def __init__(self, scale: int, crop: int | None, mean: Any, std: Any):
        self.scale = int(scale)
        self.crop = int(crop or 0)
        # Decoded at full resolution (no libjpeg DCT scaling, images.decode_rgb): the evaluation
        # decodes every image whole (images.load_rgb), and training-time validation, which uses
        # this transform through the loader, must see the same pixels to give eval's numbers
        # (a reduced decode and a full one differ by a few grey levels after the resize).
        self.min_side = 0
        self.resize = A.SmallestMaxSize(max_size=self.scale, interpolation=cv2.INTER_LINEAR)
        self.mean = np.asarray(mean, np.float64)
        self.std = np.asarray(std, np.float64)

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> Augmented:
        h, w = image.shape[:2]
        resized = self.resize(image=image)["image"]
        rh, rw = resized.shape[:2]
        factor = self.scale / min(h, w)
        if not self.crop:
            return Augmented(_normalise(resized, self.mean, self.std, None),
                             Geometry((0.0, 0.0), factor, 0, False, (rh, rw)))
        # Same rounding as albumentations' CenterCrop: x0 = (W - crop) // 2.
        x0, y0 = max(0, (rw - self.crop) // 2), max(0, (rh - self.crop) // 2)
        window = resized[y0:y0 + self.crop, x0:x0 + self.crop]
        tensor = _normalise(window, self.mean, self.std, None)
        if tensor.shape[1:] != (self.crop, self.crop):
            tensor = torch.nn.functional.pad(tensor, (0, self.crop - tensor.shape[2], 0, self.crop - tensor.shape[1]))
        return Augmented(tensor, Geometry((float(x0), float(y0)), factor, self.crop, False, (rh, rw)))


# ----------------------------------------------------------------------------- builders


def color_stats_of(data_cfg: DataConfig) -> dict[str, list]:
    """mean, std, eigval, eigvec (0..255 units): ``data.stats`` JSON when set, else the config
    (:func:`vgglocal.data.stats.resolve_stats`; std always from ``data.std``)."""
    return resolve_stats(data_cfg)


def normalization_of(data_cfg: DataConfig) -> dict[str, list[float]]:
    """The input normalisation ``{"mean": [3], "std": [3]}`` (0..255 units) training records.

    The network sees ``(x - mean) / std``; this is what ``save_model`` stores so inference
    normalises the same way.
    """
    stats = color_stats_of(data_cfg)
    return {"mean": [float(v) for v in stats["mean"]], "std": [float(v) for v in stats["std"]]}


def build_train_transform(data_cfg: DataConfig, crop: int, task: str = "cls") -> TrainTransform:
    """The training transform for ``data.scale``/``scale_min``/``scale_max``, ``flip``, ``color_pca``.

    ``task`` ("cls" or "loc") is checked but does not change the augmentation: Appendix A trains
    the localisation net "like classification".
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
    if data_cfg.scale_max:
        scales: int | list[int] = list(range(data_cfg.scale_min, data_cfg.scale_max + 1))
        low, key = data_cfg.scale_min, "data.scale_min"
    else:
        scales = low = data_cfg.scale
        key = "data.scale"
    if low < crop:
        raise ConfigError(f"{key}: {low} is below the crop {crop}")
    stats = color_stats_of(data_cfg)
    lighting = None
    if data_cfg.color_pca and data_cfg.pca_std > 0:
        lighting = PCALighting(stats["eigval"], stats["eigvec"], data_cfg.pca_std)
    return TrainTransform(crop, scales, data_cfg.flip, lighting, stats["mean"], stats["std"])


def build_eval_transform(data_cfg: DataConfig, crop: int | None, scale: int) -> EvalTransform:
    """Rescale to ``scale`` (Q) then the central ``crop`` window; ``crop`` None or 0: whole image."""
    if scale <= 0:
        raise ConfigError(f"eval scale {scale} must be positive")
    norm = normalization_of(data_cfg)
    return EvalTransform(scale, crop, norm["mean"], norm["std"])
