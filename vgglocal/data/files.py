"""The image files a user names on the command line: files, folders (searched recursively) and
glob patterns, resolved into one ordered list (``vgglocal predict``). No torch: a mistyped path
is reported at once."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from vgglocal.data.images import IMAGE_EXTENSIONS
from vgglocal.errors import UserError

__all__ = ["expand_images"]

_GLOB_CHARS = frozenset("*?[")


def expand_images(args: Sequence[str]) -> list[tuple[str, str]]:
    """``(path, key)`` per image, in order, each file once: a file as given; a folder's image
    files (extensions as :data:`vgglocal.data.images.IMAGE_EXTENSIONS`) at any depth, sorted; a
    glob pattern's matches (``**`` crosses folders), sorted. ``key`` names the image's picture:
    the file stem, or the path below a folder argument without its extension; made unique."""
    items: list[tuple[str, str]] = []
    seen: set[str] = set()
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file())
            if not found:
                raise UserError(f"{arg}: no image files ({' '.join(IMAGE_EXTENSIONS)}) in this folder or below")
            pairs = [(q, q.relative_to(p).with_suffix("").as_posix()) for q in found]
        elif p.is_file():
            pairs = [(p, p.stem)]
        elif _GLOB_CHARS & set(arg):
            found = sorted(Path(m) for m in glob.glob(arg, recursive=True) if Path(m).is_file())
            if not found:
                raise UserError(f"{arg}: no file matches this pattern")
            pairs = [(q, q.stem) for q in found]
        else:
            raise UserError(f"image not found: {arg}")
        for q, key in pairs:
            if str(q) not in seen:
                seen.add(str(q))
                items.append((str(q), key))
    counts: dict[str, int] = {}
    unique = []
    for path, key in items:
        counts[key] = counts.get(key, 0) + 1
        unique.append((path, key if counts[key] == 1 else f"{key}-{counts[key]}"))
    return unique
