"""ILSVRC CLS-LOC readers: the Kaggle layout and the original (image-net.org) layout.

Class index = sorted wnid order in both (the Kaggle synset mapping is already
sorted). The devkit's own class ids (1..1000, not in wnid order) are kept in
``ClassList.devkit_ids`` for devkit-format submissions whenever a devkit is found.

**Kaggle layout** (``data.root`` = the folder holding ``LOC_synset_mapping.txt``)::

    LOC_synset_mapping.txt                  "n01440764 tench, Tinca tinca": the classes
    LOC_{split}_solution.csv                ImageId,PredictionString ("wnid x1 y1 x2 y2" repeated)
    ILSVRC/Data/CLS-LOC/train/<wnid>/<wnid>_N.JPEG
    ILSVRC/Data/CLS-LOC/{val,test}/*.JPEG
    ILSVRC/Annotations/CLS-LOC/{train/<wnid>,val}/*.xml

The CSV is the source of boxes: at ImageNet scale (544K boxed training images) opening one XML
per image costs minutes, the CSV a second. XML is read only for a split without a CSV. The CSV
has no image sizes, so Kaggle records have ``size == (0, 0)``: boxes are checked for inversion
and negative coordinates when read, and clipped to the decoded image by the loader (``data
check`` decodes every image and reports boxes outside it). Training images come from the class
folders (all 1.28M, for classification); val images from the CSV (plus, for task "all", any
unlisted file, label -1); test images from the folder, label -1.

**Original layout** (image-net.org tars, extracted; every folder also settable in the config)::

    train/<wnid>/*.JPEG              or ILSVRC2012_img_train/, ILSVRC/Data/CLS-LOC/train/
    val/*.JPEG                       or val/<wnid>/*.JPEG (class folders), ILSVRC2012_img_val/
    bbox/train/<wnid>/*.xml          or bbox_train/, Annotation/ (Annotation.tar.gz),
                                        ILSVRC2012_bbox_train_v2/, Annotations/CLS-LOC/train/
    bbox/val/*.xml                   or bbox_val/, ILSVRC2012_bbox_val_v3/, Annotations/CLS-LOC/val/,
                                        or the XMLs beside the images
    devkit/data/meta_clsloc.mat      (2014+ devkit) or meta.mat (2012 devkit) or map_clsloc.txt;
                                        devkit/ may also be ILSVRC2012_devkit_t12/, ILSVRC2014_devkit/
    devkit/data/ILSVRC2012_validation_ground_truth.txt   (or ILSVRC2014_clsloc_...): devkit ids

Classes come from the devkit (its leaf synsets), or, without a devkit, from the training class
folders. In both layouts ``data.classes`` (a file of "wnid name" lines, the synset mapping's
format) replaces the class list, e.g. to train on a subset of the classes. Val labels: class folders if present, else the ground-truth file, else the XML boxes.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from vgglocal.data.annotations import (
    DROPPED,
    OK,
    ImageBoxes,
    box_problems,
    clean_boxes,
    make_sample,
    read_class_file,
    read_xml_boxes,
)
from vgglocal.data.errors import DataError, Problem
from vgglocal.data.images import IMAGE_EXTENSIONS
from vgglocal.data.records import ClassList, Sample
from vgglocal.data.spec import SplitSpec
from vgglocal.data.text import read_utf8, read_utf8_lenient

__all__ = ["read_kaggle", "read_original", "read_solution_csv", "SolutionTable", "read_devkit_meta", "find_devkit",
           "scan_images", "index_files", "MAPPING"]

MAPPING = "LOC_synset_mapping.txt"
_DEVKIT_DIRS = ("devkit", "ILSVRC2012_devkit_t12", "ILSVRC2014_devkit", "ILSVRC2013_devkit",
                "ILSVRC2015_devkit", "ILSVRC/devkit", "")
_META_FILES = ("meta_clsloc.mat", "meta.mat", "map_clsloc.txt")
_GT_FILES = ("ILSVRC2012_validation_ground_truth.txt", "ILSVRC2014_clsloc_validation_ground_truth.txt",
             "ILSVRC2013_clsloc_validation_ground_truth.txt", "ILSVRC2015_clsloc_validation_ground_truth.txt")


# ----------------------------------------------------------------------------- folders


def _first_dir(candidates: list[str]) -> str:
    return next((c for c in candidates if os.path.isdir(c)), "")


def scan_images(folder: str, index: dict[str, int], problems: list[Problem]) -> list[tuple[str, str, int]]:
    """Image files of a split folder, sorted: flat files and/or one level of class folders.

    One ``os.scandir`` per folder and no ``stat`` per file (names are filtered by extension).

    Returns:
        (stem, path, folder_label) per image; folder_label is the class of its wnid folder, or -1
        for a flat file. Folders that are not classes, or cannot be read, are reported and skipped.
    """
    out: list[tuple[str, str, int]] = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            label = index.get(entry.name, -1)
            try:
                with os.scandir(entry.path) as sub:
                    names = sorted(e.name for e in sub if e.name.lower().endswith(IMAGE_EXTENSIONS))
            except OSError as e:  # one unreadable class folder must not hide the others
                problems.append(Problem(entry.path, f"cannot read the folder ({e.strerror or e}); its images skipped", "bad-folder"))
                continue
            if label < 0:
                if names:
                    problems.append(Problem(entry.path, f"folder is not a class in the class list; its {len(names)} images skipped", "unknown-class"))
                continue
            prefix = entry.path + os.sep  # plain concatenation: os.path.join per file costs ~4 s at 1.28M
            out.extend((n[: n.rfind(".")], prefix + n, label) for n in names)
        elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
            out.append((entry.name[: entry.name.rfind(".")], entry.path, -1))
    return out


def index_files(folder: str, ext: str, subfolders: set[str] | None = None) -> dict[str, str]:
    """{stem: path} of the ``ext`` files in ``folder`` and its immediate subfolders (only those
    named in ``subfolders`` when given: image-net.org's Annotation/ also covers non-ILSVRC synsets)."""
    found: dict[str, str] = {}
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.endswith(ext):
                found[entry.name[: -len(ext)]] = entry.path
            elif (subfolders is None or entry.name in subfolders) and not entry.name.startswith(".") and entry.is_dir():
                with os.scandir(entry.path) as sub:
                    found.update((e.name[: -len(ext)], e.path) for e in sub if e.name.endswith(ext))
    return found


# ----------------------------------------------------------------------------- devkit


def find_devkit(spec: SplitSpec) -> tuple[str, str]:
    """(meta file, devkit data folder) from ``data.devkit`` or the usual places; ("", "") if none.

    Raises:
        DataError: ``data.devkit`` is set but holds no meta file.
    """
    if spec.devkit:
        if os.path.isfile(spec.devkit):
            return spec.devkit, os.path.dirname(spec.devkit)
        for data in (os.path.join(spec.devkit, "data"), spec.devkit):
            for meta in _META_FILES:
                if os.path.isfile(os.path.join(data, meta)):
                    return os.path.join(data, meta), data
        raise DataError(f"data.devkit: {spec.devkit} holds no {' / '.join(_META_FILES)} (also looked in its data/)")
    for d in _DEVKIT_DIRS:
        for data in (spec.at(d, "data"), spec.at(d)):
            for meta in _META_FILES:
                if os.path.isfile(os.path.join(data, meta)):
                    return os.path.join(data, meta), data
    return "", ""


def read_devkit_meta(path: str) -> list[tuple[int, str, str]]:
    """The devkit's leaf classes as (devkit id, wnid, words), from a .mat or ``map_clsloc.txt``.

    ``meta.mat`` (2012) and ``meta_clsloc.mat`` (2014+) hold a ``synsets`` struct array with
    ``ILSVRC20xx_ID``, ``WNID``, ``words`` and ``num_children``; the classes are the leaves.
    """
    if path.endswith(".txt"):  # map_clsloc.txt: "n02119789 1 kit_fox"
        rows = []
        for i, line in enumerate(read_utf8(path, "devkit class map").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2 or not parts[1].isdigit():
                raise DataError(f"{path} line {i}: expected 'wnid id name', got {line!r}")
            rows.append((int(parts[1]), parts[0], " ".join(parts[2:]) or parts[0]))
        return rows
    import scipy.io

    try:
        synsets = scipy.io.loadmat(path, squeeze_me=True)["synsets"]
    except Exception as e:  # noqa: BLE001 - scipy raises many types for a bad .mat
        raise DataError(f"{path}: cannot read devkit meta file ({type(e).__name__}: {e})") from None
    names = synsets.dtype.names or ()
    id_field = next((n for n in names if re.fullmatch(r"ILSVRC20\d\d_ID", n)), None)
    if id_field is None or "WNID" not in names:
        raise DataError(f"{path}: 'synsets' has no ILSVRC20xx_ID / WNID fields (fields: {', '.join(names)})")
    synsets = np.atleast_1d(synsets)
    leaves = np.ones(len(synsets), bool)
    if "num_children" in names:
        leaves = np.asarray(synsets["num_children"], np.int64) == 0
    words = synsets["words"] if "words" in names else synsets["WNID"]
    return [(int(i), str(w), str(t)) for i, w, t, leaf in zip(synsets[id_field], synsets["WNID"], words, leaves, strict=True) if leaf]


def _devkit_classes(meta_path: str) -> ClassList:
    rows = sorted(read_devkit_meta(meta_path), key=lambda r: r[1])
    if not rows:
        raise DataError(f"{meta_path}: no leaf classes")
    return ClassList(ids=[r[1] for r in rows], names=[r[2] for r in rows], devkit_ids=[r[0] for r in rows])


def _sorted_classes(wnids: list[str], names: list[str], meta_path: str) -> ClassList:
    order = sorted(range(len(wnids)), key=lambda i: wnids[i])
    ids = [wnids[i] for i in order]
    devkit_ids = None
    if meta_path:
        by_wnid = {w: i for i, w, _ in read_devkit_meta(meta_path)}
        missing = [w for w in ids if w not in by_wnid]
        if missing:
            raise DataError(f"{meta_path}: devkit has no class {missing[0]} ({len(missing)} classes missing); wrong devkit?")
        devkit_ids = [by_wnid[w] for w in ids]
    return ClassList(ids=ids, names=[names[i] for i in order], devkit_ids=devkit_ids)


# ----------------------------------------------------------------------------- Kaggle CSV


def _numbers(tokens: list[str]) -> np.ndarray:
    try:
        return np.array(tokens, dtype=np.float32)
    except ValueError:  # a stray non-number: NaN, so that one box is dropped and reported
        def num(t: str) -> float:
            try:
                return float(t)
            except ValueError:
                return float("nan")

        return np.array([num(t) for t in tokens], dtype=np.float32)


def read_solution_csv(path: str, index: dict[str, int], problems: list[Problem]) -> SolutionTable:
    """Kaggle ``LOC_*_solution.csv`` → the boxes per ImageId, vectorised over all boxes.

    Unknown wnids are reported and their boxes skipped; inverted boxes are dropped and boxes with
    negative coordinates clipped at 0 (the CSV has no image size), each reported against
    ``<csv> line N (ImageId)``.
    """
    ids: list[str] = []
    lines: list[int] = []
    counts: list[int] = []
    wnid_tokens: list[str] = []
    coord_tokens: list[str] = []
    text, undecodable = read_utf8_lenient(path, "solution CSV")
    for line in undecodable:
        problems.append(Problem(f"{path} line {line}", "not UTF-8 text; line skipped", "bad-csv"))
    with io.StringIO(text, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lstrip("\ufeff") for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise DataError(f"{path}: expected the header 'ImageId,PredictionString', got {','.join(header or [])!r}")
        for row in reader:
            if len(row) == 2:  # the common case first: this loop runs 544K times on ImageNet
                parts = row[1].split()
                if len(parts) % 5 == 0:
                    ids.append(row[0].strip())
                    lines.append(reader.line_num)
                    counts.append(len(parts) // 5)
                    wnid_tokens.extend(parts[0::5])
                    del parts[0::5]
                    coord_tokens.extend(parts)
                    continue
            if not row or not "".join(row).strip():
                continue
            where = f"{path} line {reader.line_num}"
            if len(row) != 2:
                problems.append(Problem(where, f"expected 2 columns (ImageId,PredictionString), got {len(row)}; line skipped", "bad-csv"))
            else:
                problems.append(Problem(f"{where} ({row[0]})", f"PredictionString has {len(row[1].split())} fields, not groups of 5 (wnid x1 y1 x2 y2); line skipped", "bad-csv"))
    n = len(ids)
    wnids = np.asarray(wnid_tokens or [""], dtype=str)[: len(wnid_tokens)]
    coords = _numbers(coord_tokens).reshape(-1, 4)
    image_of = np.repeat(np.arange(n), counts)
    uniq, inverse = np.unique(wnids, return_inverse=True)
    lut = np.asarray([index.get(str(u), -1) for u in uniq], np.int64)
    labels = lut[inverse.reshape(-1)] if len(wnids) else np.zeros(0, np.int64)

    def where(i: int) -> str:
        return f"{path} line {lines[i]} ({ids[i]})"

    unknown = np.flatnonzero(labels < 0)
    if len(unknown):  # one problem per (image, unknown wnid), found without a loop over wnids
        pairs = np.unique(np.stack([image_of[unknown], inverse.reshape(-1)[unknown]], 1), axis=0)
        for i, u in pairs.tolist():
            problems.append(Problem(where(i), f"unknown wnid {str(uniq[u])!r} (not in {MAPPING}); its boxes skipped", "unknown-class"))
    # The image's class is its first known box, even if that box is dropped below.
    first = np.full(n, len(labels), np.int64)
    np.minimum.at(first, image_of, np.where(labels >= 0, np.arange(len(labels)), len(labels)))
    first_label = np.where(first < len(labels), np.append(labels, -1)[first], -1)

    cleaned, status = clean_boxes(coords, (0, 0))
    bad = np.flatnonzero((status != OK) & (labels >= 0))
    problems.extend(box_problems([where(i) for i in image_of[bad].tolist()], coords[bad], cleaned[bad], status[bad], (0, 0)))
    keep = (labels >= 0) & (status != DROPPED)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(image_of[keep], minlength=n))]).tolist()
    rows: dict[str, int] = {}
    for i, image_id in enumerate(ids):
        if image_id in rows:
            problems.append(Problem(where(i), f"ImageId {image_id} listed again; this line skipped", "bad-csv"))
        else:
            rows[image_id] = i
    return SolutionTable(rows, cleaned[keep], labels[keep], bounds, first_label.tolist())


@dataclass
class SolutionTable:
    """The boxes of a solution CSV, grouped by image; one array for the whole split, so a
    lookup costs two slices and reading 544K rows allocates no per-image arrays up front.

    Attributes:
        rows: {ImageId: row}; :meth:`pop` removes what it returns, so what is left at the end
            are images listed in the CSV but not found on disk.
        boxes (ndarray[M, 4] float32), labels (ndarray[M] int64): kept boxes, grouped by row.
        bounds: row i's boxes are ``boxes[bounds[i]:bounds[i + 1]]``.
        first_label: per row, the class of its first known box (-1: none).
    """

    rows: dict[str, int]
    boxes: np.ndarray
    labels: np.ndarray
    bounds: list[int]
    first_label: list[int]

    def __len__(self) -> int:
        return len(self.rows)

    def pop(self, image_id: str) -> ImageBoxes | None:
        i = self.rows.pop(image_id, None)
        if i is None:
            return None
        a, b = self.bounds[i], self.bounds[i + 1]
        return ImageBoxes(self.boxes[a:b], self.labels[a:b], (0, 0), self.first_label[i])


# ----------------------------------------------------------------------------- readers


def _records(images: list[tuple[str, str, int]], boxes_of, progress: bool, desc: str) -> list[Sample]:
    records = []
    for stem, path, folder_label in tqdm(images, desc=desc, disable=not progress, unit="img", mininterval=1.0):
        ib: ImageBoxes | None = boxes_of(stem, folder_label)
        if ib is None:
            records.append(make_sample(path, folder_label, size=(0, 0), source_id=stem))
            continue
        label = folder_label if folder_label >= 0 else ib.first_label
        records.append(make_sample(path, label, ib.boxes, ib.labels, ib.size, stem))
    return records


def _xml_lookup(xml_index: dict[str, str], index: dict[str, int], problems: list[Problem]):
    def boxes_of(stem: str, folder_label: int) -> ImageBoxes | None:
        xml = xml_index.pop(stem, None)
        return read_xml_boxes(xml, index, problems) if xml else None

    return boxes_of


def _leftovers(problems: list[Problem], leftover: dict, source: str, images_dir: str, boxes_of=None) -> None:
    """Annotated images with no file: a ``missing-file`` problem each, carrying the record the
    image would have had when ``boxes_of(stem, -1)`` can tell its boxes (evaluation counts it)."""
    for image_id in sorted(leftover):
        sample = None
        if boxes_of is not None:
            ib = boxes_of(image_id, -1)
            if ib is not None:
                sample = make_sample(os.path.join(images_dir, f"{image_id}.JPEG"), ib.first_label, ib.boxes, ib.labels,
                                     ib.size, image_id)
        problems.append(Problem(f"{source} ({image_id})", f"has boxes but no image file in {images_dir}; skipped",
                                "missing-file", sample))


def read_kaggle(spec: SplitSpec, progress: bool = False) -> tuple[list[Sample], ClassList, list[Problem]]:
    """Read one split of the Kaggle layout (module doc): (records sorted by path, classes, problems)."""
    mapping = spec.classes or spec.at(MAPPING)
    if not os.path.isfile(mapping):
        raise DataError(f"{mapping}: no such file (the Kaggle layout's class list; data.root should be the folder holding it)")
    wnids, names = read_class_file(mapping)
    meta_path, _ = find_devkit(spec)
    classes = _sorted_classes(wnids, names, meta_path)
    index = {w: i for i, w in enumerate(classes.ids)}
    images_dir = spec.images or spec.at("ILSVRC", "Data", "CLS-LOC", spec.name)
    if not os.path.isdir(images_dir):
        raise DataError(f"{images_dir}: no such image folder for split {spec.name!r}")
    csv_path = spec.annotations or spec.at(f"LOC_{spec.name}_solution.csv")
    xml_dir = spec.at("ILSVRC", "Annotations", "CLS-LOC", spec.name)
    problems: list[Problem] = []
    if os.path.isfile(csv_path):
        table = read_solution_csv(csv_path, index, problems)

        def boxes_of(stem: str, folder_label: int) -> ImageBoxes | None:
            return table.pop(stem)
    elif spec.annotations:
        raise DataError(f"{spec.annotations}: no such annotation file (data.{spec.role}_annotations)")
    elif os.path.isdir(xml_dir):
        table = index_files(xml_dir, ".xml", set(classes.ids))
        boxes_of = _xml_lookup(table, index, problems)
    else:
        table = {}

        def boxes_of(stem: str, folder_label: int) -> ImageBoxes | None:
            return None
    images = scan_images(images_dir, index, problems)
    records = _records(images, boxes_of, progress, f"read {spec.name}")
    leftover = table.rows if isinstance(table, SolutionTable) else table
    _leftovers(problems, dict(leftover), csv_path if os.path.isfile(csv_path) else xml_dir, images_dir,
               boxes_of if isinstance(table, SolutionTable) else None)
    return records, classes, problems


def _original_images(spec: SplitSpec, name: str, images: str) -> str:
    if images:
        if not os.path.isdir(images):
            raise DataError(f"{images}: no such image folder (data.{spec.role or 'train'}_images)")
        return images
    return _first_dir([spec.at(name), spec.at(f"ILSVRC2012_img_{name}"),
                       spec.at("ILSVRC", "Data", "CLS-LOC", name), spec.at("Data", "CLS-LOC", name)])


def _original_xml_dir(spec: SplitSpec) -> str:
    if spec.annotations:
        if not os.path.isdir(spec.annotations):
            raise DataError(f"{spec.annotations}: no such folder of XML boxes (data.{spec.role}_annotations)")
        return spec.annotations
    n = spec.name
    candidates = [spec.at("bbox", n), spec.at(f"bbox_{n}"), spec.at("Annotations", "CLS-LOC", n),
                  spec.at("ILSVRC", "Annotations", "CLS-LOC", n), spec.at("Annotations", n),
                  spec.at(f"ILSVRC2012_bbox_{n}_v3"), spec.at(f"ILSVRC2012_bbox_{n}_v2"), spec.at(f"ILSVRC2012_bbox_{n}")]
    if spec.role == "train" or n == "train":
        candidates.append(spec.at("Annotation"))  # image-net.org's Annotation.tar.gz
    return _first_dir(candidates)


def _val_ground_truth(data_dir: str, classes: ClassList, problems: list[Problem]) -> dict[int, int]:
    """{image number: class index} from the devkit's validation ground truth (devkit ids)."""
    gt = next((os.path.join(data_dir, g) for g in _GT_FILES if data_dir and os.path.isfile(os.path.join(data_dir, g))), "")
    if not gt or classes.devkit_ids is None:
        return {}
    by_devkit = {d: i for i, d in enumerate(classes.devkit_ids)}
    out = {}
    for number, line in enumerate(read_utf8(gt, "ground-truth file").split(), start=1):
        label = by_devkit.get(int(line), -1) if line.isdigit() else -1
        if label < 0:
            problems.append(Problem(f"{gt} line {number}", f"{line!r} is not a devkit class id of {len(classes)} classes", "unknown-class"))
        out[number] = label
    return out


def read_original(spec: SplitSpec, progress: bool = False) -> tuple[list[Sample], ClassList, list[Problem]]:
    """Read one split of the original image-net.org layout (module doc)."""
    problems: list[Problem] = []
    meta_path, data_dir = find_devkit(spec)
    if spec.classes:
        wnids, names = read_class_file(spec.classes)
        classes = _sorted_classes(wnids, names, meta_path)
    elif meta_path:
        classes = _devkit_classes(meta_path)
    else:
        train_dir = _original_images(spec, spec.train_name, spec.train_images)
        if not train_dir:
            raise DataError(f"{spec.root}: no devkit (meta_clsloc.mat / meta.mat) and no train/<wnid>/ folders to take the classes from; set data.devkit")
        with os.scandir(train_dir) as it:
            wnids = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
        if not wnids:
            raise DataError(f"{train_dir}: no class folders and no devkit; set data.devkit")
        classes = ClassList(ids=wnids, names=list(wnids))
    index = {w: i for i, w in enumerate(classes.ids)}
    images_dir = _original_images(spec, spec.name, spec.images)
    if not images_dir:
        raise DataError(f"{spec.root}: no image folder for split {spec.name!r} (looked for {spec.name}/, "
                        f"ILSVRC2012_img_{spec.name}/, ILSVRC/Data/CLS-LOC/{spec.name}/); set data.{spec.role or 'train'}_images")
    xml_dir = _original_xml_dir(spec) or images_dir
    xml_index = index_files(xml_dir, ".xml", set(classes.ids))
    images = scan_images(images_dir, index, problems)
    gt = _val_ground_truth(data_dir, classes, problems) if "val" in spec.name or spec.role == "val" else {}
    if gt:
        number = re.compile(r"_(\d+)$")

        def with_gt(image: tuple[str, str, int]) -> tuple[str, str, int]:
            stem, path, label = image
            m = number.search(stem)
            return (stem, path, gt.get(int(m.group(1)), -1)) if label < 0 and m else image

        images = [with_gt(im) for im in images]
    records = _records(images, _xml_lookup(xml_index, index, problems), progress, f"read {spec.name}")
    _leftovers(problems, xml_index, xml_dir, images_dir)
    return records, classes, problems


