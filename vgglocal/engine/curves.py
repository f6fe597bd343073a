"""``vgglocal plot``: learning curves of one or more runs from their ``metrics.jsonl``.

Two panels against the optimiser step: the training loss (the "step" lines every
``train.log_every`` steps; the per-epoch means for runs written before step lines existed) and
the validation errors of the epoch lines (classification top-1/top-5, or the localisation
error). One colour per run; matplotlib is the optional ``plot`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vgglocal.engine.runs import RunDir, RunError

__all__ = ["Curves", "read_curves", "plot_runs"]

# Validation keys drawn, with their line styles. Protocol 1's top-5 localisation error is its
# top-1 (one guess), so one line; ``val_loc_error`` is its name in older runs.
_VAL_STYLES = {"val_top1_cls_error": "-", "val_top5_cls_error": "--", "val_top1_loc_error": "-", "val_loc_error": "-"}
_VAL_LABELS = {"val_top1_cls_error": "top-1 cls", "val_top5_cls_error": "top-5 cls", "val_top1_loc_error": "loc", "val_loc_error": "loc"}


@dataclass
class Curves:
    """A run's curves: ``loss`` [(step, loss)], ``val`` {metrics key: [(step, error)]}."""

    name: str
    loss: list[tuple[int, float]]
    val: dict[str, list[tuple[int, float]]]


def read_curves(root: str | Path) -> Curves:
    """The curves of the run in ``root`` (a run folder or its ``metrics.jsonl``)."""
    root = Path(root)
    run = RunDir(root.parent if root.name == "metrics.jsonl" else root)
    if not run.metrics.is_file():
        raise RunError(f"{run.root}: no metrics.jsonl (not a training run folder?)")
    lines: list[dict[str, Any]] = run.read_metrics()
    steps = [m for m in lines if m.get("kind") == "step" and m.get("loss") is not None]
    epochs = [m for m in lines if m.get("kind", "epoch") == "epoch"]
    source = steps or epochs  # older runs: one loss point per epoch
    loss = [(int(m["step"]), float(m["loss"])) for m in source if m.get("loss") is not None]
    val = {k: [(int(m["step"]), float(m[k])) for m in epochs if m.get(k) is not None] for k in _VAL_STYLES}
    return Curves(run.root.name or str(run.root), loss, {k: v for k, v in val.items() if v})


def plot_runs(runs: Sequence[str | Path], out: str | Path, *, log_loss: bool = False) -> Path:
    """Draw the runs' training loss and validation errors against steps into the PNG ``out``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RunError("vgglocal plot needs matplotlib (pip install 'vgglocal[plot]')") from None
    curves = [read_curves(r) for r in runs]
    names = [c.name for c in curves]
    if len(set(names)) < len(names):  # runs/a/cls and runs/b/cls: use the parent too
        names = [f"{Path(r).resolve().parent.name}/{c.name}" for r, c in zip(runs, curves, strict=True)]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (c, name) in enumerate(zip(curves, names, strict=True)):
        colour = colours[k % len(colours)]
        if c.loss:
            xs, ys = zip(*c.loss, strict=True)
            ax_loss.plot(xs, ys, color=colour, lw=1.5, label=name, marker="o" if len(xs) < 3 else None)
        for key, points in c.val.items():
            xs, ys = zip(*points, strict=True)
            ax_val.plot(xs, [100 * y for y in ys], _VAL_STYLES[key], color=colour, lw=1.5, marker="o",
                        ms=3, label=f"{name}: {_VAL_LABELS[key]}")
    ax_loss.set(title="training loss", xlabel="optimiser step", ylabel="loss")
    if log_loss:
        ax_loss.set_yscale("log")
    ax_val.set(title="validation error", xlabel="optimiser step", ylabel="error (%)")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
