"""The process group and the few collectives that training and evaluation share: one code path
for one CPU, one GPU and many (Detectron2's ``utils/comm``). Under ``torchrun`` the processes
join the group :func:`setup` describes; without it (no ``WORLD_SIZE`` in the environment)
every collective is a no-op on a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from vgglocal.runtime import resolve_device

__all__ = ["DistEnv", "setup", "restart_count", "teardown", "world_size", "rank", "all_reduce_sum", "all_reduce_max",
           "all_gather_objects", "gather_objects", "broadcast_object", "barrier"]


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
