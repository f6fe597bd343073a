"""The paper's learning-rate schedule (section 3.1): divide the rate by 10 when the
validation error stops improving; after three decreases, stop at the next plateau.

Beyond the paper: an optional linear warm-up over the first steps (small nets trained from
scratch, and a freshly initialised box layer, otherwise diverge or collapse at full rate).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["PlateauSchedule"]


@dataclass
class PlateauSchedule:
    """Plateau schedule with a fixed number of decreases.

    After each epoch call :meth:`epoch_end` with the validation error (lower is better). When
    the error has not improved on the best so far for ``patience`` consecutive epochs, the rate
    is multiplied by ``decay`` (0.1 in the paper) and the count restarts; once
    ``max_decreases`` decreases have been made, the next plateau stops training instead.
    ``lr(step)`` is the rate for a global optimiser step, warm-up included.

    Only plain numbers are held, so :meth:`state_dict` goes into a checkpoint as is.
    """

    base_lr: float
    decay: float = 0.1
    patience: int = 2
    max_decreases: int = 3
    warmup_steps: int = 0
    # > 0: cosine decay from base_lr to 0 over this many steps instead of the plateau
    # decreases (the validation error is still tracked as ``best``; training runs to the end).
    cosine_steps: int = 0
    # state
    best: float = math.inf
    bad_epochs: int = 0
    decreases: int = 0
    stopped: bool = False

    def __post_init__(self) -> None:
        if self.base_lr <= 0 or not 0 < self.decay < 1:
            raise ValueError(f"need lr > 0 and 0 < decay < 1, got lr {self.base_lr}, decay {self.decay}")
        if self.patience < 1 or self.max_decreases < 0 or self.warmup_steps < 0:
            raise ValueError("need patience >= 1, max_decreases >= 0, warmup_steps >= 0")

    def lr(self, step: int) -> float:
        """Learning rate for global optimiser step ``step`` (0-based)."""
        rate = self.base_lr * self.decay**self.decreases
        if self.cosine_steps > 0:
            rate = 0.5 * self.base_lr * (1 + math.cos(math.pi * min(step, self.cosine_steps) / self.cosine_steps))
        if step < self.warmup_steps:
            rate *= (step + 1) / self.warmup_steps
        return rate

    def epoch_end(self, error: float) -> str:
        """Record an epoch's validation error; returns what happened: ``"improved"``,
        ``"waiting"``, ``"decreased"`` or ``"stopped"`` (then :attr:`stopped` is True)."""
        if self.stopped:
            return "stopped"
        if error < self.best:
            self.best = float(error)
            self.bad_epochs = 0
            return "improved"
        if self.cosine_steps > 0:
            return "waiting"
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return "waiting"
        self.bad_epochs = 0
        if self.decreases >= self.max_decreases:
            self.stopped = True
            return "stopped"
        self.decreases += 1
        return "decreased"

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        # Only the progress is restored: rate, decay and patience come from the current config.
        for key in ("best", "bad_epochs", "decreases", "stopped"):
            setattr(self, key, type(getattr(self, key))(state[key]))
