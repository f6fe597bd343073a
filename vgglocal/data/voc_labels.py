"""PASCAL VOC image labels for Appendix B: multi-label classification and action classification.

**Classification** (VOC-2007/2012 ``ImageSets/Main/<split>.txt``): an image's label for each
of the 20 classes comes from its XML, with the devkit's three values (the ``<class>_<split>.txt``
files of ``ImageSets/Main`` hold the same): 1 when the image has a non-difficult object of the
class, 0 when all its objects of the class are ``difficult`` (ignored by the AP: neither a
true nor a false positive, ``VOCevalcls.m``), -1 otherwise.

**Action** (VOC-2012 ``ImageSets/Action/<split>.txt``, one image id per line): every person
object of a listed image that has an ``<actions>`` element is one item, with its box and its
eleven action flags in the devkit's order (``VOCopts.actions``: ``other`` first, "skip this
when training classifiers", then the ten actions that are scored), 1 or -1. The item id is
``<image id>/<object number>``, objects numbered from 1 in file order as in the devkit's
``<action>_<split>.txt`` files.

Bad files are named, skipped and counted as in the other readers: a listed image that is
missing, a missing or malformed XML, an unknown class, a person box that is inverted or outside
the image (dropped; clipped when partly outside).
"""

from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from vgglocal.data.annotations import (
    DROPPED,
    BadAnnotationError,
    box_problems,
    clean_boxes,
    make_sample,
    parse_voc_xml,
    read_xml_root,
    xml_size,
)
from vgglocal.data.errors import DataError, Problem
from vgglocal.data.images import IMAGE_EXTENSIONS
from vgglocal.data.records import Sample
from vgglocal.data.spec import SplitSpec
from vgglocal.data.text import read_utf8
from vgglocal.data.voc import VOC_CLASSES, split_folders, voc_root

__all__ = ["VOC_ACTIONS", "SCORED_ACTIONS", "read_voc_labels", "read_voc_actions"]

# The VOC2012 devkit's VOCopts.actions, in its order.
VOC_ACTIONS = ("other", "jumping", "phoning", "playinginstrument", "reading", "ridingbike", "ridinghorse",
               "running", "takingphoto", "usingcomputer", "walking")
SCORED_ACTIONS = VOC_ACTIONS[1:]  # 'other' is not scored (devkit: "skip this when training classifiers")

# What the readers return, the fields of vgglocal.data.labelled.LabelledSet: (records, targets,
# class ids, problems).
Labelled = tuple[list[Sample], np.ndarray, list[str], list[Problem]]


def _image_ids(spec: SplitSpec, root: str, task: str) -> tuple[list[str], str]:
    ids_file = os.path.join(root, "ImageSets", task, f"{spec.name}.txt")
    if not os.path.isfile(ids_file):
        raise DataError(f"{ids_file}: no such image set (split {spec.name!r})")
    ids = [line.split()[0] for line in read_utf8(ids_file, "image id list").splitlines() if line.split()]
    return list(dict.fromkeys(ids)), ids_file


def _located(image_id: str, images_dir: str, images: dict[str, str], ann_dir: str, xmls: dict[str, str],
             ids_file: str, problems: list[Problem]) -> tuple[str, str] | None:
    """(image path, XML path) of a listed image, or None (reported) when either is missing."""
    image = images.get(image_id)
    if image is None or not image.lower().endswith(IMAGE_EXTENSIONS):
        problems.append(Problem(os.path.join(images_dir, f"{image_id}.jpg"), f"listed in {ids_file} but missing; skipped", "missing-file"))
        return None
    if xmls.get(image_id, "").lower() != f"{image_id}.xml":
        problems.append(Problem(os.path.join(ann_dir, f"{image_id}.xml"), "no annotation file; image skipped (no labels)", "missing-file"))
        return None
    return os.path.join(images_dir, image), os.path.join(ann_dir, xmls[image_id])


def _annotated(spec: SplitSpec, root: str, task: str, parse, problems: list[Problem], progress: bool):
    """Yield (image id, image path, XML path, parse(XML)) of each listed image of
    ``ImageSets/<task>/<split>.txt``; missing files and unreadable XML are reported and skipped."""
    ids, ids_file = _image_ids(spec, root, task)
    images_dir, images, ann_dir, xmls = split_folders(spec, root)
    for image_id in tqdm(ids, desc=f"read {spec.name}", disable=not progress, unit="img", mininterval=1.0):
        found = _located(image_id, images_dir, images, ann_dir, xmls, ids_file, problems)
        if found is None:
            continue
        path, xml = found
        try:
            ann = parse(xml)
        except BadAnnotationError as e:
            problems.append(Problem(xml, str(e).removeprefix(f"{xml}: ") + "; image skipped", "bad-xml"))
            continue
        yield image_id, path, xml, ann


def read_voc_labels(spec: SplitSpec, progress: bool = False) -> Labelled:
    """Multi-label VOC classification targets of one ``ImageSets/Main`` split (module doc):
    (records, targets ``ndarray[N, C] int8`` in 1 / 0 / -1, class ids, problems)."""
    root = voc_root(spec.root)
    classes = list(VOC_CLASSES)
    if spec.classes:
        from vgglocal.data.annotations import read_class_file

        classes = read_class_file(spec.classes)[0]
    index = {c: i for i, c in enumerate(classes)}
    problems: list[Problem] = []
    records: list[Sample] = []
    rows: list[np.ndarray] = []
    for image_id, path, xml, ann in _annotated(spec, root, "Main", parse_voc_xml, problems, progress):
        problems.extend(Problem(xml, issue, "bad-box") for issue in ann.issues)
        row = np.full(len(classes), -1, np.int8)
        for name, difficult in zip(ann.names, ann.difficult.tolist(), strict=True):
            c = index.get(name)
            if c is None:
                problems.append(Problem(xml, f"unknown class {name!r} (not in the class list); ignored", "unknown-class"))
            elif not difficult:
                row[c] = 1
            elif row[c] < 0:
                row[c] = 0
        records.append(make_sample(path, -1, size=ann.size, source_id=image_id))
        rows.append(row)
    targets = np.stack(rows) if rows else np.zeros((0, len(classes)), np.int8)
    return records, targets, classes, problems


def read_voc_actions(spec: SplitSpec, progress: bool = False) -> Labelled:
    """VOC-2012 action items (one per annotated person) of one ``ImageSets/Action`` split:
    (records, targets ``ndarray[N, 11] int8`` in 1 / -1, :data:`VOC_ACTIONS`, problems)."""
    root = voc_root(spec.root)
    problems: list[Problem] = []
    records: list[Sample] = []
    rows: list[np.ndarray] = []
    for image_id, path, xml, ann in _annotated(spec, root, "Action", read_xml_root, problems, progress):
        size = xml_size(ann)
        people = _people(ann, xml, problems)
        if not people:
            problems.append(Problem(xml, "no person with <actions> in an Action image; skipped", "bad-box"))
            continue
        numbers = [n for n, _, _ in people]
        boxes = np.asarray([b for _, b, _ in people], np.float64).reshape(-1, 4)
        cleaned, status = clean_boxes(boxes, size)
        problems.extend(box_problems(xml, boxes, cleaned, status, size, what=f"person box of {image_id}"))
        for k, (number, flags) in enumerate(zip(numbers, (f for _, _, f in people), strict=True)):
            if status[k] == DROPPED:
                continue
            records.append(make_sample(path, -1, cleaned[k:k + 1], np.zeros(1, np.int64), size, f"{image_id}/{number}"))
            rows.append(flags)
    targets = np.stack(rows) if rows else np.zeros((0, len(VOC_ACTIONS)), np.int8)
    return records, targets, list(VOC_ACTIONS), problems


def _people(root, xml: str, problems: list[Problem]) -> list[tuple[int, list[float], np.ndarray]]:
    """(object number from 1, box as written, flags ndarray[11] int8 of 1 / -1) of each person
    with ``<actions>``; a person without a usable box is reported and left out."""
    out = []
    for number, obj in enumerate(root.iter("object"), start=1):
        actions = obj.find("actions")
        if actions is None:
            continue
        box = obj.find("bndbox")
        try:
            coords = [float((box.find(k).text or "").strip()) for k in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            problems.append(Problem(xml, f"person {number} has no numeric <bndbox>; skipped", "bad-box"))
            continue
        flags = np.asarray([1 if (actions.findtext(a) or "").strip() in ("1", "1.0") else -1 for a in VOC_ACTIONS], np.int8)
        out.append((number, coords, flags))
    return out
