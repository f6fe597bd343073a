"""``vgglocal predict``: protocol 2 ("full") on image files, as JSON-able dicts."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vgglocal.config import Config
from vgglocal.data import ClassList, DataError, Sample
from vgglocal.data.images import load_rgb
from vgglocal.inference.nets import load_net, load_nets, resolve_device
from vgglocal.inference.protocols import RunOptions, run_protocol

__all__ = ["predict"]


def predict(
    cfg: Config,
    images: Sequence[str],
    checkpoints: Sequence[str],
    scales: Sequence[tuple[int, ...]] = (),
    cls_checkpoints: Sequence[str] = (),
    cls_scales: tuple[int, ...] = (),
    *,
    flip: bool | None = None,
    merge_threshold: float | None = None,
    draw: str | Path | None = None,
    truth: dict[str, Sample] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The ``full`` protocol on image files.

    Returns one dict per image: ``{"image": path, "predictions": [{"label", "index", "score",
    "box": [x1, y1, x2, y2]}, ...]}`` (top-k, best first) or ``{"image": path, "error": msg}``.
    With ``draw``, writes ``<draw>/<image stem>.png`` with the boxes (and the ground truth from
    ``truth``, keyed by absolute path, in another colour).
    """
    ev = cfg.eval
    device = resolve_device(ev.device)
    first = load_net(checkpoints[0], None, True, device)
    ids = list(first.classes) if first.classes is not None else [str(i) for i in range(first.num_classes)]
    classes = ClassList(ids=ids, names=ids)
    nets = load_nets(checkpoints, list(scales), tuple(ev.scales), "full", classes, True, device)
    cls_nets = load_nets(cls_checkpoints, [cls_scales] if cls_scales else [], tuple(ev.scales), "cls-dense", classes, False, device) if cls_checkpoints else None
    opts = RunOptions(flip=ev.flip if flip is None else flip, device=device, batch_size=ev.batch_size, precision=ev.precision, topk=ev.topk,
                      merge_threshold=ev.merge_threshold if merge_threshold is None else merge_threshold, cls_method=ev.cls_method)
    out: list[dict[str, Any]] = []
    for path in tqdm(images, desc="predict", unit="img", disable=not progress or not sys.stderr.isatty(), file=sys.stderr):
        try:
            img = load_rgb(path)
        except DataError as e:
            out.append({"image": path, "error": str(e)})
            continue
        (res,) = run_protocol("full", [img], nets, opts, cls_nets=cls_nets)
        boxes = res.boxes if res.boxes is not None else torch.zeros(0, 4)
        preds = [{"label": ids[int(lab)], "index": int(lab), "score": round(float(s), 6), "box": [round(float(v), 2) for v in b]}
                 for lab, s, b in zip(res.labels.tolist(), res.scores.tolist(), boxes.tolist(), strict=True)]
        out.append({"image": path, "predictions": preds})
        if draw is not None:
            from vgglocal.viz import draw_image, save_png

            rec = (truth or {}).get(str(Path(path).resolve()))
            true_boxes = torch.as_tensor(rec.boxes).reshape(-1, 4) if rec is not None else None
            true_names = [ids[int(v)] for v in np.asarray(rec.box_labels).tolist()] if rec is not None else None
            names = [f"{p['label']} {p['score']:.2f}" for p in preds]
            save_png(draw_image(img, boxes, names, true_boxes, true_names), Path(draw) / f"{Path(path).stem}.png")
    return out
