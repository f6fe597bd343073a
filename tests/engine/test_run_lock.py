"""One run per folder: a live run's folder refuses a second train-* and a --resume with one line;
the lock is the OS's, so a kill -9 leaves nothing stale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from vgglocal.cli import cli
from vgglocal.engine.runs import RunError, RunLock

CLS = str(Path(__file__).resolve().parents[2] / "configs" / "test" / "cls-tiny.yaml")
HOLD = "import sys, time; from vgglocal.engine.runs import RunLock; RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)"


@pytest.fixture
def holder(tmp_path):
    """A separate process holding the lock of tmp_path/run, as a live training run does."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    yield run, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_run_and_a_resume_of_a_live_run_are_refused(holder, tmp_path):
    run, proc = holder
    for extra in ([], ["--resume"]):
        res = CliRunner().invoke(cli, ["train-cls", "-c", CLS, "--set", f"data.root={tmp_path}", "--out", str(run), *extra])
        assert res.exit_code == 2, (extra, res.output, res.exception)
        assert res.output.count("\n") == 1 and str(run) in res.output and f"pid {proc.pid}" in res.output, res.output
    with pytest.raises(RunError, match="in use by another vgglocal process"):
        RunLock(run).acquire()


def test_kill_9_leaves_no_stale_lock(holder):
    run, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lock = RunLock(run)
    lock.acquire()  # the OS released the dead process's lock
    try:
        with pytest.raises(RunError):
            RunLock(run).acquire()  # ... and it is held again now
    finally:
        lock.release()
    RunLock(run).acquire().release()


def test_resume_at_once_after_kill_9_of_a_trainer_with_loader_workers(tmp_path):
    # The OOM killer or a scheduler kills the trainer, not its process group: its DataLoader
    # workers live on for a few seconds (until they notice their parent is gone). They must not
    # hold the run's lock, so --resume at once works.
    from vgglocal.data.synth import SynthSpec, synthesize

    data, run = tmp_path / "synth", tmp_path / "run"
    synthesize(data, SynthSpec(classes=4, train=4, val=2, size=48, seed=1))
    sets = ["--set", f"data.root={data}", "--set", "data.limit=0", "--set", "data.workers=2", "--set", "train.epochs=2",
            "--set", "train.batch_size=4", "--set", "train.checkpoint_every=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "vgglocal", "train-cls", "-c", CLS, *sets, "--out", str(run)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert workers and any(_alive(pid) for pid in workers)  # orphaned workers still running
    res = CliRunner().invoke(cli, ["train-cls", "-c", CLS, *sets, "--out", str(run), "--resume"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert (run / "model.pt").is_file()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(t) for t in text.split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except (OSError, IndexError):
        return False
