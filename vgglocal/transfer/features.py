"""``vgglocal features`` and ``vgglocal transfer``: Appendix B from files on disk to metrics.

:func:`extract_features` reads a split of a transfer data set (:func:`vgglocal.data.labelled.read_labelled`),
decodes its images in worker processes, and computes per-scale FC7 descriptors with every net
(:mod:`vgglocal.inference.features`), plus (``boxes``) the descriptor of each item's box region.
Images are visited in order of aspect ratio so that dense application can batch images that
rescale to the same size. An image that cannot be decoded is named in the log, skipped with its
items, and counted (``bad``).

:func:`run_transfer` runs one protocol: features of the training and test items (cached in a
folder and reused when the settings match), linear SVMs with C chosen on held-out training data
(:mod:`vgglocal.evaluation.transfer`), and the protocol's metrics:

* ``voc-cls``: train on ``data.train_split``, test on ``data.val_split``; ``voc07_cls_map``
  (11-point AP, the VOC2007 devkit), ``voc_cls_map`` (area AP, VOC2010+), per-class AP.
* ``caltech``: ``transfer.splits`` random splits of ``transfer.train_per_class`` training and
  at most ``transfer.test_per_class`` test images per class; ``mean_class_recall`` (mean over
  the splits) and ``mean_class_recall_std`` (population std over the splits).
* ``voc-action``: train on ``data.train_split``, test on ``data.val_split``, one item per
  person; the image-only setting (``voc_action_map_image``) and the image + box setting
  (``voc_action_map``: the box's descriptor stacked with the image's), area AP over the ten
  scored actions (``other`` is not scored, as in the devkit).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vgglocal.config import Config
from vgglocal.data import DataError
from vgglocal.data.images import ImageLimits, image_size
from vgglocal.data.labelled import LabelledSet, read_labelled
from vgglocal.errors import UserError
from vgglocal.evaluation.images import image_chunks
from vgglocal.inference.features import aggregate, box_region, fuse, scale_descriptors
from vgglocal.inference.nets import resolve_device
from vgglocal.models.io import load_model
from vgglocal.models.vgg import VGG, init_weights

__all__ = ["FeatureSet", "load_feature_nets", "extract_features", "run_transfer", "TransferError"]

Log = Callable[[str], None]
FEATURES_VERSION = 1


class TransferError(UserError):
    """A transfer run cannot go on as asked; the message names the option or file."""


@dataclass
class FeatureSet:
    """Descriptors of the items of one split, with what is needed to train and score on them.

    Attributes:
        ids, paths: per item (VOC action: ``<image id>/<person number>``).
        targets: as :class:`~vgglocal.data.labelled.LabelledSet`.
        classes: class ids.
        per_scale: per net, ``ndarray[N, S, D] float32``: flip-averaged, globally pooled FC7
            per scale, before aggregation; empty when only ``features`` was stored.
        box_per_scale: the same for each item's box region, or empty.
        bad: one message per image that could not be decoded (its items are not in the set).
        settings: how the descriptors were made (JSON-able).
        features, box_features: final descriptors as stored by ``vgglocal features``
            (``settings["aggregate"]``), or None.
    """

    ids: list[str]
    paths: list[str]
    targets: np.ndarray
    classes: list[str]
    per_scale: list[np.ndarray]
    box_per_scale: list[np.ndarray]
    bad: list[str]
    settings: dict[str, Any]
    features: np.ndarray | None = None
    box_features: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def descriptors(self, how: str, part: str = "image") -> np.ndarray:
        """Final descriptors ``[N, D]`` float32: ``part`` ``image``, ``box`` or ``image+box``
        (the two stacked, Appendix B's VOC action setting), aggregated ``how`` over the scales
        and fused over the nets."""
        if part == "image+box":
            both = [torch.from_numpy(self.descriptors(how, "box")), torch.from_numpy(self.descriptors(how, "image"))]
            return fuse(both).numpy()
        per_scale = self.per_scale if part == "image" else self.box_per_scale
        if not per_scale:
            stored = self.features if part == "image" else self.box_features
            if stored is not None and how == self.settings.get("aggregate"):
                return stored
            raise TransferError(f"these features hold no per-scale descriptors for {part!r}; extract them again "
                                f"with --per-scale (or with --aggregate {how})")
        return fuse([aggregate(torch.from_numpy(p), how) for p in per_scale]).numpy()

    def save(self, path: str | Path, how: str | None = None, keep_scales: bool = True) -> Path:
        """Write an ``.npz`` (``features``, ``box_features`` with ``how`` aggregation; per-scale
        arrays when ``keep_scales``; ids, paths, targets, classes, bad, settings)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "ids": np.asarray(self.ids, dtype=np.str_), "paths": np.asarray(self.paths, dtype=np.str_),
            "targets": self.targets, "classes": np.asarray(self.classes, dtype=np.str_),
            "bad": np.asarray(self.bad, dtype=np.str_),
            "settings": np.asarray(json.dumps({**self.settings, **({"aggregate": how} if how else {})})),
        }
        if how:
            arrays["features"] = self.descriptors(how, "image")
            if self.box_per_scale:
                arrays["box_features"] = self.descriptors(how, "box")
        if keep_scales:
            arrays.update({f"per_scale_{k}": p for k, p in enumerate(self.per_scale)})
            arrays.update({f"box_per_scale_{k}": p for k, p in enumerate(self.box_per_scale)})
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureSet:
        """Read a file :meth:`save` wrote (no pickled objects are read)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise TransferError(f"{path}: not a readable features file ({e})") from None
        if "settings" not in data:
            raise TransferError(f"{path}: not a vgglocal features file (no settings)")
        nets = sorted(int(k.rsplit("_", 1)[1]) for k in data if k.startswith("per_scale_"))
        boxes = sorted(int(k.rsplit("_", 1)[1]) for k in data if k.startswith("box_per_scale_"))
        return cls(ids=data["ids"].tolist(), paths=data["paths"].tolist(), targets=data["targets"],
                   classes=data["classes"].tolist(), per_scale=[data[f"per_scale_{k}"] for k in nets],
                   box_per_scale=[data[f"box_per_scale_{k}"] for k in boxes], bad=data["bad"].tolist(),
                   settings=json.loads(str(data["settings"])), features=data.get("features"),
                   box_features=data.get("box_features"))


# ----------------------------------------------------------------------------- nets


def _random_like(model: VGG, scheme: str, std: float, seed: int) -> VGG:
    """The same architecture with fresh random weights (the baseline of the transfer demo); the
    input normalisation is kept so only the weights differ."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        fresh = VGG(**model.hparams)
        init_weights(fresh, scheme, std)
    finally:
        torch.random.set_rng_state(gen_state)
    fresh.normalization = model.normalization
    fresh.classes = model.classes
    fresh.meta = {**(model.meta or {}), "random_weights": {"init": scheme, "std": std, "seed": seed}}
    return fresh.eval()


def load_feature_nets(cfg: Config, checkpoints: Sequence[str], random_weights: bool, device: torch.device) -> list[VGG]:
    """The nets to extract with, in eval mode on ``device``. ``random_weights``: each replaced by
    its architecture with a fresh initialisation (the checkpoint's own ``model.init`` when it
    records it, else the config's), seeded by ``seed``."""
    if not checkpoints:
        raise TransferError("give at least one --checkpoint")
    nets = []
    for k, path in enumerate(checkpoints):
        model = load_model(path)
        if random_weights:
            trained = ((model.meta or {}).get("config") or {}).get("model") or {}
            model = _random_like(model, trained.get("init", cfg.model.init), float(trained.get("init_std", cfg.model.init_std)),
                                 cfg.seed + k)
        nets.append(model.to(device).eval())
    return nets


# ----------------------------------------------------------------------------- extraction


def _aspect_order(items: LabelledSet, paths: list[str]) -> list[int]:
    """Image order by aspect ratio (annotated size, else the file header): equal shapes come
    together, so dense application batches them."""
    known = {r.path: r.size for r in items.records if r.size[0] > 0}
    aspect = []
    for p in paths:
        h, w = known.get(p) or _header_size(p)
        aspect.append(h / w if w else 0.0)
    return sorted(range(len(paths)), key=lambda i: (aspect[i], i))


def _header_size(path: str) -> tuple[int, int]:
    try:
        return image_size(path)
    except DataError:
        return (0, 0)  # reported when it fails to decode


def _settings(cfg: Config, checkpoints: Sequence[str], split: str, protocol: str, scales: Sequence[int], boxes: bool,
              random_weights: bool) -> dict[str, Any]:
    def identity(path: str) -> dict[str, Any]:
        st = os.stat(path)
        return {"path": os.path.abspath(path), "bytes": st.st_size, "mtime": int(st.st_mtime)}

    return {"version": FEATURES_VERSION, "protocol": protocol, "split": split, "data_root": os.path.abspath(cfg.data.root),
            "data_format": cfg.data.format, "limit": cfg.data.limit, "checkpoints": [identity(p) for p in checkpoints],
            "random_weights": random_weights, "seed": cfg.seed if random_weights else None, "scales": [int(q) for q in scales],
            "flip": cfg.transfer.flip, "boxes": boxes}


def extract_features(cfg: Config, checkpoints: Sequence[str], split: str, *, protocol: str | None = None,
                     scales: Sequence[int] | None = None, boxes: bool = False, random_weights: bool = False,
                     progress: bool = True, log: Log | None = None) -> FeatureSet:
    """Per-scale descriptors of every item of ``split`` with every net (module doc)."""
    t = cfg.transfer
    protocol = protocol or t.protocol
    scales = tuple(scales or t.scales)
    if boxes and protocol != "voc-action":
        raise TransferError(f"--boxes: protocol {protocol} has no item boxes (voc-action has the person boxes)")
    log = log or (lambda _msg: None)
    device = resolve_device(t.device, key="transfer.device")
    items = read_labelled(cfg.data, split, protocol, progress=progress)
    if items.problems:
        log(f"{split}: {len(items.problems)} annotation problems (skipped; `vgglocal data check` lists them), e.g. {items.problems[0]}")
    nets = load_feature_nets(cfg, checkpoints, random_weights, device)
    paths = list(dict.fromkeys(r.path for r in items.records))
    items_of: dict[str, list[int]] = {}
    for i, r in enumerate(items.records):
        items_of.setdefault(r.path, []).append(i)
    order = _aspect_order(items, paths)
    n = len(items.records)
    per_scale = [np.zeros((n, len(scales), m.cls_head.fc7.out_channels), np.float32) for m in nets]
    box_per_scale = [np.zeros_like(p) for p in per_scale] if boxes else []
    ok = np.zeros(n, bool)
    bad: list[str] = []
    # one record per image file, in aspect order (the first item of each file stands for it)
    by_file = [items.records[items_of[paths[i]][0]] for i in order]
    bar = tqdm(total=len(paths), desc=f"features {split}", unit="img", disable=not progress, mininterval=1.0)
    for chunk in image_chunks(by_file, 4 * t.batch_size, t.workers, ImageLimits.of(cfg.data)):
        for err in chunk.errors:
            if err:
                bad.append(err)
                log(f"skipped: {err}")
        good = chunk.good
        if good:
            rows = [items_of[chunk.records[k].path] for k in good]
            images = [chunk.images[k] for k in good]
            for net, store in zip(nets, per_scale, strict=True):
                d = scale_descriptors(net, images, scales, flip=t.flip, device=device, batch_size=t.batch_size,
                                      precision=t.precision).numpy()
                for r, members in enumerate(rows):
                    store[members] = d[r]
            if boxes:
                crops, targets_idx = [], []
                for img, members in zip(images, rows, strict=True):
                    for i in members:
                        crops.append(box_region(img, items.records[i].boxes[0]))
                        targets_idx.append(i)
                for net, store in zip(nets, box_per_scale, strict=True):
                    store[targets_idx] = scale_descriptors(net, crops, scales, flip=t.flip, device=device,
                                                           batch_size=t.batch_size, precision=t.precision).numpy()
            for members in rows:
                ok[members] = True
        bar.update(len(chunk))
    bar.close()
    keep = np.flatnonzero(ok)
    records = [items.records[i] for i in keep]
    return FeatureSet(ids=[r.source_id for r in records], paths=[r.path for r in records], targets=items.targets[keep],
                      classes=list(items.classes), per_scale=[p[keep] for p in per_scale],
                      box_per_scale=[p[keep] for p in box_per_scale], bad=bad,
                      settings=_settings(cfg, checkpoints, split, protocol, scales, boxes, random_weights))


def cached_features(cfg: Config, checkpoints: Sequence[str], split: str, cache: Path, *, protocol: str,
                    scales: Sequence[int], boxes: bool, random_weights: bool, progress: bool, log: Log) -> FeatureSet:
    """:func:`extract_features`, or the file in ``cache`` made with the same settings."""
    settings = _settings(cfg, checkpoints, split, protocol, scales, boxes, random_weights)
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = cache / f"{split}-{key}.npz"
    if path.exists():
        fs = FeatureSet.load(path)
        if {k: v for k, v in fs.settings.items() if k not in ("aggregate", "seconds")} == settings and fs.per_scale:
            log(f"{split}: reusing {path} ({len(fs)} items)")
            return fs
    start = time.time()
    fs = extract_features(cfg, checkpoints, split, protocol=protocol, scales=scales, boxes=boxes,
                          random_weights=random_weights, progress=progress, log=log)
    fs.settings["seconds"] = round(time.time() - start, 1)
    fs.save(path)
    fs.settings.pop("seconds")
    log(f"{split}: {len(fs)} items in {time.time() - start:.0f} s → {path}")
    return fs


# ----------------------------------------------------------------------------- protocols


@dataclass
class TransferRequest:
    """What ``vgglocal transfer`` was asked: the protocol, the nets (several: late fusion), how to
    aggregate the scales, the scales (empty: ``transfer.scales``), random weights instead of the
    trained ones (a baseline), and the feature cache folder (default ``OUT/features``)."""

    protocol: str
    checkpoints: list[str]
    aggregate: str
    scales: tuple[int, ...] = ()
    random_weights: bool = False
    cache: str | None = None


def run_transfer(cfg: Config, req: TransferRequest, out: str | Path, *, progress: bool = True,
                 log: Log | None = None) -> dict[str, Any]:
    """Features, SVMs and metrics of one protocol; writes ``out/metrics.json`` and
    ``out/per_class.csv``; returns the metrics."""
    log = log or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(req.cache) if req.cache else out / "features"
    t = cfg.transfer
    scales = tuple(req.scales or t.scales)
    start = time.time()

    def feats(split: str, boxes: bool = False) -> FeatureSet:
        return cached_features(cfg, req.checkpoints, split, cache, protocol=req.protocol, scales=scales, boxes=boxes,
                               random_weights=req.random_weights, progress=progress, log=log)

    common: dict[str, Any] = {"protocol": req.protocol, "checkpoints": list(req.checkpoints),
                              "random_weights": req.random_weights, "scales": list(scales), "aggregate": req.aggregate,
                              "flip": t.flip, "svm_c_candidates": list(t.svm_c), "val_fraction": t.val_fraction,
                              "seed": cfg.seed}
    if req.protocol == "caltech":
        metrics, rows = _caltech(cfg, feats(cfg.data.train_split), req.aggregate, log)
    elif req.protocol == "voc-cls":
        metrics, rows = _voc_cls(cfg, feats(cfg.data.train_split), feats(cfg.data.val_split), req.aggregate, log)
    elif req.protocol == "voc-action":
        metrics, rows = _voc_action(cfg, feats(cfg.data.train_split, True), feats(cfg.data.val_split, True), req.aggregate, log)
    else:
        raise TransferError(f"unknown protocol {req.protocol!r}; choose voc-cls, caltech or voc-action")
    metrics = {**metrics, **common, "seconds": round(time.time() - start, 1)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    header, body = rows
    with open(out / "per_class.csv", "w") as f:
        f.write(",".join(header) + "\n")
        f.writelines(",".join(str(v) for v in row) + "\n" for row in body)
    return metrics


def _fit_predict(cfg: Config, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, kind: str, n_classes: int,
                 seed: int, classes: Sequence[int] | None = None) -> tuple[np.ndarray, float, dict[float, float], bool]:
    from vgglocal.evaluation.transfer import choose_c, fit_svms

    t = cfg.transfer
    c, held = choose_c(x_train, y_train, t.svm_c, kind, n_classes, val_fraction=t.val_fraction, seed=seed, classes=classes)
    svms = fit_svms(x_train, y_train, c, kind, n_classes, seed)
    return svms.decision_function(x_test), c, held, svms.converged


def _caltech(cfg: Config, fs: FeatureSet, how: str, log: Log) -> tuple[dict[str, Any], tuple[list[str], list[list[Any]]]]:
    from vgglocal.data.caltech import caltech_splits
    from vgglocal.evaluation.transfer import mean_class_recall

    t = cfg.transfer
    x, y, n_classes = fs.descriptors(how), fs.targets.astype(np.int64), len(fs.classes)
    if len(np.unique(y)) != n_classes:
        missing = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
        raise TransferError(f"class {fs.classes[missing[0]]!r} has no usable image ({len(missing)} classes empty)")
    splits = caltech_splits(y, t.train_per_class, t.test_per_class, t.splits, cfg.seed, fs.classes)
    means, recalls, chosen, held_scores = [], [], [], []
    for k, (train, test) in enumerate(splits):
        scores, c, held, converged = _fit_predict(cfg, x[train], y[train], x[test], "multiclass", n_classes, cfg.seed + k)
        mean, per_class = mean_class_recall(y[test], scores.argmax(1), n_classes)
        means.append(mean)
        recalls.append(per_class)
        chosen.append(c)
        held_scores.append(held)
        log(f"split {k}: {len(train)} train / {len(test)} test images, C={c:g}, mean class recall {100 * mean:.1f}%"
            + ("" if converged else " (liblinear did not fully converge)"))
    per_class = np.mean(recalls, axis=0)
    metrics = {"mean_class_recall": float(np.mean(means)), "mean_class_recall_std": float(np.std(means)),
               "split_mean_class_recall": [float(m) for m in means], "svm_c": chosen,
               "heldout_mean_class_recall": [{str(c): s for c, s in h.items()} for h in held_scores],
               "n_classes": n_classes, "n_images": len(fs), "n_unreadable": len(fs.bad),
               "train_per_class": t.train_per_class, "test_per_class": t.test_per_class, "splits": t.splits,
               "n_train": int(len(splits[0][0])), "n_test": int(len(splits[0][1]))}
    rows = [[name, f"{r:.4f}"] for name, r in zip(fs.classes, per_class.tolist(), strict=True)]
    return metrics, (["class", "mean_recall"], rows)


def _multilabel(cfg: Config, train: FeatureSet, test: FeatureSet, how: str, part: str,
                scored: Sequence[int]) -> tuple[np.ndarray, np.ndarray, float, dict[float, float], bool]:
    from vgglocal.evaluation.transfer import voc_cls_aps

    if train.classes != test.classes:
        raise TransferError(f"the training and test splits have different classes ({train.classes[:3]}... vs {test.classes[:3]}...)")
    n_classes = len(train.classes)
    scores, c, held, converged = _fit_predict(cfg, train.descriptors(how, part), train.targets, test.descriptors(how, part),
                                              "multilabel", n_classes, cfg.seed, scored)
    ap11 = voc_cls_aps(scores, test.targets, eleven_point=True, classes=scored)
    ap = voc_cls_aps(scores, test.targets, eleven_point=False, classes=scored)
    return ap11, ap, c, held, converged


def _voc_cls(cfg: Config, train: FeatureSet, test: FeatureSet, how: str, log: Log):
    scored = list(range(len(train.classes)))
    ap11, ap, c, held, converged = _multilabel(cfg, train, test, how, "image", scored)
    log(f"{len(train)} train / {len(test)} test images, C={c:g}: mAP {100 * ap11.mean():.1f}% (11-point), "
        f"{100 * ap.mean():.1f}% (area)" + ("" if converged else " (liblinear did not fully converge)"))
    metrics = {"voc07_cls_map": float(ap11.mean()), "voc_cls_map": float(ap.mean()), "svm_c": c,
               "heldout_map": {str(k): v for k, v in held.items()}, "n_train": len(train), "n_test": len(test),
               "n_images": len(test), "n_unreadable": len(train.bad) + len(test.bad),
               "per_class_ap": dict(zip(train.classes, ap.tolist(), strict=True)),
               "per_class_ap11": dict(zip(train.classes, ap11.tolist(), strict=True))}
    rows = [[name, f"{a11:.4f}", f"{a:.4f}"] for name, a11, a in zip(train.classes, ap11.tolist(), ap.tolist(), strict=True)]
    return metrics, (["class", "ap_11point", "ap_area"], rows)


def _voc_action(cfg: Config, train: FeatureSet, test: FeatureSet, how: str, log: Log):
    from vgglocal.data.voc_labels import SCORED_ACTIONS

    scored = [train.classes.index(a) for a in SCORED_ACTIONS]
    results = {}
    for part, key in (("image", "voc_action_map_image"), ("image+box", "voc_action_map")):
        _, ap, c, held, converged = _multilabel(cfg, train, test, how, part, scored)
        results[key] = (ap, c, held)
        log(f"{part}: {len(train)} train / {len(test)} test people, C={c:g}: mAP {100 * ap.mean():.1f}%"
            + ("" if converged else " (liblinear did not fully converge)"))
    metrics: dict[str, Any] = {key: float(ap.mean()) for key, (ap, _, _) in results.items()}
    metrics.update({"svm_c": {key: c for key, (_, c, _) in results.items()},
                    "heldout_map": {key: {str(k): v for k, v in held.items()} for key, (_, _, held) in results.items()},
                    "n_train": len(train), "n_test": len(test), "n_unreadable": len(train.bad) + len(test.bad)})
    img, box = results["voc_action_map_image"][0], results["voc_action_map"][0]
    rows = [[name, f"{a:.4f}", f"{b:.4f}"] for name, a, b in zip(SCORED_ACTIONS, img.tolist(), box.tolist(), strict=True)]
    return metrics, (["action", "ap_image", "ap_image_box"], rows)
