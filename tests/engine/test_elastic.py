"""torchrun beyond one process: a group that torchelastic restarts after a SIGKILLed rank
resumes from last.pt by itself and ends with the weights of an uninterrupted run; two "nodes"
(two launchers, c10d rendezvous on 127.0.0.1) train as one node with two processes; and
train.dist_timeout reaches the process group. CPU, gloo; tiny (1/16 width, 32 px, 24 images)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from torch.testing import assert_close

from vgglocal.checkpoint import load_checkpoint
from vgglocal.cli import cli
from vgglocal.data.synth import SynthSpec, synthesize

CLS = str(Path(__file__).resolve().parents[2] / "configs" / "test" / "cls-tiny.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> list[str]:
    data = tmp_path_factory.mktemp("synth")
    synthesize(data, SynthSpec(classes=4, train=6, val=2, size=48, seed=1))
    # no batch norm (per-process statistics); 6 steps an epoch, last.pt every 2
    return ["--set", f"data.root={data}", "--set", "data.limit=0", "--set", "model.batch_norm=false",
            "--set", "train.epochs=2", "--set", "train.batch_size=4", "--set", "train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def reference(sets, tmp_path_factory) -> dict:
    """The last.pt of an uninterrupted run of two processes on one node."""
    out = tmp_path_factory.mktemp("ref") / "run"
    res = subprocess.run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "vgglocal", "train-cls", "-c", CLS,
                          *sets, "--out", str(out)], env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return load_checkpoint(out / "checkpoints" / "last.pt")


def _same_weights(a: dict, b: dict) -> None:
    assert (a["global_step"], a["world_size"], a["finished"]) == (b["global_step"], b["world_size"], b["finished"])
    for k, v in a["state_dict"].items():
        assert_close(v, b["state_dict"][k], rtol=1e-4, atol=1e-6, msg=k)


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(e[5:]) for e in env if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def test_a_sigkilled_rank_restarts_the_group_which_resumes_to_the_same_weights(sets, reference, tmp_path):
    out, err = tmp_path / "run", tmp_path / "stderr.txt"
    with err.open("w") as f:
        proc = subprocess.Popen([*TORCHRUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "1", "-m", "vgglocal",
                                 "train-cls", "-c", CLS, *sets, "--out", str(out)], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=f, text=True)
    last = out / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    ranks = {_rank_of(int(p)): int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()}
    os.kill(ranks[1], signal.SIGKILL)  # as the OOM killer would: one rank, mid-epoch
    assert proc.wait(timeout=300) == 0, err.read_text()[-3000:]
    text = err.read_text()
    assert f"torchelastic restart 1: resuming from {last}" in text, text[-3000:]
    assert "Traceback" not in text.split("torchelastic restart 1")[1], text[-3000:]
    lost = [t for t in text.splitlines() if t.startswith("error:")]
    assert all("lost contact with another training process" in t for t in lost), lost  # rank 0 saw its peer go
    at_kill = [r for r in load_checkpoint(last)["meta"]["resumed"] if r["changes"] == {}]
    assert at_kill and 0 < at_kill[0]["global_step"] < 12  # resumed mid-run, not from scratch
    _same_weights(reference, load_checkpoint(last))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_of_one_process_give_the_weights_of_one_node_of_two(sets, reference, tmp_path):
    out, port = tmp_path / "run", _free_port()
    nodes = [subprocess.Popen([*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "vgglocal-test", "-m", "vgglocal",
                               "train-cls", "-c", CLS, *sets, "--out", str(out)], env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [n.communicate(timeout=300)[1] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [e[-2000:] for e in errs]
    _same_weights(reference, load_checkpoint(out / "checkpoints" / "last.pt"))


def test_dist_timeout_is_checked_and_reaches_the_process_group(monkeypatch, tmp_path):
    res = CliRunner().invoke(cli, ["train-cls", "-c", CLS, "--set", "train.dist_timeout=0", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "train.dist_timeout: 0.0 must be positive" in res.output, res.output

    import torch.distributed as dist

    from vgglocal.engine import distributed

    seen = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: seen.update(k))
    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0", "TORCHELASTIC_USE_AGENT_STORE": "False"}.items():
        monkeypatch.setenv(key, value)
    env = distributed.setup("cpu", 2.5)
    assert (env.rank, env.world_size) == (1, 2) and seen["timeout"].total_seconds() == 150


def test_every_rank_names_its_bad_files(tmp_path):
    data = tmp_path / "synth"
    synthesize(data, SynthSpec(classes=4, train=6, val=2, size=48, seed=1))
    broken = sorted((data / "ILSVRC" / "Data" / "CLS-LOC" / "train").rglob("*.JPEG"))[::6]  # 4 of 24
    for path in broken:
        path.write_bytes(b"not a JPEG")
    sets = ["--set", f"data.root={data}", "--set", "data.limit=0", "--set", "model.batch_norm=false", "--set", "train.epochs=1",
            "--set", "train.batch_size=8", "--set", "data.max_bad_fraction=0.5"]
    res = subprocess.run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "vgglocal", "train-cls", "-c", CLS, *sets,
                          "--out", str(tmp_path / "run")], env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    named = [t for t in res.stderr.splitlines() if "skipped bad sample:" in t]
    for path in broken:  # each rank skips the files of its own shard; each file is named once
        assert sum(str(path) in t for t in named) == 1, (path, named)
    assert any(t.startswith("rank 1: skipped bad sample:") for t in named), named
    assert any(t.startswith("skipped bad sample:") for t in named), named
