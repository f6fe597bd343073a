"""Shared helpers for the engine tests: a tiny in-memory data set in the loader's item format."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset


class PatternItems(Dataset):
    """``n`` items of learnable random data: class ``c`` brightens colour channel ``c % 3`` in a
    box whose (encoded) position is the localisation target. Keys as ``SampleDataset``'s."""

    def __init__(self, n: int = 24, crop: int = 32, classes: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % classes
        self.images = torch.randn(n, 3, crop, crop, generator=g) * 0.5
        lo = torch.randint(0, crop // 2, (n, 2), generator=g)
        size = torch.randint(crop // 4, crop // 2, (n, 2), generator=g)
        self.targets = torch.zeros(n, 4)
        for i in range(n):
            x0, y0 = lo[i].tolist()
            w, h = size[i].tolist()
            self.images[i, self.labels[i] % 3, y0:y0 + h, x0:x0 + w] += 2.0
            self.targets[i] = torch.tensor([(x0 + w / 2) / crop, (y0 + h / 2) / crop, w / crop, h / crop])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key):
        i = key[1] if isinstance(key, tuple) else key
        return {
            "image": self.images[i],
            "label": self.labels[i],
            "target": self.targets[i],
            "target_label": self.labels[i],
            "index": torch.tensor(i),
            "origin": torch.zeros(2),
            "scale": torch.tensor(1.0),
            "flipped": torch.tensor(False),
        }


@pytest.fixture
def items():
    """``items(n)`` → a :class:`PatternItems` data set (tests import nothing from conftest:
    the suite runs with ``--import-mode=importlib``)."""
    return PatternItems
