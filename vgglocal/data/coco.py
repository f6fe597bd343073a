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
import math
import os
from collections import Counter

import numpy as np

from vgglocal.data.annotations import DROPPED, OK, box_problems, clean_boxes, make_sample
from vgglocal.data.errors import DataError, Problem
from vgglocal.data.records import ClassList, Sample
from vgglocal.data.spec import SplitSpec

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


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_box(v: object) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) == 4
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))


def _clean_entries(doc: dict, ann_path: str, problems: list[Problem]) -> tuple[list[dict], list[dict], list[dict], set[int]]:
    """The images, categories and non-crowd annotations whose fields have COCO's JSON types,
    and the image ids listed more than once; every other entry is a problem naming the file,
    the id and the field. Images sharing an id are all skipped: their boxes cannot be told apart."""
    def bad(what: str, message: str, kind: str = "bad-json") -> None:
        problems.append(Problem(f"{ann_path} ({what})", message, kind))

    images: list[dict] = []
    for i, im in enumerate(doc.get("images") or []):
        if not isinstance(im, dict) or not _is_int(im.get("id")):
            ident = im.get("id") if isinstance(im, dict) else f"#{i}"
            bad(f"image {ident!r}", f"id {ident!r} is not an integer; image skipped")
            continue
        if not isinstance(im.get("file_name"), str):
            bad(f"image {im['id']}", f"file_name {im.get('file_name')!r} is not a string; image skipped")
            continue
        im = dict(im)
        for key in ("height", "width"):
            if im.get(key) is not None and not (_is_int(im[key]) and im[key] >= 0):
                bad(f"image {im['id']}", f"{key} {im[key]!r} is not a non-negative integer; size taken from the file")
                im["height"] = im["width"] = 0
        images.append(im)
    counts = Counter(im["id"] for im in images)
    ambiguous = {i for i, n in counts.items() if n > 1}
    for i in sorted(ambiguous):
        names = ", ".join(im["file_name"] for im in images if im["id"] == i)
        bad(f"image {i}", f"id listed {counts[i]} times ({names}); every image with it skipped (boxes could belong to either)",
            "duplicate-id")
    images = [im for im in images if im["id"] not in ambiguous]

    cats: list[dict] = []
    seen: set[int] = set()
    for i, c in enumerate(doc.get("categories") or []):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            ident = c.get("id") if isinstance(c, dict) else f"#{i}"
            bad(f"category {ident!r}", f"id {ident!r} is not an integer; category skipped")
        elif c["id"] in seen:
            bad(f"category {c['id']}", "id listed again; this entry skipped", "duplicate-id")
        else:
            seen.add(c["id"])
            cats.append(c)

    anns: list[dict] = []
    for i, a in enumerate(doc.get("annotations") or []):
        if not isinstance(a, dict):
            bad(f"annotation #{i}", "entry is not an object; skipped")
            continue
        where = f"annotation {a.get('id')}"
        if a.get("iscrowd", 0) not in (0, 1):  # True/False compare equal to 1/0
            bad(where, f"iscrowd {a.get('iscrowd')!r} is not 0 or 1; skipped")
        elif a.get("iscrowd", 0):
            continue  # crowd regions are not objects (module doc)
        elif not _is_int(a.get("image_id")):
            bad(where, f"image_id {a.get('image_id')!r} is not an integer; box skipped")
        elif not _is_int(a.get("category_id")):
            bad(where, f"category_id {a.get('category_id')!r} is not an integer; box skipped")
        elif not _is_box(a.get("bbox")):
            bad(where, f"bbox {a.get('bbox')!r} is not [x, y, w, h] numbers; skipped", "bad-box")
        else:
            anns.append(a)
    return images, cats, anns, ambiguous


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

    images, cats, anns, ambiguous = _clean_entries(coco.dataset, ann_path, problems)
    cats = sorted(cats, key=lambda c: c["id"])
    classes = ClassList(ids=[str(c.get("name", c["id"])) for c in cats], names=[str(c.get("name", c["id"])) for c in cats],
                        coco_ids=[int(c["id"]) for c in cats])
    cat_index = {int(c["id"]): i for i, c in enumerate(cats)}

    images = sorted(images, key=lambda im: im["id"])
    image_ids = np.asarray([im["id"] for im in images], np.int64)
    sizes = np.asarray([(im.get("height") or 0, im.get("width") or 0) for im in images], np.int64).reshape(-1, 2)
    paths: list[str | None] = []
    for im in images:
        path = safe_join(images_dir, im["file_name"])
        if path is None:
            problems.append(Problem(f"{ann_path} (image {im['id']})", f"file_name {im.get('file_name')!r} is absolute or escapes the image folder {images_dir}; image skipped", "bad-path"))
        paths.append(path)
    present = _existing([p for p in paths if p is not None])

    # Annotations → flat arrays (one pass to pull the fields out; all box math vectorised).
    ann_ids, ann_img, ann_cat, bboxes = [], [], [], []
    for a in anns:
        if a["image_id"] in ambiguous:
            problems.append(Problem(f"{ann_path} (annotation {a.get('id')})", f"image_id {a['image_id']} is listed for more than "
                                    "one image; box skipped (it could belong to either)", "bad-json"))
            continue
        ann_ids.append(a.get("id"))
        ann_img.append(a["image_id"])
        ann_cat.append(cat_index.get(a["category_id"], -1))
        bboxes.append(a["bbox"])
    xyxy = np.asarray(bboxes, np.float64).reshape(-1, 4)
    xyxy[:, 2:] += xyxy[:, :2]  # COCO xywh → x1y1x2y2, the one conversion on the way in
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
        sample = make_sample(path, int(labels[i]), box_lists[i], cat_lists[i], (int(sizes[i, 0]), int(sizes[i, 1])), str(im["id"]))
        if path not in present:
            problems.append(Problem(path, f"image {im['id']} of {ann_path} is missing; skipped", "missing-file", sample))
            continue
        records.append(sample)
    return records, classes, problems
