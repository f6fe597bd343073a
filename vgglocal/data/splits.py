"""One entry point for every data set: ``read_split`` / ``scan_split`` dispatch on ``data.format``.

Split names. ``split`` is either a *role*, ``"train"`` or ``"val"``, which maps through
``data.train_split`` / ``data.val_split`` to the on-disk name and picks up the per-split path
keys (``data.train_images``, ``data.train_annotations``, ...), or a literal on-disk name
("test", "trainval", "val2017"), which uses the format's default paths. Relative paths in the
config are relative to ``data.root``; ``data.root`` itself is relative to the working folder.

Tasks. ``"cls"`` keeps images with a class label (ILSVRC: every image of train/val; VOC and
COCO: images with at least one box, labelled by their largest box); ``"loc"`` keeps images with
at least one box (localisation trains only on those, Appendix A); ``"all"`` keeps every
listed image, label -1 where unknown (test splits, detection evaluation, ``data check``).

Problems. A reader never stops at a bad file: it skips what is broken, keeps the rest, and
lists each defect as a :class:`~vgglocal.data.errors.Problem` in :class:`SplitScan.problems`.
``read_split`` keeps the contract ``(records, classes)``; call ``scan_split`` for the problems
(``data check`` prints them, training logs their count).
"""

from __future__ import annotations

import gc
import importlib
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from vgglocal.config import FORMATS, TASKS, DataConfig
from vgglocal.data.errors import DataError, Problem
from vgglocal.data.records import ClassList, Sample
from vgglocal.data.spec import SplitSpec, split_spec

__all__ = ["FORMATS", "TASKS", "READERS", "SplitSpec", "SplitScan", "split_spec", "scan_split", "read_split",
           "select_records", "detect_format"]

# data.format → (module, function) of its reader; each takes a SplitSpec and returns
# (records, classes, problems).
READERS = {
    "ilsvrc-kaggle": ("vgglocal.data.ilsvrc", "read_kaggle"),
    "ilsvrc": ("vgglocal.data.ilsvrc", "read_original"),
    "voc": ("vgglocal.data.voc", "read_voc"),
    "coco": ("vgglocal.data.coco", "read_coco"),
    "caltech": ("vgglocal.data.caltech", "read_caltech"),
}


@dataclass
class SplitScan:
    """Everything read from one split.

    Attributes:
        format, split, root: what was read (``split`` is the on-disk name).
        records: the kept records, in a deterministic order (sorted by file/id).
        classes: the class list (index order).
        problems: every defect found, one per file-level issue, in reading order.
        missing: records of the task that the annotations list but whose image file is missing
            (evaluation scores them as wrong; training never sees them). Empty with ``data.limit``.
    """

    format: str
    split: str
    root: str
    records: list[Sample]
    classes: ClassList
    problems: list[Problem] = field(default_factory=list)
    missing: list[Sample] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        """Counts: images, classes, boxes, images_with_boxes, problems."""
        n_boxes = sum(len(r.boxes) for r in self.records)
        with_boxes = sum(1 for r in self.records if len(r.boxes))
        return {"images": len(self.records), "classes": len(self.classes), "boxes": n_boxes,
                "images_with_boxes": with_boxes, "problems": len(self.problems)}

    def problem_counts(self) -> dict[str, int]:
        """Problems per kind (``bad-box``, ``unknown-class``, ...), for a one-line log."""
        return dict(Counter(p.kind for p in self.problems))


def select_records(records: list[Sample], task: str, limit: int = 0) -> list[Sample]:
    """Keep the records a task uses (module doc), then at most ``limit`` of them.

    ``limit`` takes records evenly spaced over the sorted list, not the first N, so a quick run
    on ILSVRC (records sorted by class) still sees every class.
    """
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if task == "cls":
        records = [r for r in records if r.label >= 0]
    elif task == "loc":
        records = [r for r in records if len(r.boxes) and r.label >= 0]
    if 0 < limit < len(records):
        picks = np.linspace(0, len(records) - 1, limit).round().astype(np.int64)
        records = [records[i] for i in picks]
    return records


def scan_split(cfg: DataConfig, split: str, task: str = "all", progress: bool = False) -> SplitScan:
    """Read one split with its problem list (never raises for an empty split; see read_split).

    Raises:
        DataError: unknown format, a missing split folder/annotation file, an unreadable class
            list: anything that makes the whole split unusable, named in one line.
    """
    spec = split_spec(cfg, split)
    if not os.path.isdir(spec.root):
        raise DataError(f"data root {spec.root!r} is not a folder (data.root)")
    if cfg.format not in READERS:
        raise DataError(f"data.format: {cfg.format!r} is not one of {', '.join(FORMATS)}")
    module, name = READERS[cfg.format]
    reader = getattr(importlib.import_module(module), name)  # heavy readers (scipy, pycocotools) load on use
    # Reading ImageNet builds ~1.3M small acyclic objects; the cyclic GC would rescan them
    # all over and over (seconds, for nothing), so it is paused for the read.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        records, classes, problems = reader(spec, progress=progress)
    finally:
        if gc_was_enabled:
            gc.enable()
    records = select_records(records, task, cfg.limit)
    missing = [] if cfg.limit else select_records([p.sample for p in problems if p.sample is not None], task)
    return SplitScan(cfg.format, spec.name, spec.root, records, classes, problems, missing)


def read_split(cfg: DataConfig, split: str, task: str = "cls", progress: bool = False,
               problems: list[Problem] | None = None, with_missing: bool = False) -> tuple[list[Sample], ClassList]:
    """The records of a split for a task, and the class list.

    Args:
        cfg: the ``data`` section (format, root, split names and paths, limit).
        split: "train" / "val" (roles) or a literal split name; see the module doc.
        task: "cls", "loc" or "all".
        problems: when given, receives the split's problems (what the readers skipped or clipped).
        with_missing: also return (at the end) the records of annotated images whose file is
            missing (:attr:`SplitScan.missing`), so evaluation counts them as wrong.

    Raises:
        DataError: the split cannot be read, or has no usable record for the task (checked here,
            before any training starts).
    """
    scan = scan_split(cfg, split, task, progress=progress)
    if problems is not None:
        problems.extend(scan.problems)
    if not scan.records:
        what = {"cls": "labelled images", "loc": "images with boxes", "all": "images"}[task]
        hint = f"; {len(scan.problems)} problems, run `vgglocal data check {scan.root}`" if scan.problems else ""
        raise DataError(f"split {scan.split!r} of {scan.root} ({cfg.format}) has no {what}{hint}")
    return (scan.records + scan.missing if with_missing else scan.records), scan.classes


def detect_format(root: str) -> str:
    """Guess ``data.format`` from the files under ``root``.

    Raises:
        DataError: nothing recognisable.
    """
    def has(*parts: str) -> bool:
        return os.path.exists(os.path.join(root, *parts))

    if has("LOC_synset_mapping.txt"):
        return "ilsvrc-kaggle"
    if any(has(d) for d in ("101_ObjectCategories", "256_ObjectCategories")) or os.path.basename(
            os.path.normpath(root)) in ("101_ObjectCategories", "256_ObjectCategories"):
        return "caltech"
    if has("Annotations") and has("JPEGImages"):
        return "voc"
    if has("annotations") and any(n.startswith("instances_") and n.endswith(".json")
                                  for n in os.listdir(os.path.join(root, "annotations"))):
        return "coco"
    if any(has(d) for d in ("devkit", "ILSVRC2012_devkit_t12", "ILSVRC2014_devkit", "train", "ILSVRC2012_img_train")):
        return "ilsvrc"
    raise DataError(f"{root}: cannot tell the data format (no LOC_synset_mapping.txt, VOC Annotations/JPEGImages, "
                    "COCO annotations/instances_*.json, ILSVRC devkit/train folders or Caltech *_ObjectCategories); pass --format")
