"""``vgglocal report``: one self-contained HTML page of an evaluation, for people to look at.

For every protocol folder ``eval`` wrote (``metrics.json`` beside ``predictions.csv``,
``predictions.txt`` or ``detections.json``) the page shows:

* the metrics table (what ``metrics.json`` holds, errors as percentages);
* localisation protocols (``predictions.csv``, the ILSVRC view): localisation error per class
  (top-1 and top-5, the devkit rule of :func:`~vgglocal.evaluation.ilsvrc.localization_errors`),
  the confusion matrix of the top-1 labels (not for ``center-crop``, whose one guess is the
  true class), and galleries of the best and the worst localised
  images (the top-1 guess's IoU with the true boxes of its class), true boxes dashed;
* classification protocols (``predictions.txt`` of top-5 labels): the confusion matrix;
* detection output (``detections.json``): VOC precision-recall curves per class (the devkit's
  matching, :func:`~vgglocal.evaluation.voc.match_detections`) and the per-class AP bars.

Every picture is embedded as a base64 PNG/JPEG (``data:`` URIs), so the page is one file that
opens anywhere. The charts are drawn with matplotlib (the ``plot`` extra), the galleries with
:func:`vgglocal.viz.draw_image`. MMDetection's ``tools/analysis_tools`` and Detectron2's
``visualize_json_results.py`` are the models; neither draws the ILSVRC top-5 view.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vgglocal.data.files import shown
from vgglocal.errors import UserError

__all__ = ["ReportError", "protocol_folders", "write_report"]

GALLERY = 8  # images in each of the best / worst galleries
_PRED_FILES = ("predictions.csv", "predictions.txt", "detections.json")


class ReportError(UserError):
    """A folder that holds no evaluation, or files that do not fit together."""


def protocol_folders(root: Path) -> list[Path]:
    """``root`` itself when it is an evaluation's output folder, else its subfolders that are."""
    def is_eval(p: Path) -> bool:
        return (p / "metrics.json").is_file() and any((p / f).is_file() for f in _PRED_FILES)

    if is_eval(root):
        return [root]
    found = sorted(p for p in root.iterdir() if p.is_dir() and is_eval(p)) if root.is_dir() else []
    if not found:
        raise ReportError(f"{shown(root)}: no evaluation output here (a folder with metrics.json and predictions; "
                          "give `vgglocal eval`'s --out folder or the folder above several)")
    return found


def _text(value: Any) -> str:
    """``value`` as HTML text or attribute value: one printable line (:func:`~vgglocal.data.files.shown`:
    a newline as ``\\n``, bytes that are not UTF-8 as ``\\xNN``), then escaped, quotes included."""
    return html.escape(shown(str(value)))


def _anchors(folders: list[Path]) -> list[str]:
    """One HTML id per section: the folder name with whitespace as ``_`` (an id holds none), unique."""
    out: list[str] = []
    for f in folders:
        base = re.sub(r"\s", "_", shown(f.name)) or "section"
        name, n = base, 1
        while name in out:
            n += 1
            name = f"{base}-{n}"
        out.append(name)
    return out


# ---------------------------------------------------------------- pictures


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _jpeg(tile: torch.Tensor) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(tile.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError("vgglocal report draws its charts with matplotlib: pip install 'vgglocal[plot]'") from None
    return plt


def _bars(names: list[str], series: dict[str, np.ndarray], ylabel: str, title: str) -> str:
    plt = _pyplot()
    n = len(names)
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.35 * n + 2), 18), 3.6))
    width = 0.8 / max(len(series), 1)
    x = np.arange(n)
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
    if n <= 60:
        ax.set_xticks(x, [s[:18] for s in names], rotation=60, ha="right", fontsize=8)
    else:
        ax.set_xlabel(f"{n} classes, sorted by the first series")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _confusion(truth: np.ndarray, guess: np.ndarray, names: list[str]) -> str:
    """Rows: true class; columns: top-1 guess; each row normalised to the fraction of its images."""
    plt = _pyplot()
    c = len(names)
    m = np.zeros((c, c + 1))
    np.add.at(m, (truth, np.where(guess >= 0, guess, c)), 1)  # last column: no guess
    rows = m.sum(1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    side = min(max(4.5, 0.32 * c + 2), 14)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(frac[:, :c], cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if c <= 40:
        short = [s[:14] for s in names]
        ax.set_xticks(range(c), short, rotation=70, ha="right", fontsize=7)
        ax.set_yticks(range(c), short, fontsize=7)
        if c <= 15:
            for i, j in zip(*np.nonzero(frac[:, :c] >= 0.005), strict=True):
                ax.text(j, i, f"{frac[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xlabel("top-1 guess")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion of the top-1 labels ({int(m.sum())} images; rows sum to 1)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def _pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    cmap = plt.get_cmap("tab20")
    for i, (name, (rec, prec, ap)) in enumerate(sorted(curves.items(), key=lambda kv: -kv[1][2])):
        ax.plot(rec, prec, color=cmap(i % 20), lw=1.4, label=f"{name[:16]} (AP {100 * ap:.1f})" if i < 20 else None)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("VOC precision-recall per class (IoU 0.5)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    return _png(fig)


# ---------------------------------------------------------------- the ILSVRC view


def _localisation(folder: Path, records: list, classes) -> dict[str, Any]:
    """Per-image verdicts of ``predictions.csv`` against the records (devkit rule)."""
    from vgglocal.boxes import ilsvrc_iou
    from vgglocal.evaluation.ilsvrc import (
        MAX_GUESSES,
        localization_errors,
        read_kaggle_csv,
        scatter_ragged,
    )
    from vgglocal.evaluation.writers import image_id

    preds = read_kaggle_csv(folder / "predictions.csv")
    index = {c: i for i, c in enumerate(classes.ids)}
    rows = [r for r in records if len(r.boxes)]
    ids = [image_id(r) for r in rows]
    missing = [i for i in ids if i not in preds]
    if len(missing) == len(ids):
        raise ReportError(f"{folder / 'predictions.csv'}: none of its image ids are in the data's split (another data set?)")
    guesses = [preds.get(i, [])[:MAX_GUESSES] for i in ids]
    counts = np.array([len(g) for g in guesses], dtype=np.int64)
    pl, pb = scatter_ragged(counts, MAX_GUESSES, [np.array([index.get(lab, -2) for g in guesses for lab, _ in g], dtype=np.int64)],
                      [np.array([b for g in guesses for _, b in g], dtype=np.float64).reshape(-1, 4)])
    gcounts = np.array([len(r.boxes) for r in rows], dtype=np.int64)
    gl, gb = scatter_ragged(gcounts, int(gcounts.max()), [np.concatenate([np.asarray(r.box_labels, np.int64) for r in rows])],
                      [np.concatenate([np.asarray(r.boxes, np.float64).reshape(-1, 4) for r in rows])])
    _, loc1 = localization_errors(pl, pb, gl, gb, topk=1)
    _, loc5 = localization_errors(pl, pb, gl, gb, topk=MAX_GUESSES)
    iou = torch.vmap(ilsvrc_iou)(pb[:, :1].double(), gb.double())[:, 0]  # [N, G]: top-1 guess vs each true box
    # the devkit marks disjoint pairs -1; the report shows no overlap as 0
    iou = torch.where((gl == pl[:, :1]) & (gl >= 0), iou.clamp(min=0), torch.zeros_like(iou)).amax(1)
    truth = np.array([int(r.label) if r.label is not None and r.label >= 0 else int(np.asarray(r.box_labels)[0]) for r in rows])
    return {"rows": rows, "ids": ids, "guesses": guesses, "loc1": loc1.numpy(), "loc5": loc5.numpy(), "iou": iou.numpy(),
            "truth": truth, "top1": pl[:, 0].numpy(), "missing": len(missing)}


def _gallery(v: dict[str, Any], order: np.ndarray, classes, log: Callable[[str], None],
             count: int = GALLERY) -> list[tuple[str, str]]:
    from vgglocal.data.images import load_rgb
    from vgglocal.viz import draw_image, short_name

    names = classes.names if getattr(classes, "names", None) else classes.ids
    tiles = []
    for i in order[:count]:
        r = v["rows"][int(i)]
        try:
            image = load_rgb(r.path)
        except (OSError, ValueError) as e:
            log(shown(f"report: {r.path}: not drawn ({e})"))
            continue
        g = v["guesses"][int(i)]
        labels = [short_name(names[classes.ids.index(lab)]) if lab in classes.ids else lab for lab, _ in g]
        boxes = torch.tensor([b for _, b in g], dtype=torch.float32).reshape(-1, 4)
        true_labels = [short_name(names[int(c)]) for c in np.asarray(r.box_labels).tolist()]
        tile = draw_image(image, boxes[:1], labels[:1], true_boxes=torch.as_tensor(np.asarray(r.boxes, np.float32)),
                          true_labels=true_labels, side=220, legend=False)
        caption = (f"{_text(v['ids'][int(i)])}: top-1 {_text(labels[0] if labels else 'none')}, "
                   f"IoU {v['iou'][int(i)]:.2f}, top-5 {'found' if v['loc5'][int(i)] == 0 else 'missed'}")
        tiles.append((_jpeg(tile), caption))
    return tiles


# ---------------------------------------------------------------- the page


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2em auto;max-width:1180px;color:#1d1d1f;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:2px solid #ddd;padding-bottom:.2em}h3{margin-top:1.4em}
table{border-collapse:collapse;font-size:.92em}td,th{border:1px solid #ddd;padding:.25em .7em;text-align:right}
th{background:#f4f4f6;text-align:left}img.chart{max-width:100%;height:auto;display:block;margin:.6em 0}
.gallery{display:flex;flex-wrap:wrap;gap:10px}.gallery figure{margin:0;width:232px;font-size:.78em}
.gallery img{max-width:232px;height:auto;border:1px solid #ccc}.muted{color:#777;font-size:.9em}
"""


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, (dict, list)) or value is None:
            continue
        cell = f"{100 * value:.2f} %" if isinstance(value, float) and ("error" in key or key.endswith("map")) else _text(value)
        if isinstance(value, float) and key.startswith("coco_"):
            cell = f"{100 * value:.2f}" if value >= 0 else "n/a"
        rows.append(f"<tr><th>{_text(key)}</th><td>{cell}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _section(folder: Path, anchor: str, data_root: str | None, fmt: str | None, log: Callable[[str], None]) -> str:
    from vgglocal.evaluation.score import read_root

    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(shown(f"{folder / 'metrics.json'}: not the metrics JSON vgglocal eval writes ({e})")) from None
    if not isinstance(metrics, dict):
        raise ReportError(shown(f"{folder / 'metrics.json'}: not the metrics JSON vgglocal eval writes (no object)"))
    protocol = metrics.get("protocol", folder.name)
    parts = [f"<h2 id='{_text(anchor)}'>{_text(folder.name)}: protocol {_text(protocol)}</h2>",
             f"<p class='muted'>scales {_text(metrics.get('scales_desc', metrics.get('scales', '')))}, "
             f"split {_text(metrics.get('split', ''))}, "
             f"{_text(metrics.get('n_images', '?'))} images</p>", _metrics_table(metrics)]
    data = metrics.get("data") or {}
    root = data_root or data.get("root")
    if root is None or not Path(root).exists():
        parts.append(f"<p class='muted'>the data root ({_text(root)}) is not here: "
                     "pass --data ROOT for the per-class views and the galleries</p>")
        return "\n".join(parts)
    records, classes, _ = read_root(root, fmt or data.get("format"), metrics.get("split"))
    names = list(classes.names) if getattr(classes, "names", None) else list(classes.ids)
    if (folder / "predictions.csv").is_file():
        v = _localisation(folder, records, classes)
        present = np.unique(v["truth"])
        per = {k: np.array([100 * v[k][v["truth"] == c].mean() for c in present]) for k in ("loc5", "loc1")}
        order = np.argsort(-per["loc5"], kind="stable")
        parts.append("<h3>Localisation error per class</h3>")
        parts.append(f"<img class='chart' alt='localisation error per class' src='{_bars([names[c] for c in present[order]], {'top-5': per['loc5'][order], 'top-1': per['loc1'][order]}, 'localisation error (%)', 'ILSVRC localisation error per true class (IoU >= 0.5)')}'>")
        if protocol != "center-crop":  # protocol 1 localises the true class: its guesses are no classification
            parts.append("<h3>Confusion of the top-1 labels</h3>")
            parts.append(f"<img class='chart' alt='confusion matrix' src='{_confusion(v['truth'], v['top1'], names)}'>")
        best = np.lexsort((np.arange(len(v["iou"])), -v["iou"]))
        # with fewer than two galleries' worth of images, each image is shown once: the better
        # half (the middle one too) as best, the rest as worst
        n_best = min(GALLERY, (len(best) + 1) // 2)
        n_worst = min(GALLERY, len(best) - n_best)
        for title, order_, count in (("Best localised (highest top-1 IoU)", best, n_best),
                                     ("Worst localised (lowest top-1 IoU)", best[::-1], n_worst)):
            if not count:
                continue
            tiles = _gallery(v, order_, classes, log, count)
            figs = "".join(f"<figure><img alt='{c}' src='{src}'><figcaption>{c}</figcaption></figure>" for src, c in tiles)
            parts.append(f"<h3>{title}</h3><p class='muted'>solid: the top-1 guess; dashed: the true boxes</p>"
                         f"<div class='gallery'>{figs}</div>")
    elif (folder / "predictions.txt").is_file() and "top1_cls_error" in metrics:
        lines = (folder / "predictions.txt").read_text().splitlines()
        if len(lines) == len(records):
            by_devkit = {int(d): i for i, d in enumerate(classes.devkit_ids or range(1, len(classes) + 1))}
            top1 = np.array([by_devkit.get(int(ln.split()[0]), -1) if ln.split() else -1 for ln in lines])
            truth = np.array([int(r.label) for r in records])
            keep = truth >= 0
            parts.append("<h3>Confusion of the top-1 labels</h3>")
            parts.append(f"<img class='chart' alt='confusion matrix' src='{_confusion(truth[keep], top1[keep], names)}'>")
        else:
            log(shown(f"report: {folder / 'predictions.txt'}: {len(lines)} lines for {len(records)} images; no confusion matrix"))
    if (folder / "detections.json").is_file():
        parts.extend(_detection_views(folder, root, fmt or data.get("format"), metrics, dict(zip(classes.ids, names, strict=True))))
    return "\n".join(parts)


def _detection_views(folder: Path, root: str, fmt: str | None, metrics: dict[str, Any], readable: dict[str, str]) -> list[str]:
    """PR curves and AP bars; ``readable`` maps category names (class ids) to the classes' readable names."""
    from vgglocal.evaluation.score import instances_of, read_results
    from vgglocal.evaluation.voc import match_detections, voc_inputs

    gt = folder / "ground_truth.json"
    instances = json.loads(gt.read_text()) if gt.is_file() else instances_of(root, fmt, metrics.get("split"))
    results = read_results(str(folder / "detections.json"))
    dets, gts, names = voc_inputs(instances, results)
    hits, ignored = match_detections(*dets, *gts)
    det_labels, det_scores = dets[2].numpy(), dets[3].numpy()
    gt_labels, hard = gts[2].numpy(), gts[3].numpy()
    curves = {}
    for c, name in enumerate(names):
        positives = int(((gt_labels == c) & ~hard).sum())
        sel = (det_labels == c) & ~ignored.numpy()
        if positives == 0:
            continue
        order = np.argsort(-det_scores[sel], kind="stable")
        tp = np.cumsum(hits.numpy()[sel][order])
        fp = np.cumsum(~hits.numpy()[sel][order])
        rec = tp / positives
        prec = tp / np.maximum(tp + fp, 1)
        ap = (metrics.get("voc_ap_per_class") or {}).get(name)
        curves[readable.get(name, name)] = (rec, prec, float(ap) if ap is not None else math.nan)
    parts = ["<h3>Detection: precision-recall per class</h3>"]
    if curves:
        parts.append(f"<img class='chart' alt='precision-recall curves' src='{_pr_curves(curves)}'>")
    per_class = metrics.get("voc_ap_per_class") or {}
    shown = [(k, v) for k, v in per_class.items() if v is not None]
    if shown:
        parts.append(f"<img class='chart' alt='AP per class' src='{_bars([readable.get(k, k) for k, _ in shown], {'VOC AP (area)': np.array([100 * v for _, v in shown])}, 'AP (%)', 'VOC average precision per class')}'>")
    return parts


def write_report(target: str | Path, out: str | Path | None = None, *, data_root: str | None = None, fmt: str | None = None,
                 log: Callable[[str], None] | None = None) -> Path:
    """Write ``report.html`` for the evaluation folder(s) under ``target``; returns its path
    (default ``target/report.html``)."""
    log = log or (lambda msg: None)
    target = Path(target)
    folders = protocol_folders(target)
    anchors = _anchors(folders)
    sections = []
    for folder, anchor in zip(folders, anchors, strict=True):
        log(shown(f"report: {folder}"))
        sections.append(_section(folder, anchor, data_root, fmt, log))
    nav = " · ".join(f"<a href='#{_text(a)}'>{_text(f.name)}</a>" for f, a in zip(folders, anchors, strict=True))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>vgglocal evaluation report: "
            f"{_text(target.name)}</title><style>{_CSS}</style></head><body>"
            f"<h1>vgglocal evaluation report: {_text(target)}</h1><p>{nav}</p>"
            + "\n".join(sections) + "</body></html>\n")
    path = Path(out) if out is not None else target / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write leaves no half page behind
    return path
