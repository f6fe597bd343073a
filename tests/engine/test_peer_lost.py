"""A lost peer is recognised by the group's heartbeats, not by gloo's error text (which differs
between torch versions; torch 2.14 reports a killed peer as a plain RuntimeError). Two
processes join a gloo group on 127.0.0.1 without torchrun (rank 0 hosts the store); one is
SIGKILLed before a collective, and the survivor's error must read as a lost peer naming it.
An error raised while every peer is alive, whatever its text, is not a lost peer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Only vgglocal.comm and torch: the script also runs under other torch builds, without torchvision.
WORKER = r"""
import json, os, signal, sys
import torch
from vgglocal import comm

comm._Heartbeat.WINDOW = 2.0  # the test's window; the default is longer
op, victim = sys.argv[1], int(sys.argv[2])
env = comm.setup("cpu", 1.0)
comm.barrier()
if env.rank == victim:
    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
result = {"rank": env.rank}
try:
    if op == "all_reduce":
        comm.all_reduce_sum(torch.ones(3))
    elif op == "all_gather_object":
        comm.all_gather_objects({"rank": env.rank})
    elif op == "broadcast_object":
        comm.broadcast_object([1, 2])
    elif op == "barrier":
        comm.barrier()
    elif op == "own_error":
        if env.rank == 0:  # rank 1 waits in the barrier below, alive, while rank 0 judges its error
            raise RuntimeError("Connection reset by peer")  # gloo's words, but nobody is gone
    result["error"] = None
except RuntimeError as e:
    lost = comm.peer_lost(e, env, "test")
    result.update(error=type(e).__name__, lost=str(lost) if lost else None)
if op == "own_error":
    comm.barrier()
    comm.teardown()
print(json.dumps(result), flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group(tmp_path: Path, op: str, victim: int) -> dict[int, subprocess.CompletedProcess]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    procs = {}
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank)}
        for k in ("TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT"):
            env.pop(k, None)
        procs[rank] = subprocess.Popen([sys.executable, str(script), op, str(victim)], env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
    return {r: subprocess.CompletedProcess(p.args, p.wait(timeout=180), *p.communicate()) for r, p in procs.items()}


@pytest.mark.parametrize("op", ["all_reduce", "all_gather_object", "broadcast_object", "barrier"])
def test_a_killed_peer_is_named_lost_in_every_collective(tmp_path, op):
    res = _group(tmp_path, op, victim=1)
    assert res[1].returncode == -9
    assert res[0].returncode == 0, res[0].stderr[-2000:]
    out = json.loads(res[0].stdout)
    assert out["error"] is not None, out  # the collective failed...
    assert out["lost"] and out["lost"].startswith("rank 0: lost contact with another test process (rank 1 stopped: "), out
    assert "\n" not in out["lost"]


def test_a_killed_store_host_is_a_lost_peer_too(tmp_path):
    res = _group(tmp_path, "all_reduce", victim=0)  # rank 0 hosts the store: the survivor can reach neither
    assert res[0].returncode == -9
    assert res[1].returncode == 0, res[1].stderr[-2000:]
    out = json.loads(res[1].stdout)
    assert out["lost"] and out["lost"].startswith("rank 1: lost contact with another test process"), out


def test_an_error_while_every_peer_beats_is_not_a_lost_peer(tmp_path):
    res = _group(tmp_path, "own_error", victim=-1)
    assert [res[r].returncode for r in (0, 1)] == [0, 0], res[0].stderr[-2000:] + res[1].stderr[-2000:]
    out = json.loads(res[0].stdout)
    assert out == {"rank": 0, "error": "RuntimeError", "lost": None}, out


def test_network_and_store_errors_are_lost_peers_by_type_and_one_process_has_no_peers():
    import torch.distributed as dist

    from vgglocal import comm

    two = comm.DistEnv(rank=1, world_size=2)
    for error in (dist.DistNetworkError("connect() timed out"), dist.DistStoreError("wait timeout")):
        lost = comm.peer_lost(error, two, "evaluation", "run it again")
        assert str(lost).startswith("rank 1: lost contact with another evaluation process (the group's store failed: ")
        assert str(lost).endswith("; run it again")
    assert comm.peer_lost(dist.DistNetworkError("x"), comm.DistEnv(), "training") is None
