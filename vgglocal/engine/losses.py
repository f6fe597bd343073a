"""Training losses: multinomial logistic regression (section 3.1) and the Euclidean box loss
of Appendix A (SCR | PCR).

Both take the raw network outputs (never decoded boxes: model, loss and post-processing stay apart) and return a
scalar that is a mean over the batch, so gradient accumulation and data parallelism average
them the same way a single large batch would.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from vgglocal.models.heads import select_class_boxes

__all__ = ["classification_loss", "box_loss", "box_errors", "cls_batch_loss", "loc_batch_loss", "JointLoss", "training_loss",
           "LOSSES"]


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Soft-max cross-entropy, mean over the batch.

    Args:
        logits (Tensor[N, C]): class scores (any float dtype; computed in float32).
        labels (Tensor[N] int64): class indices.
    """
    return F.cross_entropy(logits.float(), labels)


def box_loss(boxes: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    """Euclidean loss between predicted and ground-truth box parameters (Appendix A).

    The normalisation is Caffe's ``EuclideanLoss``: ``1/(2N) * sum_n ||pred_n - target_n||^2``,
    i.e. half the squared error summed over the four coordinates, averaged over the batch.
    With PCR only the ground-truth class's four outputs enter the loss; the other classes'
    outputs get no gradient.

    Args:
        boxes (Tensor[N, 4] or Tensor[N, 4C]): box-head outputs (SCR or PCR), (cx, cy, w, h)
            per class in window coordinates divided by the crop side, as the network sees the
            window (cx mirrored for a flipped crop).
        targets (Tensor[N, 4]): the batch's ``target``, the same parameters of the ground-truth
            box (:func:`vgglocal.data.transforms.crop_target`, which encodes with
            :meth:`vgglocal.geometry.Geometry.encode`).
        labels (Tensor[N] int64): the class of each target box (selects the PCR outputs).
    """
    return box_errors(boxes, targets, labels).mean()


def box_errors(boxes: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    """Per-sample terms of :func:`box_loss` (arguments as there): ``Tensor[N]`` float32,
    ``0.5 * ||pred_n - target_n||^2``; the loss is their mean."""
    pred = select_class_boxes(boxes.flatten(1), labels)
    return 0.5 * (pred.float() - targets.float()).pow(2).sum(dim=1)


def cls_batch_loss(outputs: Tensor, batch: dict) -> Tensor:
    """Classification training loss from a batch dict (keys ``label``)."""
    return classification_loss(outputs, batch["label"])


def loc_batch_loss(outputs: Tensor, batch: dict) -> Tensor:
    """Localisation training loss from a batch dict (keys ``target``, ``target_label``)."""
    return box_loss(outputs, batch["target"], batch["target_label"])


class JointLoss:
    """``loc.joint``: the box loss plus ``cls_weight`` times the cross-entropy of the class head
    on the crop's ground-truth class (``target_label``). The training forward returns both heads'
    outputs side by side, ``[N, box_outputs + C]`` (:class:`~vgglocal.engine.train.TrainForward`)."""

    def __init__(self, box_outputs: int, cls_weight: float) -> None:
        self.box_outputs, self.cls_weight = box_outputs, cls_weight

    def __call__(self, outputs: Tensor, batch: dict) -> Tensor:
        boxes, logits = outputs[:, : self.box_outputs], outputs[:, self.box_outputs:]
        labels = batch["target_label"]
        return box_loss(boxes, batch["target"], labels) + self.cls_weight * classification_loss(logits, labels)


# task -> loss on (training forward output, batch)
LOSSES = {"cls": cls_batch_loss, "loc": loc_batch_loss}


def training_loss(task: str, cfg, net) -> object:
    """The loss a run of ``task`` trains with: :data:`LOSSES`, or :class:`JointLoss` under ``loc.joint``."""
    if task == "loc" and cfg.loc.joint:
        return JointLoss(net.box_head.fc8.out_channels, cfg.loc.cls_weight)
    return LOSSES[task]
