"""``data check``: read every split, decode every image, list every problem.

Beyond what the readers report (bad XML, bad boxes, unknown classes, missing files, unsafe
paths), the check decodes each image as training would and reports undecodable files, images
whose size differs from their annotation, and boxes outside the decoded image (the Kaggle CSV
has no sizes, so that is only seen here). Images over ``data.max_pixels`` / ``data.max_aspect``
are problems (training skips them). Images that decode but need a range conversion (16-bit
grayscale scaled to 8 bits) are listed as *notes*: nothing is wrong with them, but the user
should know what training sees.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context

import numpy as np
from tqdm import tqdm

from vgglocal.config import DataConfig
from vgglocal.data.annotations import OK, box_problems, clean_boxes
from vgglocal.data.errors import BadImageError, DataError, Problem
from vgglocal.data.images import ImageLimits, verify_image_noted
from vgglocal.data.records import Sample
from vgglocal.data.splits import scan_split

__all__ = ["CheckReport", "check_dataset", "check_images"]


@dataclass
class CheckReport:
    """Counts per split ({"images", "classes", "boxes", "images_with_boxes", "problems"}),
    every problem found, in reading order, and notes (conversions; not problems)."""

    format: str
    root: str
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem_counts(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))

    def note_counts(self) -> dict[str, int]:
        return dict(Counter(n.kind for n in self.notes))

    def to_dict(self) -> dict:
        return {"format": self.format, "root": self.root, "splits": self.splits,
                "problem_counts": self.problem_counts(), "problems": [str(p) for p in self.problems],
                "note_counts": self.note_counts(), "notes": [str(n) for n in self.notes]}


def _verify(path: str, limits: ImageLimits | None = None) -> tuple[int, int, str, str]:
    try:
        h, w, note = verify_image_noted(path, limits)
        return h, w, "", note
    except BadImageError as e:
        return 0, 0, str(e).removeprefix(f"{path}: "), ""


def check_images(records: list[Sample], workers: int = 1, progress: bool = False, desc: str = "decode",
                 limits: ImageLimits | None = None, notes: list[Problem] | None = None) -> list[Problem]:
    """Decode every record's image; report undecodable files, size mismatches, boxes outside.

    Args:
        workers: processes decoding in parallel (1: in this process).
        limits: image header bounds (an image over them is a ``bad-image`` problem).
        notes: when given, receives a ``converted`` note per image whose range was rescaled.
    """
    paths = [r.path for r in records]
    verify = partial(_verify, limits=limits)
    if workers > 1 and len(paths) > 1:
        with get_context("spawn").Pool(workers) as pool:
            results = list(tqdm(pool.imap(verify, paths, chunksize=32), total=len(paths), desc=desc,
                                unit="img", disable=not progress, mininterval=1.0))
    else:
        results = [verify(p) for p in tqdm(paths, desc=desc, unit="img", disable=not progress, mininterval=1.0)]
    problems: list[Problem] = []
    for r, (h, w, error, note) in zip(records, results, strict=True):
        if error:
            problems.append(Problem(r.path, error, "bad-image"))
            continue
        if note and notes is not None:
            notes.append(Problem(r.path, f"{note} (mode converted for training)", "converted"))
        if r.size != (0, 0) and tuple(r.size) != (h, w):
            problems.append(Problem(r.path, f"annotated size {r.size[1]}x{r.size[0]} but the image is {w}x{h}", "size-mismatch"))
        if len(r.boxes):
            cleaned, status = clean_boxes(r.boxes, (h, w))
            if (status != OK).any():
                problems.extend(box_problems(r.path, np.asarray(r.boxes), cleaned, status, (h, w)))
    return problems


def check_dataset(cfg: DataConfig, splits: list[str], decode: bool = True, workers: int = 1,
                  progress: bool = False) -> CheckReport:
    """Read ``splits`` (task "all") and, with ``decode``, decode every image (module doc).

    A split that cannot be read at all is reported as a problem, not raised, so the report
    covers the other splits too.
    """
    report = CheckReport(cfg.format, cfg.root)
    for split in splits:
        try:
            scan = scan_split(cfg, split, task="all", progress=progress)
        except DataError as e:
            report.problems.append(Problem(f"split {split}", str(e), "bad-split"))
            continue
        problems = list(scan.problems)
        if decode:
            problems += check_images(scan.records, workers=workers, progress=progress, desc=f"decode {scan.split}",
                                     limits=ImageLimits.of(cfg), notes=report.notes)
        summary = scan.summary()
        summary["problems"] = len(problems)
        report.splits[scan.split] = summary
        report.problems.extend(problems)
    return report
