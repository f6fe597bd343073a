"""Where one split of a data set lives on disk: :class:`SplitSpec`, resolved from the config.

Its own module so that the readers (``ilsvrc``, ``voc``, ``coco``), which take a spec, and
:mod:`vgglocal.data.splits`, which picks the reader from its table, do not import each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vgglocal.config import DataConfig

__all__ = ["SplitSpec", "split_spec"]


@dataclass(frozen=True)
class SplitSpec:
    """Where one split lives. Paths are resolved (joined to the root); "" means "use the default".

    Attributes:
        root: data set root.
        name: on-disk split name (train, val, test, trainval, val2017, ...).
        role: "train", "val" or "" for a literal split name.
        images: configured image folder, or "".
        annotations: configured annotation file/folder (COCO JSON, Kaggle CSV, XML folder), or "".
        devkit: configured ILSVRC devkit folder or meta .mat file, or "".
        classes: configured class list file, or "".
        train_name: on-disk name of the training split (ILSVRC classes fall back to its folders).
        train_images: configured training image folder, or "".
    """

    root: str
    name: str
    role: str = ""
    images: str = ""
    annotations: str = ""
    devkit: str = ""
    classes: str = ""
    train_name: str = "train"
    train_images: str = ""

    def at(self, *parts: str) -> str:
        """A path under the root."""
        return os.path.join(self.root, *parts)


def _resolve(root: str, path: str) -> str:
    return "" if not path else path if os.path.isabs(path) else os.path.join(root, path)


def split_spec(cfg: DataConfig, split: str) -> SplitSpec:
    """Resolve a role ("train"/"val") or a literal split name against the config (see module doc)."""
    root = cfg.root
    role = "train" if split in ("train", cfg.train_split) else "val" if split in ("val", cfg.val_split) else ""
    name = cfg.train_split if role == "train" else cfg.val_split if role == "val" else split
    images = {"train": cfg.train_images, "val": cfg.val_images}.get(role, "")
    annotations = {"train": cfg.train_annotations, "val": cfg.val_annotations}.get(role, "")
    return SplitSpec(
        root=root, name=name, role=role,
        images=_resolve(root, images), annotations=_resolve(root, annotations),
        devkit=_resolve(root, cfg.devkit), classes=_resolve(root, cfg.classes),
        train_name=cfg.train_split, train_images=_resolve(root, cfg.train_images),
    )


