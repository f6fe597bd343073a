"""vgglocal.interrupts: an interrupt a finaliser swallowed comes back, through SIGINT's handler,
so that a block that holds interrupts (a checkpoint being written) holds it too; and a deferred
interrupt is raised where the caller checks, never inside Python code that C++ calls back.

Each case runs in its own interpreter (signal handlers are process-wide). None waits on the
clock for a result: each polls for the state it expects, with a deadline only for a hang."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SWALLOWED = textwrap.dedent("""
    import gc, time
    from vgglocal.interrupts import interrupts_held, quiet_interrupts

    quiet_interrupts()

    class Finaliser:
        def __del__(self):
            raise KeyboardInterrupt  # as a Ctrl-C landing in a finaliser

    events = []
    deadline = time.monotonic() + 30
    try:
        with interrupts_held() as held:
            Finaliser()  # dropped at once: its __del__ swallows the interrupt
            gc.collect()
            while not held.count and time.monotonic() < deadline:
                time.sleep(0.005)  # the re-raise (a timer 0.01 s on) lands here: held
            events.append(f"block done ({held.count} held)")
        while time.monotonic() < deadline:  # delivered on leaving the block, before this loop
            time.sleep(0.005)
        events.append("not interrupted")
    except KeyboardInterrupt:
        events.append("interrupted")
    print(",".join(events))
""")

DEFERRED = textwrap.dedent("""
    import signal, torch
    from vgglocal.interrupts import check_interrupt, interrupts_deferred

    events = []
    w = torch.ones(3, requires_grad=True)

    def hook(grad):
        signal.raise_signal(signal.SIGINT)  # a Ctrl-C while autograd (C++) runs this hook
        events.append("hook done")
        return grad

    w.register_hook(hook)
    for checked in (True, False):
        try:
            with interrupts_deferred():
                (w * 2).sum().backward()
                events.append("backward done")
                if checked:
                    check_interrupt()
                    events.append("not interrupted")
        except KeyboardInterrupt:
            events.append("interrupted")
    # a second Ctrl-C while one is pending is delivered at once, through the previous handler
    try:
        with interrupts_deferred():
            signal.raise_signal(signal.SIGINT)
            events.append("one pending")
            signal.raise_signal(signal.SIGINT)
            events.append("not delivered")
    except KeyboardInterrupt:
        events.append("second delivered")
    check_interrupt()  # nothing pending outside the blocks
    print(",".join(events), signal.getsignal(signal.SIGINT) is signal.default_int_handler)
""")


def _sigint_default() -> None:
    # A shell starts background jobs (`bin/test &`, nohup) with SIGINT ignored, and Python then
    # installs no handler of its own: give the child a terminal's default, whatever the parent has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run(script: str) -> str:
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
                         preexec_fn=_sigint_default)
    assert out.returncode == 0, out.stderr
    assert "Exception ignored" not in out.stderr, out.stderr
    return out.stdout.strip()


def test_an_interrupt_swallowed_by_a_finaliser_comes_back_after_a_held_block():
    assert _run(SWALLOWED) == "block done (1 held),interrupted"


def test_a_deferred_interrupt_is_raised_where_checked_not_inside_a_cpp_callback():
    # the hook and the backward run to their end; the interrupt comes at check_interrupt, or
    # at the block's end when nothing checked; the handler in place before is back after
    assert _run(DEFERRED) == ("hook done,backward done,interrupted,hook done,backward done,interrupted,"
                              "one pending,second delivered True")
