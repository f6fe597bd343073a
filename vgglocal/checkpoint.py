"""Atomic checkpoint files and safe loading (no pickled code is ever executed).

A checkpoint is a ``torch.save`` of plain data: dicts, lists, strings, numbers and tensors,
so ``torch.load(weights_only=True)`` reads it. Writes go to a temporary file in the same
folder and are renamed into place, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from vgglocal.errors import UserError
from vgglocal.interrupts import Held, interrupts_held

FORMAT = "vgglocal"
VERSION = 1

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "FORMAT", "VERSION"]


class CheckpointError(UserError):
    """The file is missing, unreadable, or not a vgglocal checkpoint; the message names it."""


def _umask() -> int:
    # os.umask both sets and returns the mask; set it back at once (no API only reads it).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> Path:
    """Write ``obj`` to ``path`` atomically (write a temporary file, fsync, rename).

    The file gets the permissions of any file the user creates (0644 under the usual umask
    022), not mkstemp's private 0600, so teammates can read a shared run's model."""
    path = Path(path)
    obj = {"format": FORMAT, "version": VERSION, **obj}
    # A Ctrl-C while writing waits until the file is complete and in place (a fraction of a
    # second; a second Ctrl-C stops at once): torch's zip writer would swallow or garble it.
    with interrupts_held() as interrupted:
        _save_atomically(obj, path, interrupted)
    return path


def _save_atomically(obj: dict[str, Any], path: Path, interrupted: Held) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            out = _Writes(f)
            try:
                torch.save(obj, out)
            except RuntimeError:
                # torch's zip writer (PyTorchStreamWriter) swallows a failed write of a record (a
                # full disk, an insisting second Ctrl-C) and then fails its own position check
                # ("unexpected pos"): raise what stopped the write instead
                if out.error is not None:
                    raise out.error from None
                if interrupted.count > 1:
                    raise KeyboardInterrupt from None
                raise
            if out.error is not None:
                # ...or swallows it and returns as if done, when the record's bytes were all
                # written before the exception: lost otherwise
                raise out.error
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # disk full, permissions, a vanished folder: the old file is untouched
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
        raise CheckpointError(f"cannot write {path}: {e.strerror or e} ({_free_space(path.parent)}); {kept}") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


class _Writes:
    """A binary file for ``torch.save`` that remembers the first exception of its writes."""

    def __init__(self, f: Any):
        self._f = f
        self.error: BaseException | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except BaseException as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self._f.flush()


def _free_space(folder: Path) -> str:
    """'N.N GB free on that disk', or 'free space unknown'."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return f"{shutil.disk_usage(probe).free / 1e9:.1f} GB free on that disk"
    except OSError:
        return "free space unknown"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a vgglocal checkpoint with ``weights_only=True``; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickler, zip and storage errors (KeyError for text files) alike
        with open(path, "rb") as f:
            head = f.read(4)
        if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip archive, or a legacy pickle
            raise CheckpointError(f"{path}: not a readable vgglocal checkpoint (not a torch.save file: "
                                  f"it starts with {head!r})") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable vgglocal checkpoint ({first[:160]})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a vgglocal checkpoint (for torchvision weights use `vgglocal import-weights`)"
        )
    if obj.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {obj['version']} is newer than this vgglocal ({VERSION})")
    return obj
