"""``vgglocal.Predictor``: a trained localiser (and optionally a classifier) ready to use on
images, as Detectron2's ``DefaultPredictor`` or MMDetection's ``DetInferencer`` are.

It runs protocol 2 ("full", Appendix A) exactly as ``vgglocal eval --protocol full`` does (the
same :func:`vgglocal.inference.protocols.run_protocol`), on images given as files, PIL images,
``[H, W, 3]`` uint8 arrays or uint8 tensors, and returns per image the top-5 labels with their
ids, readable names and scores, each label's box, and the image's scored detections, all in
original-image pixels::

    import vgglocal
    predictor = vgglocal.Predictor("runs/loc/model.pt", cls_checkpoint="runs/cls/model.pt")
    for p in predictor.predict(["a.jpg", "b.jpg"], batch_size=16):
        print(p.names[0], p.scores[0].item(), p.boxes[0].tolist())   # best label, its box x1y1x2y2

How the nets run (batch size, flip, precision, channels_last, compile, merge threshold, ...)
comes from an ``eval`` config section, ``eval_config=load_config(path).eval`` (its defaults
without one), with the keywords given over it: the options ``vgglocal eval`` builds
(:meth:`~vgglocal.inference.protocols.RunOptions.from_config`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vgglocal.config import EvalConfig
from vgglocal.data.images import load_rgb
from vgglocal.data.records import ClassList
from vgglocal.errors import UserError
from vgglocal.inference.nets import (
    EvalError,
    Net,
    check_class_heads,
    load_nets,
    parse_scales,
    speed_up,
)
from vgglocal.inference.protocols import RunOptions, run_protocol
from vgglocal.inference.results import Detections, ImageResult
from vgglocal.runtime import resolve_device

__all__ = ["Predictor", "Prediction", "ImageInput", "as_rgb"]

ImageInput = str | os.PathLike | Image.Image | np.ndarray | Tensor


def as_rgb(image: ImageInput) -> np.ndarray:
    """Any accepted image → ``ndarray[H, W, 3]`` uint8 RGB: a file path (decoded by
    :func:`vgglocal.data.images.load_rgb`), a PIL image, an ``[H, W, 3]`` / ``[H, W]`` uint8
    array, or a uint8 tensor ``[3, H, W]`` (torchvision's layout) or ``[H, W, 3]``."""
    if isinstance(image, (str, os.PathLike)):
        return load_rgb(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB")).copy()
    if isinstance(image, Tensor):
        t = image.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3) and t.shape[-1] not in (1, 3):
            t = t.permute(1, 2, 0)
        a = t.numpy()
    elif isinstance(image, np.ndarray):
        a = image
    else:
        raise UserError(f"unsupported image type {type(image).__name__}: give a path, a PIL image, or a uint8 array or tensor")
    if a.dtype != np.uint8:
        raise UserError(f"image of dtype {a.dtype}: expected uint8 pixels 0..255")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise UserError(f"image of shape {tuple(a.shape)}: expected [H, W, 3] (or [3, H, W] for a tensor)")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a)


@dataclass
class Prediction:
    """One image's prediction, in original-image pixels.

    Attributes:
        labels (Tensor[K] int64): class indices, best first (K = 5, or fewer classes).
        scores (Tensor[K] float32): their posteriors under the classification system.
        boxes (Tensor[K, 4] float32): each label's box, x1, y1, x2, y2, clipped to the image.
        ids: the labels' class ids (ILSVRC wnids; VOC/COCO names).
        names: the labels' readable names ("tench, Tinca tinca").
        detections: every merged box of the labels, scored (boxes [M, 4], scores [M], labels [M]).
        detection_ids, detection_names: ids and names of the detections' labels.
        size: (height, width) of the image.
    """

    labels: Tensor
    scores: Tensor
    boxes: Tensor
    ids: list[str]
    names: list[str]
    detections: Detections
    detection_ids: list[str] = field(default_factory=list)
    detection_names: list[str] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)

    def to_dict(self, score_floor: float = 0.0) -> dict[str, Any]:
        """JSON-able: ``{"height", "width", "predictions": [{"label", "name", "index", "score",
        "box"}], "detections": [...]}``; detections scoring below ``score_floor`` left out."""

        def rows(labels, ids, names, scores, boxes, floor):
            return [{"label": i, "name": n, "index": int(lab), "score": round(float(s), 6), "box": [round(float(v), 2) for v in b]}
                    for lab, i, n, s, b in zip(labels.tolist(), ids, names, scores.tolist(), boxes.tolist(), strict=True) if s >= floor]

        d = self.detections
        return {
            "height": int(self.size[0]),
            "width": int(self.size[1]),
            "predictions": rows(self.labels, self.ids, self.names, self.scores, self.boxes, -1.0),
            "detections": rows(d.labels, self.detection_ids, self.detection_names, d.scores, d.boxes, score_floor),
        }


def _paths(value: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [str(value)]
    return [str(v) for v in value]


Scales = int | str | Sequence[int] | Sequence[str | Sequence[int]] | None


def _scales(value: Scales) -> list[tuple[int, ...]]:
    """``None`` (each checkpoint's training scale, section 4.2), ``384``, ``"352,384"`` or
    ``(352, 384)`` for every net, or a list of those, one per checkpoint."""
    if value is None:
        return []
    if isinstance(value, str):
        return [parse_scales(value)]
    if isinstance(value, int):
        return [(value,)]
    items = list(value)
    if items and not isinstance(items[0], int):  # one entry per checkpoint
        return [s for v in items for s in _scales(v)]  # type: ignore[arg-type]
    return [tuple(int(q) for q in items)] if items else []


class Predictor:
    """Protocol 2 ("full") of localisation nets on images, ready to use (``eval()`` mode).

    Args:
        loc_checkpoint: localisation checkpoint (``train-loc``'s model.pt), or a list of them
            (the union of their boxes is merged, Appendix A).
        cls_checkpoint: classification checkpoint(s) ranking the labels and weighting the
            boxes (Appendix A uses the best classification net); None: the localisation nets'
            own classification heads (exact for ``fc`` fine-tuning; with ``all`` they are
            stale, so pass the classifier; a warning says so).
        scales: test scales Q of the localisation nets: ``None`` (from each checkpoint's
            training scale: S-32, S, S+32, or Smin, mid, Smax), an int, ``"352,384"`` or a
            tuple for all, or a list with one of those per checkpoint.
        device: ``"cpu"``, ``"cuda"``, a ``torch.device``, or None (``eval_config.device``;
            ``auto``: CUDA when available).
        precision: ``"fp32"`` or ``"bf16"`` (autocast); None: ``eval.precision``.
        merge_threshold: greedy-merge threshold; None: ``eval.merge_threshold``.
        cls_scales: test scales of the classification nets (default as for ``scales``).
        flip: also the mirror images (section 3.2); None: ``eval.flip``.
        cls_method: ranking of the labels: ``dense``, ``multicrop`` or ``both`` (Table 5);
            None: ``eval.cls_method``.
        topk: labels (with boxes) per image; None: ``eval.topk`` (at most 5).
        eval_config: the ``eval`` config section the other settings come from (None: its
            defaults): ``batch_size`` (images per :meth:`predict` chunk), ``channels_last`` and
            ``compile`` (applied to the loaded nets), ``det_topk`` (labels whose merged boxes
            become detections), and the defaults of the keywords above. The resolved settings
            are :attr:`options` (:meth:`RunOptions.from_config
            <vgglocal.inference.protocols.RunOptions.from_config>`, as ``vgglocal eval`` builds
            them).
    """

    def __init__(
        self,
        loc_checkpoint: str | os.PathLike | Sequence[str | os.PathLike],
        cls_checkpoint: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        scales: Scales = None,
        device: str | torch.device | None = None,
        precision: str | None = None,
        merge_threshold: float | None = None,
        *,
        cls_scales: Scales = None,
        flip: bool | None = None,
        cls_method: str | None = None,
        topk: int | None = None,
        eval_config: EvalConfig | None = None,
    ) -> None:
        ev = eval_config if eval_config is not None else EvalConfig()
        if isinstance(device, torch.device):
            self.device = device
        else:
            self.device = resolve_device(device or ev.device, key="Predictor device" if device else "eval.device")
        # checked before any checkpoint is read
        options = RunOptions.from_config(ev, self.device, flip=flip, precision=precision, merge_threshold=merge_threshold,
                                         cls_method=cls_method, topk=topk)
        locs = _paths(loc_checkpoint)
        if not locs:
            raise UserError("Predictor: give at least one localisation checkpoint")
        self.nets: list[Net] = load_nets(locs, _scales(scales), (), "full", None, True, self.device)
        first = self.nets[0].model
        ids = list(first.classes) if first.classes is not None else [str(i) for i in range(first.num_classes)]
        names = list(getattr(first, "class_names", None) or ids)
        classes = ClassList(ids=ids, names=names)
        for net in self.nets[1:]:  # the union of boxes needs the same classes in the same order
            if net.model.num_classes != len(ids) or (net.model.classes is not None and list(net.model.classes) != ids):
                raise UserError(f"{net.name}: its classes differ from those of {self.nets[0].name}")
        cls_paths = _paths(cls_checkpoint)
        self.cls_nets: list[Net] | None = (
            load_nets(cls_paths, _scales(cls_scales), (), "cls-dense", classes, False, self.device) if cls_paths else None
        )
        if self.cls_nets is None:
            # The CLI refuses this case; the Python API ranks with the stale head when asked to,
            # but says so (an all-layers localiser's class head no longer fits its features).
            try:
                check_class_heads(self.nets)
            except EvalError as e:
                warnings.warn(f"{e}; ranking labels with it anyway", stacklevel=2)
        self.classes = classes
        self.options = options
        for n in {id(x): x for x in self.nets + (self.cls_nets or [])}.values():
            speed_up(n.model, options)

    @property
    def scales(self) -> list[tuple[int, ...]]:
        """The test scales of each localisation net."""
        return [n.scales for n in self.nets]

    def _prediction(self, res: ImageResult, size: tuple[int, int]) -> Prediction:
        ids, names = self.classes.ids, self.classes.names
        labels = res.labels
        boxes = res.boxes if res.boxes is not None else torch.zeros(0, 4)
        det = res.detections if res.detections is not None else Detections.empty()
        return Prediction(
            labels=labels, scores=res.scores, boxes=boxes,
            ids=[ids[i] for i in labels.tolist()], names=[names[i] for i in labels.tolist()],
            detections=det, detection_ids=[ids[i] for i in det.labels.tolist()],
            detection_names=[names[i] for i in det.labels.tolist()], size=size,
        )

    def prediction(self, res: ImageResult) -> Prediction:
        """One image's result of :meth:`predict_results` with its class ids and names."""
        return self._prediction(res, res.size)

    def predict_results(self, images: Sequence[np.ndarray]) -> list[ImageResult]:
        """One call of protocol 2 on decoded ``[H, W, 3]`` uint8 RGB images (one chunk): the
        protocol's results (``size`` set), as ``vgglocal eval`` gets them."""
        if not images:
            return []
        return run_protocol("full", list(images), self.nets, self.options, cls_nets=self.cls_nets)

    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """One call of protocol 2 on decoded ``[H, W, 3]`` uint8 RGB images (one chunk)."""
        return [self.prediction(r) for r in self.predict_results(images)]

    def predict(self, images: ImageInput | Iterable[ImageInput], batch_size: int | None = None) -> list[Prediction]:
        """Predict ``images`` (one, or an iterable of paths, PIL images, uint8 arrays or
        tensors), ``batch_size`` at a time (default ``options.batch_size``: the ``eval_config``'s
        ``eval.batch_size``); one :class:`Prediction` per image, in order. An unreadable file
        raises its one-line error."""
        single = isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, Tensor))
        items = [images] if single else list(images)  # type: ignore[arg-type]
        size = int(self.options.batch_size if batch_size is None else batch_size)
        if size < 1:
            raise UserError(f"batch_size {size}: must be at least 1")
        out: list[Prediction] = []
        for lo in range(0, len(items), size):
            out += self.predict_arrays([as_rgb(x) for x in items[lo : lo + size]])
        return out

    def __repr__(self) -> str:
        nets = ", ".join(f"{Path(n.name).name} @ {','.join(map(str, n.scales))}" for n in self.nets)
        return f"Predictor({nets}; {len(self.classes)} classes on {self.device})"
