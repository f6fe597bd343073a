"""``vgglocal eval``: run one test protocol over the validation split and write the results.

Protocols (SPEC 3 and 4): ``cls-dense``, ``cls-multicrop``, ``cls-both`` (classification;
several checkpoints are fused), ``center-crop`` (localisation protocol 1) and ``full``
(protocol 2). Output folder:

* ``metrics.json``: ``top1_cls_error``, ``top5_cls_error``, ``top1_loc_error``,
  ``top5_loc_error`` (localisation protocols), ``n_images``, and on COCO-format data
  ``coco_ap``, ``coco_ap50`` (``full``); plus what was run (protocol, checkpoints, scales,
  threshold) and ``n_bad_images``.
* localisation protocols: ``predictions.csv`` (Kaggle submission, wnids/class ids),
  ``predictions.txt`` (devkit format: devkit class ids when the data set has them, else
  index + 1), and for ``full`` ``detections.json`` (COCO results).
* ``--draw N``: ``predictions.png``, a grid of the first N images with true (green) and
  predicted (red) boxes.

Which errors mean what: in ``full`` both classification and localisation errors follow the
devkit rule on the five guesses (so ``vgglocal score predictions.csv`` reproduces them). In
``center-crop`` the one guess is the ground-truth class (protocol 1), so the classification
errors come from the classification system's posteriors on the same centre crop, and top-1
and top-5 localisation error are the same number. An image that cannot be decoded counts as
wrong and is listed in ``n_bad_images``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vgglocal.boxes import clip_boxes
from vgglocal.config import Config
from vgglocal.data import ClassList, DataError, Sample, read_split
from vgglocal.data.images import load_rgb
from vgglocal.errors import UserError
from vgglocal.evaluation.classification import ClassificationEvaluator
from vgglocal.evaluation.coco import COCOEvaluator, detection_records, write_detections
from vgglocal.evaluation.ilsvrc import (
    MAX_GUESSES,
    LocalizationEvaluator,
    write_devkit_txt,
    write_kaggle_csv,
)
from vgglocal.inference.localize import (
    Localization,
    Net,
    box_candidates,
    classify,
    localize_center_crop,
    localize_full,
    merge_candidates,
)
from vgglocal.models.io import load_model
from vgglocal.models.vgg import VGG

__all__ = ["PROTOCOLS", "EvalError", "EvalRequest", "parse_scales", "paper_scales", "resolve_device", "load_nets", "evaluate", "predict",
           "sweep_merge_threshold"]

PROTOCOLS = ("cls-dense", "cls-multicrop", "cls-both", "center-crop", "full")
LOC_PROTOCOLS = ("center-crop", "full")

Log = Callable[[str], None]


class EvalError(UserError):
    """A user error in an evaluation request (checkpoint kind, classes, scales)."""


@dataclass
class EvalRequest:
    """What ``vgglocal eval`` was asked to do (CLI options over the config's ``eval`` section).

    ``scales[i]`` belongs to ``checkpoints[i]``; an empty tuple means ``eval.scales``, or the
    paper's rule from the checkpoint's training scale (:func:`paper_scales`).
    """

    protocol: str
    checkpoints: list[str]
    scales: list[tuple[int, ...]] = field(default_factory=list)
    cls_checkpoints: list[str] = field(default_factory=list)
    cls_scales: tuple[int, ...] = ()
    flip: bool | None = None
    merge_threshold: float | None = None
    draw: int = 0


def parse_scales(text: str) -> tuple[int, ...]:
    """``"352,384"`` or Table 9's ``"384/352,384"`` (training S / test Qs) → ``(352, 384)``."""
    part = text.split("/", 1)[-1] if "/" in text else text
    try:
        scales = tuple(int(v) for v in part.replace(" ", "").split(",") if v)
    except ValueError:
        raise EvalError(f"--scales {text!r}: expected comma-separated sizes such as 256 or 384/352,384") from None
    if not scales or any(q <= 0 for q in scales):
        raise EvalError(f"--scales {text!r}: expected positive sizes")
    return scales


def paper_scales(model: VGG, protocol: str) -> tuple[int, ...]:
    """Test scales from the checkpoint's training scale (section 4.2): fixed S → {S-32, S, S+32};
    jittered [Smin, Smax] → {Smin, (Smin+Smax)/2, Smax}; protocol 1 (center-crop) → S, or the
    middle of the jitter range. Without the information (imported weights): 256."""
    ts = (getattr(model, "meta", None) or {}).get("train_scale") or {}
    s, lo, hi = ts.get("scale"), ts.get("scale_min"), ts.get("scale_max")
    if hi:
        mid = (lo + hi) // 2
        return (mid,) if protocol == "center-crop" else (lo, mid, hi)
    if s:
        return (s,) if protocol == "center-crop" else (max(s - 32, 32), s, s + 32)
    return (256,)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise EvalError("eval.device: cuda requested but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def _load(path: str, classes: ClassList, need_boxes: bool, device: torch.device) -> VGG:
    model = load_model(path)
    if model.num_classes != len(classes):
        raise EvalError(f"{path}: the model has {model.num_classes} classes, the data set {len(classes)}")
    if model.classes is not None and list(model.classes) != list(classes.ids):
        diff = next(i for i, (a, b) in enumerate(zip(model.classes, classes.ids, strict=True)) if a != b) if len(model.classes) == len(classes.ids) else 0
        raise EvalError(f"{path}: class {diff} is {model.classes[diff]!r} in the model and {classes.ids[diff]!r} in the data set")
    if need_boxes and model.box_head is None:
        raise EvalError(f"{path}: a classification checkpoint; this protocol needs a localisation one (train-loc)")
    return model.to(device)


def load_nets(paths: Sequence[str], scales: Sequence[tuple[int, ...]], default: tuple[int, ...], protocol: str, classes: ClassList,
              need_boxes: bool, device: torch.device) -> list[Net]:
    """Load checkpoints with their scales (``scales`` per path, or one for all, or ``default``,
    or the paper's rule)."""
    if len(scales) > 1 and len(scales) != len(paths):
        raise EvalError(f"{len(scales)} --scales for {len(paths)} --checkpoint: give one per checkpoint, or one for all")
    nets = []
    for k, path in enumerate(paths):
        model = _load(path, classes, need_boxes, device)
        qs = scales[k] if len(scales) > 1 else scales[0] if scales else ()
        nets.append(Net(model, tuple(qs or default or paper_scales(model, protocol)), name=path))
    return nets


class _Images(Dataset):
    """Decoded images of the records; a bad file gives its message instead of raising."""

    def __init__(self, records: Sequence[Sample]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str]:
        path = self.records[i].path
        try:
            return i, load_rgb(path), ""
        except DataError as e:
            return i, None, str(e)
        except OSError as e:
            return i, None, f"{path}: {e.strerror or e}"


def _identity(item: Any) -> Any:
    return item


def _chunks(records: Sequence[Sample], size: int, workers: int):
    """Yield lists of (index, image or None, error) in record order."""
    loader = DataLoader(_Images(records), batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity)
    chunk = []
    for item in loader:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _whole_pixels(boxes: torch.Tensor) -> torch.Tensor:
    """Round to whole pixels as the submission files do (half up), so that scoring the written
    predictions.csv reproduces metrics.json exactly."""
    return torch.floor(boxes.double() + 0.5)


def _image_id(record: Sample) -> str:
    return record.source_id or Path(record.path).stem


def _coco_image_id(record: Sample) -> int | str:
    try:
        return int(record.source_id)
    except ValueError:
        return record.source_id or Path(record.path).stem


@dataclass
class _Collected:
    """Per-image outputs in record order (None for bad images)."""

    guesses: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    detections: list[dict[str, Any]] = field(default_factory=list)
    drawn: list[tuple[np.ndarray, Sample, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)


@dataclass
class _Setup:
    records: list[Sample]
    classes: ClassList
    nets: list[Net]
    cls_nets: list[Net]
    device: torch.device
    flip: bool
    threshold: float


def _setup(cfg: Config, req: EvalRequest, progress: bool, log: Log) -> _Setup:
    """Check the request, read the split, load the nets (shared by eval and the sweep)."""
    if req.protocol not in PROTOCOLS:
        raise EvalError(f"--protocol {req.protocol!r}: choose from {', '.join(PROTOCOLS)}")
    if not req.checkpoints:
        raise EvalError("give at least one --checkpoint")
    loc = req.protocol in LOC_PROTOCOLS
    if req.protocol == "center-crop" and len(req.checkpoints) != 1:
        raise EvalError("center-crop (protocol 1) evaluates one --checkpoint")
    ev = cfg.eval
    flip = ev.flip if req.flip is None else req.flip
    threshold = ev.merge_threshold if req.merge_threshold is None else req.merge_threshold
    if threshold < 0:
        raise EvalError(f"--merge-threshold {threshold}: must be >= 0")
    device = resolve_device(ev.device)
    records, classes = read_split(cfg.data, cfg.data.val_split, "loc" if loc else "cls", progress=progress)
    nets = load_nets(req.checkpoints, req.scales, tuple(ev.scales), req.protocol, classes, loc, device)
    if req.protocol == "center-crop" and len(nets[0].scales) != 1:
        raise EvalError(f"center-crop uses one scale S; got {list(nets[0].scales)}")
    if loc and req.cls_checkpoints:
        cls_nets = load_nets(req.cls_checkpoints, [req.cls_scales] if req.cls_scales else [], tuple(ev.scales), "cls-dense", classes, False, device)
    else:
        cls_nets = nets  # the localisation nets' own classification heads (or the cls protocols' nets)
    for n in {id(x): x for x in nets + cls_nets}.values():
        log(f"{Path(n.name).name}: arch {n.model.arch}, crop {n.model.crop}, scales {list(n.scales)}")
    return _Setup(records, classes, nets, cls_nets, device, flip, threshold)


def evaluate(cfg: Config, req: EvalRequest, out: str | Path, *, progress: bool = True, log: Log | None = None) -> dict[str, Any]:
    """Run ``req`` on ``cfg.data``'s validation split; write the files into ``out``; return the metrics."""
    log = log or (lambda msg: None)
    st = _setup(cfg, req, progress, log)
    records, classes, nets, cls_nets, device, flip, threshold = st.records, st.classes, st.nets, st.cls_nets, st.device, st.flip, st.threshold
    loc = req.protocol in LOC_PROTOCOLS
    ev = cfg.eval
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    cls_eval = ClassificationEvaluator()
    loc_eval = LocalizationEvaluator()
    coco = None
    if loc and cfg.data.format == "coco" and classes.coco_ids:
        from vgglocal.data.splits import split_spec

        spec = split_spec(cfg.data, cfg.data.val_split)
        ann = spec.annotations or spec.at("annotations", f"instances_{spec.name}.json")
        coco = COCOEvaluator(ann, classes.coco_ids, ev.score_floor)
    got = _Collected()
    bar = tqdm(total=len(records), desc=f"eval {req.protocol}", unit="img", disable=not progress or not sys.stderr.isatty(), file=sys.stderr)
    opts = dict(device=device, batch_size=ev.batch_size, precision=ev.precision)
    for chunk in _chunks(records, ev.batch_size, cfg.data.workers):
        good = [(i, img) for i, img, _ in chunk if img is not None]
        for _, _, err in chunk:
            if err:
                got.bad.append(err)
                log(f"skipped: {err}")
        idx = [i for i, _ in good]
        imgs = [img for _, img in good]
        recs = [records[i] for i in idx]
        labels = torch.tensor([r.label for r in recs], dtype=torch.int64)
        by_index: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        if not loc:
            if imgs:
                method = req.protocol.removeprefix("cls-")
                cls_eval.process(classify(imgs, nets, method, flip=flip, **opts), labels)
        elif req.protocol == "center-crop":
            if imgs:
                clf = cls_nets[0].model if cls_nets is not nets else None
                post, boxes = localize_center_crop(imgs, labels, nets[0].model, nets[0].scales[0], cls_net=clf, **opts)
                cls_eval.process(post, labels)
                for k, i in enumerate(idx):
                    h, w = imgs[k].shape[:2]
                    b = clip_boxes(boxes[k : k + 1], (h, w))
                    by_index[i] = (labels[k : k + 1], _whole_pixels(b))
        else:
            if imgs:
                _, results = localize_full(imgs, cls_nets, nets, threshold=threshold, topk=min(ev.topk, MAX_GUESSES), det_topk=ev.det_topk,
                                           cls_method=ev.cls_method, flip=flip, **opts)
                for i, res in zip(idx, results, strict=True):
                    by_index[i] = (res.labels, _whole_pixels(res.boxes))
                    _detections(res, records[i], classes, ev.score_floor, got, coco)
            if coco is not None:  # undecodable images: their objects count as missed
                for i, _, err in chunk:
                    if err:
                        coco.process(_coco_image_id(records[i]), torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
        if loc:
            for i, _, _ in chunk:
                r = records[i]
                g = by_index.get(i)
                got.guesses.append(g)
                loc_eval.process([g], [(torch.as_tensor(r.box_labels), torch.as_tensor(r.boxes))])
        elif chunk and len(imgs) < len(chunk):
            cls_eval.process_missing(len(chunk) - len(imgs))
        if req.draw and len(got.drawn) < req.draw:
            for k, i in enumerate(idx):
                if len(got.drawn) >= req.draw:
                    break
                pl, pb = by_index.get(i, (torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4)))
                got.drawn.append((imgs[k], records[i], pl[:1], pb[:1]))
        bar.update(len(chunk))
    bar.close()

    metrics: dict[str, Any] = {}
    if req.protocol == "full":
        metrics.update(loc_eval.summarize())
    elif req.protocol == "center-crop":
        cls_eval.process_missing(len(got.bad))
        lm = loc_eval.summarize()
        metrics.update(cls_eval.summarize())
        metrics.update({k: lm[k] for k in ("top1_loc_error", "top5_loc_error")})
        metrics["n_images"] = lm["n_images"]
    else:
        metrics.update(cls_eval.summarize())
    if coco is not None:
        metrics.update({k: v for k, v in coco.summarize().items() if k in ("coco_ap", "coco_ap50")})
    metrics = {k: metrics[k] for k in ("top1_cls_error", "top5_cls_error", "top1_loc_error", "top5_loc_error", "n_images", "coco_ap", "coco_ap50") if k in metrics}
    metrics.update(
        protocol=req.protocol,
        scales=sorted({q for n in nets for q in n.scales}),
        scales_desc=" + ".join(_scales_desc(n) for n in nets),
        checkpoints=[{"path": n.name, "scales": list(n.scales)} for n in nets],
        cls_checkpoints=[{"path": n.name, "scales": list(n.scales)} for n in cls_nets] if cls_nets is not nets else [],
        flip=flip,
        n_bad_images=len(got.bad),
    )
    if req.protocol == "full":
        metrics.update(merge_threshold=threshold, cls_method=ev.cls_method)
    if loc:
        _write_submissions(out, records, classes, got)
    if req.protocol == "full":
        write_detections(out / "detections.json", got.detections)
    if req.draw:
        _draw(out / "predictions.png", got.drawn, classes)
    (out / "metrics.json").write_text(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}, indent=1) + "\n")
    return metrics


def _scales_desc(net: Net) -> str:
    """Table 9's notation: training scale / test scales, e.g. ``384/352,384`` or
    ``256-512/256,384,512``; just the test scales when the training scale is unknown."""
    ts = (getattr(net.model, "meta", None) or {}).get("train_scale") or {}
    train = f"{ts['scale_min']}-{ts['scale_max']}" if ts.get("scale_max") else str(ts["scale"]) if ts.get("scale") else ""
    tests = ",".join(str(q) for q in net.scales)
    return f"{train}/{tests}" if train else tests


def _detections(res: Localization, record: Sample, classes: ClassList, floor: float, got: _Collected, coco: COCOEvaluator | None) -> None:
    """Every merged box of every label considered, as COCO results (category ids: the data
    set's COCO ids, else class index + 1)."""
    if res.detections:
        labels = torch.cat([torch.full((len(b),), lab, dtype=torch.int64) for lab, b, _ in res.detections])
        boxes = torch.cat([b for _, b, _ in res.detections])
        scores = torch.cat([s for _, _, s in res.detections])
    else:
        labels, boxes, scores = torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4), torch.zeros(0)
    cat_ids = classes.coco_ids or list(range(1, len(classes) + 1))
    got.detections.extend(detection_records(_coco_image_id(record), cat_ids, boxes, scores, labels, floor))
    if coco is not None:
        coco.process(_coco_image_id(record), boxes, scores, labels)


def _write_submissions(out: Path, records: Sequence[Sample], classes: ClassList, got: _Collected) -> None:
    rows, devkit = [], []
    devkit_ids = classes.devkit_ids or list(range(1, len(classes) + 1))
    for r, g in zip(records, got.guesses, strict=True):
        if g is None:
            rows.append((_image_id(r), []))
            devkit.append([])
            continue
        labels, boxes = g
        rows.append((_image_id(r), [(classes.ids[int(lab)], box) for lab, box in zip(labels.tolist(), boxes.tolist(), strict=True)]))
        devkit.append([(devkit_ids[int(lab)], box) for lab, box in zip(labels.tolist(), boxes.tolist(), strict=True)])
    write_kaggle_csv(out / "predictions.csv", rows)
    write_devkit_txt(out / "predictions.txt", devkit)


def _draw(path: Path, drawn: list, classes: ClassList) -> None:
    from vgglocal.viz import draw_image, save_grid

    if not drawn:
        return
    tiles = []
    for img, rec, labels, boxes in drawn:
        names = [classes.names[int(lab)] if classes.names else classes.ids[int(lab)] for lab in labels.tolist()]
        true_names = [classes.names[int(lab)] if classes.names else classes.ids[int(lab)] for lab in np.asarray(rec.box_labels).tolist()]
        tiles.append(draw_image(img, boxes, names, torch.as_tensor(rec.boxes).reshape(-1, 4), true_names, side=256))
    save_grid(tiles, path, nrow=min(4, len(tiles)))


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
    """``vgglocal predict``: the ``full`` protocol on image files.

    Returns one dict per image: ``{"image": path, "predictions": [{"label", "index", "score",
    "box": [x1, y1, x2, y2]}, ...]}`` (top-k, best first) or ``{"image": path, "error": msg}``.
    With ``draw``, writes ``<draw>/<image stem>.png`` with the boxes (and the ground truth from
    ``truth``, keyed by absolute path, in another colour).
    """
    ev = cfg.eval
    device = resolve_device(ev.device)
    first = load_model(checkpoints[0])
    ids = list(first.classes) if first.classes is not None else [str(i) for i in range(first.num_classes)]
    classes = ClassList(ids=ids, names=ids)
    nets = load_nets(checkpoints, list(scales), tuple(ev.scales), "full", classes, True, device)
    cls_nets = load_nets(cls_checkpoints, [cls_scales] if cls_scales else [], tuple(ev.scales), "cls-dense", classes, False, device) if cls_checkpoints else nets
    threshold = ev.merge_threshold if merge_threshold is None else merge_threshold
    flip = ev.flip if flip is None else flip
    out: list[dict[str, Any]] = []
    for path in tqdm(images, desc="predict", unit="img", disable=not progress or not sys.stderr.isatty(), file=sys.stderr):
        try:
            img = load_rgb(path)
        except DataError as e:
            out.append({"image": path, "error": str(e)})
            continue
        _, (res,) = localize_full([img], cls_nets, nets, threshold=threshold, topk=ev.topk, cls_method=ev.cls_method, flip=flip,
                                  device=device, batch_size=ev.batch_size, precision=ev.precision)
        preds = [{"label": ids[int(lab)], "index": int(lab), "score": round(float(s), 6), "box": [round(float(v), 2) for v in b]}
                 for lab, s, b in zip(res.labels.tolist(), res.scores.tolist(), res.boxes.tolist(), strict=True)]
        out.append({"image": path, "predictions": preds})
        if draw is not None:
            from vgglocal.viz import draw_image, save_png

            rec = (truth or {}).get(str(Path(path).resolve()))
            true_boxes = torch.as_tensor(rec.boxes).reshape(-1, 4) if rec is not None else None
            true_names = [ids[int(v)] for v in np.asarray(rec.box_labels).tolist()] if rec is not None else None
            names = [f"{p['label']} {p['score']:.2f}" for p in preds]
            save_png(draw_image(img, res.boxes, names, true_boxes, true_names), Path(draw) / f"{Path(path).stem}.png")
    return out


def sweep_merge_threshold(cfg: Config, req: EvalRequest, thresholds: Sequence[float], *, progress: bool = True,
                          log: Log | None = None) -> list[dict[str, Any]]:
    """The ``full`` protocol at several merge thresholds on the validation split, the dense
    maps computed once per image. Returns one metrics dict per threshold (with
    ``merge_threshold``), in the order given: how ``eval.merge_threshold`` is chosen."""
    if not thresholds or any(t < 0 for t in thresholds):
        raise EvalError(f"thresholds {list(thresholds)}: give values >= 0")
    req = EvalRequest("full", req.checkpoints, req.scales, req.cls_checkpoints, req.cls_scales, req.flip, 0.0)
    st = _setup(cfg, req, progress, log or (lambda msg: None))
    ev = cfg.eval
    evaluators = [LocalizationEvaluator() for _ in thresholds]
    bar = tqdm(total=len(st.records), desc="sweep", unit="img", disable=not progress or not sys.stderr.isatty(), file=sys.stderr)
    for chunk in _chunks(st.records, ev.batch_size, cfg.data.workers):
        good = {i: img for i, img, _ in chunk if img is not None}
        cands = {}
        if good:
            _, found = box_candidates(list(good.values()), st.cls_nets, st.nets, labels_per_image=min(ev.topk, MAX_GUESSES),
                                      cls_method=ev.cls_method, flip=st.flip, device=st.device, batch_size=ev.batch_size,
                                      precision=ev.precision)
            cands = dict(zip(good, found, strict=True))
        truths = [(torch.as_tensor(st.records[i].box_labels), torch.as_tensor(st.records[i].boxes)) for i, _, _ in chunk]
        for t, evaluator in zip(thresholds, evaluators, strict=True):
            guesses = []
            for i, _, _ in chunk:
                if i in cands:
                    res = merge_candidates(cands[i], t, min(ev.topk, MAX_GUESSES))
                    guesses.append((res.labels, _whole_pixels(res.boxes)))
                else:
                    guesses.append(None)
            evaluator.process(guesses, truths)
        bar.update(len(chunk))
    bar.close()
    return [{"merge_threshold": t, **e.summarize()} for t, e in zip(thresholds, evaluators, strict=True)]
