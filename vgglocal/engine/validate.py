"""Validation during training: centre-crop classification errors and Appendix A's protocol 1
(the box of the ground-truth class from one centre crop), reduced over every process.
Full-image evaluation (dense, multi-crop, protocol 2) is :mod:`vgglocal.evaluation`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from vgglocal.boxes import clip_boxes
from vgglocal.data.records import Sample
from vgglocal.engine.distributed import all_reduce_sum
from vgglocal.engine.losses import box_errors
from vgglocal.engine.train import StepOptions, batch_size_of, to_device
from vgglocal.errors import UserError
from vgglocal.evaluation.classification import topk_correct
from vgglocal.evaluation.ilsvrc import center_crop_errors, pad_guesses
from vgglocal.geometry import decode_windows
from vgglocal.models.heads import select_class_boxes
from vgglocal.models.vgg import VGG

__all__ = ["LocGroundTruth", "ValidationError", "evaluate"]


class ValidationError(UserError):
    """The validation split cannot be scored (no readable image); names the split's count."""


@dataclass(frozen=True)
class LocGroundTruth:
    """Ground-truth boxes of the validation records, padded for batched lookup.

    Attributes:
        boxes (Tensor[R, K, 4] float64): x1, y1, x2, y2 in original-image pixels (K: most boxes of any record).
        labels (Tensor[R, K] int64): class of each box; -1 for padding.
    """

    boxes: Tensor
    labels: Tensor

    @classmethod
    def from_records(cls, records: list[Sample]) -> LocGroundTruth:
        labels, boxes = pad_guesses([(r.box_labels, r.boxes) for r in records])
        return cls(boxes, labels)


@torch.no_grad()
def _center_crop_misses(boxes: Tensor, batch: dict[str, Any], gt: LocGroundTruth) -> Tensor:
    """Protocol 1's per-sample miss (1.0) or hit (0.0), on ``boxes``' device: the box of the
    ground-truth class, decoded through the window, clipped to its image as
    :func:`~vgglocal.inference.localize.localize_center_crop` clips it, scored by
    :func:`~vgglocal.evaluation.ilsvrc.center_crop_errors`."""
    labels = batch["label"]
    side = float(batch["image"].shape[-1])
    px = decode_windows(select_class_boxes(boxes, labels), batch["origin"].float(), batch["scale"].float(), side,
                        batch.get("flipped", False))
    px = clip_boxes(px, batch["image_hw"])
    rec = batch["index"].cpu()
    return center_crop_errors(labels.cpu(), px.cpu(), gt.labels[rec], gt.boxes[rec]).to(boxes.device)


def evaluate(
    net: VGG,
    loader: Iterable[dict[str, Any]],
    *,
    num_records: int,
    opts: StepOptions,
    gt: LocGroundTruth | None = None,
    bad: list[tuple[str, str]] | None = None,
) -> dict[str, float]:
    """Centre-crop validation errors, reduced over every process.

    Classification: top-1 and top-5 error of the class posteriors. Localisation (when ``gt`` is
    given and the net has a box head): protocol 1 of Appendix A, the box predicted for the
    ground-truth class, decoded to original-image pixels through the batch's window (``origin``
    [n, 2] in rescaled pixels, ``scale`` [n], ``flipped`` [n]) and clipped to the image
    (``image_hw`` [n, 2]); plus the validation box loss (:func:`~vgglocal.engine.losses.box_errors`).
    Both errors come from the functions ``eval --protocol center-crop``'s evaluators use
    (:func:`~vgglocal.evaluation.classification.topk_correct`,
    :func:`~vgglocal.evaluation.ilsvrc.center_crop_errors`), so for a checkpoint and its scale S
    the numbers are ``eval``'s on the same crops.

    Each record is counted once even when a sharded sampler repeats it (per-record sums are
    reduced over processes and divided by the times the record was seen). A record no process
    could read (a bad sample: missing, truncated, too large) counts as wrong, as the devkit
    counts an image without a prediction, so ``n_images`` is always ``num_records``. Returns
    ``top1_cls_error``, ``top5_cls_error``, ``n_images``, ``n_unreadable`` and, for
    localisation, ``loc_error`` and ``box_loss`` (over the readable records); errors are
    fractions in [0, 1]. ``bad``, when given, receives this process's ``(path, message)`` of
    the unreadable samples.

    Raises:
        ValidationError: no validation record could be read (nothing to score).
    """
    net.eval()
    loader = tqdm(loader, desc="validation", unit="batch", leave=False, dynamic_ncols=True, disable=not opts.progress)
    loc = gt is not None and net.box_head is not None
    cols = 4 if loc else 2
    sums = torch.zeros(num_records, cols, dtype=torch.float64, device=opts.device)
    seen = torch.zeros(num_records, dtype=torch.float64, device=opts.device)
    for batch in loader:
        if bad is not None:
            bad.extend(batch.get("bad") or ())
        if not batch_size_of(batch):
            continue  # every sample of the batch was bad: nothing to score
        batch = to_device(batch, opts)
        idx = batch["index"]
        labels = batch["label"]
        with opts.autocast():
            maps = net.maps(batch["image"])
        # The posteriors, ranked as eval's centre-crop protocol ranks them (softmax, then top-k).
        posteriors = maps["scores"].flatten(1).float().softmax(dim=1)
        rows = [~c for c in topk_correct(posteriors, labels, (1, 5))]
        if loc:
            boxes = maps["boxes"].flatten(1).float()
            rows += [_center_crop_misses(boxes, batch, gt), box_errors(boxes, batch["target"], batch["target_label"])]
        sums.index_add_(0, idx, torch.stack([r.double() for r in rows], dim=1))
        seen.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))
    all_reduce_sum(sums)
    all_reduce_sum(seen)
    mask = seen > 0
    per = sums[mask] / seen[mask, None]
    n = int(mask.sum())
    if num_records and not n:
        first = f" (e.g. {bad[0][1]})" if bad else ""
        raise ValidationError(f"validation: none of the {num_records} validation images could be read{first}; "
                              "nothing to score, so the run stops; `vgglocal data check` lists the files")
    unreadable = num_records - n
    total = per.sum(0).tolist()
    # An unreadable record is wrong: it adds 1 to every error's numerator (not to the box loss).
    # The same arithmetic as the evaluators' (1 - mean of hits; mean of misses), so that the
    # numbers equal eval's to the last bit.
    wrong = [t + unreadable for t in total[:3]]
    n_all = max(num_records, 1)
    out = {"top1_cls_error": 1.0 - (num_records - wrong[0]) / n_all, "top5_cls_error": 1.0 - (num_records - wrong[1]) / n_all,
           "n_images": num_records, "n_unreadable": unreadable}
    if loc:
        out.update(loc_error=wrong[2] / n_all, box_loss=total[3] / max(n, 1))
    return out
