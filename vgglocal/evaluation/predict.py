"""``vgglocal predict``: the :class:`~vgglocal.inference.predictor.Predictor` over files,
folders (searched recursively) and glob patterns, decoded by loader workers and predicted in
batches, written as JSON Lines (one object per image, as it goes) or a Kaggle CSV, with one
picture per image on request (MMDetection's ``DetInferencer`` does the same for folders).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from vgglocal.data.chunks import chunked_images
from vgglocal.data.images import ImageLimits
from vgglocal.data.records import Sample
from vgglocal.evaluation.writers import write_kaggle_csv
from vgglocal.inference.predictor import Prediction, Predictor

__all__ = ["predict_files"]


def _draw(img: np.ndarray, pred: Prediction, truth: Sample | None, names: Sequence[str], path: Path) -> None:
    from vgglocal.viz import draw_image, save_png

    true_boxes = torch.as_tensor(truth.boxes).reshape(-1, 4) if truth is not None else None
    true_labels = np.asarray(truth.box_labels).tolist() if truth is not None else []
    save_png(draw_image(img, pred.boxes, pred.names, true_boxes, [names[i] for i in true_labels], scores=pred.scores,
                        classes=pred.labels, true_classes=true_labels), path)


def predict_files(
    predictor: Predictor,
    items: Sequence[tuple[str, str]],
    *,
    jsonl: TextIO | None = None,
    csv: str | Path | None = None,
    draw: str | Path | None = None,
    truth: dict[str, Sample] | None = None,
    batch_size: int = 32,
    workers: int = 0,
    score_floor: float = 0.01,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    limits: ImageLimits | None = None,
) -> dict[str, Any]:
    """Predict ``items`` (``(path, key)`` pairs of :func:`vgglocal.data.files.expand_images`)
    ``batch_size`` images at a time.

    Args:
        jsonl: stream for JSON Lines, one object per image, in order: ``{"image": path, "height",
            "width", "predictions": [{"label", "name", "index", "score", "box"}], "detections":
            [...]}`` (detections from ``score_floor`` up), or ``{"image": path, "error": msg}``.
        csv: Kaggle submission to write (``ImageId`` = file stem, top-5 ``wnid x1 y1 x2 y2``;
            an unreadable image gets an empty row, as ``eval`` writes).
        draw: folder for one PNG per image (``<key>.png``), with the ground truth of ``truth``
            (records keyed by resolved path) when the image is there.
        workers: loader processes decoding images.
        limits: image header bounds (``data.max_pixels``, ``data.max_aspect``); larger images fail.

    Returns:
        ``{"n_images", "n_failed"}``.
    """
    log = log or (lambda msg: None)
    records = [Sample(path=p, label=-1) for p, _ in items]
    keys = [k for _, k in items]
    rows: list[tuple[str, list[tuple[str, list[float]]]]] = []
    n_failed = done = 0
    for chunk, images, _ in chunked_images(records, batch_size, workers, limits, desc="predict", progress=progress):
        outputs = chunk.spread(predictor.predict_arrays(images))
        for k, (rec, img, err, pred) in enumerate(zip(chunk.records, chunk.images, chunk.errors, outputs, strict=True)):
            key = keys[done + k]
            if pred is None:
                n_failed += 1
                log(f"error: {err}")
                line: dict[str, Any] = {"image": rec.path, "error": err}
                rows.append((Path(rec.path).stem, []))
            else:
                line = {"image": rec.path, **pred.to_dict(score_floor)}
                rows.append((Path(rec.path).stem, [(i, b) for i, b in zip(pred.ids, pred.boxes.tolist(), strict=True)]))
                if draw is not None:
                    target = Path(draw) / f"{key}.png"
                    _draw(img, pred, (truth or {}).get(str(Path(rec.path).resolve())), predictor.classes.names, target)
            if jsonl is not None:
                jsonl.write(json.dumps(line) + "\n")
        if jsonl is not None:
            jsonl.flush()
        done += len(chunk)
    if csv is not None:
        write_kaggle_csv(csv, rows)
    return {"n_images": len(records), "n_failed": n_failed}
