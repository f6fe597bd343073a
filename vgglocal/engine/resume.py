"""What a resumable run saves and restores.

``last.pt`` is a model checkpoint (:func:`vgglocal.models.io.model_state`, so ``load_model``
reads it) plus the training state: optimiser, schedule, position (epoch, optimiser step within
the epoch, global step), the running sums of the unfinished epoch, the best validation error,
and every process's random-number generator states. Everything is plain data and tensors so
``torch.load(weights_only=True)`` reads it back (no numpy arrays, no custom classes).

The data sampler needs no state of its own: it is a pure function of (seed, epoch), and the
augmentation of (seed, epoch, sample index), so restarting the loader at batch
``step * grad_accum`` of the same epoch replays exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vgglocal.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vgglocal.engine.distributed import DistEnv, all_gather_objects
from vgglocal.engine.runs import RunDir
from vgglocal.engine.schedule import PlateauSchedule
from vgglocal.models.io import model_state
from vgglocal.models.vgg import VGG

__all__ = ["rng_state", "set_rng_state", "Checkpointer", "restore_training", "check_training_checkpoint", "TRAINING_KEYS",
           "POSITION_KEYS", "resume_conflicts", "resume_changes"]

# Keys a training checkpoint adds to the model checkpoint.
TRAINING_KEYS = ("task", "optimizer", "schedule", "epoch", "step", "global_step", "finished", "world_size", "ranks")


# Config keys that define what a saved position (epoch, optimiser step, sampler order,
# augmentation stream) means: a resumed run must keep them. Everything else (learning rate,
# epochs, logging, workers, ...) may change and is recorded.
POSITION_KEYS = ("train.batch_size", "seed", "data.format", "data.root", "data.train_split", "data.val_split",
                 "data.train_images", "data.train_annotations", "data.val_images", "data.val_annotations",
                 "data.classes", "data.devkit", "data.limit")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resume_conflicts(saved: dict[str, Any], now: dict[str, Any], saved_world: int, world: int, mid_epoch: bool) -> list[str]:
    """What a resume may not change, as "key saved -> now" texts (empty: it may resume).

    Args:
        saved, now: the saved and the new config as nested plain data (``to_dict``).
        saved_world, world: world sizes. mid_epoch: the position is inside an epoch, where the
            per-process sample shards depend on world size x ``train.grad_accum``.
    """
    a, b = _flat(saved), _flat(now)
    bad = [f"{k} {a[k]!r} -> {b.get(k)!r}" for k in POSITION_KEYS if k in a and a[k] != b.get(k)]
    accum_a, accum_b = a.get("train.grad_accum", 1), b.get("train.grad_accum", 1)
    if mid_epoch and saved_world * accum_a != world * accum_b:
        bad.append(f"world size x train.grad_accum {saved_world} x {accum_a} -> {world} x {accum_b} (mid-epoch)")
    return bad


def resume_changes(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, list[Any]]:
    """The keys a resume changes that it may change: {key: [saved, now]} (``name`` ignored)."""
    a, b = _flat(saved), _flat(now)
    return {k: [a.get(k), b[k]] for k in b if k != "name" and k in a and a[k] != b[k]}


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU and CUDA, Python ``random``, NumPy) as tensors."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.to(torch.uint8).cpu() for s in cuda])


class Checkpointer:
    """Writes a run's ``last.pt`` / ``best.pt`` / ``metrics.jsonl``; every process calls
    :meth:`save_last` at the same steps (the RNG states and running sums of all ranks are
    gathered), only rank 0 writes.

    Args:
        run: the run directory.
        net: the bare network (not the DDP / compiled wrapper).
        describe: ``normalization``, ``classes``, ``class_names`` and ``meta`` for :func:`model_state`.
    """

    def __init__(self, run: RunDir, net: VGG, optimizer: torch.optim.Optimizer, schedule: PlateauSchedule,
                 describe: dict[str, Any], env: DistEnv, task: str, tracker: Any | None = None) -> None:
        self.run, self.net, self.optimizer, self.schedule = run, net, optimizer, schedule
        self.describe, self.env, self.task, self.tracker = describe, env, task, tracker
        self.tensorboard: Any | None = None  # a vgglocal.engine.tensorboard.TensorBoard (train.tensorboard)

    @property
    def last_path(self) -> Path:
        return self.run.last

    def _model(self, extra_meta: dict[str, Any] | None = None) -> dict[str, Any]:
        meta = {**self.describe.get("meta", {}), **(extra_meta or {})}
        return model_state(self.net, self.describe["normalization"], self.describe.get("classes"), meta,
                           self.describe.get("class_names"))

    def save_last(self, position: dict[str, Any], totals: dict[str, float]) -> None:
        """Save the training state at ``position`` (``epoch`` = epochs done, ``step`` = optimiser
        steps done in the next epoch, ``global_step``, ``finished``)."""
        mine = {"rng": rng_state(), "totals": dict(totals)}
        if self.tracker is not None:
            mine["bad_samples"] = self.tracker.state_dict()
        ranks = all_gather_objects(mine)
        if not self.env.is_main:
            return
        state = {
            **self._model({"epoch": position["epoch"], "global_step": position["global_step"]}),
            "task": self.task,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": int(position["epoch"]),
            "step": int(position["step"]),
            "global_step": int(position["global_step"]),
            "finished": bool(position.get("finished", False)),
            "world_size": self.env.world_size,
            "ranks": ranks,
        }
        save_checkpoint(state, self.run.last)

    def save_best(self, metrics: dict[str, Any]) -> None:
        if self.env.is_main:
            save_checkpoint(self._model({"val": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}}), self.run.best)

    def append_metrics(self, line: dict[str, Any]) -> None:
        """One line of ``metrics.jsonl`` (and TensorBoard scalars when on), rank 0 only."""
        if self.env.is_main:
            self.run.append_metrics(line)
            if self.tensorboard is not None:
                self.tensorboard.write(line)

    def save_final(self) -> None:
        """``model.pt``: the best validation model (``best.pt``) without training state, or the
        current one when no epoch improved on the start."""
        if not self.env.is_main:
            return
        if self.run.best.is_file():
            ckpt = load_checkpoint(self.run.best)
            save_checkpoint({k: v for k, v in ckpt.items() if k not in ("format", "version")}, self.run.model)
        else:
            save_checkpoint(self._model(), self.run.model)


def check_training_checkpoint(ckpt: dict[str, Any], source: str) -> dict[str, Any]:
    """The training entries of a ``last.pt`` have the types :func:`restore_training` reads
    (the model entries are checked by :func:`vgglocal.models.io.load_model_checkpoint`)."""
    missing = [k for k in TRAINING_KEYS if k not in ckpt and k != "finished"]
    if missing:
        raise CheckpointError(f"{source}: not a training checkpoint (no {', '.join(missing)}); --resume needs checkpoints/last.pt")
    for key in ("optimizer", "schedule"):
        if not isinstance(ckpt[key], dict):
            raise CheckpointError(f"{source}: {key!r} must be a dict, got {type(ckpt[key]).__name__}")
    for key in ("epoch", "step", "global_step", "world_size"):
        value = ckpt[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{source}: {key!r} must be a non-negative integer, got {value!r}")
    if not isinstance(ckpt["ranks"], list) or not all(isinstance(r, dict) for r in ckpt["ranks"]):
        raise CheckpointError(f"{source}: 'ranks' must be a list of per-process states")
    return ckpt


def restore_training(ckpt: dict[str, Any], optimizer: torch.optim.Optimizer, schedule: PlateauSchedule, env: DistEnv,
                     seed: int, tracker: Any | None = None) -> dict[str, Any]:
    """Restore optimiser, schedule and this rank's RNG states from a ``last.pt`` (the weights are
    loaded when the network is rebuilt from it); returns the position for :func:`fit`'s ``start``.

    Resuming at another world size is allowed: the RNGs are then re-seeded from (seed, rank,
    step) and rank 0 takes over the unfinished epoch's running sums.
    """
    optimizer.load_state_dict(ckpt["optimizer"])
    schedule.load_state_dict(ckpt["schedule"])
    ranks = ckpt.get("ranks") or []
    if len(ranks) == env.world_size:
        set_rng_state(ranks[env.rank]["rng"])
        totals = dict(ranks[env.rank]["totals"])
        if tracker is not None and "bad_samples" in ranks[env.rank]:
            tracker.load_state_dict(ranks[env.rank]["bad_samples"])
    else:
        step = int(ckpt.get("global_step", 0))
        torch.manual_seed(seed + env.rank + 1000003 * step)
        random.seed(seed + env.rank + step)
        np.random.seed((seed + env.rank + step) % 2**32)
        totals = {"loss_sum": 0.0, "samples": 0, "bad": 0, "seconds": 0.0}
        if env.is_main:
            for r in ranks:
                for k in totals:
                    totals[k] += r["totals"][k]
    return {
        "epoch": int(ckpt["epoch"]),
        "step": int(ckpt["step"]),
        "global_step": int(ckpt["global_step"]),
        "finished": bool(ckpt.get("finished", False)),
        "totals": totals,
    }
