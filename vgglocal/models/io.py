"""Load and save vgglocal models; import torchvision's VGG weights.

A model checkpoint holds ``model`` (the builder's plain arguments), ``state_dict``,
``normalization`` (``mean`` and ``std`` in 0..255 pixel units: the network sees
``(x - mean) / std``), and optionally ``classes`` (wnids or names, index order) and
``meta``. Training checkpoints add optimiser and schedule state beside these keys, so
:func:`load_model` reads those too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vgglocal.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vgglocal.models.vgg import VGG, VGG_SPECS

__all__ = [
    "TORCHVISION_NORMALIZATION",
    "model_state",
    "save_model",
    "load_model",
    "model_from_checkpoint",
    "convert_torchvision",
    "import_torchvision",
]

# torchvision's ImageNet weights expect (x/255 - mean) / std with these values.
TORCHVISION_NORMALIZATION = {
    "mean": [0.485 * 255, 0.456 * 255, 0.406 * 255],
    "std": [0.229 * 255, 0.224 * 255, 0.225 * 255],
}
# torchvision builder name ↔ Table 1 configuration.
TORCHVISION_ARCHS = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}


def model_state(
    model: VGG,
    normalization: dict[str, list[float]],
    classes: list[str] | None = None,
    meta: dict[str, Any] | None = None,
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
        "meta": dict(meta or {}),
    }


def save_model(model: VGG, path: str | Path, normalization: dict[str, list[float]], classes: list[str] | None = None, meta: dict[str, Any] | None = None) -> Path:
    """Write a model checkpoint atomically."""
    return save_checkpoint(model_state(model, normalization, classes, meta), path)


def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint") -> VGG:
    """Rebuild the module a checkpoint describes and load its weights."""
    if "model" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{source}: a vgglocal checkpoint without model weights")
    hp = dict(ckpt["model"])
    try:
        model = VGG(**hp)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: cannot rebuild the model ({e})") from None
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.normalization = ckpt.get("normalization") or {"mean": [0.0] * 3, "std": [1.0] * 3}
    model.classes = ckpt.get("classes")
    model.meta = ckpt.get("meta") or {}
    return model


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> VGG:
    """Load any checkpoint the CLI writes or imports, in ``eval()`` mode.

    The returned module carries ``normalization`` (``{"mean": [...], "std": [...]}``, 0..255
    units), ``classes`` (or None) and ``meta``. Never executes pickled code.
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
    conv_idx = _conv_indices(state_dict)
    batch_norm = any(k.endswith("running_mean") for k in state_dict)
    expected = sum(len(b) for b in VGG_SPECS[arch].blocks)
    if len(conv_idx) != expected:
        found = {len(sum(VGG_SPECS[a].blocks, ())): a for a in TORCHVISION_ARCHS}.get(len(conv_idx), "?")
        raise ValueError(f"--arch {arch} expects {expected} conv layers, the weights have {len(conv_idx)} (arch {found}?)")
    fc6 = state_dict["classifier.0.weight"]
    hidden = fc6.shape[0]
    num_classes = state_dict["classifier.6.weight"].shape[0]
    model = VGG(arch, num_classes=num_classes, width=1.0, fc_width=hidden, crop=224, batch_norm=batch_norm)
    ours = model.state_dict()
    mapped: dict[str, Tensor] = {}
    convs = [name for name, _ in model.conv_layers()]
    for name, i in zip(convs, conv_idx, strict=True):
        mapped[f"features.{name}.weight"] = state_dict[f"features.{i}.weight"]
        mapped[f"features.{name}.bias"] = state_dict[f"features.{i}.bias"]
        if batch_norm:
            bn = name.replace("conv", "bn")
            for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                key = f"features.{i + 1}.{p}"
                if key in state_dict:
                    mapped[f"features.{bn}.{p}"] = state_dict[key]
    channels = ours["cls_head.fc6.weight"].shape[1]
    for ours_name, tv in (("fc6", "classifier.0"), ("fc7", "classifier.3"), ("fc8", "classifier.6")):
        w = state_dict[f"{tv}.weight"]
        target = ours[f"cls_head.{ours_name}.weight"].shape
        if ours_name == "fc6" and w.shape[1] != channels * target[2] * target[3]:
            raise ValueError(f"{tv}.weight has {w.shape[1]} inputs; expected {channels}x7x7")
        mapped[f"cls_head.{ours_name}.weight"] = w.reshape(target)
        mapped[f"cls_head.{ours_name}.bias"] = state_dict[f"{tv}.bias"]
    model.load_state_dict(mapped, strict=True)
    model.normalization = dict(TORCHVISION_NORMALIZATION)
    model.classes = None
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
