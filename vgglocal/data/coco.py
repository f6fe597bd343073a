"""COCO reader: an instances JSON through pycocotools.

Paths: the JSON is ``data.<split>_annotations`` or ``<root>/annotations/instances_<split>.json``;
image ``file_name``s are relative to ``data.<split>_images``, else ``<root>/<split>/`` when that
folder exists (COCO's ``train2017/`` layout), else ``<root>`` itself.

Safety: a ``file_name`` that is absolute or leaves the image folder (``../../etc/passwd``) is
reported ("bad-path") and its image skipped; the rest of the file is read. The check is lexical
(``normpath``), so image folders that are symlinks still work.

Classes: categories sorted by category id (COCO's own order); ``ClassList.ids`` and ``names``
hold the category names, ``coco_ids`` the ids (needed to write COCO results).

Boxes: COCO ``bbox`` [x, y, w, h] → x1, y1, x2 = x + w, y2 = y + h, once, here. Crowd regions
(``iscrowd = 1``) are not objects (they cover a group), so they are left out of the records, not
reported; COCOeval treats them as "ignore" regions from the JSON itself. An image's label is
the class of its largest box; an image without (non-crowd) boxes has label -1 (kept for task
"all" only).
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np

from vgglocal.data.annotations import DROPPED, OK, box_problems, clean_boxes, make_sample
from vgglocal.data.errors import DataError, Problem
from vgglocal.data.records import ClassList, Sample
from vgglocal.data.splits import SplitSpec

__all__ = ["read_coco", "load_coco", "safe_join"]


def safe_join(folder: str, name: str) -> str | None:
    """``folder/name`` if it stays inside ``folder`` (lexically), else None."""
    if not name or os.path.isabs(name) or os.path.splitdrive(name)[0]:
        return None
    base = os.path.normpath(folder)
    path = os.path.normpath(os.path.join(base, name))
    return path if os.path.commonpath([base, path]) == base and path != base else None


def load_coco(path: str):
    """pycocotools ``COCO`` for an instances JSON (its progress prints swallowed).

    Raises:
        DataError: missing file, not JSON, or not an instances file; one line naming it.
    """
    from pycocotools.coco import COCO

    if not os.path.isfile(path):
        raise DataError(f"{path}: no such COCO annotation file")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(path)
    except Exception as e:  # noqa: BLE001 - json, assert and key errors all mean "not an instances file"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a COCO instances file ({type(e).__name__}: {reason})") from None
    if "images" not in coco.dataset or "categories" not in coco.dataset:
        raise DataError(f"{path}: not a COCO instances file (needs 'images' and 'categories')")
    return coco


def _existing(paths: list[str]) -> set[str]:
    """The subset of ``paths`` that exist, with one directory listing per folder (no stat storm)."""
    listings: dict[str, set[str]] = {}
    found = set()
    for p in paths:
        folder, name = os.path.split(p)
        if folder not in listings:
            try:
                listings[folder] = set(os.listdir(folder))
            except OSError:
                listings[folder] = set()
        if name in listings[folder]:
            found.add(p)
    return found


def read_coco(spec: SplitSpec, progress: bool = False) -> tuple[list[Sample], ClassList, list[Problem]]:
    """Read one COCO split: (records sorted by image id, classes, problems)."""
    ann_path = spec.annotations or spec.at("annotations", f"instances_{spec.name}.json")
    coco = load_coco(ann_path)
    if spec.images:
        images_dir = spec.images
    else:
        images_dir = spec.at(spec.name) if os.path.isdir(spec.at(spec.name)) else spec.root
    if not os.path.isdir(images_dir):
        raise DataError(f"{images_dir}: no such image folder (data.{spec.role or 'train'}_images)")
    problems: list[Problem] = []

    cats = sorted(coco.cats.values(), key=lambda c: c["id"])
    classes = ClassList(ids=[str(c.get("name", c["id"])) for c in cats], names=[str(c.get("name", c["id"])) for c in cats],
                        coco_ids=[int(c["id"]) for c in cats])
    cat_index = {int(c["id"]): i for i, c in enumerate(cats)}

    images = sorted(coco.imgs.values(), key=lambda im: im["id"])
    image_ids = np.asarray([im["id"] for im in images], np.int64)
    sizes = np.asarray([(im.get("height", 0) or 0, im.get("width", 0) or 0) for im in images], np.int64).reshape(-1, 2)
    paths: list[str | None] = []
    for im in images:
        path = safe_join(images_dir, str(im.get("file_name", "")))
        if path is None:
            problems.append(Problem(f"{ann_path} (image {im['id']})", f"file_name {im.get('file_name')!r} is absolute or escapes the image folder {images_dir}; image skipped", "bad-path"))
        paths.append(path)
    present = _existing([p for p in paths if p is not None])

    # Annotations → flat arrays (one pass to pull the fields out; all box math vectorised).
    ann_ids, ann_img, ann_cat, bboxes = [], [], [], []
    for a in coco.dataset.get("annotations", []):
        if a.get("iscrowd", 0):
            continue
        bbox = a.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
            problems.append(Problem(f"{ann_path} (annotation {a.get('id')})", f"bbox {bbox!r} is not [x, y, w, h]; skipped", "bad-box"))
            continue
        ann_ids.append(a.get("id"))
        ann_img.append(a.get("image_id"))
        ann_cat.append(cat_index.get(a.get("category_id"), -1))
        bboxes.append(bbox)
    xyxy = np.asarray(bboxes, np.float64).reshape(-1, 4)
    xyxy[:, 2:] += xyxy[:, :2]  # COCO xywh → x1y1x2y2, the one conversion (DESIGN.md)
    cat_arr = np.asarray(ann_cat, np.int64)
    img_arr = np.asarray(ann_img, np.int64)
    pos = np.clip(np.searchsorted(image_ids, img_arr), 0, max(len(image_ids) - 1, 0))
    valid_img = (image_ids[pos] == img_arr) if len(image_ids) else np.zeros(len(img_arr), bool)
    hw = np.where(valid_img[:, None], sizes[pos] if len(sizes) else 0, 0)
    cleaned, status = clean_boxes(xyxy, hw)

    for j in np.flatnonzero(~valid_img):
        problems.append(Problem(f"{ann_path} (annotation {ann_ids[j]})", f"image_id {ann_img[j]} is not an image of the file; skipped", "bad-box"))
    for j in np.flatnonzero(valid_img & (cat_arr < 0)):
        problems.append(Problem(f"{ann_path} (annotation {ann_ids[j]})", "category_id is not a category of the file; box skipped", "unknown-class"))
    bad = np.flatnonzero(valid_img & (cat_arr >= 0) & (status != OK))
    files = [f"{ann_path} (annotation {ann_ids[j]}, image {ann_img[j]})" for j in bad.tolist()]
    problems.extend(box_problems(files, xyxy[bad], cleaned[bad], status[bad], hw[bad]))

    keep = valid_img & (cat_arr >= 0) & (status != DROPPED)
    k_img, k_box, k_cat = pos[keep], cleaned[keep], cat_arr[keep]
    order = np.argsort(k_img, kind="stable")  # group by image, annotation order within
    k_img, k_box, k_cat = k_img[order], k_box[order], k_cat[order]
    counts = np.bincount(k_img, minlength=len(images))
    cuts = np.cumsum(counts)[:-1]
    box_lists, cat_lists = np.split(k_box, cuts), np.split(k_cat, cuts)
    # Label = class of the largest box: sort by (image, -area), take each image's first.
    area = (k_box[:, 2] - k_box[:, 0]) * (k_box[:, 3] - k_box[:, 1])
    by_area = np.lexsort((-area, k_img))
    firsts = by_area[np.r_[True, k_img[by_area][1:] != k_img[by_area][:-1]]] if len(k_img) else by_area
    labels = np.full(len(images), -1, np.int64)
    labels[k_img[firsts]] = k_cat[firsts]

    records: list[Sample] = []
    for i, im in enumerate(images):
        path = paths[i]
        if path is None:
            continue
        if path not in present:
            problems.append(Problem(path, f"image {im['id']} of {ann_path} is missing; skipped", "missing-file"))
            continue
        records.append(make_sample(path, int(labels[i]), box_lists[i], cat_lists[i],
                                   (int(sizes[i, 0]), int(sizes[i, 1])), str(im["id"])))
    return records, classes, problems
