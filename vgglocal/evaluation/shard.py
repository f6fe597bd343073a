"""One evaluation over several processes, and over several runs of the same command: the parts
of :mod:`vgglocal.evaluation.parts` dealt to the ranks, each rank's share computed on its own
device and written as it finishes, and every part brought to rank 0 at the end
(Detectron2's ``inference_on_dataset`` shards the same way and gathers with ``comm.gather``).

The parts still to do (those no rank holds on its disk) are dealt round-robin, so a rerun after
a kill, or a group that torchelastic restarts, computes only what is missing, with any number
of processes. At the end each part that rank 0 lacks is sent by the lowest rank that holds it:
with a shared file system nothing travels; without one, the parts of the other nodes do.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from vgglocal import comm
from vgglocal.data.chunks import chunked_images
from vgglocal.data.images import ImageLimits
from vgglocal.errors import UserError
from vgglocal.evaluation.job import EvalJob, Log
from vgglocal.evaluation.parts import PartStore
from vgglocal.inference.nets import EvalError
from vgglocal.inference.protocols import begin_protocol

__all__ = ["together", "deal", "compute_parts", "collect_parts", "ProgressLog"]

T = TypeVar("T")


def together(fn: Callable[[], T]) -> T:
    """``fn()`` on every rank; when it raises a user error on any rank, every rank raises it
    (the first rank's message), so no rank waits for a peer that has stopped."""
    value: Any = None
    err: UserError | None = None
    try:
        value = fn()
    except UserError as e:
        err = e
    messages = comm.all_gather_objects(None if err is None else str(err))
    first = next((m for m in messages if m), None)
    if err is not None:
        raise err
    if first is not None:
        raise EvalError(first)
    return value


def deal(store: PartStore) -> tuple[list[int], int]:
    """This rank's parts to compute (the ones no rank has, round-robin) and how many parts are
    done already on some rank."""
    done = set().union(*comm.all_gather_objects(store.done()))
    todo = [k for k in range(store.n_parts) if k not in done]
    return todo[comm.rank() :: comm.world_size()], len(done)


class ProgressLog:
    """Log lines for a run without a terminal (under ``torchrun`` stderr is a pipe): this rank's
    images done, images/s and the ETA of the whole set, at most every ``every`` seconds and at
    the end. The bar (tqdm, on a terminal) shows the same for the rank's share."""

    def __init__(self, total: int, log: Log, desc: str, every: float = 30.0) -> None:
        self.total, self.log, self.desc, self.every = total, log, desc, every
        self.start = self.last = time.monotonic()
        self.done = 0
        self.quiet = sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.quiet or (now - self.last < self.every and self.done < self.total):
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        left = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
        self.log(f"{self.desc}: {self.done}/{self.total} images, {rate:.1f} img/s, ETA {left}")


def compute_parts(job: EvalJob, store: PartStore, parts: Sequence[int], *, workers: int, limits: ImageLimits,
                  progress: bool, log: Log) -> None:
    """Compute and write ``parts`` (increasing) of ``job``'s records, a chunk per part.

    The protocol's CPU half (protocol 2's greedy merge) of part k runs in a thread while the
    network computes part k+1 (:func:`~vgglocal.inference.protocols.begin_protocol`)."""
    if not parts:
        return
    records = [job.records[i] for k in parts for i in store.span(k)]
    world = comm.world_size()
    desc = f"eval {job.protocol}" + (f" [rank {comm.rank()}/{world}]" if world > 1 else "")
    meter = ProgressLog(len(records), log, desc) if progress else None
    order = iter(parts)
    pending: tuple[int, Any, Any] | None = None

    def finish(k: int, chunk: Any, fut: Any) -> None:
        store.write(k, chunk.spread(fut.result()), chunk.errors)
        if meter is not None:
            meter.update(len(chunk))

    merger = ThreadPoolExecutor(1)
    try:
        for chunk, images, bad in chunked_images(records, store.part_size, workers, limits, desc=desc, progress=progress,
                                                 position=comm.rank() if world > 1 else None):
            k = next(order)
            if len(chunk) != len(store.span(k)):  # parts are whole chunks: only the split's last one is short
                raise RuntimeError(f"part {k}: {len(chunk)} images decoded for {len(store.span(k))}")
            for err in bad:
                log(f"unreadable, counted as wrong: {err}")
            rest: Callable[[], list] = list
            if chunk.good:
                labels = torch.tensor([chunk.records[i].label for i in chunk.good], dtype=torch.int64)
                rest = begin_protocol(job.protocol, images, job.nets, job.options, cls_nets=job.cls_nets or None, labels=labels)
            fut = merger.submit(rest)
            if pending is not None:
                finish(*pending)
            pending = (k, chunk, fut)
        if pending is not None:
            finish(*pending)
    finally:
        merger.shutdown(wait=True, cancel_futures=True)


def collect_parts(store: PartStore) -> None:
    """Bring every part to rank 0's disk: each part rank 0 lacks comes from the lowest rank
    that holds it. Every rank calls this; afterwards rank 0 holds all ``store.n_parts``."""
    held = comm.all_gather_objects(store.done())
    if comm.world_size() == 1:
        missing = set(range(store.n_parts)) - set(held[0])
        if missing:
            raise RuntimeError(f"parts {sorted(missing)[:5]} were not computed")
        return
    holder: dict[int, int] = {}
    for r, ks in enumerate(held):
        for k in ks:
            holder.setdefault(k, r)
    missing = set(range(store.n_parts)) - set(holder)
    if missing:
        raise RuntimeError(f"parts {sorted(missing)[:5]} were computed by no rank")
    me = comm.rank()
    mine = [(k, store.read_bytes(k)) for k, r in sorted(holder.items()) if r == me and me != 0]
    gathered = comm.gather_objects(mine, dst=0)
    if gathered is not None:
        for sent in gathered[1:]:
            for k, raw in sent:
                store.check(raw, f"part {k} from another rank")
                store.write_bytes(k, raw)
