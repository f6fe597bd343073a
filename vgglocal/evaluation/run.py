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
import os
from collections import Counter
from pathlib import Path
from typing import Any

from vgglocal import comm
from vgglocal.config import Config
from vgglocal.data.images import ImageLimits, load_rgb, unreadable_reason
from vgglocal.evaluation.base import Evaluator, EvaluatorList
from vgglocal.evaluation.classification import ClassificationEvaluator
from vgglocal.evaluation.coco import COCO_KEYS
from vgglocal.evaluation.detection import DetectionEvaluator
from vgglocal.evaluation.ilsvrc import CenterCropEvaluator, LocalizationEvaluator
from vgglocal.evaluation.job import EvalJob, EvalRequest, Log, prepare
from vgglocal.evaluation.parts import PartError, PartStore, digest_files, digest_records
from vgglocal.evaluation.pictures import PictureGrid
from vgglocal.evaluation.shard import collect_parts, compute_parts, deal, together
from vgglocal.evaluation.writers import SubmissionWriter
from vgglocal.inference.nets import EvalError, scales_desc

__all__ = ["EvalError", "EvalRequest", "METRIC_KEYS", "evaluators_for", "center_crop_evaluators", "evaluate"]

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
        return center_crop_evaluators(True).evaluators
    if job.protocol == "full":
        annotations = _coco_annotations(cfg) if _native_coco(cfg, job) else None
        return [LocalizationEvaluator(), DetectionEvaluator(job.classes, annotations, cfg.eval.score_floor)]
    return [ClassificationEvaluator()]


def center_crop_evaluators(boxes: bool) -> EvaluatorList:
    """The evaluators of protocol 1 (``center-crop``): classification error, and with ``boxes``
    the localisation error of the one guess. Training-time validation scores with these too."""
    return EvaluatorList(ClassificationEvaluator(), *([CenterCropEvaluator()] if boxes else []))


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
    metrics).

    Under ``torchrun`` every process runs this: the images are shared out a part at a time
    (:mod:`vgglocal.evaluation.shard`), each rank on its own device, and rank 0 computes the
    metrics once from every image and writes the files; every rank returns the metrics. The
    per-image results are written to ``out/parts/`` as they finish (:mod:`vgglocal.evaluation.parts`),
    so the same command run again after a kill computes only the parts still missing; the
    folder is removed once the files are written.
    """
    log = log or (lambda msg: None)
    owned = int(os.environ.get("WORLD_SIZE", "1")) > 1 and comm.world_size() == 1  # we join the group, we leave it
    env = comm.setup(cfg.eval.device, cfg.train.dist_timeout, key="eval.device")
    if env.rank:
        log = _ranked(log, env.rank)
    try:
        with comm.peers_watched(env, "evaluation", "the same command run again computes only the parts still missing"):
            return _evaluate(cfg, req, Path(out), env, progress, log, overwrite)
    finally:
        if owned:
            comm.teardown()


def _ranked(log: Log, rank: int) -> Log:
    return lambda msg: log(f"rank {rank}: {msg}")


def _evaluate(cfg: Config, req: EvalRequest, out: Path, env: comm.DistEnv, progress: bool, log: Log,
              overwrite: bool) -> dict[str, Any]:
    together(lambda: check_output_folder(out, overwrite))
    job = together(lambda: prepare(cfg, req, progress=progress and env.is_main, log=log if env.is_main else None, device=env.device))
    store = PartStore(out, together(lambda: _agreed_key(cfg, req, job)), len(job.records), cfg.eval.batch_size)
    together(lambda: _open_parts(store, overwrite))
    comm.barrier()
    mine, done = deal(store)
    if done and env.is_main:
        log(f"resuming: {done} of {store.n_parts} parts of {store.part_size} images already in {store.root}")
    workers = cfg.data.workers if cfg.eval.workers < 0 else cfg.eval.workers
    compute_parts(job, store, mine, workers=workers, limits=ImageLimits.of(cfg.data), progress=progress, log=log)
    collect_parts(store)
    metrics = _write(cfg, req, job, store, out, log) if env.is_main else None
    metrics = comm.broadcast_object(metrics)  # after rank 0 has read every part
    store.clear()
    return metrics


def _agreed_key(cfg: Config, req: EvalRequest, job: EvalJob) -> dict[str, str]:
    """The key of this evaluation's parts (:mod:`vgglocal.evaluation.parts`), the same on every rank."""
    key = part_key(cfg, job)
    keys = comm.all_gather_objects(key)
    for r, other in enumerate(keys):
        differ = [k for k in key if other.get(k) != key[k]]
        if differ:
            raise EvalError(f"rank {r} sees other {', '.join(differ)} than rank 0 (every node needs the same checkpoints and data)")
    return key


def part_key(cfg: Config, job: EvalJob) -> dict[str, str]:
    """What an evaluation's per-image results depend on (``vgglocal.evaluation.parts``)."""
    import vgglocal

    o = job.options
    run = dict(protocol=job.protocol, split=job.split, flip=o.flip, batch_size=o.batch_size, precision=o.precision,
               channels_last=o.channels_last, compile=o.compile, fold_bn=o.fold_bn, topk=o.topk, det_topk=o.det_topk,
               merge_threshold=o.merge_threshold, cls_method=o.cls_method, device=o.device.type,
               scales=[list(n.scales) for n in job.nets], cls_scales=[list(n.scales) for n in job.cls_nets],
               limits=[cfg.data.max_pixels, cfg.data.max_aspect], vgglocal=vgglocal.__version__)
    return {
        "config": json.dumps(run, sort_keys=True),
        "checkpoints": digest_files([n.name for n in job.nets]) + "+" + digest_files([n.name for n in job.cls_nets]),
        "images": digest_records(job.records),
        "part size": str(cfg.eval.batch_size),
    }


def _open_parts(store: PartStore, overwrite: bool) -> None:
    """Check the parts already on disk; ``overwrite`` removes those of another evaluation."""
    for tmp in store.foreign():  # a write a kill interrupted
        tmp.unlink(missing_ok=True)
    try:
        store.done()
    except PartError:
        if not overwrite:
            raise
        store.clear()


def _write(cfg: Config, req: EvalRequest, job: EvalJob, store: PartStore, out: Path, log: Log) -> dict[str, Any]:
    """Rank 0: every part through the evaluators, the writer and the picture grid, in record
    order; the files written; the metrics returned."""
    out.mkdir(parents=True, exist_ok=True)
    evaluators = EvaluatorList(*(evaluators_for(job, cfg) if job.has_truth else []))
    writer = SubmissionWriter(job.classes, guesses=job.localizes, detections=job.protocol == "full", labels=not job.localizes,
                              score_floor=cfg.eval.score_floor, native_ids=_native_coco(cfg, job))
    pictures = PictureGrid(req.draw, job.classes) if req.draw else None
    limits = ImageLimits.of(cfg.data)
    unreadable: Counter[str] = Counter()
    for k in range(store.n_parts):
        outputs, errors = store.read(k)
        records = [job.records[i] for i in store.span(k)]
        unreadable.update(unreadable_reason(e) for e in errors if e)
        evaluators.process(records, outputs)
        writer.process(records, outputs)
        if pictures is not None:
            for rec, res in zip(records, outputs, strict=True):
                if res is not None and not pictures.full:
                    pictures.add(load_rgb(rec.path, limits), rec, res)
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
