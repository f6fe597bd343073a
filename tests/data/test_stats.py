"""RGB statistics: hand-computed mean/PCA, bounded sampling, and the data.stats config hook."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vgglocal.cli import cli
from vgglocal.config import DataConfig
from vgglocal.data.errors import DataError
from vgglocal.data.records import Sample
from vgglocal.data.stats import compute_stats, resolve_stats
from vgglocal.data.synth import SynthSpec, synthesize


def _png(path, rgb):
    Image.fromarray(np.asarray(rgb, np.uint8)).save(path, format="PNG")
    return Sample(str(path), 0)


def test_black_and_white_images_give_hand_computed_stats(tmp_path):
    """Half the pixels 0, half 255 in all channels: mean 127.5, std 127.5, and one principal
    axis (1, 1, 1)/sqrt(3) carrying all the variance: eigenvalue 3 * 0.5^2 in 0..1 units."""
    records = [_png(tmp_path / "black.png", np.zeros((8, 8, 3))), _png(tmp_path / "white.png", np.full((8, 8, 3), 255))]
    s = compute_stats(records)
    np.testing.assert_allclose(s["mean"], [127.5] * 3)
    np.testing.assert_allclose(s["std"], [127.5] * 3)
    np.testing.assert_allclose(s["eigval"], [0.75 * 255, 0, 0], atol=1e-6)
    np.testing.assert_allclose(np.array(s["eigvec"])[:, 0], -np.ones(3) / np.sqrt(3), atol=1e-9)
    vec = np.array(s["eigvec"])
    np.testing.assert_allclose(vec.T @ vec, np.eye(3), atol=1e-9)  # orthonormal columns
    assert s["pixels"] == 128 and s["images"] == 2


def test_independent_channels_and_sampling_bound(tmp_path):
    rng = np.random.default_rng(0)
    x = np.stack([rng.integers(0, 256, (64, 64)), np.full((64, 64), 40), rng.integers(100, 141, (64, 64))], -1)
    records = [_png(tmp_path / f"{i}.png", np.roll(x, i, axis=0)) for i in range(3)]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    records.append(Sample(str(tmp_path / "bad.png"), 0))
    s = compute_stats(records, max_pixels=3000)
    assert s["pixels"] <= 3000 and s["bad_images"] == 1 and s["images"] == 3
    np.testing.assert_allclose(s["mean"], [127.5, 40, 120], atol=6)
    np.testing.assert_allclose(s["std"][1], 0, atol=1e-6)
    # the largest variance is the red channel's: eigenvector ~ ±(1, 0, 0), eigenvalue var/255
    assert abs(s["eigvec"][0][0]) > 0.99
    np.testing.assert_allclose(s["eigval"][0], np.var(x[..., 0]) / 255, rtol=0.15)
    assert s == compute_stats(records, max_pixels=3000)  # seeded
    with pytest.raises(DataError):
        compute_stats([])


def test_resolve_stats_from_config_and_file(tmp_path):
    cfg = DataConfig()
    s = resolve_stats(cfg)
    assert s["mean"] == list(cfg.mean) and s["eigvec"][0] == list(cfg.eigvec[0]) and s["std"] == [1.0] * 3
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"mean": [1, 2, 3], "std": [9, 9, 9], "eigval": [3, 2, 1], "eigvec": np.eye(3).tolist()}))
    s = resolve_stats(DataConfig(stats=str(path)))
    assert s["mean"] == [1, 2, 3] and s["eigval"] == [3, 2, 1] and s["eigvec"] == np.eye(3).tolist()
    assert s["std"] == [1.0] * 3  # the file's std never turns on std division (paper: mean only)
    with pytest.raises(DataError, match=r"data.stats: .*nope.json: no such file"):
        resolve_stats(DataConfig(stats=str(tmp_path / "nope.json")))
    path.write_text(json.dumps({"mean": [1, 2, 3], "eigval": [3, 2, 1]}))
    with pytest.raises(DataError, match="missing key 'eigvec'"):
        resolve_stats(DataConfig(stats=str(path)))
    path.write_text(json.dumps({"mean": [1, 2], "eigval": [3, 2, 1], "eigvec": np.eye(3).tolist()}))
    with pytest.raises(DataError, match="'mean' must be 3 finite numbers"):
        resolve_stats(DataConfig(stats=str(path)))


def test_cli_stats_writes_a_file_resolve_stats_reads(tmp_path):
    synthesize(tmp_path / "s", SynthSpec(classes=2, train=2, val=1, size=32, seed=0))
    out = tmp_path / "stats.json"
    result = CliRunner().invoke(cli, ["data", "stats", str(tmp_path / "s"), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert json.loads(out.read_text()) == printed and printed["images"] == 4
    assert resolve_stats(DataConfig(stats=str(out)))["mean"] == printed["mean"]
