"""``vgglocal predict``: the :class:`~vgglocal.inference.predictor.Predictor` over files,
folders (searched recursively) and glob patterns, decoded by loader workers and predicted in
batches, written as JSON Lines (one object per image, as it goes) or a Kaggle CSV, with one
picture per image on request (MMDetection's ``DetInferencer`` does the same for folders).
Under ``torchrun`` the images are shared out a chunk per rank, and rank 0 writes the same
files a single process writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from vgglocal import comm
from vgglocal.data.chunks import sharded_chunks
from vgglocal.data.files import check_utf8_names, shown
from vgglocal.data.images import ImageLimits
from vgglocal.data.records import Sample
from vgglocal.evaluation.writers import write_kaggle_csv
from vgglocal.inference.predictor import Prediction, Predictor
from vgglocal.inference.results import pack_results, unpack_results

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
    batch_size: int | None = None,
    workers: int = 0,
    score_floor: float = 0.01,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    limits: ImageLimits | None = None,
) -> dict[str, Any]:
    """Predict ``items`` (``(path, key)`` pairs of :func:`vgglocal.data.files.expand_images`)
    ``batch_size`` images at a time (default: the predictor's ``eval.batch_size``).

    Args:
        jsonl: stream for JSON Lines, one object per image, in order: ``{"image": path, "height",
            "width", "predictions": [{"label", "name", "index", "score", "box"}], "detections":
            [...]}`` (detections from ``score_floor`` up), or ``{"image": path, "error": msg}``.
        csv: Kaggle submission to write (``ImageId`` = the picture name, ``key``: the file stem,
            or the path below a folder argument; top-5 ``wnid x1 y1 x2 y2``; an unreadable image
            gets an empty row, as ``eval`` writes). Names that are not UTF-8 are refused
            (:func:`~vgglocal.data.files.check_utf8_names`) before any image is read.
        draw: folder for one PNG per image (``<key>.png``), with the ground truth of ``truth``
            (records keyed by resolved path) when the image is there.
        workers: loader processes decoding images.
        limits: image header bounds (``data.max_pixels``, ``data.max_aspect``); larger images fail.

    Returns:
        ``{"n_images", "n_failed"}``.
    """
    log = log or (lambda msg: None)
    if csv is not None:
        check_utf8_names(items, csv)
    batch_size = batch_size or predictor.options.batch_size
    records = [Sample(path=p, label=-1) for p, _ in items]
    keys = [k for _, k in items]
    rows: list[tuple[str, list[tuple[str, list[float]]]]] = []
    n_failed = 0
    main = comm.rank() == 0
    # Under torchrun each rank predicts its chunks and draws their pictures; rank 0 writes the
    # lines of every chunk, a round at a time, in the order of the images.
    for k, chunk, images, _ in sharded_chunks(records, batch_size, workers, limits, desc="predict", progress=progress):
        packed = None
        if chunk is not None:
            results = chunk.spread(predictor.predict_results(images))
            packed = (k, pack_results(results), chunk.errors)
            if draw is not None:
                for j, (rec, img, res) in enumerate(zip(chunk.records, chunk.images, results, strict=True)):
                    if res is not None:
                        target = Path(draw) / f"{keys[k * batch_size + j]}.png"
                        _draw(img, predictor.prediction(res), (truth or {}).get(str(Path(rec.path).resolve())),
                              predictor.classes.names, target)
        for k, tensors, errors in sorted(p for p in comm.gather_objects(packed) or [] if p is not None):
            for j, (res, err) in enumerate(zip(unpack_results(tensors), errors, strict=True)):
                rec, key = records[k * batch_size + j], keys[k * batch_size + j]
                if res is None:
                    n_failed += 1
                    log(f"error: {shown(err)}")  # one line whatever the file name holds
                    line: dict[str, Any] = {"image": rec.path, "error": err}
                    rows.append((key, []))
                else:
                    pred = predictor.prediction(res)
                    line = {"image": rec.path, **pred.to_dict(score_floor)}
                    # the picture name, unique where stems are not (a/x.jpg, b/x.jpg)
                    rows.append((key, [(i, b) for i, b in zip(pred.ids, pred.boxes.tolist(), strict=True)]))
                if jsonl is not None:
                    jsonl.write(json.dumps(line) + "\n")
            if jsonl is not None:
                jsonl.flush()
    if csv is not None and main:
        write_kaggle_csv(csv, rows)
    return comm.broadcast_object({"n_images": len(records), "n_failed": n_failed})
