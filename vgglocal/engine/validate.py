"""Validation during training: ``eval --protocol center-crop`` on the validation split, through
the same evaluators and under the same keys (Detectron2's ``inference_on_dataset`` serves both
periodic evaluation and the final test). Full-image evaluation (dense, multi-crop, protocol 2)
is :mod:`vgglocal.evaluation`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from tqdm import tqdm

from vgglocal import comm
from vgglocal.data.device import to_device
from vgglocal.data.records import Sample
from vgglocal.engine.losses import box_errors
from vgglocal.engine.train import batch_size_of
from vgglocal.errors import UserError
from vgglocal.evaluation.base import gather_results
from vgglocal.evaluation.run import center_crop_evaluators
from vgglocal.inference.localize import center_crop_boxes
from vgglocal.inference.options import InferenceOptions
from vgglocal.inference.protocols import center_crop_results
from vgglocal.interrupts import check_interrupt
from vgglocal.models.vgg import VGG

__all__ = ["ValidationError", "evaluate"]


class ValidationError(UserError):
    """The validation split cannot be scored (no readable image); names the split's count."""


@torch.no_grad()
def evaluate(
    net: VGG,
    loader: Iterable[dict[str, Any]],
    *,
    records: Sequence[Sample],
    opts: InferenceOptions,
    loc: bool = False,
    bad: list[tuple[str, str]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Centre-crop validation of ``records`` (the loader's dataset, which yields each sample's
    ``index`` into them), on every process alike. ``opts``: the ``eval`` section's device,
    precision and memory format (:meth:`~vgglocal.inference.protocols.RunOptions.from_config`),
    as ``eval`` runs the nets; ``progress``: a bar.

    Each process turns its batches into the per-image results of ``eval --protocol
    center-crop`` (:func:`~vgglocal.inference.protocols.center_crop_results`: the top-5 labels
    of the crop's posteriors and, with ``loc`` and a box head, the box of the ground-truth
    class decoded through the window, ``origin``, ``scale``, ``flipped``, and clipped to the
    image, ``image_hw``, by :func:`~vgglocal.inference.localize.center_crop_boxes`). Rank 0
    gathers them (:func:`~vgglocal.evaluation.base.gather_results`; a record a padded sampler
    repeats counts once), runs ``eval``'s centre-crop evaluators on them
    (:func:`~vgglocal.evaluation.run.center_crop_evaluators`) and shares the metrics. A record
    no process could read counts as wrong, as the devkit counts an image without a
    prediction. Returns ``top1_cls_error``, ``top5_cls_error``, ``n_images`` (all records),
    ``n_unreadable`` and, for localisation, ``top1_loc_error`` = ``top5_loc_error`` and the
    validation ``box_loss`` (:func:`~vgglocal.engine.losses.box_errors`, over the readable
    records). ``bad``, when given, receives this process's ``(path, message)`` of the
    unreadable samples.

    Raises:
        ValidationError: no validation record could be read (nothing to score).
    """
    net.eval()
    loader = tqdm(loader, desc="validation", unit="batch", leave=False, dynamic_ncols=True, disable=not progress)
    loc = loc and net.box_head is not None
    indices: list[int] = []
    results: list = []
    losses: list[float] = []
    for batch in loader:
        check_interrupt()  # a deferred Ctrl-C (training's fit) stops between batches
        if bad is not None:
            bad.extend(batch.get("bad") or ())
        if not batch_size_of(batch):
            continue  # every sample of the batch was bad: nothing to score
        batch = to_device(batch, opts.device, opts.channels_last)
        labels = batch["label"].cpu()
        with opts.autocast():
            maps = net.maps(batch["image"])
        posteriors = maps["scores"].flatten(1).float().softmax(dim=1).cpu()
        boxes = None
        if loc:
            raw = maps["boxes"].flatten(1).float()
            boxes = center_crop_boxes(raw.cpu(), labels, batch["origin"].float().cpu(), batch["scale"].float().cpu(),
                                      float(batch["image"].shape[-1]), batch["image_hw"].cpu(), batch.get("flipped", False))
            losses += box_errors(raw, batch["target"], batch["target_label"]).double().cpu().tolist()
        results += center_crop_results(posteriors, labels, boxes)
        indices += batch["index"].cpu().tolist()
    gathered = gather_results(len(records), indices, results, extra=losses if loc else None)
    metrics = _summarize(records, gathered, loc) if gathered is not None else None
    metrics = comm.broadcast_object(metrics)
    if isinstance(metrics, str):
        raise ValidationError(metrics)
    return metrics


def _summarize(records: Sequence[Sample], gathered: tuple[list, list[float | None]], loc: bool) -> dict[str, Any] | str:
    """Rank 0: the evaluators over every record; a message instead when none could be read."""
    outputs, extra = gathered
    n = len(records)
    readable = sum(o is not None for o in outputs)
    if n and not readable:
        return (f"validation: none of the {n} validation images could be read; nothing to score, so the run stops; "
                "`vgglocal data check` lists the files")
    evaluators = center_crop_evaluators(loc)
    evaluators.process(list(records), outputs)
    out: dict[str, Any] = {**evaluators.summarize(), "n_images": n, "n_unreadable": n - readable}
    if loc:
        seen = [v for v in extra if v is not None]
        out["box_loss"] = sum(seen) / max(len(seen), 1)
    return out
