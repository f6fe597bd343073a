"""``vgglocal eval``: run one test protocol over the validation split and write the results.

Protocols (section 3.2, Appendix A): ``cls-dense``, ``cls-multicrop``, ``cls-both``
(classification; several checkpoints are fused), ``center-crop`` (localisation protocol 1) and
``full`` (protocol 2). The loop is short on purpose: decode a chunk of images
(:func:`~vgglocal.data.chunks.chunked_images`), run the protocol on it
(:func:`~vgglocal.inference.protocols.run_protocol`, one
:class:`~vgglocal.inference.results.ImageResult` per image), and feed every evaluator that
applies and the submission writer. Output folder:

* ``metrics.json``: ``top1_cls_error``, ``top5_cls_error``, ``top1_loc_error``,
  ``top5_loc_error`` (localisation protocols), ``n_images``, and from ``full`` (the
  protocol that detects) the twelve COCOeval statistics (``coco_ap`` ...) and VOC
  ``voc07_map`` / ``voc_map`` on every data format; plus what was run (protocol, checkpoints, scales,
  threshold), ``n_unreadable`` and ``unreadable`` (the count per reason).
* localisation protocols: ``predictions.csv`` (Kaggle submission, wnids/class ids),
  ``predictions.txt`` (devkit format: devkit class ids when the data set has them, else
  index + 1), and for ``full`` ``detections.json`` (COCO results).
* ``--draw N``: ``predictions.png``, a grid of the first N images with the ground truth
  (dashed) and the guesses (:mod:`vgglocal.evaluation.pictures`).

Which errors mean what: in ``full`` both classification and localisation errors follow the
devkit rule on the five guesses (so ``vgglocal score predictions.csv`` reproduces them). In
``center-crop`` the one guess is the ground-truth class (protocol 1), so the classification
errors come from the classification system's posteriors on the same centre crop, and top-1
and top-5 localisation error are the same number. Every image the ground truth lists is scored:
one that is missing on disk or cannot be decoded counts as wrong (the devkit counts an image
without a prediction as an error), is named in the log and counted in ``n_unreadable``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from vgglocal.config import Config
from vgglocal.data.chunks import ImageChunk, chunked_images
from vgglocal.data.images import ImageLimits, unreadable_reason
from vgglocal.evaluation.base import Evaluator, EvaluatorList
from vgglocal.evaluation.classification import ClassificationEvaluator
from vgglocal.evaluation.coco import COCO_KEYS
from vgglocal.evaluation.detection import DetectionEvaluator
from vgglocal.evaluation.ilsvrc import CenterCropEvaluator, LocalizationEvaluator
from vgglocal.evaluation.job import EvalJob, EvalRequest, Log, prepare
from vgglocal.evaluation.pictures import PictureGrid
from vgglocal.evaluation.writers import SubmissionWriter
from vgglocal.inference.nets import EvalError, scales_desc
from vgglocal.inference.protocols import full_candidates, full_merge, run_protocol

__all__ = ["EvalError", "EvalRequest", "METRIC_KEYS", "evaluators_for", "evaluate"]

# metrics.json's metric keys, in the order written.
METRIC_KEYS = ("top1_cls_error", "top5_cls_error", "top1_loc_error", "top5_loc_error", "n_images", *COCO_KEYS,
               "voc07_map", "voc_map", "voc07_ap_per_class", "voc_ap_per_class")


def _coco_annotations(cfg: Config) -> str:
    from vgglocal.data.spec import split_spec

    spec = split_spec(cfg.data, cfg.data.val_split)
    return spec.annotations or spec.at("annotations", f"instances_{spec.name}.json")


def _native_coco(cfg: Config, job: EvalJob) -> bool:
    """COCO data keeps its own image and category ids (and is scored against its own file)."""
    return cfg.data.format == "coco" and bool(job.classes.coco_ids)


def evaluators_for(job: EvalJob, cfg: Config) -> list[Evaluator]:
    """The evaluators that apply to the job's protocol and data: classification error
    (classification protocols, and beside protocol 1's localisation error), the devkit's
    localisation error (protocol 2), and the detection metrics, COCO's and VOC's, only where
    the protocol makes detections (protocol 2), on every data format, from the results as
    ``detections.json`` receives them (so ``vgglocal score`` on it gives the same numbers)."""
    if job.protocol == "center-crop":
        return [ClassificationEvaluator(), CenterCropEvaluator()]
    if job.protocol == "full":
        annotations = _coco_annotations(cfg) if _native_coco(cfg, job) else None
        return [LocalizationEvaluator(), DetectionEvaluator(job.classes, annotations, cfg.eval.score_floor)]
    return [ClassificationEvaluator()]


# What an evaluation writes into its folder (checked before overwriting one).
OUTPUT_FILES = ("metrics.json", "submission.json", "predictions.csv", "predictions.txt", "detections.json", "ground_truth.json",
                "predictions.png")


def check_output_folder(out: Path, overwrite: bool) -> None:
    """Refuse a training run's folder, and an earlier evaluation's unless ``overwrite``."""
    if (out / "checkpoints").is_dir() or (out / "metrics.jsonl").is_file():
        raise EvalError(f"--out {out}: a training run's folder; give an evaluation its own --out (the default is runs/eval/...)")
    found = [f for f in OUTPUT_FILES if (out / f).exists()]
    if found and not overwrite:
        raise EvalError(f"--out {out}: already holds an evaluation ({', '.join(found)}); pass --overwrite to replace it, or another --out")


def evaluate(cfg: Config, req: EvalRequest, out: str | Path, *, progress: bool = True, log: Log | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Run ``req`` on the split (``req.split``, default the validation split); write the files
    into ``out``; return the metrics (on a split without ground truth: what was run, and no
    metrics)."""
    log = log or (lambda msg: None)
    out = Path(out)
    check_output_folder(out, overwrite)
    job = prepare(cfg, req, progress=progress, log=log)
    out.mkdir(parents=True, exist_ok=True)
    evaluators = EvaluatorList(*(evaluators_for(job, cfg) if job.has_truth else []))
    writer = SubmissionWriter(job.classes, guesses=job.localizes, detections=job.protocol == "full", labels=not job.localizes,
                              score_floor=cfg.eval.score_floor, native_ids=_native_coco(cfg, job))
    pictures = PictureGrid(req.draw, job.classes) if req.draw else None
    unreadable: Counter[str] = Counter()

    def finish(chunk: ImageChunk, results: list) -> None:
        outputs = chunk.spread(results)
        evaluators.process(chunk.records, outputs)
        writer.process(chunk.records, outputs)
        if pictures is not None:
            pictures.process(chunk, outputs)

    # Protocol 2: the greedy merge of chunk k (CPU, compiled, releases the GIL) runs in a thread
    # while the network computes chunk k+1's boxes on the device.
    merger = ThreadPoolExecutor(1) if job.protocol == "full" else None
    pending: tuple[ImageChunk, Future] | None = None
    workers = cfg.data.workers if cfg.eval.workers < 0 else cfg.eval.workers
    try:
        for chunk, images, bad in chunked_images(job.records, cfg.eval.batch_size, workers, ImageLimits.of(cfg.data),
                                                 desc=f"eval {job.protocol}", progress=progress):
            for err in bad:
                unreadable[unreadable_reason(err)] += 1
                log(f"unreadable, counted as wrong: {err}")
            good = chunk.good
            if merger is None:
                results = []
                if good:
                    labels = torch.tensor([chunk.records[i].label for i in good], dtype=torch.int64)
                    results = run_protocol(job.protocol, images, job.nets, job.options,  # type: ignore[arg-type]
                                           cls_nets=job.cls_nets or None, labels=labels)
                finish(chunk, results)
                continue
            cands = full_candidates(images, job.cls_nets or job.nets, job.nets, job.options) if good else []  # type: ignore[arg-type]
            merged = merger.submit(full_merge, cands, job.options)
            if pending is not None:
                finish(pending[0], pending[1].result())
            pending = (chunk, merged)
        if pending is not None:
            finish(pending[0], pending[1].result())
    finally:
        if merger is not None:
            merger.shutdown(wait=True, cancel_futures=True)

    n_bad = sum(unreadable.values())
    if n_bad:
        why = ", ".join(f"{k} {v}" for k, v in sorted(unreadable.items()))
        log(f"{n_bad} of {len(job.records)} images could not be read and count as wrong ({why}); "
            f"`vgglocal data check {cfg.data.root}` lists them")
    summary = evaluators.summarize() if job.has_truth else {"n_images": len(job.records)}
    metrics: dict[str, Any] = {k: summary[k] for k in METRIC_KEYS if k in summary}
    metrics.update(_description(job, n_bad), unreadable=dict(sorted(unreadable.items())))
    metrics["data"] = {"root": str(Path(cfg.data.root).resolve()), "format": cfg.data.format}  # for `vgglocal report`
    writer.write(out)
    if pictures is not None:
        pictures.write(out / "predictions.png")
    name = "metrics.json" if job.has_truth else "submission.json"  # a split without ground truth: no metrics
    (out / name).write_text(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}, indent=1) + "\n")
    return metrics


def _description(job: EvalJob, n_bad: int) -> dict[str, Any]:
    """What was run, written beside the metrics."""
    nets, opts = job.nets, job.options
    out: dict[str, Any] = dict(
        protocol=job.protocol,
        split=job.split,
        scales=sorted({q for n in nets for q in n.scales}),
        scales_desc=" + ".join(scales_desc(n) for n in nets),
        checkpoints=[{"path": n.name, "scales": list(n.scales)} for n in nets],
        cls_checkpoints=[{"path": n.name, "scales": list(n.scales)} for n in job.cls_nets],
        flip=opts.flip,
        n_unreadable=n_bad,
    )
    if job.protocol == "full":
        out.update(merge_threshold=opts.merge_threshold, cls_method=opts.cls_method)
    return out
