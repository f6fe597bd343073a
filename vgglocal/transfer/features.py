"""``vgglocal features``: Appendix B descriptors of a split or of any image files.

:func:`extract_features` reads a split of a transfer data set (:func:`vgglocal.data.labelled.read_labelled`)
or of any other ``data.format`` (:func:`vgglocal.data.labelled.read_any_split`);
:func:`extract_image_features` takes image files (:func:`vgglocal.data.files.expand_images`).
Both decode the images in worker processes (:func:`vgglocal.data.chunks.sharded_chunks`; under
``torchrun`` each rank its share, rank 0 collecting the descriptors) and
compute per-scale FC7 descriptors with every net through :class:`vgglocal.FeatureExtractor`
(so Python callers get the same numbers), plus (``boxes``) the descriptor of each item's box
region. Images are visited in order of aspect ratio so that dense application can batch images
that rescale to the same size. An image that cannot be decoded is named in the log, skipped
with its items, and counted (``bad``).

:func:`cached_features` reuses an earlier extraction from a cache folder when its settings
match; :class:`FeatureSet` is what both return and what ``vgglocal features`` writes.
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

from vgglocal import comm
from vgglocal.config import Config
from vgglocal.data import DataError
from vgglocal.data.chunks import sharded_chunks
from vgglocal.data.files import shown
from vgglocal.data.images import ImageLimits, image_size
from vgglocal.data.labelled import PROTOCOL_FORMATS, LabelledSet, read_any_split, read_labelled
from vgglocal.data.records import Sample
from vgglocal.errors import UserError
from vgglocal.inference.extractor import FeatureExtractor
from vgglocal.inference.features import aggregate, box_region, fuse
from vgglocal.models.io import load_model
from vgglocal.models.vgg import VGG, init_weights
from vgglocal.runtime import resolve_device

__all__ = ["FeatureSet", "load_feature_nets", "feature_extractor", "extract_features", "extract_image_features",
           "cached_features", "TransferError"]

Log = Callable[[str], None]
FEATURES_VERSION = 1


class TransferError(UserError):
    """A transfer run cannot go on as asked; the message names the option or file."""


@dataclass
class FeatureSet:
    """Descriptors of the items of one split, with what is needed to train and score on them.

    Attributes:
        ids, paths: per item (VOC action: ``<image id>/<person number>``; image files: the
            picture's name, :func:`~vgglocal.data.files.expand_images`'s key).
        targets: as :class:`~vgglocal.data.labelled.LabelledSet`; image files: -1 each.
        classes: class ids (image files: none).
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


def feature_extractor(cfg: Config, checkpoints: Sequence[str], scales: Sequence[int], random_weights: bool) -> FeatureExtractor:
    """The :class:`FeatureExtractor` of the ``transfer`` section (device, flip, batch size, precision)."""
    t = cfg.transfer
    device = resolve_device(t.device, key="transfer.device")
    nets = load_feature_nets(cfg, checkpoints, random_weights, device)
    return FeatureExtractor(nets, tuple(scales), t.aggregate, flip=t.flip, device=device, precision=t.precision,
                            batch_size=t.batch_size)


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


def _settings(cfg: Config, checkpoints: Sequence[str], source: dict[str, Any], scales: Sequence[int], boxes: bool,
              random_weights: bool) -> dict[str, Any]:
    def identity(path: str) -> dict[str, Any]:
        st = os.stat(path)
        return {"path": os.path.abspath(path), "bytes": st.st_size, "mtime": int(st.st_mtime)}

    return {"version": FEATURES_VERSION, **source, "checkpoints": [identity(p) for p in checkpoints],
            "random_weights": random_weights, "seed": cfg.seed if random_weights else None, "scales": [int(q) for q in scales],
            "flip": cfg.transfer.flip, "boxes": boxes}


def _split_source(cfg: Config, split: str, protocol: str | None) -> dict[str, Any]:
    return {"protocol": protocol, "split": split, "data_root": os.path.abspath(cfg.data.root), "data_format": cfg.data.format,
            "limit": cfg.data.limit}


def _read(cfg: Config, split: str, protocol: str | None, progress: bool) -> tuple[LabelledSet, str | None]:
    """The items of ``split`` and the protocol that read them. ``protocol`` None: the config's
    ``transfer.protocol`` when ``data.format`` is its layout, else every image of the split as
    the format's reader gives it (ILSVRC, COCO, ...; protocol None)."""
    if protocol is None and cfg.data.format == PROTOCOL_FORMATS[cfg.transfer.protocol]:
        protocol = cfg.transfer.protocol
    if protocol is None:
        return read_any_split(cfg.data, split, progress=progress), None
    return read_labelled(cfg.data, split, protocol, progress=progress), protocol


def _describe(cfg: Config, fx: FeatureExtractor, items: LabelledSet, boxes: bool, desc: str, progress: bool,
              log: Log) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[str]]:
    """Per-scale descriptors of every item: ``(kept item indices, per_scale per net, box_per_scale
    per net, unreadable messages)``; an image that cannot be decoded is skipped with its items."""
    t = cfg.transfer
    paths = list(dict.fromkeys(r.path for r in items.records))
    items_of: dict[str, list[int]] = {}
    for i, r in enumerate(items.records):
        items_of.setdefault(r.path, []).append(i)
    order = _aspect_order(items, paths)
    n = len(items.records)
    per_scale = [np.zeros((n, len(fx.scales), d), np.float32) for d in fx.dims]
    box_per_scale = [np.zeros_like(p) for p in per_scale] if boxes else []
    ok = np.zeros(n, bool)
    bad: list[str] = []
    # one record per image file, in aspect order (the first item of each file stands for it)
    by_file = [items.records[items_of[paths[i]][0]] for i in order]
    # Under torchrun each rank describes its chunks; rank 0 collects them a round at a time
    # (memory bounded by one chunk per rank) and is the one that returns the descriptors.
    for _, chunk, images, unreadable in sharded_chunks(by_file, 4 * t.batch_size, t.workers, ImageLimits.of(cfg.data),
                                                      desc=desc, progress=progress, tty_only=False, mininterval=1.0):
        for err in unreadable:
            log(f"skipped: {err}")
        rows: list[list[int]] = []
        described: list[np.ndarray] = []
        box_targets: list[int] = []
        box_described: list[np.ndarray] = []
        if images and chunk is not None:
            rows = [items_of[chunk.records[k].path] for k in chunk.good]
            described = fx.per_scale(images)
            if boxes:
                crops = []
                for img, members in zip(images, rows, strict=True):
                    for i in members:
                        crops.append(box_region(img, items.records[i].boxes[0]))
                        box_targets.append(i)
                box_described = fx.per_scale(crops)
        gathered = comm.gather_objects((rows, described, box_targets, box_described, unreadable))
        for their_rows, their_desc, their_targets, their_box_desc, their_bad in gathered or []:
            bad.extend(their_bad)
            if not their_rows:  # a rank without a chunk this round, or a chunk of unreadable images
                continue
            for d, store in zip(their_desc, per_scale, strict=True):
                for r, members in enumerate(their_rows):
                    store[members] = d[r]
            for d, store in zip(their_box_desc, box_per_scale, strict=True):
                store[their_targets] = d
            for members in their_rows:
                ok[members] = True
    keep = np.flatnonzero(ok)
    return keep, [p[keep] for p in per_scale], [p[keep] for p in box_per_scale], bad


def extract_features(cfg: Config, checkpoints: Sequence[str], split: str, *, protocol: str | None = None,
                     scales: Sequence[int] | None = None, boxes: bool = False, random_weights: bool = False,
                     progress: bool = True, log: Log | None = None) -> FeatureSet:
    """Per-scale descriptors of every item of ``split`` with every net (module doc);
    ``protocol`` None: as :func:`_read` chooses."""
    scales = tuple(scales or cfg.transfer.scales)
    log = log or (lambda _msg: None)
    items, protocol = _read(cfg, split, protocol, progress)
    if boxes and protocol != "voc-action":
        what = f"protocol {protocol}" if protocol else f"data.format {cfg.data.format} read as a plain split"
        raise TransferError(f"--boxes: {what} has no item boxes (voc-action has the person boxes)")
    if items.problems:
        log(f"{split}: {len(items.problems)} annotation problems (skipped; `vgglocal data check` lists them), e.g. {items.problems[0]}")
    fx = feature_extractor(cfg, checkpoints, scales, random_weights)
    keep, per_scale, box_per_scale, bad = _describe(cfg, fx, items, boxes, f"features {split}", progress, log)
    records = [items.records[i] for i in keep]
    return FeatureSet(ids=[r.source_id for r in records], paths=[r.path for r in records], targets=items.targets[keep],
                      classes=list(items.classes), per_scale=per_scale, box_per_scale=box_per_scale, bad=bad,
                      settings=_settings(cfg, checkpoints, _split_source(cfg, split, protocol), scales, boxes, random_weights))


def extract_image_features(cfg: Config, checkpoints: Sequence[str], images: Sequence[tuple[str, str]], *,
                           scales: Sequence[int] | None = None, random_weights: bool = False, progress: bool = True,
                           log: Log | None = None) -> FeatureSet:
    """Per-scale descriptors of image files without labels: ``images`` as ``(path, key)`` pairs
    (:func:`vgglocal.data.files.expand_images`); ids are the keys, targets -1, no classes."""
    scales = tuple(scales or cfg.transfer.scales)
    say = log or (lambda _msg: None)

    def log(msg: str) -> None:
        say(shown(msg))  # one line whatever the file names hold

    if not images:
        raise TransferError("no images to describe")
    records = [Sample(path=p, label=-1, source_id=key) for p, key in images]
    items = LabelledSet(records, np.full(len(records), -1, np.int64), [])
    fx = feature_extractor(cfg, checkpoints, scales, random_weights)
    keep, per_scale, _, bad = _describe(cfg, fx, items, False, "features", progress, log)
    source = {"protocol": None, "split": None, "images": len(records), "data_format": "images"}
    return FeatureSet(ids=[records[i].source_id for i in keep], paths=[records[i].path for i in keep],
                      targets=items.targets[keep], classes=[], per_scale=per_scale, box_per_scale=[], bad=bad,
                      settings=_settings(cfg, checkpoints, source, scales, False, random_weights))


def cached_features(cfg: Config, checkpoints: Sequence[str], split: str, cache: Path, *, protocol: str,
                    scales: Sequence[int], boxes: bool, random_weights: bool, progress: bool, log: Log) -> FeatureSet:
    """:func:`extract_features`, or the file in ``cache`` made with the same settings."""
    settings = _settings(cfg, checkpoints, _split_source(cfg, split, protocol), scales, boxes, random_weights)
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
