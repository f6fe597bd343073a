"""Top-k classification error (section 4: top-1 and top-5 error), as a pure function of
arrays (pycls ``meters.topk_errors``) and as an evaluator."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vgglocal.data.records import Sample
from vgglocal.inference.results import ImageResult

__all__ = ["topk_correct", "ClassificationEvaluator"]


def topk_correct(scores: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> list[Tensor]:
    """Per-image hits: for each k, ``Tensor[N]`` bool, True when ``labels[i]`` is among the
    ``k`` highest ``scores[i]`` (``scores (Tensor[N, C])``, ``labels (Tensor[N])`` int).

    Ties are broken by ``torch.topk``; k larger than C counts every label as found.
    """
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"scores must be [N, C] and labels [N]; got {tuple(scores.shape)} and {tuple(labels.shape)}")
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices  # [N, kmax], best first
    hit = top == labels.reshape(-1, 1).to(top.device)
    return [hit[:, : min(k, kmax)].any(dim=1) for k in ks]


class ClassificationEvaluator:
    """Top-k error of the protocol's labels against each record's class: reports
    ``top1_cls_error``, ``top5_cls_error`` and ``n_images``.

    ``process(records, outputs)`` takes the records and their
    :class:`~vgglocal.inference.results.ImageResult` (labels best first); a ``None`` output (an
    image that could not be read) is wrong at every k. Only per-image hits are kept.
    """

    def __init__(self, ks: Sequence[int] = (1, 5)) -> None:
        self.ks = tuple(ks)
        self.reset()

    def reset(self) -> None:
        self._hits: list[Tensor] = []

    def process(self, records: Sequence[Sample], outputs: Sequence[ImageResult | None]) -> None:
        if len(records) != len(outputs):
            raise ValueError(f"{len(outputs)} outputs for {len(records)} records")
        if not records:
            return
        kmax = max(self.ks)
        ranked = torch.full((len(records), kmax), -1, dtype=torch.int64)
        for i, out in enumerate(outputs):
            if out is not None:
                top = torch.as_tensor(out.labels).cpu()[:kmax]
                ranked[i, : len(top)] = top
        truth = torch.tensor([r.label for r in records], dtype=torch.int64)
        hit = ranked == truth[:, None]
        self._hits.append(torch.stack([hit[:, :k].any(dim=1) for k in self.ks], dim=1))

    def summarize(self) -> dict[str, float | int]:
        if not self._hits:
            raise ValueError("ClassificationEvaluator: nothing was processed")
        hits = torch.cat(self._hits)
        out: dict[str, float | int] = {f"top{k}_cls_error": 1.0 - hits[:, i].double().mean().item() for i, k in enumerate(self.ks)}
        out["n_images"] = int(hits.shape[0])
        return out
