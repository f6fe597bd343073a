"""What one ``vgglocal eval`` run does, checked and resolved before any image is read: the
protocol, the split's records and classes, the networks with their test scales, and how the
protocol runs (:class:`~vgglocal.inference.protocols.RunOptions`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vgglocal.config import Config
from vgglocal.data import ClassList, DataError, Sample, read_split, scan_split
from vgglocal.inference.nets import (
    EvalError,
    Net,
    check_class_heads,
    load_nets,
    speed_up,
)
from vgglocal.inference.protocols import LOC_PROTOCOLS, PROTOCOLS, RunOptions
from vgglocal.runtime import resolve_device

__all__ = ["EvalRequest", "EvalJob", "prepare"]

Log = Callable[[str], None]


@dataclass
class EvalRequest:
    """What ``vgglocal eval`` was asked to do (CLI options over the config's ``eval`` section).

    ``scales[i]`` belongs to ``checkpoints[i]``; an empty tuple means ``eval.scales``, or the
    paper's rule from the checkpoint's training scale
    (:func:`~vgglocal.inference.nets.paper_scales`).
    """

    protocol: str
    checkpoints: list[str]
    scales: list[tuple[int, ...]] = field(default_factory=list)
    cls_checkpoints: list[str] = field(default_factory=list)
    cls_scales: tuple[int, ...] = ()
    flip: bool | None = None
    merge_threshold: float | None = None
    draw: int = 0
    split: str = ""  # "" = the validation split (data.val_split); any role or on-disk split name


@dataclass
class EvalJob:
    """A checked request with everything it needs.

    Attributes:
        protocol: one of :data:`~vgglocal.inference.protocols.PROTOCOLS`.
        records, classes: the split.
        nets: the nets the protocol evaluates (see :func:`~vgglocal.inference.protocols.run_protocol`).
        cls_nets: the separate classification system of a localisation protocol; empty: the
            localisation nets' own classification heads.
        options: how the protocol runs.
        split: the on-disk split name.
        has_truth: the split has ground truth (labels or boxes); without it (a test split) the
            run writes submissions and no metrics.
    """

    protocol: str
    records: list[Sample]
    classes: ClassList
    nets: list[Net]
    cls_nets: list[Net]
    options: RunOptions
    split: str = ""
    has_truth: bool = True

    @property
    def localizes(self) -> bool:
        return self.protocol in LOC_PROTOCOLS


def prepare(cfg: Config, req: EvalRequest, *, progress: bool = False, log: Log | None = None,
            device: torch.device | None = None) -> EvalJob:
    """Check ``req``, read ``cfg.data``'s validation split, load the nets."""
    log = log or (lambda msg: None)
    if req.protocol not in PROTOCOLS:
        raise EvalError(f"--protocol {req.protocol!r}: choose from {', '.join(PROTOCOLS)}")
    if not req.checkpoints:
        raise EvalError("give at least one --checkpoint")
    loc = req.protocol in LOC_PROTOCOLS
    if req.protocol == "center-crop" and len(req.checkpoints) != 1:
        raise EvalError("center-crop (protocol 1) evaluates one --checkpoint")
    ev = cfg.eval
    device = device if device is not None else resolve_device(ev.device)  # a torchrun rank: its own device
    options = RunOptions.from_config(ev, device, flip=req.flip, merge_threshold=req.merge_threshold)
    split = req.split or cfg.data.val_split
    records, classes, has_truth = _read(cfg, split, "loc" if loc else "cls", progress)
    if req.protocol == "center-crop" and not has_truth:
        raise EvalError(f"split {split!r} has no ground truth, and center-crop (protocol 1) localises the ground-truth class; "
                        "use --protocol full for a submission")
    nets = load_nets(req.checkpoints, req.scales, tuple(ev.scales), req.protocol, classes, loc, device)
    if req.protocol == "center-crop" and len(nets[0].scales) != 1:
        raise EvalError(f"center-crop uses one scale S; got {list(nets[0].scales)}")
    cls_nets: list[Net] = []
    if loc and req.cls_checkpoints:
        cls_nets = load_nets(req.cls_checkpoints, [req.cls_scales] if req.cls_scales else [], tuple(ev.scales), "cls-dense", classes, False, device)
    elif req.protocol == "full":
        check_class_heads(nets)
    for n in {id(x): x for x in nets + cls_nets}.values():
        speed_up(n.model, options)
        log(f"{Path(n.name).name}: arch {n.model.arch}, crop {n.model.crop}, scales {list(n.scales)}")
    return EvalJob(req.protocol, records, classes, nets, cls_nets, options, split=split, has_truth=has_truth)


def _read(cfg: Config, split: str, task: str, progress: bool) -> tuple[list[Sample], ClassList, bool]:
    """The split's records for ``task``; a split without any ground truth (ILSVRC test) gives
    all its images and ``has_truth`` False instead of the "no labelled images" error."""
    try:
        # Images the ground truth lists but the disk lacks stay in: they are scored as wrong, as
        # the devkit scores an image without a prediction.
        records, classes = read_split(cfg.data, split, task, progress=progress, with_missing=True)
        return records, classes, True
    except DataError:
        scan = scan_split(cfg.data, split, "all", progress=progress)
        if scan.records and not any(r.label >= 0 or len(r.boxes) for r in scan.records):
            return scan.records, scan.classes, False
        raise
