"""Validation during training: centre-crop classification errors and Appendix A's protocol 1
(the box of the ground-truth class from one centre crop), reduced over every process.
Full-image evaluation (dense, multi-crop, protocol 2) is :mod:`vgglocal.evaluation`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from vgglocal.boxes import decode, ilsvrc_iou
from vgglocal.data.records import Sample
from vgglocal.engine.distributed import all_reduce_sum
from vgglocal.engine.train import StepOptions, batch_size_of, to_device
from vgglocal.models.heads import select_class_boxes
from vgglocal.models.vgg import VGG

__all__ = ["LocGroundTruth", "paired_ilsvrc_iou", "evaluate"]


@dataclass(frozen=True)
class LocGroundTruth:
    """Ground-truth boxes of the validation records, padded for batched lookup.

    Attributes:
        boxes (Tensor[R, K, 4]): x1, y1, x2, y2 in original-image pixels (K: most boxes of any record).
        valid (Tensor[R, K] bool): the box exists and has the record's class (protocol 1 judges
            the ground-truth class's boxes only).
    """

    boxes: Tensor
    valid: Tensor

    @classmethod
    def from_records(cls, records: list[Sample]) -> LocGroundTruth:
        counts = torch.tensor([len(r.boxes) for r in records], dtype=torch.int64)
        k = max(1, int(counts.max())) if len(records) else 1
        boxes = torch.zeros(len(records), k, 4)
        valid = torch.zeros(len(records), k, dtype=torch.bool)
        if int(counts.sum()):
            flat = torch.from_numpy(np.concatenate([r.boxes for r in records]).astype(np.float32)).reshape(-1, 4)
            flat_labels = torch.from_numpy(np.concatenate([r.box_labels for r in records]).astype(np.int64))
            row = torch.repeat_interleave(torch.arange(len(records)), counts)
            col = torch.arange(len(flat)) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
            labels = torch.tensor([r.label for r in records], dtype=torch.int64)
            boxes[row, col] = flat
            valid[row, col] = flat_labels == labels[row]
        return cls(boxes, valid)


def paired_ilsvrc_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """Devkit IoU of each ``pred[n]`` with each of its own ``gt[n, k]`` → ``Tensor[N, K]``.

    Args:
        pred (Tensor[N, 4]) and gt (Tensor[N, K, 4]): x1, y1, x2, y2 in original pixels.
    The pairwise ``ilsvrc_iou`` of all N x NK pairs is cut to its block diagonal: N is one
    validation batch, so the N² cost is small and the devkit convention lives in one place.
    """
    n, k = gt.shape[:2]
    full = ilsvrc_iou(pred, gt.reshape(-1, 4)).reshape(n, n, k)
    return torch.diagonal(full, dim1=0, dim2=1).T


@torch.no_grad()
def evaluate(
    net: VGG,
    loader: Iterable[dict[str, Any]],
    *,
    num_records: int,
    opts: StepOptions,
    gt: LocGroundTruth | None = None,
) -> dict[str, float]:
    """Centre-crop validation errors, reduced over every process.

    Classification: top-1 and top-5 error of the class scores. Localisation (when ``gt`` is
    given and the net has a box head): protocol 1 of Appendix A, the box predicted for the
    ground-truth class, decoded to original-image pixels with the batch's ``origin`` ([n, 2],
    window corner in rescaled pixels) and ``scale`` ([n]), is correct when its devkit IoU with a
    ground-truth box of that class is at least 0.5; plus the validation box loss.

    Each record is counted once even when a sharded sampler repeats it (per-record sums are
    reduced over processes and divided by the times the record was seen). Bad (skipped) samples
    are not counted. Returns ``top1_cls_error``, ``top5_cls_error``, ``n_images`` and, for
    localisation, ``loc_error`` and ``box_loss``; errors are fractions in [0, 1].
    """
    net.eval()
    loader = tqdm(loader, desc="validation", unit="batch", leave=False, dynamic_ncols=True, disable=not opts.progress)
    loc = gt is not None and net.box_head is not None
    cols = 4 if loc else 2
    sums = torch.zeros(num_records, cols, dtype=torch.float64, device=opts.device)
    seen = torch.zeros(num_records, dtype=torch.float64, device=opts.device)
    for batch in loader:
        if not batch_size_of(batch):
            continue  # every sample of the batch was bad: nothing to score
        batch = to_device(batch, opts)
        idx = batch["index"]
        labels = batch["label"]
        with opts.autocast():
            maps = net.maps(batch["image"])
        scores = maps["scores"].flatten(1).float()
        top = scores.topk(min(5, scores.shape[1]), dim=1).indices
        rows = [(top[:, 0] != labels), ~(top == labels[:, None]).any(dim=1)]
        if loc:
            boxes = maps["boxes"].flatten(1).float()
            pred = select_class_boxes(boxes, labels)
            if "flipped" in batch:  # a mirrored window predicts mirrored boxes
                pred = torch.cat([torch.where(batch["flipped"], 1.0 - pred[:, 0], pred[:, 0])[:, None], pred[:, 1:]], dim=1)
            side = float(batch["image"].shape[-1])
            px = decode(pred, batch["origin"].float(), batch["scale"].float(), side)
            iou = paired_ilsvrc_iou(px.cpu(), gt.boxes[idx.cpu()])
            hit = ((iou >= 0.5) & gt.valid[idx.cpu()]).any(dim=1).to(opts.device)
            target_pred = select_class_boxes(boxes, batch["target_label"])
            per_sample = 0.5 * (target_pred - batch["target"].float()).pow(2).sum(dim=1)
            rows += [~hit, per_sample]  # box loss: same normalisation as losses.box_loss
        sums.index_add_(0, idx, torch.stack([r.double() for r in rows], dim=1))
        seen.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))
    all_reduce_sum(sums)
    all_reduce_sum(seen)
    mask = seen > 0
    per = sums[mask] / seen[mask, None]
    n = int(mask.sum())
    mean = (per.sum(0) / max(n, 1)).tolist()
    out = {"top1_cls_error": mean[0], "top5_cls_error": mean[1], "n_images": n}
    if loc:
        out.update(loc_error=mean[2], box_loss=mean[3])
    return out
