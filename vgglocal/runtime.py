"""Where and how the networks run, for training and inference alike: the device a ``device``
key names, and bf16 autocast. The one home of both, so a training step, a validation pass and
every test protocol resolve a device and enter autocast the same way."""

from __future__ import annotations

import contextlib

import torch

from vgglocal.config import DEVICES
from vgglocal.errors import UserError

__all__ = ["resolve_device", "autocast"]


def resolve_device(name: str, key: str = "eval.device", local_rank: int | None = None) -> torch.device:
    """``auto`` (CUDA when available), ``cuda``, ``cuda:N`` or ``cpu`` → a ``torch.device``.

    ``local_rank`` (a process under ``torchrun``) picks that GPU and makes it the current one.
    Raises :class:`~vgglocal.errors.UserError` naming ``key`` when ``cuda`` is asked for
    without a CUDA device, or for a name that is none of the three.
    """
    gpu = name.partition(":")[2]
    if name not in DEVICES and not (name.startswith("cuda:") and gpu.isdigit()):
        raise UserError(f"{key}: {name!r} is not a device; choose from {', '.join(DEVICES)} (or cuda:N)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{key}: {name} was asked for but no CUDA device is available")
    if gpu:
        if int(gpu) >= torch.cuda.device_count():
            raise UserError(f"{key}: {name}: this machine has {torch.cuda.device_count()} CUDA devices")
        return torch.device(name)
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if local_rank is None:
            return torch.device("cuda")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``precision == "bf16"``, else a no-op context (fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
