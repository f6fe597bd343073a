"""The image files a user names on the command line: files, folders (searched recursively), glob
patterns and text file lists, resolved into one ordered list (``vgglocal predict``, ``vgglocal
features``). No torch: a mistyped path is reported at once."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from vgglocal.data.images import IMAGE_EXTENSIONS
from vgglocal.errors import UserError

__all__ = ["expand_images", "LIST_EXTENSIONS"]

_GLOB_CHARS = frozenset("*?[")
LIST_EXTENSIONS = (".txt", ".lst")  # a file list: one image path per line


def _list_entries(path: Path) -> list[tuple[Path, str]]:
    """The images a file list names: one path per line (relative to the list's folder, as
    ffmpeg's concat lists are); blank lines and lines starting with ``#`` skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable text file list ({e})") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        q = Path(os.path.normpath(entry if os.path.isabs(entry) else path.parent / entry))  # "../x.jpg" named once
        if not q.is_file():
            raise UserError(f"{path}:{number}: image not found: {entry}")
        if q.suffix.lower() in LIST_EXTENSIONS:
            raise UserError(f"{path}:{number}: {entry} is a file list; lists do not nest")
        pairs.append((q, q.stem))
    if not pairs:
        raise UserError(f"{path}: the file list names no image")
    return pairs


def expand_images(args: Sequence[str]) -> list[tuple[str, str]]:
    """``(path, key)`` per image, in order, each file once: a file as given; a folder's image
    files (extensions as :data:`vgglocal.data.images.IMAGE_EXTENSIONS`) at any depth, sorted; a
    glob pattern's matches (``**`` crosses folders), sorted; a ``.txt`` / ``.lst`` file list's
    lines (:data:`LIST_EXTENSIONS`; paths relative to the list's folder), in its order. ``key`` names the image's picture:
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
        elif p.is_file() and p.suffix.lower() in LIST_EXTENSIONS:
            pairs = _list_entries(p)
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
