"""``vgglocal predict``: the :class:`~vgglocal.inference.predictor.Predictor` over files,
folders (searched recursively) and glob patterns, decoded by loader workers and predicted in
batches, written as JSON Lines (one object per image, as it goes) or a Kaggle CSV, with one
picture per image on request (MMDetection's ``DetInferencer`` does the same for folders).
"""

from __future__ import annotations

import glob
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from tqdm import tqdm

from vgglocal.data.images import IMAGE_EXTENSIONS, ImageLimits
from vgglocal.data.records import Sample
from vgglocal.errors import UserError
from vgglocal.evaluation.images import image_chunks
from vgglocal.evaluation.writers import write_kaggle_csv
from vgglocal.inference.predictor import Prediction, Predictor

__all__ = ["expand_images", "predict_files"]

_GLOB_CHARS = frozenset("*?[")


def expand_images(args: Sequence[str]) -> list[tuple[str, str]]:
    """``(path, key)`` per image, in order, each file once: a file as given; a folder's image
    files (extensions as :data:`vgglocal.data.images.IMAGE_EXTENSIONS`) at any depth, sorted; a
    glob pattern's matches (``**`` crosses folders), sorted. ``key`` names the image's picture:
    the file stem, or the path below a folder argument without its extension; made unique."""
    items: list[tuple[str, str]] = []
    seen: set[str] = set()
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file())
            if not found:
                raise UserError(f"{arg}: no image files ({' '.join(IMAGE_EXTENSIONS)}) in this folder or below")
            pairs = [(q, q.relative_to(p).with_suffix("").as_posix()) for q in found]
        elif p.is_file():
            pairs = [(p, p.stem)]
        elif _GLOB_CHARS & set(arg):
            found = sorted(Path(m) for m in glob.glob(arg, recursive=True) if Path(m).is_file())
            if not found:
                raise UserError(f"{arg}: no file matches this pattern")
            pairs = [(q, q.stem) for q in found]
        else:
            raise UserError(f"image not found: {arg}")
        for q, key in pairs:
            if str(q) not in seen:
                seen.add(str(q))
                items.append((str(q), key))
    counts: dict[str, int] = {}
    unique = []
    for path, key in items:
        counts[key] = counts.get(key, 0) + 1
        unique.append((path, key if counts[key] == 1 else f"{key}-{counts[key]}"))
    return unique


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
    """Predict ``items`` (:func:`expand_images`) ``batch_size`` images at a time.

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
    bar = tqdm(total=len(records), desc="predict", unit="img", disable=not progress or not sys.stderr.isatty(), file=sys.stderr)
    for chunk in image_chunks(records, batch_size, workers, limits):
        good = chunk.good
        outputs = chunk.spread(predictor.predict_arrays([chunk.images[i] for i in good]))  # type: ignore[misc]
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
        bar.update(len(chunk))
    bar.close()
    if csv is not None:
        write_kaggle_csv(csv, rows)
    return {"n_images": len(records), "n_failed": n_failed}
