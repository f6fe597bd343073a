"""A split's images decoded by loader workers and handed out in record order, a chunk at a time;
a file that cannot be decoded gives its message instead of stopping the run (``eval`` scores it
as wrong, ``predict`` writes the error, ``features`` skips it and counts it).

:func:`chunked_images` is the loop every image pass runs (``eval``, ``predict``, the
merge-threshold sweep, ``features``): chunks with their decoded images and unreadable messages,
and the progress bar. :func:`image_chunks` is the bare decoding generator under it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vgglocal import comm
from vgglocal.data import DataError, Sample
from vgglocal.data.images import ImageLimits, load_rgb

__all__ = ["ImageChunk", "image_chunks", "chunked_images", "sharded_chunks"]


@dataclass
class ImageChunk:
    """Consecutive records with their decoded images.

    Attributes:
        records: the records, in split order.
        images: uint8 ``[H, W, 3]`` RGB per record, None where decoding failed.
        errors: the message per record ("" when decoded).
    """

    records: list[Sample]
    images: list[np.ndarray | None]
    errors: list[str]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def good(self) -> list[int]:
        """Positions of the decoded images."""
        return [i for i, img in enumerate(self.images) if img is not None]

    def spread(self, results: Sequence[Any]) -> list[Any]:
        """Results for the decoded images (in :attr:`good` order) → one per record, None for the rest."""
        out: list[Any] = [None] * len(self.records)
        for i, res in zip(self.good, results, strict=True):
            out[i] = res
        return out


class _Images(Dataset):
    def __init__(self, records: Sequence[Sample], limits: ImageLimits | None = None) -> None:
        self.records = records
        self.limits = limits

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str]:
        path = self.records[i].path
        try:
            return i, load_rgb(path, self.limits), ""
        except DataError as e:
            return i, None, str(e)
        except OSError as e:
            return i, None, f"{path}: {e.strerror or e}"


def _identity(item: Any) -> Any:
    return item


def image_chunks(records: Sequence[Sample], size: int, workers: int = 0, limits: ImageLimits | None = None) -> Iterator[ImageChunk]:
    """Decode ``records`` (``workers`` loader processes) and yield them ``size`` at a time, in order;
    images over ``limits`` (``data.max_pixels``, ``data.max_aspect``) are unreadable."""
    # No more decoding processes than images or usable cores: extra ones only cost start-up time
    # (and DataLoader warns about them on a laptop).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(0, min(workers, cores, len(records)))
    loader = DataLoader(_Images(records, limits), batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity)
    chunk: list[tuple[int, np.ndarray | None, str]] = []

    def emit() -> ImageChunk:
        return ImageChunk([records[i] for i, _, _ in chunk], [img for _, img, _ in chunk], [err for _, _, err in chunk])

    for item in loader:
        chunk.append(item)
        if len(chunk) == size:
            yield emit()
            chunk = []
    if chunk:
        yield emit()


def chunked_images(records: Sequence[Sample], size: int, workers: int = 0, limits: ImageLimits | None = None, *,
                   desc: str, progress: bool = True, tty_only: bool = True,
                   mininterval: float = 0.1, position: int | None = None) -> Iterator[tuple[ImageChunk, list[np.ndarray], list[str]]]:
    """:func:`image_chunks` with a progress bar: yield ``(chunk, images, unreadable)`` per chunk of
    ``size`` records, in order, where ``images`` are the decoded images (``chunk.good`` order) and
    ``unreadable`` the messages of the records that could not be decoded (record order).

    The bar (``desc``, on stderr, ``len(records)`` images) advances by a chunk when the caller
    asks for the next one, so it counts the chunks the caller has finished with; it is shown when
    ``progress`` and, with ``tty_only``, only when stderr is a terminal; ``position``: its line
    (one per process under ``torchrun``).
    """
    disable = not progress or (tty_only and not sys.stderr.isatty())
    bar = tqdm(total=len(records), desc=desc, unit="img", disable=disable, file=sys.stderr, mininterval=mininterval,
               position=position)
    try:
        for chunk in image_chunks(records, size, workers, limits):
            yield chunk, [chunk.images[i] for i in chunk.good], [err for err in chunk.errors if err]
            bar.update(len(chunk))
    finally:
        bar.close()


def sharded_chunks(records: Sequence[Sample], size: int, workers: int = 0, limits: ImageLimits | None = None, *,
                   desc: str, progress: bool = True, tty_only: bool = True,
                   mininterval: float = 0.1) -> Iterator[tuple[int, ImageChunk | None, list[np.ndarray], list[str]]]:
    """:func:`chunked_images` over this process's share under ``torchrun``: chunk ``k`` of
    ``records`` (``size`` records each, the same chunks whatever the number of processes) is
    rank ``k % world``'s. Yields ``(k, chunk, images, unreadable)`` once per round, and the same
    number of rounds, ``ceil(chunks / world)``, on every rank: ``(-1, None, [], [])`` in a round
    where this rank has no chunk left, so that a collective per round keeps the ranks in step.
    In one process it is :func:`chunked_images` with the chunk numbers."""
    world, me = comm.world_size(), comm.rank()
    n_chunks = -(-len(records) // size)
    mine = list(range(me, n_chunks, world))
    share = [r for k in mine for r in records[k * size : (k + 1) * size]]
    label = f"{desc} [rank {me}/{world}]" if world > 1 else desc
    chunks = chunked_images(share, size, workers, limits, desc=label, progress=progress, tty_only=tty_only,
                            mininterval=mininterval, position=me if world > 1 else None)
    for k, item in zip(mine, chunks, strict=True):
        yield (k, *item)
    for _ in range(-(-n_chunks // world) - len(mine)):
        yield -1, None, [], []
