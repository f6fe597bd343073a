"""The training engine: plain functions with explicit arguments (DETR ``engine.py``).

``train_one_epoch`` runs optimiser steps (with gradient accumulation, bf16 autocast,
channels_last, DDP), ``fit`` wires it and a validation callable (:mod:`vgglocal.engine.validate`)
with the schedule, checkpoints and the metrics file. Wiring a config to these is
:mod:`vgglocal.engine.tasks`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vgglocal.config import TRAIN_TASKS
from vgglocal.data.device import to_device
from vgglocal.engine.distributed import DistEnv, all_reduce_max, all_reduce_sum
from vgglocal.engine.schedule import PlateauSchedule
from vgglocal.errors import UserError
from vgglocal.interrupts import check_interrupt, interrupts_deferred
from vgglocal.models.heads import FCHead
from vgglocal.models.vgg import VGG
from vgglocal.runtime import autocast

__all__ = [
    "TrainForward",
    "head_on_crop",
    "channels_last",
    "NonFiniteLossError",
    "StepOptions",
    "build_optimizer",
    "set_train_mode",
    "train_one_epoch",
    "batch_size_of",
    "fit",
]

NO_STEP = 1 << 62  # "no non-finite loss seen" marker for the on-device first-bad-step tracker


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


class TrainForward(nn.Module):
    """What training needs from a VGG, as one module call (so DDP and ``torch.compile`` see it).

    ``task="cls"``: class logits ``[N, C]``. ``task="loc"``: the box head's outputs
    ``[N, 4]`` (SCR) or ``[N, 4C]`` (PCR); the classification head is not run (it is frozen
    during localisation training, Appendix A) unless ``joint``, where both heads run on the same
    features and their outputs come side by side, ``[N, 4 or 4C + C]``. Inputs are crops
    ``[N, 3, crop, crop]``.
    """

    def __init__(self, net: VGG, task: str, joint: bool = False) -> None:
        super().__init__()
        if task not in TRAIN_TASKS:
            raise ValueError(f"task {task!r}: choose from {', '.join(TRAIN_TASKS)}")
        if task == "loc" and net.box_head is None:
            raise ValueError("a localisation forward needs a model with a box head")
        self.net = net
        self.task = task
        self.joint = joint and task == "loc"

    def forward(self, x: Tensor) -> Tensor:
        f = self.net.features(x)
        if self.joint:
            return torch.cat([head_on_crop(self.net.box_head, f), head_on_crop(self.net.cls_head, f)], dim=1)
        head = self.net.cls_head if self.task == "cls" else self.net.box_head
        return head_on_crop(head, f)


def channels_last(net: VGG) -> VGG:
    """channels_last memory format for the conv layers (faster convolutions on CPU and GPU).

    The heads stay contiguous: in training they run as matrix products (:func:`head_on_crop`),
    and a channels_last FC6 weight would be copied into (C, kh, kw) order at every step.
    """
    net.features.to(memory_format=torch.channels_last)
    return net


def head_on_crop(head: FCHead, f: Tensor) -> Tensor:
    """An FC head on a crop's feature map ``[N, C, k, k]`` (k = crop/32) → ``[N, out]``.

    FC6 is a k x k convolution over a k x k map, FC7/FC8 are 1x1 convolutions over a 1x1 map:
    each is a matrix product in disguise, and computing it as one (``F.linear`` on the same
    weights, viewed ``[out, C*k*k]`` in the conv's (C, kh, kw) order) gives the same result with
    the same parameters about twice as fast on the CPU, backward included (tools/bench-train).
    Any other map size (a dense input) takes the convolutional path.
    """
    if tuple(f.shape[-2:]) != tuple(head.fc6.kernel_size):
        return head(f).flatten(1)
    x = f.flatten(1)  # not reshape(n, -1): an empty micro-batch (n = 0) leaves -1 ambiguous
    x = head.drop6(head.relu6(F.linear(x, head.fc6.weight.flatten(1), head.fc6.bias)))
    x = head.drop7(head.relu7(F.linear(x, head.fc7.weight.flatten(1), head.fc7.bias)))
    return F.linear(x, head.fc8.weight.flatten(1), head.fc8.bias)


@dataclass(frozen=True)
class StepOptions:
    """How each optimiser step runs (from ``train.*``)."""

    device: torch.device = torch.device("cpu")
    grad_accum: int = 1  # micro-batches per optimiser step
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    channels_last: bool = False
    log_every: int = 20  # progress-bar refresh and non-finite check, in steps
    checkpoint_every: int = 0  # save the training state every N global steps (0: epoch ends only)
    progress: bool = True  # tqdm bar (rank 0)
    # Without a bar (train.quiet, for log files): a plain line every log_every steps.
    log: Callable[[str], None] | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.precision)


def build_optimizer(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, nesterov: bool = False) -> torch.optim.SGD:
    """Mini-batch SGD with momentum (section 3.1) over the parameters that require gradients.

    Weight decay (L2, 5e-4 in the paper) applies to the weights of conv/FC layers only, not to
    biases or batch-norm parameters: the Caffe reference models the authors' implementation
    derives from (section 3.3) set ``decay_mult: 0`` on biases. Frozen parameters are left out
    of the optimiser entirely (``fc`` fine-tuning, the frozen classification head).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=momentum, nesterov=nesterov)


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except batch-norm layers whose parameters are frozen, which stay in
    eval mode so their running statistics stay frozen too (``fc`` fine-tuning)."""
    model.train()
    for m in model.modules():
        if isinstance(m, _BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


def _ddp(model: nn.Module) -> DistributedDataParallel | None:
    inner = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    return inner if isinstance(inner, DistributedDataParallel) else None


def batch_size_of(batch: dict[str, Any]) -> int:
    return int(batch["image"].shape[0]) if "image" in batch else 0


def _empty_like_input(model: nn.Module, opts: StepOptions) -> Tensor:
    """A batch of no images for the model's crop (see the all-bad micro-batch case)."""
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner)  # DDP
    crop = inner.net.crop
    x = torch.zeros(0, 3, crop, crop, device=opts.device)
    return x.contiguous(memory_format=torch.channels_last) if opts.channels_last else x


def _check_finite(first_bad: Tensor, epoch: int, first_step_of_epoch: int, model: nn.Module | None = None,
                  global_step: int = 0) -> None:
    """Raise on every process alike if any process saw a non-finite loss, or (when ``model`` is
    given, before a checkpoint) if an update left a non-finite weight: a checkpoint is written
    only after this passes, so the last one on disk is always good."""
    bad_weights = torch.zeros((), dtype=torch.int64, device=first_bad.device)
    if model is not None:
        # NaN and inf survive a sum; one fused reduction per tensor is ~10x cheaper than
        # isfinite().all(). Weights whose float32 sum overflows (> 3e38) count as diverged too.
        total = torch.stack([p.detach().sum() for p in model.parameters() if p.requires_grad]).sum()
        bad_weights = (~torch.isfinite(total)).to(torch.int64).to(first_bad.device)
    flags = all_reduce_max(torch.stack([(first_bad != NO_STEP).to(torch.int64), bad_weights]))
    if int(flags[0].item()):
        g = int((-all_reduce_max(-first_bad.clone())).item())
        raise NonFiniteLossError(f"non-finite training loss at epoch {epoch + 1}, step {g - first_step_of_epoch + 1} (global step {g + 1})")
    if int(flags[1].item()):
        raise NonFiniteLossError(
            f"non-finite weights after epoch {epoch + 1}, step {global_step - first_step_of_epoch} (global step {global_step}): "
            "the update overflowed"
        )


def new_totals() -> dict[str, float]:
    """Running sums of one epoch on this process (plain numbers: they go into checkpoints)."""
    return {"loss_sum": 0.0, "samples": 0, "bad": 0, "seconds": 0.0}


@dataclass
class _Running:
    """One epoch's sums on this process, kept on the device so that a step never waits for it:
    read back only every ``log_every`` steps (the window) and at checkpoints and the end."""

    loss_sum: Tensor  # float64, loss x samples since the epoch (this session's part) began
    first_bad: Tensor  # int64, global index of the first step with a non-finite loss, else NO_STEP
    window_loss: Tensor  # float64, loss x samples since the last report
    window_n: int
    window_t: float  # perf_counter at the window's start

    @classmethod
    def start(cls, device: torch.device) -> _Running:
        return cls(torch.zeros((), dtype=torch.float64, device=device), torch.full((), NO_STEP, dtype=torch.int64, device=device),
                   torch.zeros((), dtype=torch.float64, device=device), 0, time.perf_counter())

    def add(self, step_loss: Tensor, step_n: int, global_step: int) -> None:
        """Count optimiser step ``global_step``: its summed loss over ``step_n`` samples."""
        self.first_bad = torch.where(torch.isfinite(step_loss) | (self.first_bad != NO_STEP), self.first_bad,
                                     torch.full_like(self.first_bad, global_step))
        self.loss_sum += step_loss
        self.window_loss += step_loss
        self.window_n += step_n


def _next_batch(batches: Iterator[dict[str, Any]], step: int, steps: int, micro: int) -> dict[str, Any]:
    check_interrupt()  # a Ctrl-C that fit deferred stops here, between batches
    try:
        return next(batches)
    except StopIteration:
        raise RuntimeError(f"the loader ran out at step {step} of {steps} (micro-batch {micro})") from None


def _micro_step(model: nn.Module, loss_fn: Callable[[Tensor, dict[str, Any]], Tensor], batch: dict[str, Any],
                opts: StepOptions, sync: contextlib.AbstractContextManager) -> tuple[Tensor, int]:
    """Forward and backward of one micro-batch (on the device) → (its loss x samples, samples)."""
    n = batch_size_of(batch)
    with sync:
        if n:
            with opts.autocast():
                out = model(batch["image"])
            loss = loss_fn(out.float(), batch)
        else:
            # Every sample of this micro-batch was bad: a zero loss through the model
            # keeps this process in step with the others' gradient all-reduce. The eager
            # module (under torch.compile's wrapper) runs it: compiling a batch of 0 would
            # cost a recompile, and inductor's convolution backward rejects it on the CPU
            # (a fake-tensor stride mismatch in aten.convolution_backward, seen with torch 2.14).
            eager = getattr(model, "_orig_mod", model)
            with opts.autocast():
                out = eager(_empty_like_input(model, opts))
            loss = out.float().sum() * 0.0
        (loss / opts.grad_accum).backward()
    return loss.detach().double() * n, n


def _accumulate(model: nn.Module, loss_fn: Callable[[Tensor, dict[str, Any]], Tensor], batches: Iterator[dict[str, Any]],
                opts: StepOptions, tracker: Any | None, totals: dict[str, float], step: int, steps: int) -> tuple[Tensor, int]:
    """The gradients of one optimiser step: ``opts.grad_accum`` micro-batches → (summed loss x
    samples, samples). Bad samples are counted into ``totals["bad"]`` (and ``tracker``)."""
    ddp = _ddp(model)
    step_loss = torch.zeros((), dtype=torch.float64, device=opts.device)
    step_n = 0
    for micro in range(opts.grad_accum):
        batch = _next_batch(batches, step, steps, micro)
        if tracker is not None:
            tracker.update(batch)  # raises when too many samples were bad
        totals["bad"] += len(batch.get("bad") or ())
        # Gradients are all-reduced only on the last micro-batch of a step.
        sync = ddp.no_sync() if ddp is not None and micro < opts.grad_accum - 1 else contextlib.nullcontext()
        loss, n = _micro_step(model, loss_fn, to_device(batch, opts.device, opts.channels_last), opts, sync)
        step_loss += loss
        step_n += n
    return step_loss, step_n


def _report(running: _Running, bar: tqdm, opts: StepOptions, record: Callable[[dict[str, Any]], None] | None, *,
            epoch: int, global_step: int, done: int, steps: int, lr: float, world_size: int) -> None:
    """The window's mean loss and throughput to ``record``, the bar or the log; then a new window."""
    now = time.perf_counter()
    if opts.progress or opts.log is not None or record is not None:
        mean = float(running.window_loss.item()) / max(running.window_n, 1)
        rate = running.window_n * world_size / max(now - running.window_t, 1e-9)
        if record is not None:
            record({"kind": "step", "epoch": epoch + 1, "step": global_step, "loss": mean, "lr": lr, "images_per_s": rate})
        if opts.progress:
            bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
        elif opts.log is not None:
            opts.log(f"epoch {epoch + 1} step {done}/{steps}: loss {mean:.4f}, lr {lr:.2e}, {rate:.1f} img/s")
    running.window_loss.zero_()
    running.window_n, running.window_t = 0, now


def _epoch_stats(totals: dict[str, float], device: torch.device, global_step: int, lr: float) -> dict[str, Any]:
    """``train_one_epoch``'s result: this process's ``totals`` summed (time: the slowest) over every process."""
    sums = torch.tensor([totals["loss_sum"], totals["samples"], totals["bad"]], dtype=torch.float64, device=device)
    all_reduce_sum(sums)
    seconds = all_reduce_max(torch.tensor([totals["seconds"]], dtype=torch.float64, device=device))
    loss_total, samples, bad = (float(v) for v in sums.tolist())
    secs = float(seconds.item())
    return {
        "loss": loss_total / max(samples, 1),
        "samples": int(samples),
        "bad": int(bad),
        "seconds": secs,
        "images_per_s": samples / max(secs, 1e-9),
        "global_step": global_step,
        "lr": lr,
    }


def train_one_epoch(
    model: nn.Module,
    loss_fn: Callable[[Tensor, dict[str, Any]], Tensor],
    loader: Iterable[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    schedule: PlateauSchedule,
    *,
    epoch: int,
    steps: int,
    opts: StepOptions,
    start_step: int = 0,
    global_step: int = 0,
    totals: dict[str, float] | None = None,
    tracker: Any | None = None,
    save: Callable[[int, int, dict[str, float]], None] | None = None,
    world_size: int = 1,
    record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run optimiser steps ``start_step .. steps-1`` of ``epoch``.

    Args:
        model: the training forward (:class:`TrainForward`, maybe DDP-wrapped or compiled).
        loss_fn: ``(outputs, batch) -> scalar`` mean over the micro-batch.
        loader: batches (dicts with ``image`` ``[n, 3, crop, crop]``, the loss's keys, and ``bad``:
            the skipped samples' ``(path, message)``), already positioned at micro-batch
            ``start_step * opts.grad_accum`` of the epoch.
        steps: optimiser steps in the whole epoch; each takes ``opts.grad_accum`` batches.
        start_step, global_step: where a resumed epoch starts (within the epoch, and overall).
        totals: the epoch's running sums so far on this process (:func:`new_totals`).
        tracker: counts bad samples (``update(batch)``; :class:`vgglocal.data.loader.BadSampleTracker`),
            raising when too many were bad.
        save: ``save(step_in_epoch, global_step, totals)``, called every
            ``opts.checkpoint_every`` global steps after the loss was checked to be finite.
        record: receives a ``{"kind": "step", "epoch", "step" (global), "loss", "lr",
            "images_per_s"}`` line every ``opts.log_every`` steps and at the epoch's end: the
            learning curve (loss: mean over this process's samples since the last line).

    Returns:
        ``{"loss", "samples", "bad", "seconds", "images_per_s", "global_step", "lr"}``:
        sums and means over every process and the whole epoch (resumed part included).

    Raises:
        NonFiniteLossError: on every process alike, naming the first bad step.
    """
    set_train_mode(model)
    totals = dict(totals or new_totals())
    first_step = global_step - start_step  # global index of this epoch's step 0
    running = _Running.start(opts.device)
    bar = tqdm(total=steps, initial=start_step, desc=f"epoch {epoch + 1}", unit="step", dynamic_ncols=True,
               leave=False, disable=not opts.progress)
    batches: Iterator[dict[str, Any]] = iter(loader)
    lr = schedule.lr(global_step)
    start = time.perf_counter()
    try:
        for step in range(start_step, steps):
            lr = schedule.lr(global_step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss, step_n = _accumulate(model, loss_fn, batches, opts, tracker, totals, step, steps)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            running.add(step_loss, step_n, global_step)
            totals["samples"] += step_n
            global_step += 1
            bar.update(1)
            done = step + 1
            if opts.log_every and done % opts.log_every == 0 or done == steps:
                # at the epoch's end the weights are checked too: fit saves last.pt next
                _check_finite(running.first_bad, epoch, first_step, model if done == steps else None, global_step)
                _report(running, bar, opts, record, epoch=epoch, global_step=global_step, done=done, steps=steps, lr=lr,
                        world_size=world_size)
            if save is not None and opts.checkpoint_every and global_step % opts.checkpoint_every == 0 and done < steps:
                _check_finite(running.first_bad, epoch, first_step, model, global_step)
                totals["seconds"] += time.perf_counter() - start
                save(done, global_step, dict(totals, loss_sum=totals["loss_sum"] + float(running.loss_sum.item())))
                start = time.perf_counter()  # checkpoint I/O is not training time
    finally:
        bar.close()
    totals["seconds"] += time.perf_counter() - start
    totals["loss_sum"] += float(running.loss_sum.item())
    return _epoch_stats(totals, opts.device, global_step, lr)


# ----------------------------------------------------------------------------- fit


class _Positions:
    """Writes the run's position (last.pt through ``checkpoints``, if any) and remembers the
    last one written this session, for the divergence message."""

    def __init__(self, checkpoints: Any | None) -> None:
        self.checkpoints = checkpoints
        self.where: str | None = None

    def save(self, epoch: int, step: int, global_step: int, totals: dict[str, float], finished: bool = False) -> None:
        if self.checkpoints is not None:
            self.checkpoints.save_last({"epoch": epoch, "step": step, "global_step": global_step, "finished": finished}, totals)
        self.where = f"epoch {epoch + 1}, step {step}" if step else f"end of epoch {epoch}"

    def diverged(self, e: NonFiniteLossError) -> NonFiniteLossError:
        """``e`` with which checkpoint is the last good one, and what to try."""
        path = getattr(self.checkpoints, "last_path", None)
        if self.where:
            kept = f"kept the last good checkpoint{' ' + str(path) if path else ''} ({self.where})"
        elif path is not None and path.exists():
            kept = f"kept the last good checkpoint {path} (from before this session)"
        else:
            kept = "no checkpoint had been written yet"
        return NonFiniteLossError(f"{e}; training stopped, {kept}; try a lower optim.lr or a warm-up (optim.warmup_epochs)")


def _epoch_line(epoch: int, stats: dict[str, Any], val: dict[str, float], outcome: str,
                schedule: PlateauSchedule) -> dict[str, Any]:
    """The metrics.jsonl line of a finished epoch (kind "epoch")."""
    return {
        "kind": "epoch",
        "epoch": epoch + 1,
        "step": stats["global_step"],
        "loss": stats["loss"],
        "lr": stats["lr"],
        **{f"val_{k}": v for k, v in val.items()},
        "images_per_s": stats["images_per_s"],
        "samples": stats["samples"],
        "bad_samples": stats["bad"],
        "seconds": stats["seconds"],
        "schedule": outcome,
        "lr_decreases": schedule.decreases,
    }


def _epoch_message(epoch: int, epochs: int, stats: dict[str, Any], metric: str, error: float, outcome: str) -> str:
    return (f"epoch {epoch + 1}/{epochs}: loss {stats['loss']:.4f}, lr {stats['lr']:.2e}, val {metric} {error:.4f} "
            f"({outcome}), {stats['images_per_s']:.1f} img/s" + (f", {stats['bad']} bad samples skipped" if stats["bad"] else ""))


def fit(
    model: nn.Module,
    loss_fn: Callable[[Tensor, dict[str, Any]], Tensor],
    optimizer: torch.optim.Optimizer,
    schedule: PlateauSchedule,
    train_loader: Callable[[int, int], Iterable[dict[str, Any]]],
    steps_per_epoch: int,
    validate: Callable[[], dict[str, float]],
    *,
    epochs: int,
    metric: str,
    opts: StepOptions,
    env: DistEnv,
    checkpoints: Any | None = None,
    start: dict[str, Any] | None = None,
    tracker: Any | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train until the schedule stops (three decreases, section 3.1) or ``epochs`` is reached.

    Args:
        model: the training forward (maybe DDP-wrapped / compiled).
        train_loader: ``(epoch, start_batch) -> batches`` of this process's shard.
        steps_per_epoch: optimiser steps per epoch (micro-batches // grad_accum).
        validate: ``() -> metrics`` (every process calls it; values already reduced).
        metric: the validation key the schedule watches (lower is better).
        checkpoints: the run's writer (:class:`vgglocal.engine.resume.Checkpointer`) with
            ``save_last(position, totals)``, ``save_best(metrics)``, ``append_metrics(line)``
            (the epoch lines, kind "epoch", and train_one_epoch's "step" lines); None writes nothing.
        start: the position to resume from: ``epoch``, ``step``, ``global_step``, ``totals``
            (this process's running sums), ``finished``.
    Returns:
        ``{"epochs", "global_step", "best", "stopped"}`` and the last epoch's metrics.

    Raises:
        NonFiniteLossError: naming the step, and the last good checkpoint kept.
    """
    log = log or (lambda msg: None)
    start = start or {}
    epoch = epoch0 = int(start.get("epoch", 0))
    step0 = int(start.get("step", 0))
    global_step = int(start.get("global_step", 0))
    totals = start.get("totals") or new_totals()
    last: dict[str, Any] = {}
    if schedule.stopped or epoch0 >= epochs:
        # A capped run resumed with a larger train.epochs goes on; a stopped schedule does not.
        log(f"nothing to train: the run stopped after epoch {epoch0}" + (" (schedule done)" if schedule.stopped else f" (train.epochs {epochs})"))
        return {"epochs": epoch0, "global_step": global_step, "best": schedule.best, "stopped": schedule.stopped}
    positions = _Positions(checkpoints)
    # Ctrl-C raises between batches (train_one_epoch, validation), never inside C++ (interrupts_deferred)
    with interrupts_deferred():
        try:
            for epoch in range(epoch0, epochs):
                stats = train_one_epoch(
                    model, loss_fn, train_loader(epoch, step0 * opts.grad_accum), optimizer, schedule, epoch=epoch,
                    steps=steps_per_epoch, opts=opts, start_step=step0, global_step=global_step, totals=totals, tracker=tracker,
                    world_size=env.world_size, save=lambda step, gstep, tot, e=epoch: positions.save(e, step, gstep, tot),
                    record=checkpoints.append_metrics if checkpoints is not None else None,
                )
                global_step = stats["global_step"]
                if tracker is not None:
                    tracker.check()
                val = validate()
                error = float(val[metric])
                outcome = schedule.epoch_end(error)
                last = _epoch_line(epoch, stats, val, outcome, schedule)
                if checkpoints is not None:
                    checkpoints.append_metrics(last)
                    if outcome == "improved":
                        checkpoints.save_best(last)
                positions.save(epoch + 1, 0, global_step, new_totals(), schedule.stopped or epoch + 1 >= epochs)
                log(_epoch_message(epoch, epochs, stats, metric, error, outcome))
                step0, totals = 0, new_totals()
                if schedule.stopped:
                    log(f"stopping: validation {metric} stopped improving after {schedule.decreases} learning-rate decreases")
                    break
        except NonFiniteLossError as e:
            raise positions.diverged(e) from None
    return {"epochs": epoch + 1, "global_step": global_step, "best": schedule.best, "stopped": schedule.stopped, **last}
