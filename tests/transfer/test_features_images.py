"""``vgglocal features`` of any images (files, folders, globs, file lists; no config) and of a
split of any data format (ILSVRC, COCO), and ``vgglocal.FeatureExtractor`` giving the same
descriptors from Python."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import vgglocal
from vgglocal.cli import cli
from vgglocal.config import load_config
from vgglocal.data import read_split
from vgglocal.data.synth import SynthSpec, synthesize
from vgglocal.models.io import save_model
from vgglocal.models.vgg import build_vgg

SETTINGS = ["--set", "transfer.scales=[32,48]", "--set", "transfer.workers=0", "--set", "transfer.device=cpu",
            "--set", "transfer.batch_size=2"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny checkpoint and a few photos of different shapes: a folder with a subfolder, a
    loose folder read by a glob, and a file list naming one of each (and a new one)."""
    root = tmp_path_factory.mktemp("images")
    torch.manual_seed(7)
    model = build_vgg("D", num_classes=4, width=0.0625, crop=32, batch_norm=True, init="kaiming")
    ckpt = save_model(model, root / "tiny.pt", {"mean": [120.0, 110.0, 100.0], "std": [58.0] * 3}, classes=list("abcd"))
    rng = np.random.default_rng(0)
    for rel, (h, w) in {"photos/a.jpg": (40, 56), "photos/trip/b.jpg": (48, 36), "loose/c.jpg": (40, 40),
                        "loose/d.png": (36, 60), "listed/e.jpg": (44, 50)}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / rel, quality=95)
    (root / "listed" / "list.txt").write_text("e.jpg\n../loose/c.jpg\n")
    return root, ckpt


def test_features_of_folders_globs_and_file_lists_match_the_python_api(tiny, tmp_path):
    root, ckpt = tiny
    out = tmp_path / "f.npz"
    res = invoke("features", root / "photos", root / "loose" / "*.jpg", root / "listed" / "list.txt", "--checkpoint", ckpt,
                 *SETTINGS, "--out", out, "--quiet")  # no -c: the transfer defaults, overridden by --set
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {"out": str(out), "items": 4, "dim": 256, "n_unreadable": 0}
    z = np.load(out, allow_pickle=False)
    paths = [str(root / p) for p in ("photos/a.jpg", "photos/trip/b.jpg", "loose/c.jpg", "listed/e.jpg")]
    assert z["paths"].tolist() == paths  # argument order; c.jpg once though named twice
    assert z["ids"].tolist() == ["a", "trip/b", "c", "e"]
    assert z["targets"].tolist() == [-1] * 4 and z["classes"].tolist() == [] and z["features"].shape == (4, 256)
    settings = json.loads(str(z["settings"]))
    assert settings["scales"] == [32, 48] and settings["data_format"] == "images" and settings["aggregate"] == "average"
    np.testing.assert_allclose(np.linalg.norm(z["features"], axis=1), 1, rtol=1e-5)

    fx = vgglocal.FeatureExtractor(str(ckpt), scales=(32, 48), device="cpu", batch_size=3)
    np.testing.assert_allclose(fx.describe(paths), z["features"], rtol=1e-5, atol=1e-6)
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    np.testing.assert_allclose(fx.describe(arrays), z["features"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fx.describe(arrays[1])[0], z["features"][1], rtol=1e-5, atol=1e-6)  # one image alone
    # stacked scales: the CLI's and the API's agree too, and differ from the average
    res = invoke("features", *paths[:2], "--checkpoint", ckpt, *SETTINGS, "--aggregate", "stack", "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    stacked = np.load(out, allow_pickle=False)["features"]
    fx_stack = vgglocal.FeatureExtractor([str(ckpt)], scales=[32, 48], aggregate="stack", device="cpu")
    np.testing.assert_allclose(fx_stack.describe(paths[:2]), stacked, rtol=1e-5, atol=1e-6)
    assert stacked.shape == (2, 512) and fx_stack.describe([]).shape == (0, 512)


def test_an_unreadable_image_is_skipped_and_counted(tiny, tmp_path):
    root, ckpt = tiny
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    res = invoke("features", root / "loose", broken, "--checkpoint", ckpt, *SETTINGS, "--out", tmp_path / "f.npz")
    assert res.exit_code == 0, res.output
    assert "broken.jpg" in res.output
    summary = json.loads(res.output[res.output.index('{"out"'):].splitlines()[0])
    assert (summary["items"], summary["n_unreadable"]) == (2, 1)
    z = np.load(tmp_path / "f.npz", allow_pickle=False)
    assert z["ids"].tolist() == ["c", "d"] and len(z["bad"]) == 1


@pytest.mark.parametrize("fmt", ["ilsvrc-kaggle", "coco"])
def test_features_of_a_split_of_any_data_format(tiny, tmp_path, fmt):
    root, ckpt = tiny
    synthesize(tmp_path / "synth", SynthSpec(classes=2, train=1, val=2, size=36))
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"data": {"format": fmt, "root": str(tmp_path / "synth")}}))
    out = tmp_path / "f.npz"
    res = invoke("features", "-c", config, "--split", "val", "--checkpoint", ckpt, *SETTINGS, "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    z = np.load(out, allow_pickle=False)
    records, classes = read_split(load_config(config).data, "val", "all")
    assert z["paths"].tolist() == [r.path for r in records] and len(records) == 4
    assert z["targets"].tolist() == [r.label for r in records] and sorted(set(z["targets"].tolist())) == [0, 1]
    assert z["classes"].tolist() == list(classes.ids) and z["features"].shape == (4, 256)
    fx = vgglocal.FeatureExtractor(ckpt, scales=(32, 48), device="cpu")
    np.testing.assert_allclose(fx.describe(z["paths"].tolist()), z["features"], rtol=1e-5, atol=1e-6)
    # --boxes has no item boxes to read here
    res = invoke("features", "-c", config, "--split", "val", "--checkpoint", ckpt, "--boxes", "--out", out)
    assert res.exit_code == 2 and res.output.strip().splitlines()[-1].startswith(f"error: --boxes: data.format {fmt}")


def test_features_user_errors(tiny, tmp_path):
    root, ckpt = tiny
    res = invoke("features", tmp_path / "nope.jpg", "--checkpoint", ckpt, "--out", tmp_path / "f.npz")
    assert res.exit_code == 2 and res.output.strip() == f"error: image not found: {tmp_path / 'nope.jpg'}"
    res = invoke("features", tmp_path / "*.png", "--checkpoint", ckpt, "--out", tmp_path / "f.npz")
    assert res.exit_code == 2 and res.output.strip() == f"error: {tmp_path / '*.png'}: no file matches this pattern"
    res = invoke("features", "--checkpoint", ckpt, "--out", tmp_path / "f.npz")
    assert res.exit_code == 2 and "give IMAGES" in res.output
    res = invoke("features", root / "photos", "--split", "val", "--checkpoint", ckpt, "--out", tmp_path / "f.npz")
    assert res.exit_code == 2 and "--split reads -c's data" in res.output
    assert not (tmp_path / "f.npz").exists()
    with pytest.raises(vgglocal.errors.UserError, match="aggregate 'max'"):
        vgglocal.FeatureExtractor(ckpt, aggregate="max")
