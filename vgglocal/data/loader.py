"""Data sets and loaders for training and validation: reproducible, resumable, rank-sharded,
and robust to bad files.

* :class:`SampleDataset` decodes a record's image, augments it and builds the targets. A bad
  sample (undecodable image, or no box of its class when localising) comes back as a
  :class:`BadSample` marker; :func:`collate` drops it from the batch and lists it under
  ``batch["bad"]`` so the epoch goes on (a run never dies hours in because of
  one file) and :class:`BadSampleTracker` counts it.
* Augmentation randomness is a pure function of (seed, epoch, sample index): each item gets
  its own ``numpy.random.Generator`` seeded with that triple, so a resumed run, another number
  of workers or another world size sees the same crop of the same image.
* :class:`ShardedBatchSampler` permutes with (seed, epoch) exactly as ``DistributedSampler``
  does, pads to a multiple of the world size, takes this rank's share, and can start at batch
  ``start_batch`` (resume) without touching the skipped samples. It yields ``(epoch, index)``
  keys so workers (persistent ones included) never need to be told the epoch.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from vgglocal.config import TRAIN_TASKS
from vgglocal.data.annotations import DROPPED, clean_boxes
from vgglocal.data.errors import DataError
from vgglocal.data.images import Decoded, ImageLimits, decode_rgb
from vgglocal.data.records import Sample
from vgglocal.data.transforms import Geometry, crop_target
from vgglocal.errors import UserError

__all__ = [
    "BadSample",
    "SampleDataset",
    "collate",
    "ShardedBatchSampler",
    "EpochLoader",
    "build_loader",
    "BadSampleTracker",
    "TooManyBadSamples",
    "sample_rng",
]


class BadSample(NamedTuple):
    """Marker an item becomes when its file cannot be used; ``collate`` drops it."""

    index: int
    path: str
    message: str


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation generator of one sample in one epoch (independent streams per triple)."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


class SampleDataset(Dataset):
    """Decoded, augmented samples.

    Args:
        records: the split (``Sample`` list from ``read_split``).
        transform: a ``TrainTransform`` or ``EvalTransform`` (fixed-size window).
        task: "cls" (target zeros) or "loc" (target = encoded box, Appendix A).
        seed: the run's seed; augmentation of item ``i`` in epoch ``e`` depends only on
            ``(seed, e, i)``.
        limits: image header bounds (``data.max_pixels``, ``data.max_aspect``); an image over
            them is a bad sample. Images larger than the transform needs decode reduced.

    Items (``dataset[i]`` uses :meth:`set_epoch`'s epoch; ``dataset[(epoch, i)]`` an explicit
    one, which is what the loader's sampler passes) are dicts:
        image (Tensor[3, crop, crop]): training: the uint8 crop, with ``shift`` (Tensor[3],
            ``mean - colour offset``) and ``std`` (Tensor[3]) for the normalisation
            ``(image - shift) / std`` on the training device
            (:func:`vgglocal.data.transforms.normalise_batch`); evaluation: the normalised float32 input.
        label (int64): the image's class.
        target (Tensor[4] float32): (cx, cy, w, h)/crop of the class's box with the largest
            intersection with the window, unclipped and mirrored with the window; zeros for "cls".
        target_label (int64): class of that box (the image's class).
        index (int64): position of the record in ``records``.
        origin (Tensor[2] float32), scale (float32), flipped (bool): the window (its corner in
            rescaled pixels, the rescale factor, mirrored or not; :class:`vgglocal.geometry.Geometry`),
            so predictions decode back to original pixels with
            :func:`vgglocal.geometry.decode_windows`, which also un-mirrors cx.
        image_hw (Tensor[2] int64): (height, width) of the stored image, which decoded boxes
            are clipped to (as the evaluation clips them).
    or a :class:`BadSample`.
    """

    def __init__(self, records: Sequence[Sample], transform: Any, task: str = "cls", seed: int = 0,
                 limits: ImageLimits | None = None):
        if task not in TRAIN_TASKS:
            raise ValueError(f"task {task!r} is not one of {', '.join(TRAIN_TASKS)}")
        self.limits = limits or ImageLimits()
        self.records = records
        self.transform = transform
        self.task = task
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by plain integer indexing (the loader passes the epoch with each key)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def _locate(self, key: int | tuple[int, int]) -> tuple[int, int, Sample, BadSample | None]:
        """(epoch, index, record, reason it cannot be used or None) of a sampler key: a bare
        index uses the epoch set by :meth:`set_epoch`; a localisation sample needs a box of its class."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        index = int(index)
        record = self.records[index]
        if self.task == "loc" and not np.any(np.asarray(record.box_labels) == record.label):
            return epoch, index, record, BadSample(index, str(record.path), f"{record.path}: no box of class {record.label} to localise")
        return epoch, index, record, None

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | BadSample:
        epoch, index, record, bad = self._locate(key)
        if bad is not None:
            return bad
        try:
            decoded = self.decode(record)
        except DataError as e:
            return BadSample(index, str(record.path), str(e))
        except OSError as e:  # unreadable file: the same treatment as a corrupt one
            return BadSample(index, str(record.path), f"{record.path}: {e.strerror or e}")
        out = self.transform(decoded.image, sample_rng(self.seed, epoch, index))
        g = out.geometry
        if decoded.factor != 1:  # decoded reduced: the window's scale is relative to the original
            g = dataclasses.replace(g, scale=g.scale / decoded.factor)
        item = self.window_item(record, index, g, decoded.size)
        if isinstance(item, BadSample):
            return item
        item["image"] = out.image
        if out.shift is not None:
            item["shift"] = out.shift
            item["std"] = out.std
        return item

    def decode(self, record: Sample) -> Decoded:
        """The record's image, reduced as far as the transform allows (``images.decode_rgb``).
        Raises DataError or OSError."""
        return decode_rgb(record.path, self.limits, getattr(self.transform, "min_side", 0))

    def window_item(self, record: Sample, index: int, g: Geometry, size: tuple[int, int]) -> dict[str, Any] | BadSample:
        """Everything of an item but its pixels: label, target and window (keys as above).

        ``g`` is the window in original-image pixels and ``size`` the stored image's (height,
        width); the gpu pipeline, which decodes elsewhere, calls this with the header's size.
        """
        if self.task == "loc":
            # Readers that don't know the image size (the Kaggle CSV) leave boxes unclipped at
            # the right/bottom; clip to the decoded size here (clip, drop when empty).
            boxes, status = clean_boxes(record.boxes, size)
            keep = status != DROPPED
            found = crop_target(boxes[keep], np.asarray(record.box_labels)[keep], record.label, g)
            if found is None:
                return BadSample(index, str(record.path), f"{record.path}: no box of class {record.label} inside the image")
            target = found[0]
        else:
            target = torch.zeros(4, dtype=torch.float32)
        return {
            "label": torch.tensor(record.label, dtype=torch.int64),
            "target": target,
            "target_label": torch.tensor(record.label, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
            "origin": torch.tensor(g.origin, dtype=torch.float32),
            "scale": torch.tensor(g.scale, dtype=torch.float32),
            "flipped": torch.tensor(g.flipped),
            "image_hw": torch.tensor(size, dtype=torch.int64),  # the stored image's (height, width): boxes clip to it
        }


def collate(items: list[dict[str, Any] | BadSample]) -> dict[str, Any]:
    """Stack good items; bad ones go to ``batch["bad"]`` as ``(path, message)`` pairs.

    A batch whose items were all bad has no tensor keys, only ``bad`` (and ``size`` 0).
    """
    good = [x for x in items if not isinstance(x, BadSample)]
    batch: dict[str, Any] = default_collate(good) if good else {}
    batch["bad"] = [(x.path, x.message) for x in items if isinstance(x, BadSample)]
    batch["size"] = len(good)
    return batch


# ----------------------------------------------------------------------------- sampling


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardedBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` keys for this rank, deterministic in (seed, epoch).

    The order is ``DistributedSampler``'s: ``torch.randperm(n, generator=seed + epoch)`` when
    shuffling, padded by repeating the start to a multiple of ``world_size``, then every
    ``world_size``-th index from ``rank``. Each rank gets ``ceil(n / world_size)`` samples.

    Args:
        n: data set size. batch_size: per process. start_batch: batches of the current epoch
        to skip (resume); reset to 0 by :meth:`set_epoch` unless given.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int = 0,
                 start_batch: int = 0, drop_last: bool = False, rank: int | None = None,
                 world_size: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size} must be at least 1")
        drank, dworld = _dist_rank_world()
        self.rank = drank if rank is None else int(rank)
        self.world_size = dworld if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world size {self.world_size}")
        self.n = int(n)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.num_samples = math.ceil(self.n / self.world_size)
        self.set_epoch(epoch, start_batch)

    @property
    def batches_per_epoch(self) -> int:
        """Batches in a full epoch on this rank."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (its permutation and augmentation) and the first batch to yield."""
        if start_batch < 0:
            raise ValueError(f"start_batch {start_batch} must be non-negative")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def indices(self) -> list[int]:
        """This rank's sample indices for the current epoch, in order (before batching)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.num_samples * self.world_size
        if total > len(order) and order:
            pad = total - len(order)
            order += (order * math.ceil(pad / len(order)))[:pad]
        return order[self.rank:total:self.world_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        mine = self.indices()
        b = self.batch_size
        for i in range(self.start_batch, self.batches_per_epoch):
            yield [(self.epoch, j) for j in mine[i * b:(i + 1) * b]]

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch)


class EpochLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ShardedBatchSampler`; ``set_epoch`` moves it to an epoch."""

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Next iteration yields epoch ``epoch`` from batch ``start_batch`` (0: the whole epoch)."""
        self.batch_sampler.set_epoch(epoch, start_batch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    @property
    def batches_per_epoch(self) -> int:
        return self.batch_sampler.batches_per_epoch


def _worker_init(worker_id: int) -> None:
    # Each worker is one core's worth of work: keep OpenCV from spawning its own thread pool.
    # Python's and numpy's global generators are seeded from torch's per-worker seed (set from
    # the loader's generator) for any third-party code that uses them; our augmentation does not.
    import cv2

    from vgglocal.interrupts import quiet_worker

    quiet_worker()
    cv2.setNumThreads(1)
    seed = torch.initial_seed() % (1 << 32)
    random.seed(seed)
    np.random.seed(seed)


def build_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, epoch: int = 0,
                 start_batch: int = 0, workers: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = False, drop_last: bool = False,
                 rank: int | None = None, world_size: int | None = None,
                 prefetch_factor: int | None = None, collate_fn: Any = collate) -> EpochLoader:
    """A reproducible, rank-sharded, resumable loader.

    Args:
        dataset: a :class:`SampleDataset` (or any dataset taking ``(epoch, index)`` keys).
        batch_size: per process (training divides the global batch by the world size).
        shuffle: permute with (seed, epoch) (``DistributedSampler`` order).
        seed: permutation and augmentation seed.
        epoch, start_batch: where the first iteration starts (resume); later epochs via
            ``loader.set_epoch(e)``.
        workers: worker processes (0: in the main process). pin_memory (only with CUDA),
            persistent_workers (only when workers > 0), drop_last: as in ``DataLoader``.
        rank, world_size: override the ``torch.distributed`` values (tests, custom launchers).
        prefetch_factor: batches each worker prepares ahead (``data.prefetch_factor``).
        collate_fn: :func:`collate`, or :func:`vgglocal.data.encoded.collate_encoded` for the
            gpu pipeline's byte items.
    """
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    sampler = ShardedBatchSampler(len(dataset), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                                  start_batch=start_batch, drop_last=drop_last, rank=rank,
                                  world_size=world_size)
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    extra: dict[str, Any] = {}
    if workers > 0:
        extra["persistent_workers"] = persistent_workers
        extra["worker_init_fn"] = _worker_init
        if prefetch_factor is not None:
            extra["prefetch_factor"] = prefetch_factor
    # Pinning only helps host→GPU copies; without CUDA torch would warn on every loader.
    pin = pin_memory and torch.cuda.is_available()
    return EpochLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_fn,
                       pin_memory=pin, generator=generator, **extra)


# ----------------------------------------------------------------------------- bad samples


class TooManyBadSamples(UserError):
    """More than the allowed fraction of samples were bad; ``samples`` lists (path, message)."""

    def __init__(self, message: str, samples: list[tuple[str, str]]):
        super().__init__(message)
        self.samples = samples


class BadSampleTracker:
    """Counts seen and bad samples; stops the run when too many are bad.

    The fraction is checked after every batch once ``min_seen`` samples were seen, so that one
    bad file in the first batches of a run cannot stop it by itself (one in a first batch of 32
    is 3%), and unconditionally by :meth:`check` (call it at the end of each epoch, so a data
    set smaller than ``min_seen`` is still judged). Counts are per occurrence (a file bad in
    every epoch counts every epoch); the list keeps each file once.

    Args:
        max_fraction: the allowed fraction of bad samples (``data.max_bad_fraction``, 1%).
        min_seen: samples to see before the per-batch check applies.
        on_new: called with the message of each file the first time it is bad (the training
            log names every skipped file once; resumed runs remember what was named).
    """

    def __init__(self, max_fraction: float = 0.01, min_seen: int = 1000, on_new: Callable[[str], None] | None = None):
        self.max_fraction = float(max_fraction)
        self.min_seen = int(min_seen)
        self.on_new = on_new
        self.seen = 0
        self.bad = 0
        self.files: dict[str, str] = {}

    def update(self, batch: dict[str, Any]) -> int:
        """Count a collated batch; returns its number of bad samples. Raises TooManyBadSamples."""
        bad = batch.get("bad", [])
        self.seen += int(batch.get("size", 0)) + len(bad)
        self.bad += len(bad)
        for path, message in bad:
            if path not in self.files:
                self.files[path] = message
                if self.on_new is not None:
                    self.on_new(message)
        if self.seen >= self.min_seen:
            self.check()
        return len(bad)

    def check(self) -> None:
        """Raise :class:`TooManyBadSamples` (listing the files) if the bad fraction is too high."""
        if self.seen and self.bad > self.max_fraction * self.seen:
            listed = list(self.files.items())
            shown = "; ".join(message for _, message in listed[:20])
            more = f"; and {len(listed) - 20} more files" if len(listed) > 20 else ""
            raise TooManyBadSamples(
                f"{self.bad} of {self.seen} samples were bad ({self.bad / self.seen:.1%}), more than "
                f"data.max_bad_fraction {self.max_fraction:.1%}: {shown}{more}", listed)

    def state_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint (resume keeps the counts)."""
        return {"seen": self.seen, "bad": self.bad, "files": [[p, m] for p, m in self.files.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])
        self.bad = int(state["bad"])
        self.files = {p: m for p, m in state["files"]}
