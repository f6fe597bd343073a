"""Networks with their test scales: loading checkpoints for a protocol, checking them against
the data set's classes, and the paper's rule for the test scales Q (section 4.2, Table 9)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vgglocal.data.records import ClassList
from vgglocal.errors import UserError
from vgglocal.inference.options import InferenceOptions
from vgglocal.models.io import load_model
from vgglocal.models.vgg import VGG, fold_batch_norm

__all__ = ["speed_up", "EvalError", "Net", "parse_scales", "paper_scales", "load_net", "load_nets",
           "check_class_heads", "scales_desc"]


class EvalError(UserError):
    """A user error in an evaluation or prediction request (checkpoint kind, classes, scales)."""


@dataclass
class Net:
    """A network with the test scales Q it is applied at (Table 9's "384/352,384": S=384, Q={352, 384})."""

    model: VGG
    scales: tuple[int, ...]
    name: str = ""


def parse_scales(text: str) -> tuple[int, ...]:
    """``"352,384"`` or Table 9's ``"384/352,384"`` (training S / test Qs) → ``(352, 384)``."""
    part = text.split("/", 1)[-1] if "/" in text else text
    try:
        scales = tuple(int(v) for v in part.replace(" ", "").split(",") if v)
    except ValueError:
        raise EvalError(f"--scales {text!r}: expected comma-separated sizes such as 256 or 384/352,384") from None
    if not scales or any(q <= 0 for q in scales):
        raise EvalError(f"--scales {text!r}: expected positive sizes")
    return scales


def paper_scales(model: VGG, protocol: str) -> tuple[int, ...]:
    """Test scales from the checkpoint's training scale (section 4.2): fixed S → {S-32, S, S+32};
    jittered [Smin, Smax] → {Smin, (Smin+Smax)/2, Smax}; protocol 1 (center-crop) → S, or the
    middle of the jitter range. Without the information (imported weights): 256."""
    ts = (getattr(model, "meta", None) or {}).get("train_scale") or {}
    s, lo, hi = ts.get("scale"), ts.get("scale_min"), ts.get("scale_max")
    if hi:
        mid = (lo + hi) // 2
        return (mid,) if protocol == "center-crop" else (lo, mid, hi)
    if s:
        return (s,) if protocol == "center-crop" else (max(s - 32, 32), s, s + 32)
    return (256,)


def scales_desc(net: Net) -> str:
    """Table 9's notation: training scale / test scales, e.g. ``384/352,384`` or
    ``256-512/256,384,512``; just the test scales when the training scale is unknown."""
    ts = (getattr(net.model, "meta", None) or {}).get("train_scale") or {}
    train = f"{ts['scale_min']}-{ts['scale_max']}" if ts.get("scale_max") else str(ts["scale"]) if ts.get("scale") else ""
    tests = ",".join(str(q) for q in net.scales)
    return f"{train}/{tests}" if train else tests


def load_net(path: str, classes: ClassList | None, need_boxes: bool, device: torch.device) -> VGG:
    """Load one checkpoint in eval mode on ``device``, checked against ``classes`` (count and
    order; None skips the check) and, with ``need_boxes``, for a box head."""
    model = load_model(path)
    if classes is not None:
        if model.num_classes != len(classes):
            raise EvalError(f"{path}: the model has {model.num_classes} classes, the data set {len(classes)}")
        if model.classes is not None and list(model.classes) != list(classes.ids):
            same_length = len(model.classes) == len(classes.ids)
            diff = next(i for i, (a, b) in enumerate(zip(model.classes, classes.ids, strict=True)) if a != b) if same_length else 0
            raise EvalError(f"{path}: class {diff} is {model.classes[diff]!r} in the model and {classes.ids[diff]!r} in the data set")
    if need_boxes and model.box_head is None:
        raise EvalError(f"{path}: a classification checkpoint; this protocol needs a localisation one (train-loc)")
    return model.to(device)


def check_class_heads(nets: Sequence[Net]) -> None:
    """Refuse localisation nets whose own classification head no longer matches their features.

    Fine-tuning all layers for localisation (Appendix A, ``--finetune all``) changes the conv
    features under the class head, which is not trained any more, so its scores would rank the
    boxes at random; such checkpoints say so in their metadata (``cls_scores_valid``), and need
    a separate classification system.
    """
    for n in nets:
        meta = getattr(n.model, "meta", None) or {}
        if meta.get("cls_scores_valid") is False:
            init = f" (it was initialised from {meta['init']})" if meta.get("init") else ""
            raise EvalError(f"{n.name}: its classification head no longer matches its features (trained with --finetune all); "
                            f"give the classifier with --cls-checkpoint{init}")


def load_nets(paths: Sequence[str], scales: Sequence[tuple[int, ...]], default: tuple[int, ...], protocol: str,
              classes: ClassList | None, need_boxes: bool, device: torch.device) -> list[Net]:
    """Load checkpoints with their scales: ``scales`` per path, or one for all, else ``default``
    (the config's ``eval.scales``), else the paper's rule (:func:`paper_scales`)."""
    if len(scales) > 1 and len(scales) != len(paths):
        raise EvalError(f"{len(scales)} --scales for {len(paths)} --checkpoint: give one per checkpoint, or one for all")
    nets = []
    for k, path in enumerate(paths):
        model = load_net(path, classes, need_boxes, device)
        qs = scales[k] if len(scales) > 1 else scales[0] if scales else ()
        nets.append(Net(model, tuple(qs or default or paper_scales(model, protocol)), name=path))
    return nets


def speed_up(model: VGG, opts: InferenceOptions) -> VGG:
    """``opts.fold_bn`` / ``opts.channels_last`` / ``opts.compile`` (``eval.fold_bn`` /
    ``eval.channels_last`` / ``eval.compile``) on a net loaded for evaluation (in place; returned).

    fold_bn: each batch norm folded into the convolution before it
    (:func:`vgglocal.models.vgg.fold_batch_norm`), first, so that the later steps see the
    folded convolutions.

    channels_last: the weights in that memory format, so every convolution runs in it (the
    input follows the first conv's weights). compile: the convolutional trunk
    (``model.features``, in place) through ``torch.compile`` with dynamic shapes, since dense
    evaluation feeds many image sizes; the FC heads run eagerly. Compiling ``maps`` whole
    specialised a graph whenever a head map side was 1 (a side of exactly Q = crop, or the
    batch of one): dynamo treats sizes 0 and 1 as constants even with ``dynamic=True``
    ("0/1 specialization", torch.compiler dynamic-shapes docs), so three scales and a few
    image sizes made about four graphs per net, and the nets together ran into the
    recompile limit (``torch._dynamo.config.recompile_limit``, 8). The trunk's input is
    padded to at least the crop, so its map sides are never below crop/32 (7 for 224).
    """
    if opts.fold_bn:
        fold_batch_norm(model.eval())
    if opts.channels_last:
        model.to(memory_format=torch.channels_last)
    if opts.compile:
        model.features.compile(dynamic=True)
    return model
