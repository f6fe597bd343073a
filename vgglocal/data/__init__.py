"""Data: readers (ILSVRC Kaggle/original, VOC, COCO) → :class:`Sample` records, image decoding,
the generated demo data set, RGB statistics, transforms and loaders.

Entry points: ``read_split(cfg.data, "train", task="cls") -> (records, classes)`` and
``scan_split`` (the same, plus every problem found). Heavy dependencies (pycocotools, scipy)
load only when their format is read.
"""

from vgglocal.data.errors import BadAnnotationError, BadImageError, DataError, Problem
from vgglocal.data.records import ClassList, Sample
from vgglocal.data.splits import FORMATS, TASKS, SplitScan, detect_format, read_split, scan_split

__all__ = ["read_split", "scan_split", "SplitScan", "detect_format", "FORMATS", "TASKS", "Sample", "ClassList",
           "DataError", "BadImageError", "BadAnnotationError", "Problem"]
