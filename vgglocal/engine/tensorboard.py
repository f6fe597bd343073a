"""``train.tensorboard``: the scalars of ``metrics.jsonl`` also as TensorBoard events.

Written with ``torch.utils.tensorboard.SummaryWriter`` into ``RUN/tensorboard/`` (view with
``tensorboard --logdir runs/``). The tensorboard package is an optional extra
(``pip install 'vgglocal[tensorboard]'``) and is imported only when the key is on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vgglocal.config import ConfigError

__all__ = ["TensorBoard", "scalar_tags"]

# Keys of a metrics line that are coordinates or labels, not curves.
_NOT_SCALARS = ("kind", "epoch", "step", "schedule")


def scalar_tags(line: dict[str, Any]) -> dict[str, float]:
    """TensorBoard tag → value for one metrics line: ``train/loss``, ``train/lr`` and
    ``train/images_per_s`` for "step" lines; ``epoch/<key>`` and ``val/<metric>`` for epoch lines."""
    prefix = "train" if line.get("kind") == "step" else "epoch"
    tags = {}
    for key, value in line.items():
        if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        tags[f"val/{key[4:]}" if key.startswith("val_") else f"{prefix}/{key}"] = float(value)
    return tags


class TensorBoard:
    """A ``SummaryWriter`` on ``folder``. Events an interrupted attempt wrote after
    ``resume_step``, the global step of the checkpoint the run resumes from (-1: a fresh start,
    so all of them), are dropped (``purge_step``), so curves never double back."""

    def __init__(self, folder: str | Path, resume_step: int = -1) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("train.tensorboard: the tensorboard package is not installed "
                              "(pip install 'vgglocal[tensorboard]')") from None
        self.folder = Path(folder)
        self.writer = SummaryWriter(str(self.folder), purge_step=resume_step + 1)

    def write(self, line: dict[str, Any]) -> None:
        """Add one metrics line's scalars at its global step (``line["step"]``)."""
        step = int(line.get("step", 0))
        for tag, value in scalar_tags(line).items():
            self.writer.add_scalar(tag, value, step)
        if line.get("kind") != "step":
            self.writer.flush()  # an epoch is worth showing at once

    def close(self) -> None:
        self.writer.close()
