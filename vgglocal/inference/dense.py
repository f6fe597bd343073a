"""Dense (fully-convolutional) application of a network to whole images at several scales.

Section 3.2: rescale the image isotropically so its smallest side is Q, apply the network with
its FC layers as convolutions to the whole uncropped image, and obtain a spatial map of class
scores (and, for a localisation net, of box predictions: Appendix A, "full" protocol).

Geometry (section 3.2; :mod:`vgglocal.geometry`): after five pools the stride is 32, so map
location (i, j) at scale Q sees the window with top-left corner (32 j, 32 i) in the rescaled
image and side ``crop``. A box prediction decodes to original-image pixels through that window
(:func:`vgglocal.geometry.decode_windows`: add the window origin, multiply the normalised
sizes by the crop, divide by the rescale factor). Location (i, j) of the mirrored image is the
mirrored window at (W - 32 j - crop, 32 i) of the image itself, decoded with the one flip
convention of :mod:`vgglocal.geometry`. An image whose rescaled side is below the crop is
zero-padded by the model (one window), not rejected.

Rescaling uses the evaluation transform of the data pipeline
(:class:`vgglocal.data.transforms.EvalTransform`: albumentations ``SmallestMaxSize``, cv2
bilinear on uint8), the same resampling the networks were trained with; the rescale factor is
``Q / min(h, w)`` as in training targets.

On a GPU each image is uploaded once as uint8 and rescaled there (:func:`rescale_on_device`,
the same bilinear mapping), so the host only decodes (in loader workers) and the dense engine
is bound by the network, not by the resize.

Batching: images of one chunk are rescaled, grouped by rescaled size, and each group runs in
batches (with its mirror images in the same batch). Padding images of different sizes into
one batch would change the border activations (ReLU of the bias in the padding), so groups
keep the result exactly that of one image at a time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vgglocal.data.transforms import EvalTransform
from vgglocal.geometry import decode_windows, window_origins
from vgglocal.inference.options import InferenceOptions
from vgglocal.models.vgg import STRIDE, VGG

__all__ = [
    "ScaleMaps",
    "rescale",
    "rescale_on_device",
    "decode_box_map",
    "dense_maps",
    "DenseRun",
    "dense_maps_of",
    "dense_posteriors",
    "align_locations",
]


@dataclass
class ScaleMaps:
    """One network applied densely to one image at one scale Q.

    Attributes:
        scale: Q, the rescaled smallest side.
        factor: rescale factor original → rescaled (``Q / min(h, w)``).
        size: (height, width) of the rescaled image.
        crop: the network's window side (its training crop).
        scores (Tensor[F, C, h, w] float32): class score maps (logits); F = 1, or 2 with the
            mirrored image second.
        boxes (Tensor[F, 4 or 4C, h, w] float32 or None): raw box parameters (cx, cy, w, h)/crop
            per location, SCR or PCR; None without a box head or when not asked for.
    """

    scale: int
    factor: float
    size: tuple[int, int]
    crop: int
    scores: Tensor
    boxes: Tensor | None

    @property
    def flips(self) -> int:
        return int(self.scores.shape[0])


def rescale(image: np.ndarray, scale: int, normalization: dict[str, Sequence[float]]) -> tuple[Tensor, float, tuple[int, int]]:
    """uint8 ``image [H, W, 3]`` → (normalised ``Tensor[3, h, w]``, factor, (h, w)) with the
    smallest side rescaled to ``scale`` (the data pipeline's evaluation resize)."""
    out = EvalTransform(scale, None, normalization["mean"], normalization["std"])(image)
    return out.image, float(out.geometry.scale), tuple(out.geometry.size)  # type: ignore[return-value]


def rescale_on_device(image: Tensor, scale: int, normalization: dict[str, Sequence[float]]) -> tuple[Tensor, float, tuple[int, int]]:
    """:func:`rescale` for a uint8 ``image [3, H, W]`` already on the device (GPU evaluation).

    ``F.interpolate(mode="bilinear", align_corners=False)`` samples the source at ``(d + 0.5) *
    H / h - 0.5``, clamped at the borders: OpenCV's ``INTER_LINEAR`` mapping, without its
    fixed-point rounding (values agree within about one grey level). Same size rounding and
    rescale factor as :func:`rescale`. Returns (normalised ``Tensor[3, h, w]`` float32, factor, (h, w)).
    """
    h, w = int(image.shape[-2]), int(image.shape[-1])
    factor = scale / min(h, w)
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    x = image[None].to(torch.float32)
    if size != (h, w):
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    mean, std = _norm_tensors(normalization, x.device)
    return x.sub_(mean).div_(std)[0], float(factor), size


def _norm_tensors(normalization: dict[str, Sequence[float] | Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """(mean, std) as float32 ``Tensor[1, 3, 1, 1]`` on ``device``; tensors already there are
    used as they are (:func:`dense_maps` builds them once per call: a new tensor on a GPU is a
    pageable host-to-device copy, which waits for the device)."""
    out = []
    for key in ("mean", "std"):
        v = normalization[key]
        if not (isinstance(v, Tensor) and v.device == device):
            v = torch.tensor(v, dtype=torch.float32).to(device)
        out.append(v.view(1, 3, 1, 1))
    return out[0], out[1]


def _to_host(t: Tensor) -> Tensor:
    """``t`` as float32 on the host. From CUDA: a non-blocking copy into pinned memory, valid once
    the current stream has been synchronised (:func:`dense_maps` does so once, at its end), so
    that each size group does not wait for its forward pass before the next is queued."""
    t = t.float()
    if t.device.type != "cuda":
        return t.cpu()
    return torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)


def decode_box_map(params: Tensor, factor: float, crop: int, flipped: bool = False, width: int | None = None) -> Tensor:
    """Box-parameter maps → boxes in original-image pixels (:func:`vgglocal.geometry.decode_windows`
    at every location's window).

    Args:
        params (Tensor[..., 4, h, w]): (cx, cy, w, h)/crop at each location.
        factor: rescale factor original → rescaled.
        crop: window side in rescaled pixels.
        flipped: the maps come from the mirrored rescaled image.
        width: the rescaled image's width (needed when ``flipped``).

    Returns:
        Tensor[..., h * w, 4]: x1, y1, x2, y2 in original pixels, location-major (row-major).
    """
    if flipped and width is None:
        raise ValueError("decode_box_map: the rescaled width is needed to place mirrored windows")
    h, w = params.shape[-2:]
    p = params.float().flatten(-2).transpose(-1, -2)  # [..., h*w, 4]
    origins = window_origins(h, w, STRIDE, side=crop, mirrored_width=width if flipped else None, device=p.device)
    return decode_windows(p, origins, factor, float(crop), flipped)


def align_locations(target_hw: tuple[int, int], target_crop: int, source_hw: tuple[int, int], source_crop: int) -> Tensor:
    """For each location of a ``target`` map, the index (row-major) of the ``source`` map
    location whose window has the same centre, rounded (halves up) and clamped to the source map.

    Used to weight a localisation net's boxes by a classification net with a different crop
    at the same scale: both windows start on the same 32-pixel grid, so the centres differ by
    ``(target_crop - source_crop) / 2`` pixels, i.e. a shift of that many strides / 32.
    Identity when the crops are equal. ``Tensor[th * tw]`` int64.
    """
    shift = (target_crop - source_crop) / (2 * STRIDE)
    th, tw = target_hw
    sh, sw = source_hw
    # floor(x + 0.5): half-strides round up, the same way at every location.
    i = (torch.arange(th, dtype=torch.float64) + shift + 0.5).floor().clamp(0, sh - 1).long()
    j = (torch.arange(tw, dtype=torch.float64) + shift + 0.5).floor().clamp(0, sw - 1).long()
    return (i[:, None] * sw + j[None, :]).reshape(-1)


@torch.no_grad()
def dense_maps(
    model: VGG,
    images: Sequence[np.ndarray],
    scales: Sequence[int],
    opts: InferenceOptions | None = None,
    *,
    boxes: bool = True,
    normalization: dict[str, Sequence[float]] | None = None,
    resize_on_device: bool | None = None,
) -> list[list[ScaleMaps]]:
    """Apply ``model`` densely to every image at every scale (and to its mirror image).

    Args:
        model: a :class:`VGG` in eval mode, already on ``device``.
        images: uint8 ``[H, W, 3]`` RGB arrays (:func:`vgglocal.data.images.load_rgb`).
        scales: the Q values.
        opts: flip (the mirrored image too: F = 2 in the results), device, batch_size (images
            per forward pass, mirrors in the same pass), precision (maps come back in float32).
        boxes: keep the box maps (when the model has a box head).
        normalization: ``{"mean", "std"}`` (0..255 units); default: ``model.normalization``.
        resize_on_device: upload each uint8 image once (pinned memory) and rescale it on the
            device (:func:`rescale_on_device`) instead of with OpenCV on the host; default: on
            CUDA, where the host-side resize and normalisation would otherwise bound the rate.

    Returns:
        ``result[image][scale]``: :class:`ScaleMaps`, scales in the order given.
    """
    return dense_maps_of([DenseRun(model, tuple(scales), boxes, normalization)], images, opts,
                         resize_on_device=resize_on_device)[0]


@dataclass(frozen=True)
class DenseRun:
    """One network of :func:`dense_maps_of`: the net, its scales Q, whether to keep its box maps,
    and its input normalisation (None: ``model.normalization``)."""

    model: VGG
    scales: tuple[int, ...]
    boxes: bool = True
    normalization: dict[str, Sequence[float]] | None = None


@torch.no_grad()
def dense_maps_of(runs: Sequence[DenseRun], images: Sequence[np.ndarray], opts: InferenceOptions | None = None, *,
                  resize_on_device: bool | None = None) -> list[list[list[ScaleMaps]]]:
    """:func:`dense_maps` of several networks over the same images, each image rescaled once per
    scale and normalisation for all of them: protocol 2's classification and localisation nets
    share their inputs (both run at the localisation scales), so the resize and normalisation
    are paid once, not once per net. Scale by scale, so that only one scale's rescaled images
    are held at a time. Returns ``result[run][image][scale]``, scales in each run's order."""
    opts = opts or InferenceOptions()
    device = opts.device
    on_device = device.type == "cuda" if resize_on_device is None else resize_on_device
    norms = [r.normalization or getattr(r.model, "normalization", None) or {"mean": [0.0] * 3, "std": [1.0] * 3}
             for r in runs]
    keys = [(tuple(float(v) for v in n["mean"]), tuple(float(v) for v in n["std"])) for n in norms]
    if on_device:
        on = {k: dict(zip(("mean", "std"), _norm_tensors(n, device), strict=True)) for k, n in zip(keys, norms, strict=True)}
        norms = [on[k] for k in keys]
    uploaded = _upload(images, device) if on_device else []
    out: list[list[list[ScaleMaps | None]]] = [[[None] * len(r.scales) for _ in images] for r in runs]
    for q in dict.fromkeys(q for r in runs for q in r.scales):  # every scale once, in first-seen order
        rescaled: dict[tuple, list[tuple[Tensor, float, tuple[int, int]]]] = {}
        for ri, run in enumerate(runs):
            if q not in run.scales:
                continue
            key, norm = keys[ri], norms[ri]
            if key not in rescaled:
                rescaled[key] = ([rescale_on_device(u, q, norm) for u in uploaded] if on_device
                                 else [rescale(img, q, norm) for img in images])
            slots = [i for i, v in enumerate(run.scales) if v == q]
            for k, maps in _run_scale(run, rescaled[key], int(q), opts):
                for si in slots:
                    out[ri][k][si] = maps
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()  # the pinned result copies (_to_host)
    return out  # type: ignore[return-value]


def _upload(images: Sequence[np.ndarray], device: torch.device) -> list[Tensor]:
    """Each uint8 image on ``device`` as ``[3, H, W]`` (through pinned memory on CUDA)."""
    uploaded = []
    for img in images:
        u = torch.from_numpy(np.ascontiguousarray(img))
        if device.type == "cuda":
            u = u.pin_memory()
        uploaded.append(u.to(device, non_blocking=True).permute(2, 0, 1))
    return uploaded


def _run_scale(run: DenseRun, rescaled: Sequence[tuple[Tensor, float, tuple[int, int]]], q: int,
               opts: InferenceOptions) -> list[tuple[int, ScaleMaps]]:
    """One net over one scale's rescaled images: grouped by rescaled size, each group in
    batches with its mirror images. Returns (image index, maps) pairs."""
    device, flip, batch_size, model = opts.device, opts.flip, opts.batch_size, run.model
    want_boxes = run.boxes and model.box_head is not None
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for idx, (_, _, size) in enumerate(rescaled):
        groups[size].append(idx)
    batches = [(size, members[lo : lo + batch_size]) for size, members in groups.items()
               for lo in range(0, len(members), batch_size)]

    def inputs(chunk: list[int]) -> Tensor:
        x = torch.stack([rescaled[k][0] for k in chunk])
        if device.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory()  # an asynchronous copy, overlapping the previous group's forward
        x = x.to(device, non_blocking=True)
        return torch.cat([x, x.flip(-1)]) if flip else x

    def to_host(maps: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        return _to_host(maps["scores"]), _to_host(maps["boxes"]) if want_boxes else None

    with opts.autocast():
        if device.type == "cpu" and hasattr(model, "maps_batched"):
            # The FC heads over the locations of every size group at once (VGG.maps_batched):
            # on the CPU each group's few locations leave a head bound by reading its weights.
            results = [to_host(m) for m in model.maps_batched(inputs(chunk) for _, chunk in batches)]
        else:
            # On a GPU each group is queued as it comes, its copies overlapping the next forward.
            results = [to_host(model.maps(inputs(chunk))) for _, chunk in batches]
    out = []
    for (size, chunk), (scores, box_maps) in zip(batches, results, strict=True):
        n = len(chunk)
        for r, k in enumerate(chunk):
            rows = [r, r + n] if flip else [r]
            out.append((k, ScaleMaps(scale=q, factor=rescaled[k][1], size=size, crop=model.crop, scores=scores[rows],
                                     boxes=box_maps[rows] if box_maps is not None else None)))
    return out


def dense_posteriors(maps: Sequence[ScaleMaps]) -> Tensor:
    """Class posteriors of one image from its dense maps: ``Tensor[C]``.

    Section 3.2: the class score map is spatially averaged (sum-pooled) into one vector of
    class scores per image; its soft-max is the image's posterior; the posteriors of the image
    and its mirror (and of every scale, section 4.2) are averaged. We average the scores
    (logits) over space *before* the soft-max, as the paper's sum-pooling of the score map
    does, rather than averaging per-location posteriors.
    """
    probs = [m.scores.float().mean(dim=(-2, -1)).softmax(dim=-1) for m in maps]  # [F, C] each
    return torch.cat(probs).mean(dim=0)
