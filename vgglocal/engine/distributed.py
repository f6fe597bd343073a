"""Training's view of the process group. The group itself, its collectives and the recognition
of a lost peer live in :mod:`vgglocal.comm` (evaluation uses them too) and are re-exported here.
"""

from __future__ import annotations

from vgglocal.comm import (
    DistEnv,
    PeerLostError,
    all_gather_objects,
    all_reduce_max,
    all_reduce_sum,
    barrier,
    peer_lost,
    peers_watched,
    restart_count,
    setup,
    teardown,
)

__all__ = ["DistEnv", "PeerLostError", "setup", "restart_count", "peer_lost", "teardown", "all_reduce_sum", "all_reduce_max",
           "all_gather_objects", "barrier", "peers_watched"]
