"""The run directory:

```
runs/<name>/config.yaml          the resolved config
runs/<name>/metrics.jsonl        one JSON line per epoch (kind "epoch") and per train.log_every steps (kind "step")
runs/<name>/tensorboard/         the same scalars as TensorBoard events (train.tensorboard)
runs/<name>/checkpoints/last.pt  training state (every epoch and every train.checkpoint_every steps)
runs/<name>/checkpoints/best.pt  model with the best validation error so far
runs/<name>/model.pt             the final model (best validation error), for load_model
```

Only rank 0 writes; every rank checks the same rules, so all fail alike on a user error.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vgglocal.config import Config, dump_config
from vgglocal.errors import UserError

__all__ = ["RunError", "RunDir", "RunLock"]


class RunError(UserError):
    """The run directory cannot be used as asked (would overwrite a run, nothing to resume)."""


class RunLock:
    """An exclusive OS lock on ``<run>/.lock`` while a process trains into the folder.

    A POSIX record lock (``fcntl.lockf``, F_SETLK): it belongs to the process that took it, so
    the forked DataLoader workers do not inherit it (an ``flock`` lives on the open file
    description, which a fork shares, and would outlive a killed trainer until its orphaned
    workers exit), and the kernel drops it when that process dies, however it dies (kill -9
    included): there is never a stale lock to clean up. The file itself stays and records the
    holder's pid for the message. POSIX drops a process's record locks when it closes *any*
    descriptor of the file (fcntl(2), "Advisory record locking"), and lets the holder lock again,
    so within one process the lock is also kept in :data:`_HELD` and a second ``acquire`` is refused
    without opening the file. Under ``torchrun`` only rank 0 takes it
    (:func:`vgglocal.engine.tasks.run_training`).
    """

    def __init__(self, root: str | Path):
        self.path = Path(root) / ".lock"
        self._fd: int | None = None
        self._key: tuple[int, int] | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunError` naming the folder and the holder's pid."""
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise RunError(f"--out {self.path.parent}: exists and is not a directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and _key(self.path) in _HELD:
            raise self._busy(str(os.getpid()))
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:  # EACCES or EAGAIN: held by another process
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise self._busy(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self._key = fd, _key(self.path)
        _HELD.add(self._key)
        return self

    def _busy(self, holder: str) -> RunError:
        return RunError(f"{self.path.parent} is in use by another vgglocal process (pid {holder}); wait for it to "
                        "finish (or stop it) before --resume, or use --out DIR for a new run")

    def release(self) -> None:
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            _HELD.discard(self._key)
            self._fd = self._key = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# (device, inode) of the lock files this process holds.
_HELD: set[tuple[int, int]] = set()


def _key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _json_safe(value: Any) -> Any:
    # JSON has no NaN/inf; write null so every line stays valid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class RunDir:
    """Paths of one training run and the rules for starting or resuming it."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.root / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        return self.root / "checkpoints" / "best.pt"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @classmethod
    def prepare(cls, root: str | Path, resume: bool) -> RunDir:
        """Check that ``root`` can be started (no ``last.pt`` there) or resumed; never overwrite
        a run silently. ``resume`` on a folder without ``last.pt`` is a fresh start (the caller
        asks :attr:`resumable`), as Detectron2's ``--resume`` does, so one command line serves a
        preemptible job's first start and its restarts. Creates nothing."""
        run = cls(Path(root))
        if resume and not run.last.is_file() and run.model.exists():
            raise RunError(f"--resume: {run.root} holds a finished model ({run.model}) but no checkpoint to resume from "
                           f"({run.last}); use --out DIR for a new run")
        for done in (run.last, run.model):
            if not resume and done.exists():
                raise RunError(f"{run.root} already holds a run ({done}); pass --resume to continue it or --out DIR for a new one")
        if run.root.exists() and not run.root.is_dir():
            raise RunError(f"--out {run.root}: exists and is not a directory")
        return run

    @property
    def resumable(self) -> bool:
        """Whether there is a training state (``last.pt``) to resume from."""
        return self.last.is_file()

    def create(self, cfg: Config, fresh: bool) -> None:
        """Make the folders and write the resolved config (rank 0). A ``fresh`` start drops the
        metrics of an earlier attempt that never reached a checkpoint (nothing to resume there)."""
        self.last.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.last.parent.glob(".*.pt.*.tmp"):  # a kill during an atomic write
            stale.unlink(missing_ok=True)
        dump_config(cfg, self.config)
        if fresh:
            self.metrics.unlink(missing_ok=True)

    def append_metrics(self, line: dict[str, Any]) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps({k: _json_safe(v) for k, v in line.items()}) + "\n")
            f.flush()

    def truncate_metrics(self, global_step: int) -> None:
        """Keep only the lines up to optimiser step ``global_step``, where the run resumes (it
        rewrites the rest): epoch lines and the "step" lines of the learning curve alike."""
        if not self.metrics.is_file():
            return
        keep = []
        for text in self.metrics.read_text().splitlines():
            try:
                if int(json.loads(text).get("step", 0)) <= global_step:
                    keep.append(text)
            except (ValueError, AttributeError):
                continue  # a line cut by a kill
        self.metrics.write_text("".join(t + "\n" for t in keep))

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        return [json.loads(t) for t in self.metrics.read_text().splitlines() if t.strip()]
