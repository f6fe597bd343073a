"""The protocol every evaluator follows (Detectron2's ``DatasetEvaluator``): ``reset`` before a
pass, ``process`` once per batch of predictions, ``summarize`` for the metric dict. The metric
itself is always a pure function of arrays beside the evaluator (pycls ``meters.topk_errors``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Evaluator", "EvaluatorList"]


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
