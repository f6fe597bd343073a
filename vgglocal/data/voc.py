"""PASCAL VOC reader: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``.

``data.root`` is the ``VOC2007``-style folder (a root holding exactly one ``VOC*/`` or
``VOCdevkit/VOC*/`` folder is accepted too). ``data.<split>_images`` and
``data.<split>_annotations`` move the image and XML folders.

Classes: the 20 VOC classes, in their standard (alphabetical) order, so class indices are the
same for every split and every VOC year whichever classes a split happens to contain. A
VOC-format data set with other classes sets ``data.classes`` to a file with one class per line
(its order is the index order). An object whose name is not a class is reported and skipped.

Boxes are kept exactly as written (VOC's 1-based inclusive pixel numbers), ``difficult``
objects included, with their flag in ``Sample.difficult``: they are real objects of the class
and train like any other; the ILSVRC localisation error has no "difficult" notion and counts
them as ordinary objects, while the VOC detection AP (:mod:`vgglocal.evaluation.voc`) ignores
them as the VOC devkit does. An image's label is the class of its largest box.
"""

from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from vgglocal.data.annotations import make_sample, read_class_file, read_xml_boxes
from vgglocal.data.errors import DataError, Problem
from vgglocal.data.images import IMAGE_EXTENSIONS
from vgglocal.data.records import ClassList, Sample
from vgglocal.data.spec import SplitSpec
from vgglocal.data.text import read_utf8

__all__ = ["VOC_CLASSES", "read_voc", "largest_box_label", "voc_root", "listing", "split_folders"]

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")


def largest_box_label(boxes: np.ndarray, labels: np.ndarray) -> int:
    """Class of the largest box (the first on ties); -1 without boxes."""
    if len(boxes) == 0:
        return -1
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return int(labels[int(np.argmax(area))])


def voc_root(root: str) -> str:
    """The ``VOC2007``-style folder of ``data.root``: ``root`` itself when it has
    ``Annotations/``, else its one ``VOC*/`` or ``VOCdevkit/VOC*/`` folder (``root`` when there
    is not exactly one)."""
    if os.path.isdir(os.path.join(root, "Annotations")):
        return root
    for base in (root, os.path.join(root, "VOCdevkit")):
        if os.path.isdir(base):
            found = sorted(d for d in os.listdir(base) if d.startswith("VOC") and os.path.isdir(os.path.join(base, d, "Annotations")))
            if len(found) == 1:
                return os.path.join(base, found[0])
    return root


def listing(folder: str, what: str, key: str) -> dict[str, str]:
    """``{file stem: file name}`` of the entries of ``folder`` (hidden ones left out).

    Raises:
        DataError: ``folder`` is not a folder; the message names it as the ``what`` folder of
            config key ``key``.
    """
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such {what} folder ({key})")
    with os.scandir(folder) as it:
        return {os.path.splitext(e.name)[0]: e.name for e in it if not e.name.startswith(".")}


def split_folders(spec: SplitSpec, root: str) -> tuple[str, dict[str, str], str, dict[str, str]]:
    """(image folder, its :func:`listing`, annotation folder, its listing) of a split under the
    VOC folder ``root``: ``JPEGImages/`` and ``Annotations/`` unless ``data.<split>_images`` /
    ``data.<split>_annotations`` move them."""
    images_dir = spec.images or os.path.join(root, "JPEGImages")
    ann_dir = spec.annotations or os.path.join(root, "Annotations")
    role = spec.role or "train"
    return (images_dir, listing(images_dir, "image", f"data.{role}_images"),
            ann_dir, listing(ann_dir, "annotation", f"data.{role}_annotations"))


def read_voc(spec: SplitSpec, progress: bool = False) -> tuple[list[Sample], ClassList, list[Problem]]:
    """Read one VOC split: (records in ImageSets order, classes, problems)."""
    root = voc_root(spec.root)
    ids_file = os.path.join(root, "ImageSets", "Main", f"{spec.name}.txt")
    if not os.path.isfile(ids_file):
        raise DataError(f"{ids_file}: no such image set (split {spec.name!r})")
    if spec.classes:
        ids, names = read_class_file(spec.classes)
        classes = ClassList(ids=ids, names=names)
    else:
        classes = ClassList(ids=list(VOC_CLASSES), names=list(VOC_CLASSES))
    index = {c: i for i, c in enumerate(classes.ids)}
    images_dir, images, ann_dir, xmls = split_folders(spec, root)
    problems: list[Problem] = []
    records: list[Sample] = []
    ids_seen: set[str] = set()
    lines = read_utf8(ids_file, "image id list").splitlines()
    for line in tqdm(lines, desc=f"read {spec.name}", disable=not progress, unit="img", mininterval=1.0):
        parts = line.split()
        if not parts or parts[0] in ids_seen:
            continue
        image_id = parts[0]
        ids_seen.add(image_id)
        image = images.get(image_id)
        if image is None or not image.lower().endswith(IMAGE_EXTENSIONS):
            problems.append(Problem(os.path.join(images_dir, f"{image_id}.jpg"), f"listed in {ids_file} but missing; skipped", "missing-file"))
            continue
        path = os.path.join(images_dir, image)
        if xmls.get(image_id, "").lower() != f"{image_id}.xml".lower():
            problems.append(Problem(os.path.join(ann_dir, f"{image_id}.xml"), "no annotation file; image kept without boxes", "missing-file"))
            records.append(make_sample(path, -1, source_id=image_id))
            continue
        ib = read_xml_boxes(os.path.join(ann_dir, xmls[image_id]), index, problems, what="class")
        if ib is None:
            records.append(make_sample(path, -1, source_id=image_id))
            continue
        label = largest_box_label(ib.boxes, ib.labels)
        records.append(make_sample(path, label, ib.boxes, ib.labels, ib.size, image_id, ib.difficult))
    return records, classes, problems
