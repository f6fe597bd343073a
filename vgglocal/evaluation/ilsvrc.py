"""ILSVRC localisation error, exactly as the devkit scores it, and the submission files.

The rule (``eval_localization.m``; the Kaggle challenge's formula ``e = 1/n * sum_k min_i
min_m max(d(c_i, C_k), f(b_i, B_km))``): an image has up to five (label, box) guesses, best
first, and ground-truth boxes each with a label. For each distinct ground-truth label of the
image, the label is found when some guess has that label and a box with IoU >= 0.5 with at
least one ground-truth box of that label. The image's error is the fraction of its distinct
ground-truth labels not found; the reported error is the mean over images. IoU is the
devkit's inclusive-pixel IoU (:func:`vgglocal.boxes.ilsvrc_iou`: width = x2 - x1 + 1;
boxes that do not intersect, touching ones included, have overlap -1). Top-1 uses the first
guess only; guesses beyond five are ignored. Classification error is the same rule without
the box test. An image that has no predictions counts as wrong.

Files (read here, written by :mod:`vgglocal.evaluation.writers`): the Kaggle CSV (``ImageId,PredictionString`` with ``wnid x1 y1 x2 y2`` repeated; the
same layout as ``LOC_val_solution.csv``) and the devkit text format (one line per image in
image order, ``<label> <xmin> <ymin> <xmax> <ymax>`` repeated, devkit class ids 1..1000).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.func import vmap

from vgglocal.boxes import ilsvrc_iou
from vgglocal.data.records import Sample
from vgglocal.errors import UserError
from vgglocal.inference.results import ImageResult

__all__ = [
    "scatter_ragged",
    "SubmissionError",
    "Guesses",
    "pad_guesses",
    "localization_errors",
    "ilsvrc_metrics",
    "protocol1_errors",
    "center_crop_errors",
    "whole_pixels",
    "pad_ragged",
    "LocalizationEvaluator",
    "CenterCropEvaluator",
    "read_kaggle_csv",
    "read_devkit_txt",
    "score_kaggle",
    "kaggle_tensors",
    "IOU_THRESHOLD",
    "MAX_GUESSES",
]

IOU_THRESHOLD = 0.5  # devkit: ov >= 0.5
MAX_GUESSES = 5  # devkit/Kaggle: at most five guesses count, best first
_CHUNK = 4096  # images per block in the metric (bounds the [N, G, G] label-match tensor)

# One image's guesses or ground truth: (labels, boxes x1y1x2y2).
Guesses = tuple[Tensor, Tensor]


class SubmissionError(UserError):
    """A malformed submission or ground-truth file; the message names the file and line."""


def pad_guesses(items: Sequence[Guesses], width: int | None = None) -> tuple[Tensor, Tensor]:
    """Stack per-image ``(labels Tensor[K_i] int, boxes Tensor[K_i, 4])`` into padded
    ``(Tensor[N, K] int64, Tensor[N, K, 4] float64)``; padding has label -1.

    ``width`` fixes K (longer lists are cut); default: the longest list (at least 1).
    """
    counts = np.array([len(lab) for lab, _ in items], dtype=np.int64)
    k = width if width is not None else max(int(counts.max(initial=0)), 1)
    labels = [np.asarray(lab, dtype=np.int64).reshape(-1)[:k] for lab, _ in items]
    boxes = [np.asarray(box, dtype=np.float64).reshape(-1, 4)[:k] for _, box in items]
    return scatter_ragged(np.minimum(counts, k), k, labels, boxes)


def pad_ragged(counts: Tensor, flat: Tensor, k: int, fill: float | int | bool = 0) -> Tensor:
    """Ragged rows → one padded tensor, in one vectorised copy: ``flat (Tensor[M, ...])`` holds
    row 0's ``counts[0]`` items, then row 1's, ...; returns ``Tensor[N, k, ...]`` with ``fill``
    in the unused slots (``counts (Tensor[N] int64)``, every count at most ``k``)."""
    counts = torch.as_tensor(counts, dtype=torch.int64)
    out = torch.full((len(counts), k, *flat.shape[1:]), fill, dtype=flat.dtype)
    total = int(counts.sum())
    if total:
        rows = torch.repeat_interleave(torch.arange(len(counts)), counts)
        cols = torch.arange(total) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        out[rows, cols] = flat[:total]
    return out


def scatter_ragged(counts: np.ndarray, k: int, labels: list, boxes: list) -> tuple[Tensor, Tensor]:
    """Per-image label/box arrays (already cut to ``k``) → padded tensors (:func:`pad_ragged`)."""
    flat_l = torch.from_numpy(np.concatenate(labels).astype(np.int64) if len(labels) else np.zeros(0, np.int64))
    flat_b = torch.from_numpy(np.concatenate(boxes).astype(np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4)))
    counts_t = torch.from_numpy(np.asarray(counts, dtype=np.int64))
    return pad_ragged(counts_t, flat_l, k, -1), pad_ragged(counts_t, flat_b, k, 0.0)


def localization_errors(
    pred_labels: Tensor,
    pred_boxes: Tensor,
    gt_labels: Tensor,
    gt_boxes: Tensor,
    topk: int = MAX_GUESSES,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[Tensor, Tensor]:
    """Per-image classification and localisation error under the devkit rule.

    Args:
        pred_labels (Tensor[N, K] int): guessed class per slot, best first; -1 = no guess.
        pred_boxes (Tensor[N, K, 4]): x1, y1, x2, y2 (inclusive pixel coordinates).
        gt_labels (Tensor[N, G] int): class of each ground-truth box; -1 = padding. Every
            image needs at least one.
        gt_boxes (Tensor[N, G, 4]): x1, y1, x2, y2.
        topk: guesses that count (the first ``topk`` slots; 5 for top-5, 1 for top-1).

    Returns:
        (Tensor[N], Tensor[N]) float64: classification and localisation error per image, each
        the fraction of the image's distinct ground-truth labels that no counted guess found.
    """
    n = gt_labels.shape[0]
    if pred_labels.shape[0] != n:
        raise ValueError(f"{pred_labels.shape[0]} prediction rows for {n} images")
    if n and not bool((gt_labels >= 0).any(dim=1).all()):
        raise ValueError("every image needs at least one ground-truth label")
    cls_err = torch.empty(n, dtype=torch.float64)
    loc_err = torch.empty(n, dtype=torch.float64)
    for lo in range(0, n, _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        cls_err[sl], loc_err[sl] = _errors_block(pred_labels[sl, :topk], pred_boxes[sl, :topk], gt_labels[sl], gt_boxes[sl], iou_threshold)
    return cls_err, loc_err


def _errors_block(pl: Tensor, pb: Tensor, gl: Tensor, gb: Tensor, thr: float) -> tuple[Tensor, Tensor]:
    valid_gt = gl >= 0  # [B, G]
    same_label = (pl[:, :, None] == gl[:, None, :]) & (pl[:, :, None] >= 0) & valid_gt[:, None, :]  # [B, K, G]
    iou = vmap(ilsvrc_iou)(pb.double(), gb.double())  # [B, K, G], devkit +1 convention
    box_hit = (same_label & (iou >= thr)).any(dim=1)  # [B, G]: some guess localises GT box g
    cls_hit = same_label.any(dim=1)  # [B, G]: some guess names g's label
    # A label is found when any of its boxes is hit; weigh each box by 1 / (boxes with its
    # label) so that each distinct label counts once.
    group = (gl[:, :, None] == gl[:, None, :]) & valid_gt[:, :, None] & valid_gt[:, None, :]  # [B, G, G]
    per_label = group.sum(dim=2).clamp(min=1).double()  # [B, G]
    weight = valid_gt.double() / per_label
    n_labels = weight.sum(dim=1)
    loc_found = (group & box_hit[:, None, :]).any(dim=2).double()
    cls_found = (group & cls_hit[:, None, :]).any(dim=2).double()
    return 1.0 - (cls_found * weight).sum(1) / n_labels, 1.0 - (loc_found * weight).sum(1) / n_labels


def ilsvrc_metrics(pred_labels: Tensor, pred_boxes: Tensor, gt_labels: Tensor, gt_boxes: Tensor) -> dict[str, float | int]:
    """``top1_cls_error``, ``top5_cls_error``, ``top1_loc_error``, ``top5_loc_error`` (fractions,
    mean over images) and ``n_images`` (arguments as :func:`localization_errors`)."""
    out: dict[str, float | int] = {}
    for k in (1, MAX_GUESSES):
        cls, loc = localization_errors(pred_labels, pred_boxes, gt_labels, gt_boxes, topk=k)
        out[f"top{k}_cls_error"] = cls.mean().item() if len(cls) else math.nan
        out[f"top{k}_loc_error"] = loc.mean().item() if len(loc) else math.nan
    out["n_images"] = int(gt_labels.shape[0])
    return {k: out[k] for k in ("top1_cls_error", "top5_cls_error", "top1_loc_error", "top5_loc_error", "n_images")}


def protocol1_errors(labels: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor, iou_threshold: float = IOU_THRESHOLD) -> Tensor:
    """Per-image error of Appendix A's protocol 1: one guess per image, the box ``boxes[n]``
    predicted for the ground-truth class ``labels[n]``, is right when its devkit IoU with a
    ground-truth box *of that class* is at least 0.5 (boxes of other classes in the image are
    not judged: the guess never names them).

    Args:
        labels (Tensor[N] int): the class localised in each image.
        boxes (Tensor[N, 4]): its box, x1, y1, x2, y2.
        gt_boxes (Tensor[N, G, 4]) and gt_labels (Tensor[N, G] int, -1 = padding): the images'
            ground-truth boxes.
    Returns:
        Tensor[N] float64: 1.0 for a miss (also when the image has no box of the class), else 0.0.
    """
    labels = labels.reshape(-1, 1).to(gt_labels.device)
    own = torch.where(gt_labels == labels, gt_labels, torch.full_like(gt_labels, -1))
    has = (own >= 0).any(dim=1)
    err = torch.ones(len(labels), dtype=torch.float64)
    if bool(has.any()):
        rows = has.nonzero().flatten()
        _, loc = localization_errors(labels[rows], boxes.reshape(-1, 1, 4)[rows], own[rows], gt_boxes[rows], topk=1,
                                     iou_threshold=iou_threshold)
        err[rows] = loc
    return err


def whole_pixels(boxes: Tensor) -> Tensor:
    """Boxes rounded to whole pixels as the submission files write them (half up), so that
    scoring a written file reproduces the metrics computed in memory. ``Tensor[..., 4]`` float64."""
    return torch.floor(torch.as_tensor(boxes).double() + 0.5)


def center_crop_errors(labels: Tensor, boxes: Tensor, gt_labels: Tensor, gt_boxes: Tensor) -> Tensor:
    """Protocol 1's per-image error as ``eval --protocol center-crop`` scores it and as
    training-time validation scores it: the box (already clipped to its image) rounded to
    whole pixels as the submission files write it, then :func:`protocol1_errors`.

    Args:
        labels (Tensor[N] int): the ground-truth class localised in each image.
        boxes (Tensor[N, 4]): its box, x1, y1, x2, y2 in original-image pixels.
        gt_labels (Tensor[N, G] int, -1 = padding), gt_boxes (Tensor[N, G, 4]): the ground truth.
    Returns:
        Tensor[N] float64: 1.0 for a miss, else 0.0.
    """
    return protocol1_errors(labels, whole_pixels(boxes.cpu()), gt_boxes, gt_labels)


def _truth(record: Sample) -> Guesses:
    return torch.as_tensor(record.box_labels), torch.as_tensor(record.boxes)


class LocalizationEvaluator:
    """The devkit's localisation and classification errors of the (label, box) guesses
    (protocol 2): ``summarize`` gives :func:`ilsvrc_metrics`.

    ``process(records, outputs)``: the guesses of each
    :class:`~vgglocal.inference.results.ImageResult` (rounded to whole pixels, as written to
    the submission files) against the record's boxes; a ``None`` output, or one without boxes,
    counts as wrong.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pred: list[Guesses] = []
        self._gt: list[Guesses] = []

    def process(self, records: Sequence[Sample], outputs: Sequence[ImageResult | None]) -> None:
        if len(records) != len(outputs):
            raise ValueError(f"{len(outputs)} outputs for {len(records)} records")
        empty = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4, dtype=torch.float64))
        for r, out in zip(records, outputs, strict=True):
            g = out.guesses() if out is not None else None
            lab, box = (g[0].cpu(), whole_pixels(g[1].cpu())) if g is not None else empty
            self._pred.append((lab[:MAX_GUESSES], box[:MAX_GUESSES]))
            self._gt.append(_truth(r))

    def summarize(self) -> dict[str, float | int]:
        if not self._gt:
            raise ValueError("LocalizationEvaluator: nothing was processed")
        pl, pb = pad_guesses(self._pred, MAX_GUESSES)
        gl, gb = pad_guesses(self._gt)
        return ilsvrc_metrics(pl, pb, gl, gb)


class CenterCropEvaluator:
    """Protocol 1's localisation error (:func:`center_crop_errors` on the one guess per image): ``top1_loc_error`` = ``top5_loc_error`` and ``n_images``; a
    ``None`` output counts as a miss."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._errors: list[Tensor] = []

    def process(self, records: Sequence[Sample], outputs: Sequence[ImageResult | None]) -> None:
        if len(records) != len(outputs):
            raise ValueError(f"{len(outputs)} outputs for {len(records)} records")
        err = torch.ones(len(records), dtype=torch.float64)
        done = [i for i, o in enumerate(outputs) if o is not None and o.guesses() is not None]
        if done:
            labels = torch.stack([outputs[i].box_labels[0] for i in done]).cpu()  # type: ignore[index, union-attr]
            boxes = torch.stack([outputs[i].boxes[0].cpu() for i in done])  # type: ignore[index, union-attr]
            gl, gb = pad_guesses([_truth(records[i]) for i in done])
            err[done] = center_crop_errors(labels, boxes, gl, gb)
        self._errors.append(err)

    def summarize(self) -> dict[str, float | int]:
        if not self._errors:
            raise ValueError("CenterCropEvaluator: nothing was processed")
        err = torch.cat(self._errors)
        mean = err.mean().item() if len(err) else math.nan
        return {"top1_loc_error": mean, "top5_loc_error": mean, "n_images": int(len(err))}


# ----------------------------------------------------------------------------- files

Submission = dict[str, list[tuple[str, tuple[float, float, float, float]]]]


def read_kaggle_csv(path: str | Path, *, require_boxes: bool = False) -> Submission:
    """Read a Kaggle CLS-LOC CSV (a submission or ``LOC_*_solution.csv``).

    Returns ``{image_id: [(wnid, (x1, y1, x2, y2)), ...]}`` in file order. A malformed header,
    row, number or a repeated image id raises :class:`SubmissionError` naming the file and
    line. With ``require_boxes`` (ground truth) an empty prediction string is an error too.
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"file not found: {path}")
    out: Submission = {}
    with path.open(newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None or [h.strip().lstrip("\ufeff") for h in header[:2]] != ["ImageId", "PredictionString"]:
                raise SubmissionError(f"{path}:1: expected the header ImageId,PredictionString, got {','.join(header or [])!r}")
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != 2:
                    raise SubmissionError(f"{path}:{line}: expected 2 columns (ImageId,PredictionString), got {len(row)}")
                image_id, text = row[0].strip(), row[1].split()
                if not image_id:
                    raise SubmissionError(f"{path}:{line}: empty ImageId")
                if image_id in out:
                    raise SubmissionError(f"{path}:{line}: image {image_id!r} appears twice")
                if len(text) % 5:
                    raise SubmissionError(f"{path}:{line}: PredictionString must be groups of 'label x1 y1 x2 y2', got {len(text)} fields")
                if require_boxes and not text:
                    raise SubmissionError(f"{path}:{line}: image {image_id!r} has no boxes")
                try:
                    numbers = [float(v) for j, v in enumerate(text) if j % 5]
                except ValueError:
                    bad = next(v for j, v in enumerate(text) if j % 5 and not _is_number(v))
                    raise SubmissionError(f"{path}:{line}: {bad!r} is not a number") from None
                if not all(map(math.isfinite, numbers)):
                    raise SubmissionError(f"{path}:{line}: a box coordinate is not finite")
                coords = iter(numbers)
                out[image_id] = list(zip(text[0::5], zip(coords, coords, coords, coords, strict=True), strict=True))  # type: ignore[assignment]
        except csv.Error as e:
            raise SubmissionError(f"{path}:{reader.line_num}: {e}") from None
        except UnicodeDecodeError:
            raise SubmissionError(f"{path}: not a text file") from None
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_devkit_txt(path: str | Path, labels: bool = False) -> list[list[tuple[int, tuple[float, float, float, float]]]]:
    """Read a devkit localisation submission: per line (image), ``[(label, box), ...]``.

    ``labels``: the devkit's classification submission instead, up to five class ids per
    line, each returned with an empty box (0, 0, 0, 0). A line of five numbers reads either
    way, so the caller says which it is (``vgglocal eval`` writes the classification form for
    the ``cls-*`` protocols).
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"file not found: {path}")
    out = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if labels and len(fields) > MAX_GUESSES:
            raise SubmissionError(f"{path}:{line_no}: a classification line has at most {MAX_GUESSES} class ids, got {len(fields)} fields")
        if not labels and len(fields) % 5:
            raise SubmissionError(f"{path}:{line_no}: expected groups of '<label> <xmin> <ymin> <xmax> <ymax>', got {len(fields)} fields")
        try:
            if labels:
                out.append([(int(f), (0.0, 0.0, 0.0, 0.0)) for f in fields])
            else:
                out.append([(int(fields[j]), tuple(float(v) for v in fields[j + 1 : j + 5])) for j in range(0, len(fields), 5)])
        except ValueError:
            raise SubmissionError(f"{path}:{line_no}: not a number in {line.strip()[:80]!r}") from None
    return out  # type: ignore[return-value]


def score_kaggle(predictions: Submission, truth: Submission, pred_name: str = "predictions", truth_name: str = "ground truth") -> dict[str, float | int]:
    """Metrics of a Kaggle-format submission against ground truth in the same format.

    Images of the ground truth missing from the predictions count as wrong; predictions for
    images the ground truth does not have are an error (a wrong pairing of files).
    """
    _, tensors = kaggle_tensors(predictions, truth, pred_name, truth_name)
    return ilsvrc_metrics(*tensors)


def kaggle_tensors(predictions: Submission, truth: Submission, pred_name: str = "predictions",
                   truth_name: str = "ground truth") -> tuple[list[str], tuple[Tensor, Tensor, Tensor, Tensor]]:
    """The ground truth's image ids in order and the padded (pred_labels, pred_boxes,
    gt_labels, gt_boxes) of :func:`localization_errors` for them (rules as :func:`score_kaggle`)."""
    unknown = [i for i in predictions if i not in truth]
    if unknown:
        raise SubmissionError(f"{pred_name}: {len(unknown)} image ids are not in {truth_name} (first: {unknown[0]!r})")
    vocab: dict[str, int] = {}
    for guesses in truth.values():
        for lab, _ in guesses:
            vocab.setdefault(lab, len(vocab))

    def padded(source: Submission, width: int | None) -> tuple[Tensor, Tensor]:
        # One flat pass over all guesses (50,000 images: no per-image tensors). A label the
        # ground truth never uses gets -2: negative, so it never matches.
        rows = [source.get(i, [])[:width] if width else source.get(i, []) for i in ids]
        counts = np.array([len(r) for r in rows], dtype=np.int64)
        k = width or max(int(counts.max(initial=0)), 1)
        labels = [np.array([vocab.get(lab, -2) for r in rows for lab, _ in r], dtype=np.int64)]
        boxes = [np.array([box for r in rows for _, box in r], dtype=np.float64).reshape(-1, 4)]
        return scatter_ragged(counts, k, labels, boxes)

    ids = list(truth)
    pl, pb = padded(predictions, MAX_GUESSES)
    gl, gb = padded(truth, None)
    return ids, (pl, pb, gl, gb)
