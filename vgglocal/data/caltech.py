"""Caltech-101 and Caltech-256 as distributed: one folder of images per class, no split files.

Layouts (``data.format: caltech``; ``data.root`` is the folder holding the class folders, or a
folder above it holding exactly one ``101_ObjectCategories`` or ``256_ObjectCategories``)::

    101_ObjectCategories/<class>/image_0001.jpg          Caltech-101: 102 folders (101 + BACKGROUND_Google)
    256_ObjectCategories/NNN.<name>/NNN_0001.jpg         Caltech-256: 257 folders (256 + 257.clutter)

Every folder is a class, in sorted folder order (so Caltech-256's ``NNN.`` prefixes give its own
numbering); the background/clutter classes are kept, as in Appendix B (102 and 257 classes).
Caltech-256 class ids keep the folder name, the readable name drops the ``NNN.`` prefix.

Caltech has no fixed train/test split: every split name reads the whole set, and
:func:`caltech_splits` draws the random per-class splits of the standard protocol (Appendix B,
after Chatfield et al. 2014: Caltech-101 30 training and at most 50 test images per class,
Caltech-256 60 training images per class and the rest for test, three splits). Files that are
not images by name are reported and skipped; images that fail to decode are found later, when
they are read, like every other reader's.
"""

from __future__ import annotations

import os
import re

import numpy as np

from vgglocal.data.annotations import make_sample
from vgglocal.data.errors import DataError, Problem
from vgglocal.data.images import IMAGE_EXTENSIONS
from vgglocal.data.records import ClassList, Sample
from vgglocal.data.spec import SplitSpec

__all__ = ["CALTECH_FOLDERS", "caltech_root", "read_caltech", "caltech_splits"]

CALTECH_FOLDERS = ("101_ObjectCategories", "256_ObjectCategories")
_NUMBERED = re.compile(r"^\d{3}\.(.+)$")  # Caltech-256: 001.ak47


def caltech_root(root: str) -> str:
    """The folder of class folders: ``root`` itself, or its one ``*_ObjectCategories`` child."""
    if os.path.basename(os.path.normpath(root)) in CALTECH_FOLDERS:
        return root
    found = [d for d in CALTECH_FOLDERS if os.path.isdir(os.path.join(root, d))]
    if len(found) > 1:
        raise DataError(f"{root}: holds both {' and '.join(found)}; point data.root at one of them")
    return os.path.join(root, found[0]) if found else root


def read_caltech(spec: SplitSpec, progress: bool = False) -> tuple[list[Sample], ClassList, list[Problem]]:
    """All images of a Caltech-style folder: (records sorted by class then file, classes, problems)."""
    del progress  # one directory listing per class: nothing to show
    root = caltech_root(spec.images or spec.root)
    if not os.path.isdir(root):
        raise DataError(f"{root}: no such Caltech folder (data.root)")
    with os.scandir(root) as it:
        folders = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class folders (expected 101_ObjectCategories/<class>/ or 256_ObjectCategories/NNN.<name>/)")
    names = [m.group(1) if (m := _NUMBERED.match(f)) else f for f in folders]
    problems: list[Problem] = []
    records: list[Sample] = []
    for label, folder in enumerate(folders):
        path = os.path.join(root, folder)
        with os.scandir(path) as it:
            files = sorted(e.name for e in it if e.is_file() and not e.name.startswith("."))
        kept = 0
        for name in files:
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                problems.append(Problem(os.path.join(path, name), "not an image file name; skipped", "bad-image"))
                continue
            records.append(make_sample(os.path.join(path, name), label, source_id=f"{folder}/{os.path.splitext(name)[0]}"))
            kept += 1
        if kept == 0:
            problems.append(Problem(path, "class folder holds no images", "missing-file"))
    return records, ClassList(ids=folders, names=names), problems


def caltech_splits(labels: np.ndarray, n_train: int, n_test: int, n_splits: int, seed: int,
                   class_names: list[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The standard protocol's random splits: per class, ``n_train`` training images and at most
    ``n_test`` test images (``n_test == 0``: all the others), drawn without replacement.

    Args:
        labels (ndarray[N] int): class index of each image; every class in 0..max must occur.
        seed: split ``k`` is drawn from ``numpy.random.default_rng([seed, k])``, so each split
            is reproducible on its own.

    Returns:
        ``n_splits`` pairs (train indices, test indices), each sorted, disjoint.

    Raises:
        DataError: a class with at most ``n_train`` images (no test image left), named.
    """
    labels = np.asarray(labels, np.int64)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    small = np.flatnonzero(counts <= n_train)
    if len(small):
        c = int(small[0])
        name = class_names[c] if class_names else f"class {c}"
        raise DataError(f"{name}: {counts[c]} images, the protocol needs more than {n_train} "
                        f"({n_train} for training, the rest for test); {len(small)} classes are too small")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = []
    for k in range(n_splits):
        rng = np.random.default_rng([seed, k])
        train, test = [], []
        for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
            members = order[start:start + count][rng.permutation(count)]
            train.append(members[:n_train])
            test.append(members[n_train:n_train + n_test] if n_test > 0 else members[n_train:])
        out.append((np.sort(np.concatenate(train)), np.sort(np.concatenate(test))))
    return out
