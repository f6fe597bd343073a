"""Ctrl-C as one line ("Aborted!", from click). Python delivers SIGINT as a ``KeyboardInterrupt`` in the main thread at
whatever bytecode runs next; when that is a finaliser (a DataLoader iterator's ``__del__``, a
weakref callback) the interrupt cannot propagate: Python prints "Exception ignored in ..." with
a traceback through ``sys.unraisablehook`` and the program carries on (Python docs, "Note on
Signal Handlers and Exceptions" in the ``signal`` module). And a DataLoader worker whose parent
was interrupted while taking a batch's shared-memory descriptor prints the failed hand-over from
``multiprocessing.resource_sharer``'s server thread through ``sys.excepthook``. Standard library
only (the command line imports this before torch).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

__all__ = ["quiet_interrupts", "quiet_worker", "interrupts_held", "interrupts_deferred", "check_interrupt"]


class Held:
    """How many Ctrl-Cs arrived inside an :func:`interrupts_held` block."""

    count = 0


@contextlib.contextmanager
def interrupts_held() -> Iterator[Held]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block is done, then deliver
    it through the handler in place before (a ``KeyboardInterrupt`` under Python's default).

    For work that must not be cut in the middle, such as writing a checkpoint: torch's zip
    writer calls the file's ``write`` from C++ and catches what it raises, so a
    ``KeyboardInterrupt`` landing there is either dropped (when the record's bytes were all
    written) or turned into a misleading "unexpected pos" error. A second Ctrl-C while one is
    held is delivered at once (the user insists; the caller may read ``Held.count`` to tell an
    error that came of it). Only the main thread can set signal handlers; elsewhere, or when
    SIGINT is ignored, the block runs as it is (Python delivers signals to the main thread)."""
    state = Held()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous in (signal.SIG_IGN, None):
        yield state
        return

    def hold(signum: int, frame: Any) -> None:
        state.count += 1
        if state.count > 1:
            signal.signal(signal.SIGINT, previous)
            signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, hold)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
    if state.count:  # the block ended normally: nothing delivered got through, deliver it now
        signal.raise_signal(signal.SIGINT)


class _Deferred:
    """Whether a Ctrl-C arrived inside an :func:`interrupts_deferred` block and waits for
    :func:`check_interrupt`."""

    pending = False


_deferred = _Deferred()


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Turn a Ctrl-C (SIGINT) inside the block into a flag that :func:`check_interrupt` raises
    as ``KeyboardInterrupt``, in plain Python code of the caller's choosing (the training loop
    between batches); when the block ends with it still pending, it is raised there.

    Python runs a signal handler between any two bytecodes of the main thread, and that
    includes Python code that C++ is running as a callback: an autograd hook, a finaliser a
    tensor's destructor triggers, the file ``write`` torch's zip writer calls. A
    ``KeyboardInterrupt`` raised there becomes a pybind11 ``error_already_set`` in C++, and where
    C++ cannot let it pass (a destructor, a ``noexcept`` function) the process aborts with
    "terminate called after throwing an instance of 'pybind11::error_already_set'"; where C++
    catches it, the interrupt is lost. A handler that only sets a flag raises nowhere. A second
    Ctrl-C while one is pending is delivered at once, through the handler in place before (the
    user insists: a loop stuck in a wait that never checks). Only the main thread can set
    signal handlers; elsewhere, or when SIGINT is ignored, the block runs as it is."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous in (signal.SIG_IGN, None):
        yield
        return

    def defer(signum: int, frame: Any) -> None:
        if _deferred.pending:
            signal.signal(signal.SIGINT, previous)
            signal.raise_signal(signal.SIGINT)
        _deferred.pending = True

    outer, _deferred.pending = _deferred.pending, False
    signal.signal(signal.SIGINT, defer)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        pending, _deferred.pending = _deferred.pending, outer
    if pending:  # the block ended normally with the interrupt not yet raised: raise it now
        raise KeyboardInterrupt


def check_interrupt() -> None:
    """Raise the ``KeyboardInterrupt`` an :func:`interrupts_deferred` block holds, if any; a
    no-op outside such a block (the handler in place raises at once there)."""
    if _deferred.pending:
        _deferred.pending = False
        raise KeyboardInterrupt


def quiet_interrupts() -> None:
    """In the command's process: an interrupt swallowed by a finaliser is raised again, once the
    finaliser is done, where it can stop the program; nothing is printed for it."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _again()
            return
        if isinstance(unraisable.exc_value, AttributeError) and _half_built_loader(unraisable.object):
            return  # an interrupt inside DataLoader.__iter__ left its iterator half built
        previous(unraisable)

    sys.unraisablehook = hook
    # Ctrl-C reaches the whole foreground process group, DataLoader workers included, maybe
    # before their worker_init_fn runs: each forked child ignores it from the fork on.
    os.register_at_fork(after_in_child=quiet_worker)


def _again() -> None:
    """Interrupt the main thread again once the finaliser that swallowed a KeyboardInterrupt has
    run: a one-shot timer whose SIGALRM handler sends SIGINT (a syscall, nothing to wait for)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        os.kill(os.getpid(), signal.SIGINT)
        return
    signal.signal(signal.SIGALRM, _interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.01)


def _half_built_loader(obj: Any) -> bool:
    return getattr(obj, "__qualname__", "") == "_MultiProcessingDataLoaderIter.__del__"


def _interrupt(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    # As a SIGINT again, not a bare KeyboardInterrupt: through the handler in place, so that an
    # interrupts_held block (a checkpoint being written) holds it as it holds a Ctrl-C.
    signal.raise_signal(signal.SIGINT)


def quiet_worker() -> None:
    """In a DataLoader worker: Ctrl-C (sent to the whole foreground process group) is the main
    process's to handle, which then stops the workers; and a descriptor hand-over that fails
    because the main process went away is not reported (the main process reports its own end)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous = sys.excepthook
    if getattr(previous, "_vgglocal_quiet", False):
        return

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if isinstance(value, (OSError, EOFError, KeyError)) and _from_resource_sharer(tb):
            return
        previous(kind, value, tb)

    hook._vgglocal_quiet = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _from_resource_sharer(tb: TracebackType | None) -> bool:
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "_serve" and os.path.basename(code.co_filename) == "resource_sharer.py":
            return True
        tb = tb.tb_next
    return False
