"""Training-set RGB statistics: the mean the paper subtracts (section 2.1) and the PCA of the RGB
covariance behind Krizhevsky's colour shift (section 3.1), from sampled pixels.

Units and conventions (all 0..255, R, G, B order):

- ``mean`` (3,), ``std`` (3,): per-channel pixel mean and standard deviation.
- ``eigvec`` (3x3): **columns** are the eigenvectors of the RGB covariance (``eigvec[i][j]`` is
  channel i of eigenvector j), sorted by decreasing eigenvalue, sign fixed so each column sums
  to <= 0 (as in the ImageNet values of fb.resnet.torch, the config default).
- ``eigval`` (3,): the covariance eigenvalues of pixels **in 0..1 units**, times 255. That is
  the scale every implementation of the colour shift uses (Krizhevsky's eigenvalues on 0..1
  pixels; fb.resnet.torch's 0.2175, 0.0188, 0.0045 are the config's 55.46, 4.794, 1.148), so
  the shift ``eigvec @ (alpha * eigval)`` with ``alpha ~ N(0, data.pca_std)`` is in 0..255
  units and a few levels in size.

Memory is bounded: at most ``max_images`` images are decoded (a seeded random subset), and at
most ``max_pixels`` pixels sampled in all; sums are accumulated in float64.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
from tqdm import tqdm

from vgglocal.config import DataConfig
from vgglocal.data.errors import BadImageError, DataError
from vgglocal.data.images import load_rgb
from vgglocal.data.records import Sample

__all__ = ["compute_stats", "resolve_stats", "write_stats"]


def compute_stats(records: list[Sample], max_pixels: int = 4_000_000, max_images: int = 2000, seed: int = 0,
                  progress: bool = False) -> dict[str, Any]:
    """Mean, std and RGB PCA of a list of records' images (module doc for units).

    Args:
        records: the images (typically the training split).
        max_pixels: pixels sampled in all (spread evenly over the decoded images).
        max_images: images decoded at most (a seeded random subset when there are more).
        seed: picks the images and the pixels.

    Returns:
        {"mean": [3], "std": [3], "eigval": [3], "eigvec": [[3] x 3], "images": n decoded,
        "pixels": n sampled, "bad_images": n skipped}.

    Raises:
        DataError: no records, or none of the chosen images could be decoded.
    """
    if not records:
        raise DataError("compute_stats: no images")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(records), size=min(max_images, len(records)), replace=False)
    per_image = max(1, max_pixels // len(chosen))
    total = np.zeros(3)
    outer = np.zeros((3, 3))
    count = 0
    bad = 0
    for i in tqdm(sorted(chosen.tolist()), desc="stats", unit="img", disable=not progress, mininterval=1.0):
        try:
            rgb = load_rgb(records[i].path).reshape(-1, 3)
        except BadImageError:
            bad += 1
            continue
        take = rgb if len(rgb) <= per_image else rgb[rng.choice(len(rgb), size=per_image, replace=False)]
        x = take.astype(np.float64)
        total += x.sum(0)
        outer += x.T @ x
        count += len(x)
    if count == 0:
        raise DataError(f"compute_stats: none of the {len(chosen)} chosen images could be decoded")
    mean = total / count
    cov = outer / count - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(cov / 255.0**2)  # 0..1 units (module doc)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0, None), vectors[:, order]
    vectors *= np.where(vectors.sum(0) > 0, -1.0, 1.0)  # a deterministic sign per column
    return {
        "mean": mean.tolist(),
        "std": np.sqrt(np.clip(np.diag(cov), 0, None)).tolist(),
        "eigval": (values * 255.0).tolist(),
        "eigvec": vectors.tolist(),
        "images": len(chosen) - bad,
        "pixels": int(count),
        "bad_images": bad,
    }


def write_stats(stats: dict[str, Any], path: str | os.PathLike) -> None:
    """Write stats as JSON (what ``data.stats`` points at)."""
    with open(path, "w") as f:
        json.dump(stats, f, indent=1)
        f.write("\n")


def _vector(value: Any, path: str, key: str, shape: tuple[int, ...]) -> list:
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != shape or not np.isfinite(arr).all():
        raise DataError(f"{path}: {key!r} must be {'x'.join(map(str, shape))} finite numbers, got {value!r}")
    return arr.tolist()


def resolve_stats(data_cfg: DataConfig) -> dict[str, list]:
    """The colour statistics a run uses: {"mean": [3], "std": [3], "eigval": [3], "eigvec": [3][3]}.

    ``mean``, ``eigval`` and ``eigvec`` come from the JSON at ``data.stats`` when it is set
    (relative to the working folder), else from the config values. ``std`` always comes from
    ``data.std``: the paper subtracts the mean and nothing else, so a stats file (which records
    the data's std for reference) never turns on std division by itself.

    Raises:
        DataError: the file is missing, not JSON, or lacks/garbles a key; one line naming it.
    """
    out = {"mean": list(data_cfg.mean), "std": list(data_cfg.std), "eigval": list(data_cfg.eigval),
           "eigvec": [list(r) for r in data_cfg.eigvec]}
    if not data_cfg.stats:
        return out
    path = data_cfg.stats
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise DataError(f"data.stats: {path}: no such file (write it with `vgglocal data stats`)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"data.stats: {path}: not a JSON stats file ({e})") from None
    if not isinstance(doc, dict):
        raise DataError(f"data.stats: {path}: expected a JSON object with mean, eigval, eigvec")
    for key, shape in (("mean", (3,)), ("eigval", (3,)), ("eigvec", (3, 3))):
        if key not in doc:
            raise DataError(f"data.stats: {path}: missing key {key!r}")
        out[key] = _vector(doc[key], path, key, shape)
    if any(v < 0 or math.isnan(v) for v in out["eigval"]):
        raise DataError(f"data.stats: {path}: 'eigval' must be non-negative, got {out['eigval']}")
    return out
