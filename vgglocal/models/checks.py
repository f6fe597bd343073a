"""Structure checks for model checkpoints, run before anything the file describes is allocated.

A checkpoint is data from outside: its recorded architecture could ask for terabytes (``width``
1e6), a negative number of classes, or tensors of the wrong shape. Every field is checked
against its type and a sane range, the parameter count of the architecture is computed on
PyTorch's ``meta`` device (shapes only, no memory), and every tensor is compared with the shape
that architecture expects. Each fault is one :class:`~vgglocal.checkpoint.CheckpointError`
naming the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from vgglocal.checkpoint import CheckpointError
from vgglocal.config import TRAIN_TASKS
from vgglocal.models.vgg import STRIDE, VGG, VGG_SPECS

__all__ = ["MAX_PARAMS", "HPARAM_RULES", "check_hparams", "check_model_checkpoint", "expected_shapes", "check_tensors"]

# 2^31 parameters (8 GiB in float32) is 15 times VGG-E at full width: anything above is not a
# model this package trains.
MAX_PARAMS = 2**31


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# key -> (check, what it must be). Bounds are far beyond any real VGG, far below a bomb.
HPARAM_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "arch": (lambda v: v in VGG_SPECS, f"one of {', '.join(VGG_SPECS)}"),
    "num_classes": (lambda v: _is_int(v) and 1 <= v <= 1_000_000, "an integer in [1, 1000000]"),
    "width": (lambda v: _is_num(v) and 0 < v <= 16, "a number in (0, 16]"),
    "fc_width": (lambda v: _is_int(v) and 0 <= v <= 1 << 17, "an integer in [0, 131072]"),
    "crop": (lambda v: _is_int(v) and STRIDE <= v <= 4096 and v % STRIDE == 0, f"a multiple of {STRIDE} in [32, 4096]"),
    "batch_norm": (lambda v: isinstance(v, bool), "true or false"),
    "dropout": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "box_head": (lambda v: v in (None, "scr", "pcr"), "null, scr or pcr"),
}
_REQUIRED = ("arch", "num_classes")


def check_hparams(hp: Any, source: str) -> dict[str, Any]:
    """The builder arguments of a checkpoint's ``model`` entry, checked (types, ranges, size)."""
    if not isinstance(hp, dict):
        raise CheckpointError(f"{source}: 'model' must be a dict of architecture settings, got {type(hp).__name__}")
    for key in hp:
        if key not in HPARAM_RULES:
            raise CheckpointError(f"{source}: unknown architecture setting model.{key}")
    for key in _REQUIRED:
        if key not in hp:
            raise CheckpointError(f"{source}: 'model' has no {key!r}")
    for key, value in hp.items():
        ok, what = HPARAM_RULES[key]
        if not ok(value):
            raise CheckpointError(f"{source}: model.{key} is {value!r}; it must be {what}")
    n = sum(math.prod(s) for s in expected_shapes(hp).values())
    if n > MAX_PARAMS:
        raise CheckpointError(f"{source}: the recorded architecture has {n:,} parameters, more than the limit {MAX_PARAMS:,}")
    return dict(hp)


def expected_shapes(hp: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Shapes of every state-dict entry of ``VGG(**hp)``, computed on the meta device (no memory)."""
    with torch.device("meta"):
        model = VGG(**hp)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_tensors(state: Any, shapes: dict[str, tuple[int, ...]], source: str, what: str = "state_dict") -> None:
    """``state`` has exactly the keys of ``shapes``, each a tensor of that shape."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: {what!r} must be a dict of tensors, got {type(state).__name__}")
    missing = [k for k in shapes if k not in state]
    unexpected = [k for k in state if k not in shapes]
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not fit the recorded architecture (missing {missing[:3]}, "
                              f"unexpected {[str(k) for k in unexpected[:3]]})")
    for key, shape in shapes.items():
        value = state[key]
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{source}: {key} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != shape:
            raise CheckpointError(f"{source}: {key} has shape {list(value.shape)}, the architecture needs {list(shape)}")


def _check_normalization(norm: Any, source: str) -> None:
    if norm is None:
        return
    if not isinstance(norm, dict) or set(norm) - {"mean", "std"} or not {"mean", "std"} <= set(norm):
        raise CheckpointError(f"{source}: 'normalization' must be {{'mean': [3 numbers], 'std': [3 numbers]}}")
    for key in ("mean", "std"):
        v = norm[key]
        if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_num(x) for x in v)):
            raise CheckpointError(f"{source}: normalization.{key} must be 3 finite numbers, got {v!r}")
    if any(x <= 0 for x in norm["std"]):
        raise CheckpointError(f"{source}: normalization.std must be positive, got {norm['std']!r}")


def check_model_checkpoint(ckpt: dict[str, Any], source: str) -> dict[str, Any]:
    """Check a loaded checkpoint's model entries (``kind``, ``model``, ``state_dict``,
    ``normalization``, ``classes``, ``class_names``, ``meta``); returns the checked builder arguments.

    Raises:
        CheckpointError: one line naming ``source`` and the first fault.
    """
    for key in ("model", "state_dict"):
        if key not in ckpt:
            raise CheckpointError(f"{source}: a vgglocal checkpoint without {key!r} (not a model checkpoint)")
    hp = check_hparams(ckpt["model"], source)
    kind = ckpt.get("kind")
    if kind is not None:
        want = "loc" if hp.get("box_head") else "cls"
        if kind not in TRAIN_TASKS:
            raise CheckpointError(f"{source}: kind {kind!r} is not one of {', '.join(TRAIN_TASKS)}")
        if kind != want:
            raise CheckpointError(f"{source}: kind {kind!r} does not match model.box_head {hp.get('box_head')!r}")
    check_tensors(ckpt["state_dict"], expected_shapes(hp), source)
    _check_normalization(ckpt.get("normalization"), source)
    for key in ("classes", "class_names"):  # ids, and their readable names
        classes = ckpt.get(key)
        if classes is not None:
            if not (isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes)):
                raise CheckpointError(f"{source}: {key!r} must be a list of class names")
            if len(classes) != hp["num_classes"]:
                raise CheckpointError(f"{source}: {key!r} lists {len(classes)} names for model.num_classes {hp['num_classes']}")
    if ckpt.get("meta") is not None and not isinstance(ckpt["meta"], dict):
        raise CheckpointError(f"{source}: 'meta' must be a dict, got {type(ckpt['meta']).__name__}")
    return hp
