"""``vgglocal features`` and ``vgglocal transfer`` end to end on tiny generated and hand-made
data sets with a tiny net: files written, metrics in range, caches reused, bad images counted,
user errors one line."""

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vgglocal.cli import cli
from vgglocal.data.synth import SynthSpec, synthesize
from vgglocal.data.voc_labels import VOC_ACTIONS
from vgglocal.models.io import save_model
from vgglocal.models.vgg import build_vgg
from vgglocal.transfer.features import FeatureSet

TRANSFER = {"scales": [32, 48], "train_per_class": 6, "test_per_class": 0, "splits": 2, "workers": 0, "batch_size": 4,
            "device": "cpu"}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny checkpoint and a 3-class Caltech-layout transfer set (10 images per class)."""
    root = tmp_path_factory.mktemp("transfer")
    torch.manual_seed(123)  # not the random baseline's seed (`seed` 0), which would rebuild these very weights
    model = build_vgg("D", num_classes=4, width=0.0625, crop=32, batch_norm=True, init="kaiming")
    ckpt = save_model(model, root / "tiny.pt", {"mean": [120.0] * 3, "std": [58.0] * 3}, classes=list("abcd"),
                      meta={"config": {"model": {"init": "kaiming", "init_std": 0.01}}})
    synthesize(root / "set", SynthSpec(classes=3, train=8, val=2, size=40, first_shape=10, layout="caltech"))
    config = root / "caltech.yaml"
    config.write_text(json.dumps({"data": {"format": "caltech", "root": str(root / "set")},
                                  "transfer": {"protocol": "caltech", "aggregate": "stack", **TRANSFER}}))
    return root, ckpt, config


def test_caltech_transfer_cache_and_random_baseline(tiny):
    root, ckpt, config = tiny
    res = invoke("transfer", "-c", config, "--checkpoint", ckpt, "--out", root / "stack", "--quiet")
    assert res.exit_code == 0, res.output
    m = json.loads((root / "stack" / "metrics.json").read_text())
    assert 0 <= m["mean_class_recall"] <= 1 and m["mean_class_recall"] == pytest.approx(np.mean(m["split_mean_class_recall"]))
    assert m["mean_class_recall_std"] == pytest.approx(np.std(m["split_mean_class_recall"]))
    assert (m["n_train"], m["n_test"], m["n_images"], m["n_unreadable"]) == (18, 12, 30, 0)
    assert all(c in m["svm_c_candidates"] for c in m["svm_c"]) and len(m["heldout_mean_class_recall"]) == 2
    assert (root / "stack" / "per_class.csv").read_text().splitlines()[1].startswith("001.hexagon,")
    # every test image of every split, its true and predicted class: the mean class recall again
    with open(root / "stack" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * m["n_test"] and {r["split"] for r in rows} == {"0", "1"}
    for k, recall in enumerate(m["split_mean_class_recall"]):
        split = [r for r in rows if r["split"] == str(k)]
        per_class = [np.mean([r["predicted"] == r["class"] for r in split if r["class"] == c]) for c in {r["class"] for r in split}]
        assert np.mean(per_class) == pytest.approx(recall)
        assert len({r["image"] for r in split}) == len(split)
    cached = list((root / "stack" / "features").glob("*.npz"))
    assert len(cached) == 1
    fs = FeatureSet.load(cached[0])
    assert fs.per_scale[0].shape == (30, 2, 256) and fs.descriptors("stack").shape == (30, 512)
    stamp = cached[0].stat().st_mtime_ns
    # the other aggregation reuses the cached per-scale features
    res = invoke("transfer", "-c", config, "--checkpoint", ckpt, "--aggregate", "average", "--cache", root / "stack" / "features",
                 "--out", root / "average")
    assert res.exit_code == 0, res.output
    assert "reusing" in res.output and cached[0].stat().st_mtime_ns == stamp
    assert json.loads((root / "average" / "metrics.json").read_text())["aggregate"] == "average"
    # random weights: a separate cache entry, other descriptors
    res = invoke("transfer", "-c", config, "--checkpoint", ckpt, "--random-weights", "--cache", root / "stack" / "features",
                 "--out", root / "random", "--quiet")
    assert res.exit_code == 0, res.output
    files = sorted((root / "stack" / "features").glob("*.npz"))
    assert len(files) == 2
    other = FeatureSet.load(next(f for f in files if f != cached[0]))
    assert other.settings["random_weights"] and not np.allclose(other.per_scale[0], fs.per_scale[0])


def test_features_file_fusion_and_bad_image(tiny, tmp_path):
    root, ckpt, config = tiny
    bad = root / "set" / "256_ObjectCategories" / "001.hexagon" / "001_9999.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    try:
        out = tmp_path / "f.npz"
        res = invoke("features", "-c", config, "--checkpoint", ckpt, "--checkpoint", ckpt, "--aggregate", "average",
                     "--out", out)
        assert res.exit_code == 0, res.output
        assert "001_9999.jpg" in res.output  # named
        summary = json.loads(res.output[res.output.index('{"out"'):].splitlines()[0])
        assert summary == {"out": str(out), "items": 30, "dim": 512, "n_unreadable": 1}  # skipped and counted
        z = np.load(out, allow_pickle=False)
        assert z["features"].shape == (30, 512) and z["features"].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(z["features"], axis=1), 1, rtol=1e-5)
        np.testing.assert_allclose(z["features"][:, :256], z["features"][:, 256:])  # the same net twice
        assert z["targets"].tolist() == sorted(z["targets"].tolist()) and "per_scale_0" not in z.files
        assert json.loads(str(z["settings"]))["scales"] == [32, 48] and len(z["bad"]) == 1
    finally:
        bad.unlink()


def test_user_errors_are_one_line(tiny):
    root, ckpt, config = tiny
    res = invoke("features", "-c", config, "--checkpoint", ckpt, "--boxes", "--out", root / "x.npz")
    assert res.exit_code == 2 and res.output.strip().splitlines()[-1].startswith("error: --boxes: protocol caltech")
    res = invoke("transfer", "-c", config, "--checkpoint", ckpt, "--protocol", "voc-cls", "--out", root / "y")
    assert res.exit_code == 2 and "protocol voc-cls reads data.format voc" in res.output
    res = invoke("transfer", "-c", config, "--checkpoint", root / "missing.pt", "--out", root / "z")
    assert res.exit_code == 2 and res.output.startswith("error:") and "Traceback" not in res.output


def voc_xml(path, objects, size):
    body = ""
    for name, difficult, action, box in objects:
        actions = "<actions>" + "".join(f"<{a}>{int(a == action)}</{a}>" for a in VOC_ACTIONS) + "</actions>" if action else ""
        body += (f"<object><name>{name}</name><difficult>{int(difficult)}</difficult>{actions}<bndbox><xmin>{box[0]}</xmin>"
                 f"<ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>")
    path.write_text(f"<annotation><size><width>{size[1]}</width><height>{size[0]}</height></size>{body}</annotation>")


def make_voc_set(root):
    """Eight VOC images (dogs on bright, cats on dark backgrounds) in ImageSets/Main and Action."""
    for sub in ("ImageSets/Main", "ImageSets/Action", "JPEGImages", "Annotations"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, ids in (("train", [f"t{k}" for k in range(8)]), ("val", [f"v{k}" for k in range(6)])):
        for task in ("Main", "Action"):
            (root / "ImageSets" / task / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for k, i in enumerate(ids):
            dog = k % 2 == 0
            pixels = rng.integers(150, 256, (40, 48, 3)) if dog else rng.integers(0, 100, (40, 48, 3))
            Image.fromarray(pixels.astype(np.uint8)).save(root / "JPEGImages" / f"{i}.jpg")
            voc_xml(root / "Annotations" / f"{i}.xml", [("dog" if dog else "cat", k == 2, None, (1, 1, 40, 30)),
                                                          ("person", False, "walking" if dog else "reading", (3, 4, 30, 36))],
                    size=(40, 48))


def test_voc_cls_and_action_transfer(tiny, tmp_path):
    _, ckpt, _ = tiny
    make_voc_set(tmp_path / "VOC2012")
    Image.new("RGB", (20, 20)).save(tmp_path / "VOC2012" / "JPEGImages" / "unused.jpg")  # not listed: not read
    config = tmp_path / "voc.yaml"
    config.write_text(json.dumps({"data": {"format": "voc", "root": str(tmp_path / "VOC2012")},
                                  "transfer": {"aggregate": "average", "svm_c": [0.1, 10.0], **TRANSFER}}))
    res = invoke("transfer", "-c", config, "--checkpoint", ckpt, "--protocol", "voc-cls", "--out", tmp_path / "cls", "--quiet")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "cls" / "metrics.json").read_text())
    assert 0 <= m["voc07_cls_map"] <= 1 and 0 <= m["voc_cls_map"] <= 1
    assert (m["n_train"], m["n_test"]) == (8, 6) and m["svm_c"] in (0.1, 10.0)
    # mAP is the mean over the 20 classes, most of which have no positive test image (AP 0)
    assert m["voc_cls_map"] == pytest.approx(np.mean(list(m["per_class_ap"].values())))
    assert m["per_class_ap"]["dog"] == pytest.approx(1.0)  # bright vs dark: even a random net separates them
    res = invoke("features", "-c", config, "--checkpoint", ckpt, "--protocol", "voc-action", "--split", "val", "--boxes",
                 "--out", tmp_path / "act.npz")
    assert res.exit_code == 0, res.output
    z = np.load(tmp_path / "act.npz", allow_pickle=False)
    assert z["features"].shape == z["box_features"].shape == (6, 256) and z["ids"][0] == "v0/2"
    assert not np.allclose(z["features"], z["box_features"])  # the box is its own region
    res = invoke("transfer", "-c", config, "--checkpoint", ckpt, "--protocol", "voc-action", "--out", tmp_path / "act",
                 "--quiet")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "act" / "metrics.json").read_text())
    assert 0 <= m["voc_action_map_image"] <= 1 and 0 <= m["voc_action_map"] <= 1
    rows = (tmp_path / "act" / "per_class.csv").read_text().splitlines()
    assert rows[0] == "action,ap_image,ap_image_box" and len(rows) == 11 and rows[1].startswith("jumping,")


def test_too_few_training_images_per_class_to_hold_out_is_one_line(tiny):
    root, ckpt, config = tiny
    res = invoke("transfer", "-c", config, "--checkpoint", ckpt, "--set", "transfer.train_per_class=2", "--out", root / "few", "--quiet")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and "Traceback" not in res.output and len(lines) == 1, res.output
    assert lines[0].startswith("error: transfer.train_per_class 2:") and "transfer.val_fraction 0.2" in lines[0] and "at least 4" in lines[0]
