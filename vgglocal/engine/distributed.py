"""One code path for one CPU, one GPU and many: process-group setup under ``torchrun`` and
the few collectives the engine needs. Without ``torchrun`` (no ``WORLD_SIZE`` in the
environment) everything is a no-op on a world of one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from vgglocal.errors import UserError
from vgglocal.runtime import resolve_device

__all__ = ["DistEnv", "PeerLostError", "setup", "restart_count", "peer_lost", "teardown", "all_reduce_sum", "all_reduce_max", "all_gather_objects", "barrier"]


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


def setup(device: str = "auto", timeout_minutes: float = 30.0) -> DistEnv:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``): NCCL on GPUs, gloo on the CPU. A process that
    waits longer than ``timeout_minutes`` (``train.dist_timeout``) for its peers, in setup or
    in a collective, fails."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, "train.device", local_rank=local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        timeout = timedelta(minutes=timeout_minutes)
        kwargs: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
        store = _attempt_store(world, timeout)
        if store is not None:
            kwargs["store"] = store
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout, **kwargs)
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


class PeerLostError(UserError):
    """Another training process stopped (killed, crashed, unreachable) while this one waited on it."""


def peer_lost(error: BaseException, env: DistEnv) -> PeerLostError | None:
    """A backend error meaning a peer is gone (gloo: connection reset or closed, a timeout;
    NCCL: a remote error or watchdog timeout), as one line; None for any other error."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    first = re.sub(r"^\[[^\]]*\] ", "", first).split(". This is typically")[0]  # gloo's source position, advice
    peer = isinstance(error, dist.DistError) or any(
        k in text for k in ("gloo", "Gloo", "NCCL", "Connection reset", "Connection closed", "Broken pipe"))
    if not env.distributed or not peer:
        return None
    return PeerLostError(f"rank {env.rank}: lost contact with another training process ({first[:200]}); "
                         "under torchrun --max-restarts the group restarts and resumes from last.pt")


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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
