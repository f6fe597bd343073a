"""``build_model``: the only place a model is made from a config (the builders below take plain arguments)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vgglocal.config import ConfigError, ModelConfig
from vgglocal.models.specs import VGG_SPECS

if TYPE_CHECKING:
    from vgglocal.models.vgg import VGG

__all__ = ["check_arch", "build_model"]


def check_arch(cfg: ModelConfig) -> None:
    """One line for a ``model.arch`` that is not a Table 1 configuration. The table lives with
    the models (not in the config); this check needs no torch, so the training commands ask it
    right after reading the config."""
    if cfg.arch not in VGG_SPECS:
        raise ConfigError(f"model.arch: unknown arch {cfg.arch!r}; choose from {', '.join(VGG_SPECS)}")


def build_model(cfg: ModelConfig, box_head: str | None = None) -> VGG:
    """Build the classifier ``cfg`` describes: fresh init, then net-A layers (``init_from``)
    or a whole checkpoint (``pretrained``) when given."""
    from vgglocal.checkpoint import CheckpointError
    from vgglocal.models.io import load_model_checkpoint
    from vgglocal.models.vgg import build_vgg, copy_from_net_a

    check_arch(cfg)
    model = build_vgg(
        cfg.arch,
        num_classes=cfg.num_classes,
        width=cfg.width,
        fc_width=cfg.fc_width,
        crop=cfg.crop,
        batch_norm=cfg.batch_norm,
        dropout=cfg.dropout,
        box_head=box_head,
        init=cfg.init,
        init_std=cfg.init_std,
    )
    if cfg.init_from:
        ckpt = load_model_checkpoint(cfg.init_from)
        try:
            copy_from_net_a(model, ckpt["state_dict"])
        except (ValueError, KeyError) as e:
            raise ConfigError(f"model.init_from: {cfg.init_from}: {e}") from None
    if cfg.pretrained:
        ckpt = load_model_checkpoint(cfg.pretrained)
        own = model.state_dict()
        state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("box_head.") or box_head}
        bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if bad:
            raise CheckpointError(f"model.pretrained: {cfg.pretrained}: shapes differ for {bad[:3]} (arch, width, crop, classes must match)")
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("box_head.")]
        if missing or unexpected:
            raise CheckpointError(f"model.pretrained: {cfg.pretrained}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model
