"""Ctrl-C while training with loader workers ends in one line ("Aborted!"), whatever it
interrupts: a step, a worker start or stop, a batch's shared-memory hand-over, a checkpoint write.
Without care Python prints tracebacks from finalisers and from multiprocessing's
resource_sharer thread, an interrupt that lands in a finaliser is swallowed, and one raised in
Python code that C++ calls back (an autograd hook, a destructor's finaliser) is lost or aborts
the process ("terminate called after throwing an instance of 'pybind11::error_already_set'");
the trainer defers it to the next batch."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vgglocal.data.synth import SynthSpec, synthesize

CLS = str(Path(__file__).resolve().parents[2] / "configs" / "test" / "cls-tiny.yaml")


def _sigint_default() -> None:
    # A shell starts background jobs (`bin/test &`, nohup) with SIGINT ignored, and vgglocal
    # leaves an ignored SIGINT ignored: the trainer gets a terminal's default, whatever the parent has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_with_loader_workers_is_one_line(tmp_path):
    data = tmp_path / "synth"
    synthesize(data, SynthSpec(classes=4, train=4, val=2, size=48, seed=1))
    # 4 steps an epoch, so worker starts and stops (each epoch, each validation) are often hit
    sets = ["--set", f"data.root={data}", "--set", "data.limit=0", "--set", "data.workers=2", "--set", "train.epochs=50",
            "--set", "train.batch_size=4", "--set", "train.checkpoint_every=1", "--set", "train.log_every=1000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for i, delay in enumerate([0.05, 0.9, 0.3, 1.2, 0.6, 0.15, 1.5, 0.45]):
        out = tmp_path / f"run{i}"
        proc = subprocess.Popen([sys.executable, "-m", "vgglocal", "train-cls", "-c", CLS, *sets, "--out", str(out)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, preexec_fn=_sigint_default)
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        if i % 2:
            os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground group
        else:
            proc.send_signal(signal.SIGINT)  # the trainer alone
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            # A hang must fail with what the trainer printed, not block the suite: the pipe stays
            # open as long as any process of the group (an orphaned loader worker) holds it.
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            raise AssertionError(f"no exit 120 s after SIGINT (delay {delay}); stderr:\n{err[-3000:]}") from None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # no worker outlives its trainer into the next round
        assert proc.returncode == 1, (delay, proc.returncode, err[-3000:])
        assert "Traceback" not in err and "Exception ignored" not in err, (delay, err[-3000:])
        assert err.rstrip().splitlines()[-1] == "Aborted!", (delay, err[-3000:])
        assert not (out / "model.pt").exists()
