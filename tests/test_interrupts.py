"""vgglocal.interrupts: an interrupt a finaliser swallowed comes back, through SIGINT's handler,
so that a block that holds interrupts (a checkpoint being written) holds it too."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import gc, sys, time
    from vgglocal.interrupts import interrupts_held, quiet_interrupts

    quiet_interrupts()

    class Finaliser:
        def __del__(self):
            raise KeyboardInterrupt  # as a Ctrl-C landing in a finaliser

    events = []
    try:
        with interrupts_held():
            Finaliser()  # dropped at once: its __del__ swallows the interrupt
            gc.collect()
            time.sleep(0.3)  # the re-raise (a timer 0.01 s on) lands here: held
            events.append("block done")
        time.sleep(2)
        events.append("not interrupted")
    except KeyboardInterrupt:
        events.append("interrupted")
    print(",".join(events))
""")


def test_an_interrupt_swallowed_by_a_finaliser_comes_back_after_a_held_block():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "block done,interrupted", out.stdout + out.stderr
    assert "Exception ignored" not in out.stderr, out.stderr
