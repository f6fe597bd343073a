"""Classification systems and the two localisation protocols (section 3.2, Appendix A).

* :func:`classify` — dense, multi-crop or both (section 4.3), averaged over scales and over
  several networks (fusion, section 4.4): image posteriors ``[N, C]``.
* :func:`localize_center_crop` — protocol 1: rescale to S, the central crop, the box of the
  ground-truth class.
* :func:`box_candidates` then :func:`merge_candidates` — protocol 2: the top-5 labels of the
  classification system; for each, every box the localisation net(s) predict for it at every
  location, scale and mirror (the union over nets), greedily merged
  (:func:`vgglocal.inference.merge.greedy_merge`), each box weighted by the classification
  net's soft-max probability of the label at the window that predicted it; the label's box is
  the heaviest merged box. :func:`vgglocal.inference.protocols.run_protocol` runs both.

Decisions the paper leaves open, written down here:

* The weight of a box is the posterior of the label at the *same window* in the dense score
  map of each classification net at the same scale and mirror, averaged over classification
  nets. When a classification net has another crop than the localisation net, its map has
  another size; a localisation window is matched to the classification window with the same
  centre (:func:`vgglocal.inference.dense.align_locations`), clamped to the map.
* Detections (COCO results) are every merged box of each label considered; a detection's
  score is the label's image posterior times the box's share of the label's total weight
  (merged weight / sum of all weights of that label's boxes). The share alone would rank a
  box in an image without the object as high as one in an image with it; the posterior alone
  would give every merged box of a label the same score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vgglocal.boxes import clip_boxes, has_area
from vgglocal.config import CLS_METHODS
from vgglocal.data.transforms import EvalTransform
from vgglocal.geometry import decode_windows
from vgglocal.inference.dense import (
    DenseRun,
    ScaleMaps,
    align_locations,
    decode_box_map,
    dense_maps,
    dense_maps_of,
    dense_posteriors,
)
from vgglocal.inference.merge import greedy_merge
from vgglocal.inference.multicrop import multicrop_posteriors
from vgglocal.inference.nets import Net
from vgglocal.inference.options import InferenceOptions
from vgglocal.inference.results import Detections, ImageResult
from vgglocal.models.heads import select_class_boxes
from vgglocal.models.vgg import VGG

__all__ = ["Candidates", "classify", "box_candidates", "merge_candidates", "localize_center_crop", "center_crop_boxes", "METHODS"]

METHODS = CLS_METHODS
_MIN_WEIGHT = 1e-30  # soft-max underflow would make a weight 0; the merge needs positive ones


def classify(
    images: Sequence[np.ndarray],
    nets: Sequence[Net],
    method: str = "dense",
    opts: InferenceOptions | None = None,
    *,
    maps: dict[int, list[list[ScaleMaps]]] | None = None,
) -> Tensor:
    """Image posteriors ``Tensor[N, C]`` of a classification system: each net at its scales,
    ``dense`` (:func:`vgglocal.inference.dense.dense_posteriors`), ``multicrop`` or ``both``
    (the average of the two, Table 5), then the average over nets (fusion, Table 6).

    ``maps`` (net position → dense maps at that net's scales) reuses dense maps already computed.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r}: choose from {', '.join(METHODS)}")
    opts = opts or InferenceOptions()
    total = None
    for k, net in enumerate(nets):
        parts = []
        if method in ("dense", "both"):
            m = maps[k] if maps is not None and k in maps else dense_maps(net.model, images, net.scales, opts, boxes=False)
            parts.append(torch.stack([dense_posteriors(per_image[: len(net.scales)]) for per_image in m]))
        if method in ("multicrop", "both"):
            parts.append(multicrop_posteriors(net.model, images, net.scales, opts))
        p = torch.stack(parts).mean(dim=0)
        total = p if total is None else total + p
    if total is None:
        raise ValueError("classify: no networks")
    return total / len(nets)


def _label_weights(cls_maps: Sequence[ScaleMaps], labels: Tensor, target: ScaleMaps) -> Tensor:
    """Soft-max probability of ``labels [L]`` at each window of ``target``'s map, averaged over
    the classification nets' maps at the same scale: ``Tensor[F, L, h * w]``."""
    th, tw = target.scores.shape[-2:]
    acc = None
    for m in cls_maps:
        probs = m.scores.float().softmax(dim=1)[:, labels]  # [F, L, hc, wc]
        hc, wc = probs.shape[-2:]
        idx = align_locations((th, tw), target.crop, (hc, wc), m.crop)
        w = probs.flatten(-2)[..., idx]  # [F, L, h*w]
        acc = w if acc is None else acc + w
    return acc / len(cls_maps)  # type: ignore[operator]


@dataclass
class Candidates:
    """Every box predicted for an image's labels, before the merge.

    Attributes:
        labels (Tensor[L] int64): labels considered, best first (posterior order).
        scores (Tensor[L]): their image posteriors.
        boxes (Tensor[L, B, 4]): each label's box at every window, scale, mirror and net
            (x1y1x2y2 original pixels).
        weights (Tensor[L, B] float64): the classification posterior of the label at the
            window that predicted each box.
        size: (height, width) of the image.
    """

    labels: Tensor
    scores: Tensor
    boxes: Tensor
    weights: Tensor
    size: tuple[int, int]


def box_candidates(
    images: Sequence[np.ndarray],
    cls_nets: Sequence[Net],
    loc_nets: Sequence[Net],
    opts: InferenceOptions | None = None,
    *,
    labels_per_image: int = 5,
    cls_method: str = "dense",
) -> tuple[Tensor, list[Candidates]]:
    """The dense half of protocol 2: posteriors ``Tensor[N, C]`` and, per image, the boxes and
    weights of its ``labels_per_image`` most probable labels (module doc).

    Args:
        images: uint8 RGB arrays.
        cls_nets: the classification system (a localisation net may serve as its own, through
            its classification head: pass the same :class:`Net` object in both lists).
        loc_nets: localisation nets (box heads), each with its scales.
        cls_method: how the classification system ranks labels (dense, multicrop, both).
    """
    opts = opts or InferenceOptions()
    loc_scales = sorted({q for n in loc_nets for q in n.scales})
    # Classification nets run at their own scales (the posteriors) and at the localisation
    # scales (the box weights); a net that is also a localisation net keeps its box maps.
    # Every net in one pass over the scales, so each image is rescaled once per scale for all of them.
    runs = [DenseRun(net.model, tuple(net.scales) + tuple(q for q in loc_scales if q not in net.scales),
                     boxes=any(net is ln for ln in loc_nets)) for net in cls_nets]
    own = [k for k, net in enumerate(loc_nets) if not any(cn is net for cn in cls_nets)]
    runs += [DenseRun(loc_nets[k].model, tuple(loc_nets[k].scales), boxes=True) for k in own]
    maps = dense_maps_of(runs, images, opts)
    cls_maps: dict[int, list[list[ScaleMaps]]] = dict(enumerate(maps[: len(cls_nets)]))
    loc_maps: dict[int, list[list[ScaleMaps]]] = dict(zip(own, maps[len(cls_nets) :], strict=True))
    for k, net in enumerate(loc_nets):
        if k not in loc_maps:
            loc_maps[k] = cls_maps[next(c for c, cn in enumerate(cls_nets) if cn is net)]
    posteriors = classify(images, cls_nets, cls_method, opts, maps=cls_maps)
    top_p, top_l = posteriors.topk(min(labels_per_image, posteriors.shape[1]), dim=1)
    out = []
    for i in range(len(images)):
        labels = top_l[i]
        boxes_all, weights_all = [], []
        for k, net in enumerate(loc_nets):
            for q in net.scales:
                target = next(m for m in loc_maps[k][i] if m.scale == q)
                if target.boxes is None:
                    raise ValueError(f"localisation net {net.name or k} has no box head")
                cls_at_q = [next(m for m in cls_maps[c][i] if m.scale == q) for c in range(len(cls_nets))]
                params = select_class_boxes(target.boxes, labels.expand(target.flips, -1))  # [F, L, 4, h, w]
                weights = _label_weights(cls_at_q, labels, target)  # [F, L, h*w]
                for f in range(target.flips):
                    boxes_all.append(decode_box_map(params[f], target.factor, target.crop, flipped=f == 1, width=target.size[1]))
                    weights_all.append(weights[f])
        out.append(
            Candidates(
                labels=labels.clone(),
                scores=top_p[i].clone(),
                boxes=torch.cat(boxes_all, dim=1),  # [L, B, 4]
                weights=torch.cat(weights_all, dim=1).double().clamp(min=_MIN_WEIGHT),  # [L, B]
                size=tuple(images[i].shape[:2]),  # type: ignore[arg-type]
            )
        )
    return posteriors, out


def merge_candidates(cand: Candidates, threshold: float, topk: int = 5) -> ImageResult:
    """The merge half of protocol 2: greedy-merge each label's boxes; the label's box is the
    heaviest merged box; every merged box (clipped to the image) becomes a detection, in label
    order, each label's best first. Boxes without area once clipped to the image are left out
    before the merge."""
    best, detections = [], []
    # A box predicted wholly outside the image has no area once clipped: it is no detection, and
    # neither its weight nor its coordinates enter the merge (torchvision's detectors drop such
    # boxes after clipping too: ``clip_boxes_to_image`` then ``remove_small_boxes``). The others
    # merge unclipped, as OverFeat merges them; a weighted mean of boxes that each overlap the
    # image overlaps it too, so the clipped merged boxes keep an area (float32 aside: checked).
    inside = has_area(clip_boxes(cand.boxes, cand.size))  # [L, B]
    for li in range(len(cand.labels)):
        keep = inside[li]
        if not bool(keep.any()):  # every box outside: the label keeps its guess, with no detection
            merged, _ = greedy_merge(cand.boxes[li].double(), cand.weights[li], threshold)
            best.append(clip_boxes(merged, cand.size)[0])
            continue
        weights = cand.weights[li][keep]
        merged, mw = greedy_merge(cand.boxes[li][keep].double(), weights, threshold)
        merged = clip_boxes(merged, cand.size)
        best.append(merged[0])
        share = mw / weights.sum()
        boxes = merged.float()
        ok = has_area(boxes)
        label = torch.full((int(ok.sum()),), int(cand.labels[li]), dtype=torch.int64)
        detections.append(Detections(boxes[ok], (cand.scores[li].double() * share).float()[ok], label))
    labels = cand.labels[:topk].clone()
    return ImageResult(labels=labels, scores=cand.scores[:topk].clone(), boxes=torch.stack(best[:topk]).float(),
                       box_labels=labels.clone(), detections=Detections.cat(detections), size=cand.size)


@torch.no_grad()
def localize_center_crop(
    images: Sequence[np.ndarray],
    labels: Tensor,
    net: VGG,
    scale: int,
    opts: InferenceOptions | None = None,
    *,
    cls_net: VGG | None = None,
) -> tuple[Tensor, Tensor]:
    """Protocol 1 ("center-crop"): rescale to ``scale`` (S), take the central crop, predict the
    box of the ground-truth class ``labels [N]`` (so classification errors don't count).

    Returns ``(posteriors Tensor[N, C], boxes Tensor[N, 4])``: the classification posteriors of
    the same centre crop (from ``cls_net``'s own centre crop, or ``net``'s classification
    head), and the boxes in original-image pixels, clipped to the image.
    """
    opts = opts or InferenceOptions()
    device, batch_size = opts.device, opts.batch_size
    if net.box_head is None:
        raise ValueError("center-crop needs a localisation net (a box head)")
    clf = cls_net if cls_net is not None else net
    posteriors, boxes = [], []
    for lo in range(0, len(images), batch_size):
        chunk = images[lo : lo + batch_size]
        ts = [EvalTransform(scale, net.crop, net.normalization["mean"], net.normalization["std"])(img) for img in chunk]
        x = torch.stack([t.image for t in ts]).to(device)
        with opts.autocast():
            maps = net.maps(x)
            if clf is not net:
                tc = [EvalTransform(scale, clf.crop, clf.normalization["mean"], clf.normalization["std"])(img).image for img in chunk]
                logits = clf(torch.stack(tc).to(device))
            else:
                logits = maps["scores"].flatten(1)
        posteriors.append(logits.float().softmax(dim=1).cpu())
        origin = torch.tensor([t.geometry.origin for t in ts], dtype=torch.float32)
        factor = torch.tensor([t.geometry.scale for t in ts], dtype=torch.float32)
        image_hw = torch.tensor([img.shape[:2] for img in chunk], dtype=torch.float32)
        flipped = torch.tensor([t.geometry.flipped for t in ts])
        boxes.append(center_crop_boxes(maps["boxes"].float().cpu(), labels[lo : lo + batch_size].cpu(), origin, factor,
                                       float(ts[0].geometry.side), image_hw, flipped))
    return torch.cat(posteriors), torch.cat(boxes)


def center_crop_boxes(box_maps: Tensor, labels: Tensor, origin: Tensor, scale: Tensor, side: float, image_hw: Tensor,
                      flipped: bool | Tensor = False) -> Tensor:
    """Protocol 1's box per window: the box of class ``labels [B]`` among ``box_maps`` (the box
    head's output for one window each, ``[B, 4 or 4C, ...]``), decoded through the window
    (:func:`vgglocal.geometry.decode_windows`: corner ``origin [B, 2]`` and side ``side`` in
    rescaled pixels, rescale factor ``scale [B]``, mirrored where ``flipped``) and clipped to the
    image (``image_hw [B, 2]``). ``eval --protocol center-crop`` and training-time validation
    both decode their centre crops here. Returns ``Tensor[B, 4]`` x1y1x2y2 original pixels."""
    params = select_class_boxes(box_maps.flatten(1), labels)
    return clip_boxes(decode_windows(params, origin, scale, side, flipped), image_hw)
