"""From a config to a finished run: ``train_classifier`` (section 3.1) and ``train_localizer``
(Appendix A). They read the data, build the model, optimiser and schedule, join the process
group under ``torchrun``, and hand over to :func:`vgglocal.engine.train.fit`.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from vgglocal.config import FINETUNE_MODES, Config, ConfigError, replace, to_dict
from vgglocal.engine import distributed
from vgglocal.engine.distributed import DistEnv
from vgglocal.engine.losses import training_loss
from vgglocal.engine.resume import (
    Checkpointer,
    check_training_checkpoint,
    restore_training,
    resume_changes,
    resume_conflicts,
)
from vgglocal.engine.runs import RunDir, RunError, RunLock
from vgglocal.engine.schedule import PlateauSchedule
from vgglocal.engine.train import (
    StepOptions,
    TrainForward,
    build_optimizer,
    channels_last,
    fit,
)
from vgglocal.engine.validate import evaluate
from vgglocal.models.build import build_model, check_arch
from vgglocal.models.io import load_model_checkpoint, model_from_checkpoint
from vgglocal.models.vgg import VGG, add_box_head

if TYPE_CHECKING:
    from vgglocal.data.records import ClassList, Sample

__all__ = ["train_classifier", "train_localizer", "run_training", "micro_batch_size", "eval_scale",
           "freeze_for_finetune", "mean_box_target", "device_batches", "sync_batch_norm"]

Log = Callable[[str], None]

# Model keys that a localisation run takes from its classification checkpoint.
_ARCH_KEYS = ("arch", "num_classes", "width", "fc_width", "crop", "batch_norm")


def micro_batch_size(batch_size: int, world_size: int, grad_accum: int) -> int:
    """Per-process micro-batch: the global ``train.batch_size`` split across processes and
    accumulation steps, so one YAML gives the same optimisation at any world size."""
    if batch_size % (world_size * grad_accum):
        raise ConfigError(
            f"train.batch_size: {batch_size} is not divisible by world size {world_size} x "
            f"train.grad_accum {grad_accum}"
        )
    return batch_size // (world_size * grad_accum)


def eval_scale(cfg: Config) -> int:
    """Validation scale Q: S for fixed-scale training, (Smin + Smax) / 2 for jittered S (Table 3)."""
    d = cfg.data
    return (d.scale_min + d.scale_max) // 2 if d.scale_max else d.scale


def freeze_for_finetune(net: VGG, finetune: str, joint: bool = False) -> None:
    """Appendix A fine-tuning modes. The classification head is frozen (kept so one model
    gives class scores and boxes) unless ``joint`` (``loc.joint``: it trains with the box
    head). ``fc``: the convs are frozen too, so only the heads' FC layers train; ``all``: convs
    and heads train."""
    if finetune not in FINETUNE_MODES:
        raise ConfigError(f"loc.finetune: {finetune!r} is not one of {', '.join(FINETUNE_MODES)}")
    net.cls_head.requires_grad_(joint)
    net.features.requires_grad_(finetune == "all")
    if net.box_head is not None:
        net.box_head.requires_grad_(True)


def mean_box_target(dataset: Any, samples: int = 256) -> torch.Tensor:
    """Mean training target (cx, cy, w, h)/crop over up to ``samples`` evenly spaced items of a
    localisation :class:`~vgglocal.data.loader.SampleDataset` (epoch 0 augmentation) → Tensor[4]."""
    n = len(dataset)
    idx = np.unique(np.linspace(0, n - 1, min(samples, n)).round().astype(np.int64))
    targets = [item["target"] for item in (dataset[(0, int(i))] for i in idx) if isinstance(item, dict)]
    if not targets:
        raise ConfigError("loc.head_bias: mean: no usable training sample to average")
    return torch.stack(targets).mean(dim=0)


def _collate_of(cfg: Config) -> Any:
    from vgglocal.data.encoded import collate_encoded
    from vgglocal.data.loader import collate

    return collate_encoded if cfg.data.pipeline == "gpu" else collate


def device_batches(loader: Any, cfg: Config, env: DistEnv) -> Any:
    """The training batches as the step wants them. ``data.pipeline: gpu``: decoded and augmented
    on the device (:class:`~vgglocal.data.device.DeviceWindows`); on a GPU either pipeline's next
    batch is prepared on a side stream while the current step trains; on the CPU the cpu
    pipeline's batches go straight to the step (which moves and normalises them)."""
    from vgglocal.data.device import DevicePrefetcher, DeviceWindows, to_device

    if cfg.data.pipeline == "gpu":
        return DevicePrefetcher(loader, DeviceWindows(env.device, cfg.model.crop, cfg.train.channels_last), env.device)
    if env.device.type == "cuda":
        return DevicePrefetcher(loader, lambda b: to_device(b, env.device, cfg.train.channels_last), env.device)
    return loader


def sync_batch_norm(net: VGG, cfg: Config, env: DistEnv, log: Log) -> VGG:
    """``train.sync_bn``: batch-norm statistics over the global batch under DDP
    (``torch.nn.SyncBatchNorm``, torchvision references' ``--sync-bn``). PyTorch implements it
    for CUDA only, so on the CPU it is refused; with one process it changes nothing and is skipped."""
    if not cfg.train.sync_bn:
        return net
    if env.device.type != "cuda":
        raise ConfigError("train.sync_bn: SyncBatchNorm runs on CUDA devices only; set train.sync_bn=false on the CPU")
    if not env.distributed:
        log("train.sync_bn: one process, nothing to synchronise; plain batch norm")
        return net
    if not cfg.model.batch_norm:
        log("train.sync_bn: the model has no batch norm (model.batch_norm false); nothing to convert")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _quiet(msg: str) -> None:
    pass


@dataclass(frozen=True)
class RunData:
    """A run's two splits: the class list, the records and the datasets built on them."""

    classes: ClassList
    train_records: list[Sample]
    val_records: list[Sample]  # with the images the disk lacks (they score as wrong)
    train: Dataset  # SampleDataset, or EncodedDataset for data.pipeline gpu
    val: Dataset  # SampleDataset at the validation scale (eval_scale)


def _read_data(cfg: Config, task: str, crop: int, log: Log = _quiet) -> RunData:
    """Read both splits, log their annotation problems, check the classes against each other
    and ``model.num_classes``, and build the datasets."""
    from vgglocal.data import read_split
    from vgglocal.data.encoded import EncodedDataset
    from vgglocal.data.images import ImageLimits
    from vgglocal.data.loader import SampleDataset
    from vgglocal.data.transforms import build_eval_transform, build_train_transform

    problems: dict[str, list] = {}
    train_records, classes = read_split(cfg.data, "train", task, problems=problems.setdefault("train", []))
    # Validation keeps the images its annotations list but the disk lacks: they score as wrong.
    val_records, val_classes = read_split(cfg.data, "val", task, problems=problems.setdefault("val", []), with_missing=True)
    for split, found in problems.items():
        if found:  # the readers skip or clip what is broken; say how much, and where the list is
            counts = ", ".join(f"{k} {v}" for k, v in sorted(Counter(p.kind for p in found).items()))
            log(f"{split} split: {len(found)} annotation problems skipped or clipped ({counts}); "
                f"`vgglocal data check {cfg.data.root}` lists them")
    if list(val_classes.ids) != list(classes.ids):
        raise ConfigError(f"data.root {cfg.data.root}: the validation split's classes differ from the training split's")
    if cfg.model.num_classes != len(classes):
        raise ConfigError(f"model.num_classes: {cfg.model.num_classes}, but {cfg.data.root} has {len(classes)} classes")
    limits = ImageLimits.of(cfg.data)
    # data.pipeline gpu: the workers read bytes, the device decodes and augments.
    train_set = EncodedDataset if cfg.data.pipeline == "gpu" else SampleDataset
    return RunData(
        classes=classes,
        train_records=train_records,
        val_records=val_records,
        train=train_set(train_records, build_train_transform(cfg.data, crop, task), task, cfg.seed, limits),
        val=SampleDataset(val_records, build_eval_transform(cfg.data, crop, eval_scale(cfg)), task, cfg.seed, limits),
    )


def _loc_config(cfg: Config, init: dict[str, Any], log: Log) -> Config:
    """The run's config with the architecture of the ``--init`` checkpoint (which defines it)."""
    hp = init["model"]
    changes = {}
    for key in _ARCH_KEYS:
        if getattr(cfg.model, key) != hp[key]:
            changes[f"model.{key}"] = hp[key]
    if changes:
        log("model keys taken from the --init checkpoint: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
    return replace(cfg, **changes) if changes else cfg


def _check_normalization(cfg: Config, init: dict[str, Any], norm: dict[str, list[float]]) -> None:
    theirs = init.get("normalization")
    if not theirs:
        return
    if not (np.allclose(theirs["mean"], norm["mean"], atol=1e-3) and np.allclose(theirs["std"], norm["std"], atol=1e-3)):
        raise ConfigError(
            f"loc.init {cfg.loc.init}: the checkpoint was trained with mean {theirs['mean']} / std {theirs['std']}, "
            f"the config gives {norm['mean']} / {norm['std']}; set data.mean/std (or data.stats) as in the classification run"
        )


def _check_resume(cfg: Config, task: str, last: dict[str, Any], path: Path, world_size: int) -> None:
    """A run resumes with the settings that shape its model and optimiser and that define what
    its saved position means (:data:`~vgglocal.engine.resume.POSITION_KEYS`); others, like
    optim.lr and train.epochs, may change."""
    if last.get("task") != task:
        raise RunError(f"--resume: {path} is a {last.get('task')!r} run, not {task!r}")
    saved = (last.get("meta") or {}).get("config")
    if isinstance(saved, dict):
        mid_epoch = int(last.get("step", 0)) > 0
        bad = resume_conflicts(saved, to_dict(cfg), int(last.get("world_size", 1)), world_size, mid_epoch)
        if bad:
            raise RunError(f"--resume: the run in {path} was saved with other settings that define its position: "
                           f"{'; '.join(bad)}; resume with the run's values or start a new run with --out DIR")
    if task == "cls":
        for key in _ARCH_KEYS:
            if getattr(cfg.model, key) != last["model"][key]:
                raise RunError(f"--resume: model.{key} is {getattr(cfg.model, key)!r}, the run in {path} has {last['model'][key]!r}")
    else:
        meta = last.get("meta") or {}
        saved = {"joint": False, **meta}  # runs from before loc.joint trained without it
        for key in ("regression", "finetune", "joint"):
            if key in saved and getattr(cfg.loc, key) != saved[key]:
                raise RunError(f"--resume: loc.{key} is {getattr(cfg.loc, key)!r}, the run in {path} has {saved[key]!r}")


def _record_resume(cfg: Config, last: dict[str, Any], log: Log) -> list[dict[str, Any]]:
    """The run's resume history with this resume appended: the global step and the settings it
    changed ({key: [before, after]}), also logged."""
    meta = last.get("meta") or {}
    history = list(meta.get("resumed") or [])
    saved = meta.get("config")
    changes = resume_changes(saved, to_dict(cfg)) if isinstance(saved, dict) else {}
    if changes:
        log("resuming with changed settings: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items()))
    return history + [{"global_step": int(last.get("global_step", 0)), "changes": changes}]


def _build_net(cfg: Config, task: str, last: dict[str, Any] | None, init: dict[str, Any] | None,
               data: RunData, last_path: str, env: DistEnv) -> VGG:
    """The network on its device: from last.pt when resuming, else from the config (cls) or the
    ``--init`` classifier with a new box head (loc); localisation freezes as loc.finetune says."""
    if last is not None:
        net = model_from_checkpoint(last, last_path)
    elif task == "cls":
        net = build_model(cfg.model)
    else:
        net = model_from_checkpoint(init, cfg.loc.init)
        if init.get("classes") and list(init["classes"]) != list(data.classes.ids):
            raise ConfigError(f"loc.init {cfg.loc.init}: its classes differ from those of {cfg.data.root}")
        for m in net.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = cfg.model.dropout
        net.hparams["dropout"] = cfg.model.dropout
        bias = mean_box_target(data.train) if cfg.loc.head_bias == "mean" else None
        _seed_all(cfg.seed)
        add_box_head(net, cfg.loc.regression, std=cfg.loc.head_init_std, bias=bias)
    if task == "loc":
        freeze_for_finetune(net, cfg.loc.finetune, cfg.loc.joint)
    net.to(env.device)
    if cfg.train.channels_last:
        channels_last(net)
    return net


_RESUME_ADVICE = "under torchrun --max-restarts the group restarts and resumes from last.pt"


def run_training(cfg: Config, task: str, out: str | Path | None = None, resume: bool = False, log: Log | None = None) -> Path:
    """Train ``task`` ("cls" or "loc") as ``cfg`` says into ``out`` (default ``runs/<cfg.name>``).

    Under ``torchrun`` every process calls this; only rank 0 writes files and logs (the others
    name only their own bad files, as "rank R: ..."). Returns the
    run directory. Raises a :class:`~vgglocal.errors.UserError` for bad configs, data or runs,
    and :class:`~vgglocal.engine.train.NonFiniteLossError` when the loss diverges.
    """
    check_arch(cfg.model)  # before any data is read
    env = distributed.setup(cfg.train.device, cfg.train.dist_timeout)
    root = Path(out) if out else Path("runs") / (cfg.name or "run")
    # torchelastic restarted the group after a lost process: continue from last.pt by itself
    restart = distributed.restart_count() if not resume else 0
    try:
        with _run_lock(root, env), distributed.peers_watched(env, "training", _RESUME_ADVICE):
            return _run(cfg, task, root, resume or restart > 0, log or _quiet, env, restart)
    finally:
        distributed.teardown()


@contextlib.contextmanager
def _run_lock(root: Path, env: DistEnv) -> Iterator[None]:
    """Hold the run folder's lock (rank 0 takes it; every rank fails alike when it is taken)."""
    lock, error = RunLock(root), ""
    if env.is_main:
        try:
            lock.acquire()
        except RunError as e:
            error = str(e)
    error = distributed.all_gather_objects(error)[0]
    if error:
        raise RunError(error)
    try:
        yield
    finally:
        lock.release()


def _run(cfg: Config, task: str, root: Path, resume: bool, log: Log, env: DistEnv, restart: int = 0) -> Path:
    """One training run in ``root``, in the order that fixes its random streams: seed, model
    init (:func:`_build_net`), then the per-process streams of :func:`_start_position`."""
    from vgglocal.data.loader import BadSampleTracker
    from vgglocal.data.transforms import normalization_of

    rank_log = _rank_log(log, env)  # every rank names its own bad files
    log = log if env.is_main else _quiet
    micro = micro_batch_size(cfg.train.batch_size, env.world_size, cfg.train.grad_accum)
    run, last = _open_run(cfg, task, root, resume, env, log, restart)
    if env.device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
    _seed_all(cfg.seed)  # the model's random init is the same on every process
    cfg, init = _arch_source(cfg, task, last, log)
    norm = normalization_of(cfg.data)
    if init is not None:
        _check_normalization(cfg, init, norm)
    data = _read_data(cfg, task, cfg.model.crop, log)
    net = sync_batch_norm(_build_net(cfg, task, last, init, data, str(run.last), env), cfg, env, log)
    optimizer = build_optimizer(net, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.nesterov)
    tracker = BadSampleTracker(cfg.data.max_bad_fraction, on_new=lambda message: rank_log(f"skipped bad sample: {message}"))
    loader, val_loader, steps = _loaders(cfg, data, micro, env)
    schedule = _schedule(cfg, steps)
    describe = {"normalization": norm, "classes": list(data.classes.ids), "class_names": list(data.classes.names),
                "meta": _run_meta(cfg, task, last, log)}
    checkpoints = Checkpointer(run, net, optimizer, schedule, describe, env, task, tracker)
    start = _start_position(cfg, run, last, checkpoints, optimizer, schedule, tracker, env)
    del last
    model = _training_forward(net, task, cfg, env)
    opts = _step_options(cfg, env, log)
    batches = device_batches(loader, cfg, env)

    def train_loader(epoch: int, start_batch: int) -> Any:
        loader.set_epoch(epoch, start_batch)
        return batches

    log(_summary(cfg, task, data, env, micro, steps, run, start))
    try:
        fit(model, training_loss(task, cfg, net), optimizer, schedule, train_loader, steps, _validator(net, task, data, val_loader, cfg, opts, rank_log),
            epochs=cfg.train.epochs, metric="top1_loc_error" if task == "loc" else "top1_cls_error", opts=opts, env=env,
            checkpoints=checkpoints, start=start, tracker=tracker, log=log)
    finally:
        if checkpoints.tensorboard is not None:
            checkpoints.tensorboard.close()
    _log_decoding(batches, env, log)
    checkpoints.save_final()
    distributed.barrier()
    log(f"wrote {run.model}")
    return run.root


def _rank_log(log: Log, env: DistEnv) -> Log:
    """The log for lines every process writes (rank 0 plain, the others prefixed "rank R: ")."""
    if env.is_main:
        return log
    return lambda message: log(f"rank {env.rank}: {message}")


def _open_run(cfg: Config, task: str, root: Path, resume: bool, env: DistEnv, log: Log,
              restart: int = 0) -> tuple[RunDir, dict[str, Any] | None]:
    """The run folder and, for ``--resume`` (or torchelastic's ``restart``) with a checkpoint
    there, its checked last.pt."""
    run = RunDir.prepare(root, resume)
    why = f"torchelastic restart {restart}" if restart else "--resume"
    if resume and not run.resumable:
        log(f"{why}: no checkpoint at {run.last} yet; starting the run fresh")
        resume = False
    elif restart:
        log(f"{why}: resuming from {run.last}")
    last = check_training_checkpoint(load_model_checkpoint(run.last), str(run.last)) if resume else None
    if last is not None:
        _check_resume(cfg, task, last, run.last, env.world_size)
    return run, last


def _arch_source(cfg: Config, task: str, last: dict[str, Any] | None, log: Log) -> tuple[Config, dict[str, Any] | None]:
    """A localisation run takes its architecture from the checkpoint it continues (``last``) or
    starts from (the ``--init`` classifier, returned too); a classification run from ``cfg``."""
    if task != "loc":
        return cfg, None
    if last is not None:
        return _loc_config(cfg, last, log), None
    if not cfg.loc.init:
        raise ConfigError("train-loc needs --init CLS_CHECKPOINT (or loc.init in the config)")
    init = load_model_checkpoint(cfg.loc.init)
    if init.get("kind") == "loc" or (init.get("model") or {}).get("box_head"):
        # Appendix A initialises the localisation net from the classification net
        # trained at the same scale; a localiser's own class head is not that net.
        was = (init.get("meta") or {}).get("init")
        hint = f" (this one was initialised from {was})" if was else ""
        raise ConfigError(f"--init {cfg.loc.init}: a localisation checkpoint; train-loc starts from a classification "
                          f"checkpoint (train-cls){hint}; to continue a localisation run use --resume")
    return _loc_config(cfg, init, log), init


def _loaders(cfg: Config, data: RunData, micro: int, env: DistEnv) -> tuple[Any, Any, int]:
    """(training loader of ``micro``-batches, validation loader, optimiser steps per epoch)."""
    from vgglocal.data.loader import build_loader

    d = cfg.data
    pin = d.pin_memory and env.device.type == "cuda"
    loader = build_loader(
        data.train, micro, shuffle=True, seed=cfg.seed, epoch=0, workers=d.workers, pin_memory=pin,
        persistent_workers=d.persistent_workers, drop_last=True, prefetch_factor=d.prefetch_factor,
        collate_fn=_collate_of(cfg),
    )
    steps = loader.batches_per_epoch // cfg.train.grad_accum
    if steps < 1:
        raise ConfigError(
            f"train.batch_size: {cfg.train.batch_size} is more than the {len(data.train)} training images of {d.root}"
        )
    val_loader = build_loader(data.val, cfg.eval.batch_size, shuffle=False, seed=cfg.seed, workers=d.workers,
                              pin_memory=pin, persistent_workers=d.persistent_workers, prefetch_factor=d.prefetch_factor)
    return loader, val_loader, steps


def _schedule(cfg: Config, steps: int) -> PlateauSchedule:
    """The learning-rate schedule (``optim.*``) over ``steps`` optimiser steps per epoch."""
    o = cfg.optim
    return PlateauSchedule(o.lr, o.lr_decay, o.patience, o.max_decreases, warmup_steps=round(o.warmup_epochs * steps),
                           cosine_steps=cfg.train.epochs * steps if o.schedule == "cosine" else 0)


def _run_meta(cfg: Config, task: str, last: dict[str, Any] | None, log: Log) -> dict[str, Any]:
    """The ``meta`` every checkpoint of the run carries: task, resolved config, training scale,
    the resume history and, for localisation, how the box head was trained."""
    d = cfg.data
    meta = {"task": task, "config": to_dict(cfg), "train_scale": {"scale": d.scale, "scale_min": d.scale_min,
                                                                  "scale_max": d.scale_max}}
    if last is not None:
        meta["resumed"] = _record_resume(cfg, last, log)
    if task == "loc":
        # The frozen classification head reads the features: with `fc` they are the classifier's
        # own, so the model's class scores are exactly the classifier's; with `all` the features
        # moved and the scores are stale: use the classification net's (Appendix A does). Joint
        # training (loc.joint) trains the class head on the moving features, so it stays valid.
        meta.update(regression=cfg.loc.regression, finetune=cfg.loc.finetune, init=cfg.loc.init, joint=cfg.loc.joint,
                    cls_scores_valid=cfg.loc.finetune == "fc" or cfg.loc.joint)
        if cfg.loc.joint:
            meta["cls_weight"] = cfg.loc.cls_weight
    return meta


def _start_position(cfg: Config, run: RunDir, last: dict[str, Any] | None, checkpoints: Checkpointer,
                    optimizer: torch.optim.Optimizer, schedule: PlateauSchedule, tracker: Any,
                    env: DistEnv) -> dict[str, Any] | None:
    """Restore a resumed run's position (optimiser, schedule, random streams; returned) or seed
    a fresh one's per-process streams (None); rank 0 then writes the run folder's files."""
    start = None
    if last is not None:
        start = restore_training(last, optimizer, schedule, env, cfg.seed, tracker)
    else:
        # Dropout streams differ per process, as separate GPUs' would.
        _seed_all(cfg.seed + env.rank)
    if env.is_main:
        run.create(cfg, fresh=start is None)
        if start is not None:
            run.truncate_metrics(start["global_step"])
        if cfg.train.tensorboard:
            from vgglocal.engine.tensorboard import TensorBoard

            checkpoints.tensorboard = TensorBoard(run.root / "tensorboard", start["global_step"] if start else -1)
    return start


def _training_forward(net: VGG, task: str, cfg: Config, env: DistEnv) -> torch.nn.Module:
    """:class:`TrainForward` of ``net``, DDP-wrapped under ``torchrun``, compiled if ``train.compile``."""
    model: torch.nn.Module = TrainForward(net, task, joint=task == "loc" and cfg.loc.joint)
    if env.distributed:
        model = DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    if cfg.train.compile:
        model = torch.compile(model)
    return model


def _step_options(cfg: Config, env: DistEnv, log: Log) -> StepOptions:
    """``train.*`` as the step wants them. Progress bars on a terminal; in a log file (stderr
    redirected) or with train.quiet, a plain line every log_every steps instead of
    carriage-return bar updates."""
    t = cfg.train
    bars = not t.quiet and sys.stderr.isatty()
    return StepOptions(device=env.device, grad_accum=t.grad_accum, precision=t.precision, channels_last=t.channels_last,
                       log_every=t.log_every, checkpoint_every=t.checkpoint_every, progress=env.is_main and bars,
                       log=log if env.is_main and not bars else None)


def _validator(net: VGG, task: str, data: RunData, val_loader: Any, cfg: Config, opts: StepOptions,
               log: Log) -> Callable[[], dict[str, float]]:
    """``() -> metrics`` over the validation split (:func:`~vgglocal.engine.validate.evaluate`:
    ``eval --protocol center-crop``'s evaluators and keys, the nets run as the ``eval`` section
    says); each unreadable validation image is named once per run."""
    from vgglocal.inference.protocols import RunOptions

    run = RunOptions.from_config(cfg.eval, opts.device)
    named: set[str] = set()

    def validate() -> dict[str, float]:
        val_loader.set_epoch(0)
        bad: list[tuple[str, str]] = []
        try:
            return evaluate(net, val_loader, records=data.val_records, opts=run, loc=task == "loc", bad=bad, progress=opts.progress)
        finally:
            for path, message in bad:
                if path not in named:
                    named.add(path)
                    log(f"validation image unreadable, counted as wrong: {message}")

    return validate


def _summary(cfg: Config, task: str, data: RunData, env: DistEnv, micro: int, steps: int, run: RunDir,
             start: dict[str, Any] | None) -> str:
    """The run's first log line: what trains on what, the batch split, where it resumes."""
    m = cfg.model
    what = (f"{cfg.loc.regression.upper()} localisation, fine-tuning {cfg.loc.finetune}" if task == "loc" else "classification")
    return (
        f"{what}: arch {m.arch} (width {m.width:g}, crop {m.crop}), {len(data.classes)} classes, "
        f"{len(data.train)} train / {len(data.val)} val images; batch {cfg.train.batch_size} = "
        f"{env.world_size} process(es) x {cfg.train.grad_accum} x {micro}; {steps} steps/epoch on {env.device.type}; run {run.root}"
        + (f"; resuming at epoch {start['epoch'] + 1}, step {start['step']}" if start else "")
    )


def _log_decoding(batches: Any, env: DistEnv, log: Log) -> None:
    """data.pipeline gpu: where the run's images were decoded (device, workers, host fallback)."""
    windows = getattr(batches, "prepare", None)
    if isinstance(getattr(windows, "counts", None), dict):
        c = windows.counts
        log(f"data.pipeline gpu: {c['device']} images decoded on {env.device.type}, {c['worker']} in the loader's "
            f"workers (not plain JPEG), {c['host_fallback']} on the host after the device decoder refused them")


def train_classifier(cfg: Config, out: str | Path | None = None, resume: bool = False, log: Log | None = None) -> Path:
    """``vgglocal train-cls``: the classification net of section 3.1."""
    return run_training(cfg, "cls", out, resume, log)


def train_localizer(cfg: Config, out: str | Path | None = None, resume: bool = False, log: Log | None = None) -> Path:
    """``vgglocal train-loc``: the localisation net of Appendix A (``cfg.loc``: regression,
    finetune, init)."""
    return run_training(cfg, "loc", out, resume, log)
