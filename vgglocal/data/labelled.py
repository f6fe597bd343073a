"""Labelled item sets for the transfer protocols of Appendix B: ``read_labelled``.

``voc-cls`` reads a VOC ``ImageSets/Main`` split with multi-label targets, ``voc-action`` a
VOC-2012 ``ImageSets/Action`` split with one item per person, ``caltech`` a Caltech-101/256
folder with one class per image (:mod:`vgglocal.data.voc_labels`, :mod:`vgglocal.data.caltech`).
``read_any_split`` reads a split of any ``data.format`` as the other commands do, one item per
image with its class index (descriptors of ILSVRC or COCO images, ``vgglocal features``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vgglocal.config import TRANSFER_PROTOCOLS as PROTOCOLS
from vgglocal.config import DataConfig
from vgglocal.data.errors import DataError, Problem
from vgglocal.data.records import Sample
from vgglocal.data.spec import split_spec
from vgglocal.data.splits import read_split, scan_split
from vgglocal.data.voc_labels import read_voc_actions, read_voc_labels

__all__ = ["PROTOCOLS", "PROTOCOL_FORMATS", "LabelledSet", "read_labelled", "read_any_split"]

PROTOCOL_FORMATS = {"voc-cls": "voc", "caltech": "caltech", "voc-action": "voc"}


@dataclass
class LabelledSet:
    """The items of a transfer data set with their targets.

    Attributes:
        records: one per item; VOC action: one per person, ``boxes[0]`` its box.
        targets: ``ndarray[N] int64`` class index (Caltech), or ``ndarray[N, C] int8`` per-class
            labels 1 / 0 (ignored: difficult only) / -1 (VOC classification and action).
        classes: class ids, index order.
        problems: every defect found while reading (named, skipped, counted).
    """

    records: list[Sample]
    targets: np.ndarray
    classes: list[str]
    problems: list[Problem] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [r.source_id for r in self.records]


def read_labelled(cfg: DataConfig, split: str, protocol: str, progress: bool = False) -> LabelledSet:
    """The items of ``split`` for a transfer ``protocol`` (``voc-cls``, ``caltech``, ``voc-action``).

    Raises:
        DataError: an unknown protocol, a ``data.format`` that does not fit it, an unreadable
            split, or a split without items.
    """
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown transfer protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if cfg.format != PROTOCOL_FORMATS[protocol]:
        raise DataError(f"protocol {protocol} reads data.format {PROTOCOL_FORMATS[protocol]}, the config has {cfg.format!r}")
    if protocol == "caltech":
        scan = scan_split(cfg, split, task="cls", progress=progress)
        items = LabelledSet(scan.records, np.asarray([r.label for r in scan.records], np.int64),
                            list(scan.classes.ids), scan.problems)
    else:
        reader = read_voc_labels if protocol == "voc-cls" else read_voc_actions
        items = LabelledSet(*reader(split_spec(cfg, split), progress=progress))
    if not items.records:
        raise DataError(f"split {split!r} of {cfg.root} has no usable items for {protocol} "
                        f"({len(items.problems)} problems; run `vgglocal data check {cfg.root}`)")
    return items


def read_any_split(cfg: DataConfig, split: str, progress: bool = False) -> LabelledSet:
    """Every image of ``split`` of any ``data.format`` (task ``all`` of
    :func:`vgglocal.data.read_split`): targets ``ndarray[N] int64``, the image's class index
    (ILSVRC: its class; VOC/COCO: its largest box's), -1 where unknown (a test split).

    Raises:
        DataError: the split cannot be read or has no images.
    """
    problems: list[Problem] = []
    records, classes = read_split(cfg, split, "all", progress=progress, problems=problems)
    return LabelledSet(records, np.asarray([r.label for r in records], np.int64), list(classes.ids), problems)
