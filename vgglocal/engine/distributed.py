"""Training's side of the process group: recognising a lost peer. The group itself and its
collectives live in :mod:`vgglocal.comm` (evaluation uses them too) and are re-exported here.
"""

from __future__ import annotations

import re

import torch.distributed as dist

from vgglocal.comm import (
    DistEnv,
    all_gather_objects,
    all_reduce_max,
    all_reduce_sum,
    barrier,
    restart_count,
    setup,
    teardown,
)
from vgglocal.errors import UserError

__all__ = ["DistEnv", "PeerLostError", "setup", "restart_count", "peer_lost", "teardown", "all_reduce_sum", "all_reduce_max", "all_gather_objects", "barrier"]


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
