"""The ``full`` protocol at several greedy-merge thresholds, the dense maps computed once per
image: how ``eval.merge_threshold`` is chosen (``tools/choose-merge-threshold``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vgglocal.config import Config
from vgglocal.data.chunks import chunked_images
from vgglocal.data.images import ImageLimits
from vgglocal.evaluation.ilsvrc import LocalizationEvaluator
from vgglocal.evaluation.job import EvalRequest, Log, prepare
from vgglocal.inference.localize import box_candidates, merge_candidates
from vgglocal.inference.nets import EvalError

__all__ = ["sweep_merge_threshold"]


def sweep_merge_threshold(cfg: Config, req: EvalRequest, thresholds: Sequence[float], *, progress: bool = True,
                          log: Log | None = None) -> list[dict[str, Any]]:
    """Protocol 2 on the validation split at each of ``thresholds``. Returns one metrics dict
    per threshold (with ``merge_threshold``), in the order given."""
    if not thresholds or any(t < 0 for t in thresholds):
        raise EvalError(f"thresholds {list(thresholds)}: give values >= 0")
    req = EvalRequest("full", req.checkpoints, req.scales, req.cls_checkpoints, req.cls_scales, req.flip, 0.0)
    job = prepare(cfg, req, progress=progress, log=log)
    opts = job.options
    cls_nets = job.cls_nets or job.nets
    evaluators = [LocalizationEvaluator() for _ in thresholds]
    for chunk, images, _ in chunked_images(job.records, cfg.eval.batch_size, cfg.data.workers, ImageLimits.of(cfg.data),
                                           desc="sweep", progress=progress):
        cands = []
        if images:
            _, cands = box_candidates(images, cls_nets, job.nets, opts,  # type: ignore[misc]
                                      labels_per_image=opts.topk, cls_method=opts.cls_method)
        for t, evaluator in zip(thresholds, evaluators, strict=True):
            evaluator.process(chunk.records, chunk.spread([merge_candidates(c, t, opts.topk) for c in cands]))
    return [{"merge_threshold": t, **e.summarize()} for t, e in zip(thresholds, evaluators, strict=True)]
