"""The image files a user names on the command line: files, folders (searched recursively), glob
patterns and text file lists, resolved into one ordered list (``vgglocal predict``, ``vgglocal
features``). No torch: a mistyped path is reported at once.

A real photo folder holds more than photos. Folders are listed with ``os.scandir``, whose
entries carry their type from the directory itself, so finding the images costs no ``stat``
or ``open`` per file (tens of thousands of files list in a fraction of a second). What cannot
be an image is left out with a one-line note through ``log``, each entry once: symlink
loops and broken symlinks, named pipes, sockets and devices (opening a named pipe blocks
until something writes to it), and folder symlinks, which are not followed (as ``find`` and
``os.walk`` do not by default), so a link to a parent folder cannot make the walk endless;
files without an image extension are counted in one line per folder argument. The same
entries named directly, or by a line of a file list, are refused. Contents (an empty or a
text "JPEG", an unreadable file) are the decoder's to report, per image, when it is read.

Names are shown by :func:`shown`: one printable line whatever they hold (a newline as
``\\n``, bytes that are not UTF-8 as ``\\xNN``).
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from vgglocal.data.images import IMAGE_EXTENSIONS
from vgglocal.errors import UserError

__all__ = ["expand_images", "shown", "check_utf8_names", "LIST_EXTENSIONS"]

_GLOB_CHARS = frozenset("*?[")
LIST_EXTENSIONS = (".txt", ".lst")  # a file list: one image path per line
_EXAMPLES = 3  # names shown in the line about files without an image extension

Log = Callable[[str], None]


def shown(name: str | os.PathLike) -> str:
    """``name`` as one printable line: bytes that are not UTF-8 (the surrogate escapes
    ``os.fsdecode`` makes of them) as ``\\xNN``, control characters as ``\\n``, ``\\t``, ``\\x1b``."""
    text = os.fspath(name)
    if text.isprintable():
        return text
    try:
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte (from JSON, say)
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def check_utf8_names(items: Sequence[tuple[str, str]], target: str | os.PathLike) -> None:
    """Refuse picture names (the keys of :func:`expand_images`) that ``target``, a UTF-8 text
    file such as a Kaggle CSV, cannot hold: file names in another encoding. Left out, such an
    image would silently miss its row; written escaped, its row would name no file."""
    bad = []
    for path, key in items:
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(path)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError(f"{shown(bad[0])}{more}: the file name is not UTF-8, which {shown(target)} cannot hold; "
                        "rename it or write JSON Lines (--format jsonl)")


def _special(mode: int) -> str:
    what = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"not a regular file ({what}); not opened"


def _why_not_file(path: str) -> str | None:
    """None for a regular file (or a symlink to one), else why ``path`` is none: one ``stat``."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop"
        if e.errno == errno.ENOENT and os.path.islink(path):
            return "a broken symlink (its target does not exist)"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return "not found"
        return e.strerror or str(e)
    if stat.S_ISREG(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else _special(mode)


def _entry(entry: os.DirEntry) -> tuple[str, str | None]:
    """``("dir" | "file" | "skip" | "gone", why)`` of a listed entry; a ``stat`` only for symlinks
    (``DirEntry`` types the others from the listing)."""
    try:
        if entry.is_dir(follow_symlinks=False):
            return "dir", None
        if entry.is_file(follow_symlinks=False):
            return "file", None
        if not entry.is_symlink():
            return "skip", _special(entry.stat(follow_symlinks=False).st_mode)
    except OSError:
        return "gone", None  # removed while listed
    why = _why_not_file(entry.path)
    if why == "a folder":
        return "skip", "a folder symlink, not followed"
    return ("file", None) if why is None else ("skip", why)


def _listdir(folder: str, log: Log) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTDIR):  # a pattern's folder that is not there matches nothing
            log(f"skipped {shown(folder)}: folder not read ({e.strerror or e})")
        return []


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(top: str, log: Log, other: list[str]) -> Iterator[str]:
    """The image files at any depth below ``top``, depth first, each folder by name; skips
    logged, other files' paths appended to ``other``."""
    stack = [top]
    while stack:
        folders = []
        for entry in sorted(_listdir(stack.pop(), log), key=lambda e: e.name):  # the notes in a stable order
            kind, why = _entry(entry)
            if kind == "dir":
                folders.append(entry.path)
            elif kind == "file" and _is_image_name(entry.name):
                yield entry.path
            elif kind == "skip" and (_is_image_name(entry.name) or entry.is_symlink()):
                log(f"skipped {shown(entry.path)}: {why}")  # a symlink may be meant as a folder
            elif kind != "gone":
                other.append(entry.path)
        stack.extend(reversed(folders))


def _hidden(name: str, pattern: str) -> bool:
    # as the shell and Python's glob: a wildcard matches no leading dot
    return name.startswith(".") and not pattern.startswith(".")


def _glob(pattern: str, log: Log) -> Iterator[str]:
    """The regular files matching ``pattern`` (``**``: any depth, folder symlinks not followed,
    unlike :func:`glob.glob`, which follows them and repeats every file below a link to a
    parent folder until the path is too long). Other matches that are not regular files are
    logged when they have an image extension."""
    parts = pattern.split(os.sep)
    literal = 0
    while literal < len(parts) - 1 and not _GLOB_CHARS & set(parts[literal]):
        literal += 1
    base = os.sep.join(parts[:literal]) if literal else ""
    if literal == 1 and parts[0] == "":
        base = os.sep
    rest = [p for p in parts[literal:] if p]
    if rest and rest[-1] == "**":
        rest.append("*")  # "**" last: every file at any depth, as glob.glob's recursive "**"
    yield from _match(base, rest, log)


def _match(folder: str, parts: list[str], log: Log) -> Iterator[str]:
    head, rest = parts[0], parts[1:]
    if head == "**":
        yield from _match(folder, rest, log)
        for entry in sorted(_listdir(folder or os.curdir, log), key=lambda e: e.name):
            if _hidden(entry.name, ""):
                continue
            path = os.path.join(folder, entry.name)
            if entry.is_dir(follow_symlinks=False):
                yield from _match(path, parts, log)
            elif entry.is_symlink() and os.path.isdir(path):
                log(f"skipped {shown(path)}: a folder symlink, not followed")
        return
    if not _GLOB_CHARS & set(head):
        path = os.path.join(folder, head)
        if rest:
            if os.path.isdir(path):
                yield from _match(path, rest, log)
            return
        why = _why_not_file(path)
        if why is None:
            yield path
        elif why not in ("not found", "a folder") and _is_image_name(head):
            log(f"skipped {shown(path)}: {why}")
        return
    for entry in sorted(_listdir(folder or os.curdir, log), key=lambda e: e.name):
        if _hidden(entry.name, head) or not fnmatch.fnmatchcase(entry.name, head):
            continue
        path = os.path.join(folder, entry.name)
        if rest:
            if os.path.isdir(path):  # a named level (not "**") may be a folder symlink: the depth is the pattern's
                yield from _match(path, rest, log)
            continue
        kind, why = _entry(entry)
        if kind == "file":
            yield path
        elif kind == "skip" and _is_image_name(entry.name):
            log(f"skipped {shown(path)}: {why}")


def _list_entries(path: Path) -> list[tuple[Path, str]]:
    """The images a file list names: one path per line (relative to the list's folder, as
    ffmpeg's concat lists are); blank lines and lines starting with ``#`` skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{shown(path)}: not a readable text file list ({e})") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        q = Path(os.path.normpath(entry if os.path.isabs(entry) else path.parent / entry))  # "../x.jpg" named once
        why = _why_not_file(str(q))
        if why == "not found":
            raise UserError(f"{shown(path)}:{number}: image not found: {shown(entry)}")
        if why is not None:
            raise UserError(f"{shown(path)}:{number}: {shown(entry)}: {why}")
        if q.suffix.lower() in LIST_EXTENSIONS:
            raise UserError(f"{shown(path)}:{number}: {shown(entry)} is a file list; lists do not nest")
        pairs.append((q, q.stem))
    if not pairs:
        raise UserError(f"{shown(path)}: the file list names no image")
    return pairs


def _folder(arg: str, p: Path, log: Log) -> list[tuple[Path, str]]:
    other: list[str] = []
    found = sorted(Path(q) for q in _walk(str(p), log, other))
    if other:
        names = sorted(Path(q).relative_to(p).as_posix() for q in other)
        more = ", ..." if len(names) > _EXAMPLES else ""
        log(f"{shown(arg)}: {len(names)} file{'s' if len(names) > 1 else ''} without an image extension left out "
            f"({', '.join(shown(n) for n in names[:_EXAMPLES])}{more})")
    if not found:
        raise UserError(f"{shown(arg)}: no image files ({' '.join(IMAGE_EXTENSIONS)}) in this folder or below")
    return [(q, q.relative_to(p).with_suffix("").as_posix()) for q in found]


def expand_images(args: Sequence[str], log: Log | None = None) -> list[tuple[str, str]]:
    """``(path, key)`` per image, in order, each file once: a file as given; a folder's image
    files (extensions as :data:`vgglocal.data.images.IMAGE_EXTENSIONS`) at any depth, sorted; a
    glob pattern's matches (``**`` crosses folders), sorted; a ``.txt`` / ``.lst`` file list's
    lines (:data:`LIST_EXTENSIONS`; paths relative to the list's folder), in its order. ``key`` names the image's picture:
    the file stem, or the path below a folder argument without its extension; made unique.

    What is left out of a folder or a glob (module doc) is told to ``log``, one line each; a
    file argument or a list line that is no regular file raises :class:`UserError`."""
    log = log or (lambda _msg: None)
    items: list[tuple[str, str]] = []
    seen: set[str] = set()
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            pairs = _folder(arg, p, log)
        elif p.is_file() and p.suffix.lower() in LIST_EXTENSIONS:
            pairs = _list_entries(p)
        elif p.is_file():
            pairs = [(p, p.stem)]
        elif _GLOB_CHARS & set(arg):
            found = sorted(set(map(Path, _glob(arg, log))))
            if not found:
                raise UserError(f"{shown(arg)}: no file matches this pattern")
            pairs = [(q, q.stem) for q in found]
        else:
            why = _why_not_file(arg)
            raise UserError(f"image not found: {shown(arg)}" if why in (None, "not found") else f"{shown(arg)}: {why}")
        for q, key in pairs:
            if str(q) not in seen:
                seen.add(str(q))
                items.append((str(q), key))
    return _unique_keys(items)


def _unique_keys(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Keys made unique in order: the second ``x`` becomes ``x-2`` (or ``x-3``, ... when a file
    is itself named ``x-2``)."""
    taken: set[str] = set()
    counts: dict[str, int] = {}
    unique = []
    for path, key in items:
        n = counts.get(key, 1)
        name = key
        while name in taken:
            n += 1
            name = f"{key}-{n}"
        counts[key] = n
        taken.add(name)
        unique.append((path, name))
    return unique
