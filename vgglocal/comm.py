"""The process group and the few collectives that training and evaluation share: one code path
for one CPU, one GPU and many (Detectron2's ``utils/comm``). Under ``torchrun`` the processes
join the group :func:`setup` describes; without it (no ``WORLD_SIZE`` in the environment)
every collective is a no-op on a world of one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from vgglocal.errors import UserError
from vgglocal.runtime import resolve_device

__all__ = ["DistEnv", "PeerLostError", "setup", "restart_count", "teardown", "world_size", "rank", "all_reduce_sum",
           "all_reduce_max", "all_gather_objects", "gather_objects", "broadcast_object", "barrier", "peer_lost",
           "peers_watched"]


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank, the world size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto", timeout_minutes: float = 30.0, key: str = "train.device") -> DistEnv:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``): NCCL on GPUs, gloo on the CPU. A process that
    waits longer than ``timeout_minutes`` (``train.dist_timeout``) for its peers, in setup or
    in a collective, fails. ``key`` names the config key of ``device`` in errors."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, key, local_rank=local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        timeout = timedelta(minutes=timeout_minutes)
        kwargs: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
        store = _attempt_store(world, timeout)
        if store is not None:
            kwargs["store"] = store
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout, **kwargs)
        _Heartbeat.start(rank, world)
    return DistEnv(rank, world, local, dev)


def restart_count() -> int:
    """How many times torchelastic has restarted this worker group (0 outside torchrun)."""
    try:
        return max(0, int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))
    except ValueError:
        return 0


def _attempt_store(world: int, timeout: timedelta) -> dist.Store | None:
    """Under torchelastic the workers share the agent's TCPStore (``TORCHELASTIC_USE_AGENT_STORE``),
    and that store lives through every restart of the group. Left as it is, a restarted group
    reads the dead group's process-group keys (its peers' old addresses) and gloo fails with
    "connectFullMesh failed ... Connection refused". Each attempt gets its own key prefix, as
    ``torch.distributed.rendezvous`` did before the store was shared across rounds
    (``/worker/attempt_N``)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                          timeout=timeout)
    return dist.PrefixStore(f"/vgglocal/attempt_{restart_count()}", store)


def teardown() -> None:
    # The heartbeat stops first: a peer that sees this process leave the group then finds it
    # silent, not alive.
    _Heartbeat.stop()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class PeerLostError(UserError):
    """Another process of the group stopped (killed, crashed, its host unreachable) while this one waited on it."""


class _Heartbeat:
    """Every process of a group adds 1 to its own counter in the rendezvous store each
    ``INTERVAL`` seconds, from a daemon thread with its own store client, so a process blocked
    in a collective or in a long step still beats. When a collective fails, the counters say
    whether a peer is gone: gloo reports a killed peer as a plain ``RuntimeError`` whose text
    changes between torch versions ("Connection reset by peer", "Connection closed by peer",
    "Read error"), so neither the type nor the text can tell it from any other error.

    The store is the one ``torchrun`` names in ``MASTER_ADDR``/``MASTER_PORT`` (the elastic
    agent's, which outlives every worker, or rank 0's), under a prefix per restart of the group
    as :func:`_attempt_store` uses."""

    INTERVAL = 1.0  # seconds between beats
    WINDOW = 5.0  # a counter that does not move for this long belongs to a lost process
    _thread: threading.Thread | None = None
    _done = threading.Event()
    _world = 1
    _rank = 0

    @classmethod
    def _client(cls, timeout: float) -> dist.Store:
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                              timeout=timedelta(seconds=timeout), wait_for_workers=False)
        return dist.PrefixStore(f"/vgglocal/heartbeat/attempt_{restart_count()}", store)

    @classmethod
    def start(cls, rank: int, world: int) -> None:
        if cls._thread is not None or "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            return
        store = cls._client(60.0)
        cls._rank, cls._world, cls._done = rank, world, threading.Event()
        store.add(f"beat/{rank}", 1)  # the first beat before any collective can fail

        def beat(done: threading.Event) -> None:
            while not done.wait(cls.INTERVAL):
                try:
                    store.add(f"beat/{rank}", 1)
                except Exception:  # noqa: BLE001 - the store's host is gone: nothing left to beat to
                    return

        cls._thread = threading.Thread(target=beat, args=(cls._done,), name="vgglocal-heartbeat", daemon=True)
        cls._thread.start()

    @classmethod
    def stop(cls) -> None:
        if cls._thread is not None:
            cls._done.set()
            cls._thread.join(timeout=cls.INTERVAL + 5)
            cls._thread = None

    @classmethod
    def gone(cls) -> str | None:
        """Who has left the group, in words: the other ranks whose counters did not move within
        ``WINDOW`` seconds, or the store when it cannot be reached (its host is gone); "" when
        every peer still beats; None without a heartbeat.

        ``torchrun`` stops the surviving workers (SIGTERM) as soon as it sees one fail, often
        within the window: a SIGTERM while the counters are watched answers the question too."""
        if cls._thread is None:
            return None
        others = [r for r in range(cls._world) if r != cls._rank]

        def stopped(signum: int, frame: Any) -> None:
            raise _Stopped

        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, stopped) if main else None
        try:
            store = cls._client(cls.WINDOW)
            first = {r: store.add(f"beat/{r}", 0) for r in others}
            deadline = time.monotonic() + cls.WINDOW
            while True:
                silent = [r for r in others if store.add(f"beat/{r}", 0) == first[r]]
                if not silent:
                    return ""
                if time.monotonic() >= deadline:
                    return f"rank {', '.join(map(str, silent))} stopped"
                time.sleep(min(0.2, cls.INTERVAL / 4))
        except _Stopped:
            return "the launcher is stopping the group after a process failed"
        except Exception:  # noqa: BLE001 - DistNetworkError, DistStoreError or RuntimeError: the store is unreachable
            return "the group's store cannot be reached"
        finally:
            if main:  # None: a handler installed outside Python, which Python cannot put back; the default
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class _Stopped(Exception):
    """SIGTERM arrived while the heartbeats were read."""


def peer_lost(error: BaseException, env: DistEnv, what: str = "training", advice: str = "") -> PeerLostError | None:
    """``error``, raised in a collective, as one line when it means another process of the
    group is gone; None when every peer is still alive (the error is this process's own) or
    outside a group. A network or store error (``DistNetworkError``, ``DistStoreError``) means
    a lost peer by its type; any other error is judged by the peers' heartbeats."""
    if not env.distributed:
        return None
    gone = _Heartbeat.gone()
    by_type = isinstance(error, (dist.DistNetworkError, dist.DistStoreError))
    if not by_type and not gone:
        return None
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    first = re.sub(r"^\[[^\]]*\] ", "", first).split(". This is typically")[0]  # gloo's source position, advice
    who = gone or "the group's store failed"
    return PeerLostError(f"rank {env.rank}: lost contact with another {what} process ({who}: {first[:200]})"
                         + (f"; {advice}" if advice else ""))


@contextlib.contextmanager
def peers_watched(env: DistEnv, what: str, advice: str = "") -> Iterator[None]:
    """Raise an error of the block that means a lost peer as :class:`PeerLostError` (one line)."""
    try:
        yield
    except RuntimeError as e:  # dist.DistError is a RuntimeError
        lost = peer_lost(e, env, what, advice)
        if lost is None:
            raise
        raise lost from None


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all processes (in place; returned for chaining)."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Maximum of ``t`` over all processes (in place)."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if _active():
        dist.barrier()


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    """This process's rank (0 without a group)."""
    return dist.get_rank() if _active() else 0


def gather_objects(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every process's ``obj`` (picklable) on rank ``dst``, in rank order; None on the others
    (Detectron2's ``comm.gather``)."""
    if not _active():
        return [obj]
    me = dist.get_rank()
    out: list[Any] | None = [None] * dist.get_world_size() if me == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
