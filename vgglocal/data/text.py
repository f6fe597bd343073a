"""Annotation text files (class lists, synset mappings, solution CSVs, id lists) as UTF-8.

A file saved in another encoding (Latin-1 names, a Windows editor) used to end in a
``UnicodeDecodeError`` traceback. :func:`read_utf8` names the first line that is not UTF-8 in
one :class:`~vgglocal.data.errors.DataError`; :func:`read_utf8_lenient` is for files whose lines
are independent records (the Kaggle CSV): it blanks the undecodable lines and returns their
numbers, so the reader reports each one and keeps the rest.
"""

from __future__ import annotations

import os

from vgglocal.data.errors import DataError

__all__ = ["read_utf8", "read_utf8_lenient"]


def _read_bytes(path: str | os.PathLike, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{os.fspath(path)}: cannot read {what} ({e.strerror})") from None


def read_utf8(path: str | os.PathLike, what: str = "file") -> str:
    """The file's text; raises one line ``<path> line N: not UTF-8 text (byte 0x..)``."""
    data = _read_bytes(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{os.fspath(path)} line {line}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                        f"save the {what} as UTF-8") from None


def read_utf8_lenient(path: str | os.PathLike, what: str = "file") -> tuple[str, list[int]]:
    """(text with every undecodable line blanked, the 1-based numbers of those lines)."""
    data = _read_bytes(path, what)
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    lines, bad = [], []
    for number, raw in enumerate(data.split(b"\n"), start=1):  # only for damaged files
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append("")
            bad.append(number)
    return "\n".join(lines), bad
