"""PASCAL-VOC-style XML (ILSVRC and VOC annotations), box cleaning, and record construction.

Shared by the ILSVRC and VOC readers. XML goes through ``defusedxml``: entity declarations
("billion laughs") and external entities are rejected at the declaration, before anything is
expanded, so a malicious file costs microseconds and no memory.

Box cleaning: a box partly outside the image is clipped to it, a box
that is empty, inverted (x1 > x2 or y1 > y2) or entirely outside is dropped, and either way a
:class:`~vgglocal.data.errors.Problem` is recorded. Boxes are kept in the file's own numbers
(ILSVRC/VOC inclusive pixel indices); the image spans [0, W] x [0, H] for clipping, so a box
touching the last pixel (x2 = W - 1, or W in 1-based VOC files) is never reported.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import defusedxml
import defusedxml.ElementTree as DET
import numpy as np

from vgglocal.data.errors import BadAnnotationError, Problem
from vgglocal.data.records import Sample

__all__ = ["VocAnnotation", "read_xml_root", "xml_size", "parse_voc_xml", "clean_boxes", "box_problems", "make_sample",
           "OK", "CLIPPED", "DROPPED"]

OK, CLIPPED, DROPPED = 0, 1, 2

# Shared, so 1.28M box-less ILSVRC training records do not hold 2.56M empty arrays.
_NO_BOXES = np.zeros((0, 4), np.float32)
_NO_LABELS = np.zeros((0,), np.int64)
_NO_BOXES.flags.writeable = False
_NO_LABELS.flags.writeable = False
_NO_FLAGS = np.zeros((0,), bool)
_NO_FLAGS.flags.writeable = False


@dataclass(frozen=True)
class VocAnnotation:
    """One PASCAL-VOC-style annotation file.

    Attributes:
        path: the XML file.
        filename: ``<filename>`` (may lack the extension, as in ILSVRC); "" when absent.
        size: (height, width) from ``<size>``; (0, 0) when absent or zero.
        names (list[str], K): ``<object><name>`` of each well-formed object (wnid or class name).
        boxes (ndarray[K, 4] float32): xmin, ymin, xmax, ymax as written in the file.
        difficult (ndarray[K] bool): VOC's ``<difficult>`` flag.
        issues: messages for objects that were skipped (no ``<bndbox>``, non-numeric values).
    """

    path: str
    filename: str
    size: tuple[int, int]
    names: list[str]
    boxes: np.ndarray
    difficult: np.ndarray
    issues: list[str] = field(default_factory=list)


def _text(node: ET.Element | None, tag: str) -> str:
    child = node.find(tag) if node is not None else None
    return (child.text or "").strip() if child is not None else ""


def _number(text: str) -> float:
    return float(text)  # VOC-format exports sometimes write "273.5"; ILSVRC writes integers


def read_xml_root(path: str | os.PathLike) -> ET.Element:
    """The ``<annotation>`` root of a PASCAL-VOC-style XML file, parsed safely (defusedxml).

    Raises:
        BadAnnotationError: malformed XML, entity declarations or external entities, a missing
            file, or no ``<annotation>`` root; one line naming the file.
    """
    path = os.fspath(path)
    try:
        root = DET.parse(path).getroot()
    except defusedxml.EntitiesForbidden:
        raise BadAnnotationError(f"{path}: XML declares entities (entity-expansion attack?); rejected") from None
    except (defusedxml.ExternalReferenceForbidden, defusedxml.DTDForbidden):
        raise BadAnnotationError(f"{path}: XML references an external entity; rejected") from None
    except ET.ParseError as e:
        raise BadAnnotationError(f"{path}: malformed XML ({e})") from None
    except FileNotFoundError:
        raise BadAnnotationError(f"{path}: no such annotation file") from None
    except OSError as e:
        raise BadAnnotationError(f"{path}: cannot read ({e.strerror})") from None
    if root.tag != "annotation":
        raise BadAnnotationError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    return root


def xml_size(root: ET.Element) -> tuple[int, int]:
    """(height, width) from ``<size>``; (0, 0) when absent, zero or not a number."""
    size_node = root.find("size")
    try:
        height, width = int(float(_text(size_node, "height") or 0)), int(float(_text(size_node, "width") or 0))
    except ValueError:
        height = width = 0
    return (height, width) if height > 0 and width > 0 else (0, 0)


def parse_voc_xml(path: str | os.PathLike) -> VocAnnotation:
    """Parse one PASCAL-VOC-style XML file safely.

    Raises:
        BadAnnotationError: as :func:`read_xml_root`.
    """
    path = os.fspath(path)
    root = read_xml_root(path)
    height, width = xml_size(root)
    names: list[str] = []
    coords: list[list[float]] = []
    difficult: list[bool] = []
    issues: list[str] = []
    for i, obj in enumerate(root.iter("object")):
        name = _text(obj, "name")
        box = obj.find("bndbox")
        if box is None:
            issues.append(f"object {i} ({name or 'no name'}) has no <bndbox>; skipped")
            continue
        try:
            coords.append([_number(_text(box, k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        except ValueError:
            values = [_text(box, k) for k in ("xmin", "ymin", "xmax", "ymax")]
            issues.append(f"object {i} ({name}) has non-numeric box {values}; skipped")
            continue
        names.append(name)
        difficult.append(_text(obj, "difficult") == "1")
    return VocAnnotation(
        path=path,
        filename=_text(root, "filename"),
        size=(height, width),
        names=names,
        boxes=np.asarray(coords, np.float32).reshape(-1, 4),
        difficult=np.asarray(difficult, bool),
        issues=issues,
    )


def clean_boxes(boxes: np.ndarray, sizes: np.ndarray | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to their images and flag the ones to drop (vectorised over all boxes).

    Args:
        boxes (ndarray[N, 4]): x1, y1, x2, y2 in pixels.
        sizes (ndarray[N, 2] or (h, w)): image (height, width) of each box; 0 means unknown,
            and then only the lower bound 0 is enforced (the loader clips to the decoded size).

    Returns:
        (cleaned ndarray[N, 4] float32, status ndarray[N] int8): status OK, CLIPPED (partly
        outside, now clipped) or DROPPED (non-finite, x1 >= x2 or y1 >= y2 as given, or nothing
        left inside the image).
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    hw = np.broadcast_to(np.asarray(sizes, np.float64).reshape(-1, 2), (len(b), 2))
    known = (hw > 0).all(axis=1, keepdims=True)
    upper = np.where(known, hw[:, [1, 0, 1, 0]], np.inf)
    with np.errstate(invalid="ignore"):
        c = np.clip(b, 0.0, upper)
        inverted = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
        outside = (c[:, 2] <= c[:, 0]) | (c[:, 3] <= c[:, 1])
    dropped = ~np.isfinite(b).all(axis=1) | inverted | outside
    clipped = ~dropped & (c != b).any(axis=1)
    status = np.where(dropped, DROPPED, np.where(clipped, CLIPPED, OK)).astype(np.int8)
    return c.astype(np.float32), status


def _fmt(box: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def box_problems(file: str | list[str], boxes: np.ndarray, cleaned: np.ndarray, status: np.ndarray,
                 sizes: np.ndarray | tuple[int, int], what: str = "box") -> list[Problem]:
    """One :class:`Problem` per clipped or dropped box (the loop runs over bad boxes only).

    Args:
        file: the file to name, one for all boxes or one per box.
        boxes, cleaned (ndarray[N, 4]), status (ndarray[N]): as given to / returned by clean_boxes.
        sizes: (h, w) for all boxes or ndarray[N, 2].
    """
    bad = np.flatnonzero(status != OK)
    if len(bad) == 0:
        return []
    hw = np.broadcast_to(np.asarray(sizes).reshape(-1, 2), (len(boxes), 2))[bad].tolist()
    given, fixed, codes = np.asarray(boxes, np.float64)[bad], cleaned[bad].tolist(), status[bad].tolist()
    finite = np.isfinite(given).all(axis=1)
    inverted = ((given[:, 2] <= given[:, 0]) | (given[:, 3] <= given[:, 1])).tolist()
    finite = finite.tolist()
    problems = []
    for k, i in enumerate(bad.tolist()):
        (h, w), b = hw[k], given[k].tolist()
        where = file if isinstance(file, str) else file[i]
        image = f"the {w}x{h} image" if h > 0 and w > 0 else "the image"
        if codes[k] == CLIPPED:
            problems.append(Problem(where, f"{what} {_fmt(b)} extends outside {image}; clipped to {_fmt(fixed[k])}", "clipped-box"))
        elif not finite[k]:
            problems.append(Problem(where, f"{what} {_fmt(b)} has a non-numeric coordinate; dropped", "bad-box"))
        elif inverted[k]:
            problems.append(Problem(where, f"{what} {_fmt(b)} is empty or inverted (needs x1 < x2 and y1 < y2); dropped", "bad-box"))
        else:
            problems.append(Problem(where, f"{what} {_fmt(b)} lies entirely outside {image}; dropped", "bad-box"))
    return problems


def make_sample(path: str, label: int, boxes: np.ndarray | None = None, box_labels: np.ndarray | None = None,
                size: tuple[int, int] = (0, 0), source_id: str = "", difficult: np.ndarray | None = None) -> Sample:
    """A :class:`Sample`; box-less records (and records without a difficult box) share one
    read-only empty array."""
    if boxes is None or len(boxes) == 0:
        boxes, box_labels = _NO_BOXES, _NO_LABELS
    if difficult is None or len(difficult) != len(boxes) or not difficult.any():
        difficult = _NO_FLAGS
    return Sample(path=path, label=int(label), boxes=boxes, box_labels=box_labels, size=size, source_id=source_id, difficult=difficult)


@dataclass(frozen=True)
class ImageBoxes:
    """The usable boxes of one image after class lookup and cleaning.

    Attributes:
        boxes (ndarray[K, 4] float32): x1, y1, x2, y2 pixels, clipped where the size is known.
        labels (ndarray[K] int64): class index per box.
        size: (height, width), (0, 0) when unknown.
        first_label: class of the first object with a known class, before cleaning (the
            image's class for ILSVRC val even when its box had to be dropped); -1 if none.
        difficult (ndarray[K] bool or None): the XML's ``<difficult>`` flag per kept box.
    """

    boxes: np.ndarray
    labels: np.ndarray
    size: tuple[int, int]
    first_label: int
    difficult: np.ndarray | None = None


def read_xml_boxes(path: str, index: dict[str, int], problems: list[Problem], what: str = "wnid",
                   skip_difficult: bool = False) -> ImageBoxes | None:
    """Parse a VOC-style XML and turn its objects into class-indexed, cleaned boxes.

    Objects whose name is not in ``index`` are skipped and reported ("unknown-class"); bad boxes
    are clipped or dropped and reported. A file that cannot be parsed is reported ("bad-xml")
    and gives None.
    """
    try:
        ann = parse_voc_xml(path)
    except BadAnnotationError as e:
        problems.append(Problem(path, str(e).removeprefix(f"{path}: "), "bad-xml"))
        return None
    problems.extend(Problem(path, issue, "bad-box") for issue in ann.issues)
    labels = np.asarray([index.get(n, -1) for n in ann.names], np.int64)
    for n in {n for n, lab in zip(ann.names, labels, strict=True) if lab < 0}:
        problems.append(Problem(path, f"unknown {what} {n!r} (not in the class list); its boxes skipped", "unknown-class"))
    known = labels >= 0
    first_label = int(labels[known][0]) if known.any() else -1
    if skip_difficult:
        known &= ~ann.difficult
    cleaned, status = clean_boxes(ann.boxes[known], ann.size)
    problems.extend(box_problems(path, ann.boxes[known], cleaned, status, ann.size))
    keep = status != DROPPED
    return ImageBoxes(cleaned[keep], labels[known][keep], ann.size, first_label, ann.difficult[known][keep])


def read_class_file(path: str) -> tuple[list[str], list[str]]:
    """A class list file: one class per line, ``id [readable name]``; blank and ``#`` lines ignored.

    Returns (ids, names) in file order (the file order is the class index order).
    """
    from vgglocal.data.errors import DataError
    from vgglocal.data.text import read_utf8

    text = read_utf8(path, "class list")
    ids: list[str] = []
    names: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cid, _, name = line.partition(" ")
        ids.append(cid)
        names.append(name.strip() or cid)
    if not ids:
        raise DataError(f"{path}: class list is empty")
    if len(set(ids)) != len(ids):
        dup = next(c for c in ids if ids.count(c) > 1)
        raise DataError(f"{path}: class {dup!r} listed twice")
    return ids, names
