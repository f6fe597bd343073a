"""One run per folder: a live run's folder refuses a second train-* and a --resume with one line;
the lock is the OS's, so a kill -9 leaves nothing stale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
