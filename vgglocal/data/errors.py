"""Data errors and the per-file problem record that readers and ``data check`` report.

A *fatal* data error (no such split, unreadable class list, empty split) raises
:class:`DataError`. A defect in one file (a corrupt image, a bad box, an unknown wnid) is not
fatal: readers skip what is broken, keep everything else, and record a :class:`Problem`
("a bad sample is skipped and counted, never silently trained on").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vgglocal.data.records import Sample
from vgglocal.errors import UserError

__all__ = ["DataError", "BadImageError", "BadAnnotationError", "Problem"]


class DataError(UserError):
    """A data set cannot be used as given; the message names the file, folder or split."""


class BadImageError(DataError):
    """An image file cannot be decoded (truncated, corrupt, not an image); names the file."""


class BadAnnotationError(DataError):
    """An annotation file cannot be parsed (malformed or malicious XML); names the file."""


@dataclass(frozen=True)
class Problem:
    """One defect found while reading a split.

    Attributes:
        file: the file at fault (an image, an XML, or ``CSV line N (ImageId)``).
        message: what is wrong and what was done about it ("dropped", "clipped", "skipped").
        kind: a short tag for counting: ``bad-image``, ``bad-xml``, ``bad-box``,
            ``clipped-box``, ``unknown-class``, ``missing-file``, ``bad-path``, ``size-mismatch``,
            ``bad-csv``, ``bad-json``, ``duplicate-id``, ``bad-folder``.
        sample: for ``missing-file``, the record the image would have had (or None).
    """

    file: str
    message: str
    kind: str
    # For an image the annotations list but the disk lacks: the record it would have been, so
    # evaluation can count it as wrong instead of dropping it from the denominator.
    sample: Sample | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"
