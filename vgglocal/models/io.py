"""Load and save vgglocal models; import torchvision's VGG weights.

A model checkpoint holds ``model`` (the builder's plain arguments), ``state_dict``,
``normalization`` (``mean`` and ``std`` in 0..255 pixel units: the network sees
``(x - mean) / std``), and optionally ``classes`` (ids in index order: wnids, VOC or COCO
category names), ``class_names`` (human-readable, the same order: the ILSVRC words of
``LOC_synset_mapping.txt`` or the devkit, VOC/COCO names; torchvision's
``weights.meta["categories"]``) and ``meta``. Training checkpoints add optimiser and schedule state beside these keys, so
:func:`load_model` reads those too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vgglocal.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vgglocal.models.checks import check_hparams, check_model_checkpoint, expected_shapes
from vgglocal.models.specs import TORCHVISION_ARCHS
from vgglocal.models.vgg import VGG, VGG_SPECS

__all__ = [
    "TORCHVISION_NORMALIZATION",
    "model_state",
    "save_model",
    "load_model",
    "load_model_checkpoint",
    "model_from_checkpoint",
    "convert_torchvision",
    "import_torchvision",
]

# torchvision's ImageNet weights expect (x/255 - mean) / std with these values.
TORCHVISION_NORMALIZATION = {
    "mean": [0.485 * 255, 0.456 * 255, 0.406 * 255],
    "std": [0.229 * 255, 0.224 * 255, 0.225 * 255],
}


def model_state(
    model: VGG,
    normalization: dict[str, list[float]],
    classes: list[str] | None = None,
    meta: dict[str, Any] | None = None,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """The plain-data description of ``model`` that :func:`load_model` rebuilds."""
    module = getattr(model, "module", model)  # DDP / compiled wrappers
    module = getattr(module, "_orig_mod", module)
    return {
        "kind": "loc" if module.box_head is not None else "cls",
        "model": dict(module.hparams),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "normalization": {"mean": [float(v) for v in normalization["mean"]], "std": [float(v) for v in normalization["std"]]},
        "classes": list(classes) if classes is not None else None,
        "class_names": list(class_names) if class_names is not None else None,
        "meta": dict(meta or {}),
    }


def save_model(model: VGG, path: str | Path, normalization: dict[str, list[float]], classes: list[str] | None = None,
               meta: dict[str, Any] | None = None, class_names: list[str] | None = None) -> Path:
    """Write a model checkpoint atomically."""
    return save_checkpoint(model_state(model, normalization, classes, meta, class_names), path)


def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint") -> VGG:
    """Rebuild the module a checkpoint describes and load its weights (structure, sizes and
    shapes are checked first, :func:`vgglocal.models.checks.check_model_checkpoint`)."""
    hp = check_model_checkpoint(ckpt, source)
    model = VGG(**hp)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:  # e.g. a tensor that cannot be copied (dtype)
        raise CheckpointError(f"{source}: weights do not load ({str(e).strip().splitlines()[-1].strip()[:160]})") from None
    model.normalization = ckpt.get("normalization") or {"mean": [0.0] * 3, "std": [1.0] * 3}
    model.classes = ckpt.get("classes")
    names = ckpt.get("class_names")  # checkpoints from before class names: the ids
    model.class_names = list(names) if names else (list(model.classes) if model.classes is not None else None)
    model.meta = ckpt.get("meta") or {}
    return model


def load_model_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """:func:`~vgglocal.checkpoint.load_checkpoint` plus the model structure checks (nothing
    built): for code that reads ``model``/``classes``/``normalization`` before rebuilding."""
    ckpt = load_checkpoint(path, map_location)
    check_model_checkpoint(ckpt, str(path))
    return ckpt


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> VGG:
    """Load any checkpoint the CLI writes or imports, in ``eval()`` mode.

    The returned module carries ``normalization`` (``{"mean": [...], "std": [...]}``, 0..255
    units), ``classes`` (ids, or None), ``class_names`` (readable names, or the ids, or None)
    and ``meta``. Never executes pickled code.
    """
    ckpt = load_checkpoint(path, map_location)
    model = model_from_checkpoint(ckpt, str(path))
    return model.eval()


def _conv_indices(state_dict: dict[str, Tensor]) -> list[int]:
    """Indices of torchvision's ``features.N`` conv layers (4-D weights), in order."""
    idx = sorted({int(k.split(".")[1]) for k, v in state_dict.items() if k.startswith("features.") and k.endswith(".weight") and v.ndim == 4})
    return idx


def convert_torchvision(state_dict: dict[str, Tensor], arch: str) -> VGG:
    """A vgglocal :class:`VGG` holding torchvision's ``vgg11/13/16/19[_bn]`` weights.

    The Linear classifier becomes FC-as-conv: ``classifier.0`` (25088 → 4096) is reshaped to a
    7x7 conv over 512 channels (torchvision flattens C, H, W), ``classifier.3`` and ``.6`` to
    1x1 convs. torchvision's adaptive 7x7 average pool is the identity on 224 crops.
    """
    if arch not in TORCHVISION_ARCHS:
        raise ValueError(f"arch {arch!r} has no torchvision counterpart; choose from {', '.join(TORCHVISION_ARCHS)}")
    if not all(k in state_dict for k in ("classifier.0.weight", "classifier.3.weight", "classifier.6.weight")):
        raise ValueError("not a torchvision VGG state dict (no classifier.0/3/6 weights)")
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"{key} is a {type(value).__name__}, not a tensor")
    conv_idx = _conv_indices(state_dict)
    batch_norm = any(k.endswith("running_mean") for k in state_dict)
    expected = sum(len(b) for b in VGG_SPECS[arch].blocks)
    if len(conv_idx) != expected:
        found = {len(sum(VGG_SPECS[a].blocks, ())): a for a in TORCHVISION_ARCHS}.get(len(conv_idx), "?")
        raise ValueError(f"--arch {arch} expects {expected} conv layers, the weights have {len(conv_idx)} (arch {found}?)")
    # The FC sizes come from the file: bound them (and check every shape) before building, so a
    # stride-0 tensor claiming a billion classes costs nothing.
    hidden = int(state_dict["classifier.0.weight"].shape[0])
    num_classes = int(state_dict["classifier.6.weight"].shape[0])
    try:
        hp = check_hparams({"arch": arch, "num_classes": num_classes, "width": 1.0, "fc_width": hidden, "crop": 224,
                            "batch_norm": batch_norm}, "the weights")
    except CheckpointError as e:
        raise ValueError(str(e).removeprefix("the weights: ")) from None
    shapes = expected_shapes(hp)
    sources: dict[str, str] = {}  # our key -> torchvision key
    convs = [name for name in shapes if name.startswith("features.conv") and name.endswith(".weight")]
    for name, i in zip((c.split(".")[1] for c in convs), conv_idx, strict=True):
        sources[f"features.{name}.weight"] = f"features.{i}.weight"
        sources[f"features.{name}.bias"] = f"features.{i}.bias"
        if batch_norm:
            bn = name.replace("conv", "bn")
            for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                sources[f"features.{bn}.{p}"] = f"features.{i + 1}.{p}"
    for ours_name, tv in (("fc6", "classifier.0"), ("fc7", "classifier.3"), ("fc8", "classifier.6")):
        sources[f"cls_head.{ours_name}.weight"] = f"{tv}.weight"
        sources[f"cls_head.{ours_name}.bias"] = f"{tv}.bias"
    mapped: dict[str, Tensor] = {}
    for ours_key, tv_key in sources.items():
        if tv_key not in state_dict:
            if tv_key.endswith("num_batches_tracked"):
                continue  # older torchvision files have none; strict loading below allows it
            raise ValueError(f"{tv_key} is missing")
        w, target = state_dict[tv_key], shapes[ours_key]
        # FC layers are Linear in torchvision: same numbers, viewed as (out, C, k, k) convs.
        if w.numel() != math.prod(target) or (w.ndim != len(target) and not ours_key.startswith("cls_head")):
            raise ValueError(f"{tv_key} has shape {list(w.shape)}; arch {arch} needs {list(target)}")
        mapped[ours_key] = w.reshape(target)
    if sorted(k for k in shapes if k not in mapped and not k.endswith("num_batches_tracked")):
        raise ValueError(f"the weights lack {[k for k in shapes if k not in mapped][:3]}")
    model = VGG(**hp)
    model.load_state_dict(mapped, strict=False)
    model.normalization = dict(TORCHVISION_NORMALIZATION)
    model.classes = None
    model.class_names = None
    model.meta = {"source": f"torchvision {TORCHVISION_ARCHS[arch]}{'_bn' if batch_norm else ''}"}
    return model.eval()


def import_torchvision(path: str | Path, arch: str, out: str | Path) -> VGG:
    """Read a torchvision VGG ``state_dict`` file (``torch.save(model.state_dict())``), convert
    it with :func:`convert_torchvision`, and save a vgglocal checkpoint at ``out``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user error
        raise CheckpointError(f"{path}: not a readable torch state dict ({str(e).splitlines()[0][:120]})") from None
    if isinstance(sd, nn.Module) or not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a state dict (torch.save(model.state_dict()))")
    sd = sd.get("state_dict", sd) if isinstance(sd.get("state_dict"), dict) else sd
    try:
        model = convert_torchvision(sd, arch)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    save_model(model, out, model.normalization, classes=None, meta=model.meta)
    return model
