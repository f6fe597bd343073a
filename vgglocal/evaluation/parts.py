"""An evaluation's per-image results on disk, a part at a time, so that a killed evaluation
resumes and several processes share one (``OUT/parts/``).

The split's records are cut into parts of ``eval.batch_size`` consecutive images (the chunks
the protocol runs on), numbered from 0. Part ``k`` is ``part-0000k.safetensors``: its results
(:func:`~vgglocal.inference.results.pack_results`: the top-k labels, the guesses and the
detections of each image) with, in the file's metadata, the unreadable images' messages and
the key of the evaluation it belongs to. The key is what decides the results: the protocol
and its options, the nets' scales, the image limits, a digest of every checkpoint's bytes and
of the image list (paths, labels, order) and the part size. A part is written to a temporary
file and renamed, so a part on disk is always whole; one whose key differs from the run's is
refused with a line naming what differs, and never mixed in.

Because a part always holds the same images whatever the number of processes, the network
sees the same batches in one process or in eight, and the results do not depend on how many
processes computed them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from vgglocal.data.records import Sample
from vgglocal.inference.nets import EvalError
from vgglocal.inference.results import ImageResult, pack_results, unpack_results

__all__ = ["PartStore", "PartError", "digest_files", "digest_records", "FOLDER"]

FOLDER = "parts"
_HEADER_LIMIT = 1 << 26  # a part's safetensors header (its metadata) is far below 64 MiB


class PartError(EvalError):
    """A part on disk that does not belong to this evaluation, or cannot be read."""


def digest_files(paths: Sequence[str | os.PathLike]) -> str:
    """SHA-256 over the bytes of ``paths``, in order."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def digest_records(records: Sequence[Sample]) -> str:
    """SHA-256 of the image list: each record's path and label, in order."""
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.path}\0{r.label}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _metadata(raw: bytes, name: str) -> dict[str, str]:
    """A safetensors file's ``__metadata__`` (its JSON header: 8 bytes little-endian length, then JSON)."""
    n = int.from_bytes(raw[:8], "little") if len(raw) >= 8 else -1
    if not 0 < n <= min(_HEADER_LIMIT, len(raw) - 8):
        raise PartError(f"{name}: not a part file (no safetensors header); delete it or pass --overwrite")
    try:
        meta = json.loads(raw[8 : 8 + n]).get("__metadata__") or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise PartError(f"{name}: not a part file (unreadable header); delete it or pass --overwrite") from None
    return meta


class PartStore:
    """``folder/parts/`` of one evaluation (module doc).

    Args:
        folder: the evaluation's output folder.
        key: what the results depend on, ``{name: value}`` with string values (module doc).
        n_images, part_size: the split's size and the images per part.
    """

    def __init__(self, folder: str | Path, key: dict[str, str], n_images: int, part_size: int) -> None:
        self.root = Path(folder) / FOLDER
        self.key = dict(key)
        self.n_images, self.part_size = n_images, part_size
        self.n_parts = -(-n_images // part_size) if n_images else 0

    def path(self, k: int) -> Path:
        return self.root / f"part-{k:05d}.safetensors"

    def span(self, k: int) -> range:
        """The record positions of part ``k``."""
        return range(k * self.part_size, min((k + 1) * self.part_size, self.n_images))

    def check(self, raw: bytes, name: str) -> dict[str, str]:
        """The metadata of a part's bytes, refused when it belongs to another evaluation."""
        meta = _metadata(raw, name)
        theirs = json.loads(meta.get("key", "{}"))
        differ = [k for k in self.key if theirs.get(k) != self.key[k]]
        if differ:
            what = ", ".join(differ)
            raise PartError(f"{name}: a part of another evaluation (its {what} differ); "
                            "give this evaluation another --out, or pass --overwrite to replace it")
        return meta

    def done(self) -> list[int]:
        """The parts on this machine's disk, each checked to belong to this evaluation."""
        if not self.root.is_dir():
            return []
        found = []
        for p in sorted(self.root.glob("part-*.safetensors")):
            meta = self.check(p.read_bytes(), str(p))
            k = int(meta.get("part", "-1"))
            if p.name != self.path(k).name or not 0 <= k < self.n_parts:
                raise PartError(f"{p}: holds part {k} of {self.n_parts}; delete it or pass --overwrite")
            found.append(k)
        return found

    def foreign(self) -> list[Path]:
        """Files of the parts folder that are not parts (a temporary file of a killed write)."""
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if not (p.name.startswith("part-") and p.suffix == ".safetensors")]

    def encode(self, k: int, results: Sequence[ImageResult | None], errors: Sequence[str]) -> bytes:
        span = self.span(k)
        if len(results) != len(span) or len(errors) != len(span):
            raise ValueError(f"part {k} holds {len(span)} images; got {len(results)} results and {len(errors)} messages")
        meta = {"part": str(k), "first": str(span.start), "n": str(len(span)), "errors": json.dumps(list(errors)),
                "key": json.dumps(self.key, sort_keys=True)}
        return save_bytes(pack_results(results), metadata=meta)

    def write(self, k: int, results: Sequence[ImageResult | None], errors: Sequence[str]) -> None:
        """Write part ``k`` (``results``: None for an unreadable image, whose message is in ``errors``)."""
        self.write_bytes(k, self.encode(k, results, errors))

    def write_bytes(self, k: int, raw: bytes) -> None:
        """Write part ``k``'s encoded bytes atomically (a temporary file, fsync, rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(k)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)

    def read_bytes(self, k: int) -> bytes:
        return self.path(k).read_bytes()

    def decode(self, k: int, raw: bytes) -> tuple[list[ImageResult | None], list[str]]:
        """Part ``k``'s (results, messages)."""
        name = str(self.path(k))
        meta = self.check(raw, name)
        try:
            results = unpack_results(load_bytes(raw))
            errors = json.loads(meta["errors"])
        except (SafetensorError, KeyError, ValueError, IndexError, RuntimeError) as e:
            raise PartError(f"{name}: unreadable part ({e}); delete it or pass --overwrite") from None
        if int(meta.get("part", -1)) != k or len(results) != len(self.span(k)) or len(errors) != len(results):
            raise PartError(f"{name}: does not hold the {len(self.span(k))} images of part {k}; delete it or pass --overwrite")
        return results, errors

    def read(self, k: int) -> tuple[list[ImageResult | None], list[str]]:
        return self.decode(k, self.read_bytes(k))

    def clear(self) -> None:
        """Remove the parts folder."""
        shutil.rmtree(self.root, ignore_errors=True)
