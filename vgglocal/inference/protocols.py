"""The five test protocols as functions of images: each returns one
:class:`~vgglocal.inference.results.ImageResult` per image.

* ``cls-dense``, ``cls-multicrop``, ``cls-both`` (section 3.2, Table 5): the classification
  system's top-5 labels with their posteriors; several nets are fused (Table 6).
* ``center-crop`` (Appendix A, protocol 1): the box of the ground-truth class from the central
  crop at scale S, plus the classification of that crop.
* ``full`` (Appendix A, protocol 2): the top-5 labels, each with its merged dense box, and every
  merged box of the labels considered as a detection.

:func:`run_protocol` runs any of them by name; it is what ``vgglocal eval`` calls per chunk of
images, and what a caller of the Python API calls on its own images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vgglocal.config import (
    CLS_METHODS,
    CLS_PROTOCOLS,
    LOC_PROTOCOLS,
    PRECISIONS,
    PROTOCOLS,
    EvalConfig,
)
from vgglocal.inference.localize import (
    Candidates,
    box_candidates,
    classify,
    localize_center_crop,
    merge_candidates,
)
from vgglocal.inference.nets import EvalError, Net
from vgglocal.inference.options import InferenceOptions
from vgglocal.inference.results import ImageResult

__all__ = ["PROTOCOLS", "CLS_PROTOCOLS", "LOC_PROTOCOLS", "TOPK", "RunOptions", "classify_images", "center_crop", "center_crop_results", "full",
           "full_candidates", "full_merge", "begin_protocol", "run_protocol"]

TOPK = 5  # labels kept per image: top-1 and top-5 error (section 4), the devkit's five guesses


@dataclass(frozen=True)
class RunOptions(InferenceOptions):
    """How the protocols run (the ``eval`` config section, resolved): where and how the
    networks run (:class:`~vgglocal.inference.options.InferenceOptions`: flip, device,
    batch_size, precision, channels_last, compile, fold_bn), and what protocol 2 keeps of their output.

    Attributes:
        topk: (label, box) guesses per image in protocol 2.
        det_topk: labels per image whose merged boxes become detections (protocol 2; at least ``topk``).
        merge_threshold: greedy-merge threshold (protocol 2).
        cls_method: the classification system of protocol 2: dense | multicrop | both.
    """

    topk: int = TOPK
    det_topk: int = 0
    merge_threshold: float = 1.0
    cls_method: str = "dense"

    @classmethod
    def from_config(cls, ev: EvalConfig, device: torch.device, *, flip: bool | None = None, precision: str | None = None,
                    merge_threshold: float | None = None, cls_method: str | None = None, topk: int | None = None) -> RunOptions:
        """The options of the ``eval`` section ``ev`` on ``device``; a keyword given (not None)
        overrides its key. ``eval.topk`` is capped at :data:`TOPK` (the devkit scores five
        guesses); an explicit ``topk`` is taken as given. Raises
        :class:`~vgglocal.inference.nets.EvalError` for a negative threshold, an unknown
        precision or classification method."""
        threshold = float(ev.merge_threshold if merge_threshold is None else merge_threshold)
        if threshold < 0:
            raise EvalError(f"{'eval.' if merge_threshold is None else ''}merge_threshold {threshold:g}: must be >= 0")
        precision = ev.precision if precision is None else precision
        if precision not in PRECISIONS:
            raise EvalError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
        cls_method = ev.cls_method if cls_method is None else cls_method
        if cls_method not in CLS_METHODS:
            raise EvalError(f"cls_method {cls_method!r}: choose from {', '.join(CLS_METHODS)}")
        return cls(
            flip=ev.flip if flip is None else flip, device=device, batch_size=ev.batch_size, precision=precision,
            channels_last=ev.channels_last, compile=ev.compile, fold_bn=ev.fold_bn, topk=min(ev.topk, TOPK) if topk is None else topk,
            det_topk=ev.det_topk, merge_threshold=threshold, cls_method=cls_method,
        )


def _top(posteriors: Tensor, k: int = TOPK) -> list[tuple[Tensor, Tensor]]:
    scores, labels = posteriors.topk(min(k, posteriors.shape[1]), dim=1)
    return list(zip(labels, scores, strict=True))


def classify_images(images: Sequence[np.ndarray], nets: Sequence[Net], method: str, opts: RunOptions) -> list[ImageResult]:
    """``cls-dense`` / ``cls-multicrop`` / ``cls-both`` (``method`` dense | multicrop | both) on
    uint8 RGB ``images``: the top-5 labels of the fused posteriors."""
    post = classify(images, nets, method, opts)
    return [ImageResult(labels=lab, scores=s) for lab, s in _top(post)]


def center_crop(images: Sequence[np.ndarray], labels: Tensor, net: Net, opts: RunOptions, cls_net: Net | None = None) -> list[ImageResult]:
    """Protocol 1 on uint8 RGB ``images`` with their ground-truth classes ``labels [N]``: the box
    of that class from the central crop at ``net``'s one scale S (one guess per image), and the
    top-5 labels of the same crop (``cls_net``'s, or ``net``'s own classification head)."""
    post, boxes = localize_center_crop(images, labels, net.model, net.scales[0], opts, cls_net=cls_net.model if cls_net is not None else None)
    return center_crop_results(post, labels, boxes)


def center_crop_results(posteriors: Tensor, labels: Tensor, boxes: Tensor | None = None) -> list[ImageResult]:
    """Protocol 1's results from a centre crop per image: the top-5 labels of ``posteriors
    [N, C]`` and, when given, the one guess ``boxes [N, 4]`` of the ground-truth class ``labels
    [N]``. ``eval --protocol center-crop`` and training-time validation both make theirs here."""
    if boxes is None:
        return [ImageResult(labels=lab, scores=s) for lab, s in _top(posteriors)]
    return [ImageResult(labels=lab, scores=s, boxes=boxes[i : i + 1], box_labels=labels[i : i + 1].clone())
            for i, (lab, s) in enumerate(_top(posteriors))]


def full(images: Sequence[np.ndarray], cls_nets: Sequence[Net], loc_nets: Sequence[Net], opts: RunOptions) -> list[ImageResult]:
    """Protocol 2 on uint8 RGB ``images`` (:func:`full_candidates`, then :func:`full_merge`):
    ``opts.topk`` labels with their boxes, and the detections of ``opts.det_topk`` labels."""
    return full_merge(full_candidates(images, cls_nets, loc_nets, opts), opts)


def full_candidates(images: Sequence[np.ndarray], cls_nets: Sequence[Net], loc_nets: Sequence[Net], opts: RunOptions) -> list[Candidates]:
    """The network half of protocol 2 (:func:`vgglocal.inference.localize.box_candidates`): per
    image the labels to localise with their scored boxes. :func:`full_merge` finishes it, so a
    caller can merge one chunk on the CPU while the network runs the next."""
    _, cands = box_candidates(images, cls_nets, loc_nets, opts, labels_per_image=max(opts.topk, opts.det_topk), cls_method=opts.cls_method)
    return cands


def full_merge(cands: Sequence[Candidates], opts: RunOptions) -> list[ImageResult]:
    """The merge half of protocol 2: the greedy merge of every image's candidates."""
    return [merge_candidates(c, opts.merge_threshold, opts.topk) for c in cands]


def begin_protocol(protocol: str, images: Sequence[np.ndarray], nets: Sequence[Net], opts: RunOptions, *,
                   cls_nets: Sequence[Net] | None = None, labels: Tensor | None = None) -> Callable[[], list[ImageResult]]:
    """Run the network half of ``protocol`` on ``images`` now; return the rest as a function
    that gives the results (:func:`run_protocol`). The rest is protocol 2's greedy merge (CPU,
    compiled, releases the GIL), so ``vgglocal eval`` runs it in a thread while the network
    computes the next chunk; for the other protocols it only hands the results over."""
    if protocol in CLS_PROTOCOLS:
        results = classify_images(images, nets, protocol.removeprefix("cls-"), opts)
    elif protocol == "center-crop":
        if labels is None:
            raise ValueError("center-crop needs the ground-truth labels (protocol 1 localises the true class)")
        results = center_crop(images, labels, nets[0], opts, cls_net=cls_nets[0] if cls_nets else None)
    elif protocol == "full":
        cands = full_candidates(images, cls_nets or nets, nets, opts)
        sizes = [(int(img.shape[0]), int(img.shape[1])) for img in images]
        return lambda: _sized(full_merge(cands, opts), sizes)
    else:
        raise ValueError(f"protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
    sized = _sized(results, [(int(img.shape[0]), int(img.shape[1])) for img in images])
    return lambda: sized


def _sized(results: list[ImageResult], sizes: Sequence[tuple[int, int]]) -> list[ImageResult]:
    for res, size in zip(results, sizes, strict=True):
        res.size = size
    return results


def run_protocol(protocol: str, images: Sequence[np.ndarray], nets: Sequence[Net], opts: RunOptions, *,
                 cls_nets: Sequence[Net] | None = None, labels: Tensor | None = None) -> list[ImageResult]:
    """Run ``protocol`` (one of :data:`PROTOCOLS`) on ``images``.

    Args:
        nets: the classification nets (cls protocols, fused), the one localisation net
            (center-crop) or the localisation nets (full, the union of their boxes).
        cls_nets: the classification system of the localisation protocols; None: the
            localisation nets' own classification heads.
        labels (Tensor[N] int64): the ground-truth classes; center-crop only.
    """
    return begin_protocol(protocol, images, nets, opts, cls_nets=cls_nets, labels=labels)()
