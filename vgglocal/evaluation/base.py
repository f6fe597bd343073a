"""The protocol every evaluator follows (Detectron2's ``DatasetEvaluator``): ``reset`` before a
pass, ``process`` once per batch of predictions, ``summarize`` for the metric dict. The metric
itself is always a pure function of arrays beside the evaluator (pycls ``meters.topk_errors``).

Over several processes the evaluators run once, on rank 0, on every image: what is gathered is
their input, the per-image results (:func:`gather_results`; ``vgglocal eval`` gathers them as
part files, :mod:`vgglocal.evaluation.shard`), top-k labels and boxes per image, never a
score per class (Detectron2's evaluators gather their ``_predictions`` the same way).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from vgglocal import comm
from vgglocal.inference.results import ImageResult, pack_results, unpack_results

__all__ = ["Evaluator", "EvaluatorList", "gather_results"]


@runtime_checkable
class Evaluator(Protocol):
    def reset(self) -> None:
        """Forget everything processed so far."""

    def process(self, *args: Any, **kwargs: Any) -> None:
        """Accumulate one batch of predictions with its ground truth."""

    def summarize(self) -> dict[str, Any]:
        """The metrics over everything processed (plain JSON-able values)."""


class EvaluatorList:
    """Several evaluators fed the same batches; their summaries merged (keys must not clash)."""

    def __init__(self, *evaluators: Evaluator) -> None:
        self.evaluators = list(evaluators)

    def reset(self) -> None:
        for e in self.evaluators:
            e.reset()

    def process(self, *args: Any, **kwargs: Any) -> None:
        for e in self.evaluators:
            e.process(*args, **kwargs)

    def summarize(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for e in self.evaluators:
            part = e.summarize()
            clash = set(part) & set(out) - {"n_images"}
            if clash:
                raise ValueError(f"evaluators report the same keys: {sorted(clash)}")
            out.update(part)
        return out


def gather_results(n: int, indices: Sequence[int], results: Sequence[ImageResult], *, extra: Sequence[float] | None = None,
                   dst: int = 0) -> tuple[list[ImageResult | None], list[float | None]] | None:
    """Every process's ``results`` of records ``indices`` (positions in a list of ``n``), and
    one ``extra`` number per result, on rank ``dst`` in record order: ``(outputs, extras)``,
    None where no process had the record; the first copy where several had it (a padded
    ``DistributedSampler`` repeats records). None on the other ranks."""
    if len(indices) != len(results) or (extra is not None and len(extra) != len(results)):
        raise ValueError(f"{len(indices)} indices for {len(results)} results")
    gathered = comm.gather_objects((list(indices), pack_results(results), list(extra or [])), dst=dst)
    if gathered is None:
        return None
    outputs: list[ImageResult | None] = [None] * n
    extras: list[float | None] = [None] * n
    for idx, packed, values in gathered:
        for j, (i, res) in enumerate(zip(idx, unpack_results(packed), strict=True)):
            if outputs[i] is None:
                outputs[i] = res
                extras[i] = values[j] if values else None
    return outputs, extras
