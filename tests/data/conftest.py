"""Shared builders for the data tests."""

from __future__ import annotations

import struct
import zlib

import pytest


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (8-bit RGB) with one tiny IDAT: what a bomb
    looks like to a reader that trusts the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.fixture
def bomb_png():
    """``bomb_png(width, height) -> bytes``: a PNG header claiming that size, with no real pixels."""
    return _png_header_only
