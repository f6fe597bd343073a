"""The generated data set: deterministic, every reader agrees box for box, shapes (not colours)
carry the class, sizes and positions as specified."""

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from vgglocal.cli import cli
from vgglocal.config import DataConfig
from vgglocal.data import DataError, read_split, scan_split
from vgglocal.data.annotations import parse_voc_xml
from vgglocal.data.images import load_rgb
from vgglocal.data.synth import SHAPES, SynthSpec, render_image, synthesize

SPEC = SynthSpec(classes=3, train=4, val=2, size=48, seed=7)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, SPEC)
    return root


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_counts_equal_what_was_asked(synth_root):
    summary = json.loads((synth_root / "synth.json").read_text())
    for fmt in ("ilsvrc-kaggle", "coco"):
        cfg = DataConfig(format=fmt, root=str(synth_root))
        train = scan_split(cfg, "train", "all")
        val = scan_split(cfg, "val", "all")
        assert train.problems == [] and val.problems == []
        assert len(train.records) == 12 and len(val.records) == 6 and len(train.classes) == 3
        assert sum(len(r.boxes) for r in train.records) == summary["train_boxes"]
        assert np.bincount([r.label for r in train.records]).tolist() == [4, 4, 4]
        assert np.bincount([r.label for r in val.records]).tolist() == [2, 2, 2]
    assert read_split(DataConfig(root=str(synth_root)), "train")[1].names == list(SHAPES)[:3]


def test_csv_xml_and_coco_agree_box_for_box(synth_root):
    kaggle = DataConfig(format="ilsvrc-kaggle", root=str(synth_root))
    coco = DataConfig(format="coco", root=str(synth_root))
    for split in ("train", "val"):
        from_csv = {r.path: r for r in read_split(kaggle, split, "all")[0]}
        from_coco = {r.path: r for r in read_split(coco, split, "all")[0]}
        assert from_csv.keys() == from_coco.keys()
        for path, r in from_csv.items():
            c = from_coco[path]
            np.testing.assert_array_equal(r.boxes, c.boxes)
            assert r.box_labels.tolist() == c.box_labels.tolist() and r.label == c.label
            folder = "train/" + r.source_id.split("_")[0] if split == "train" else "val"
            ann = parse_voc_xml(synth_root / f"ILSVRC/Annotations/CLS-LOC/{folder}/{r.source_id}.xml")
            np.testing.assert_array_equal(ann.boxes, r.boxes)
            h, w = load_rgb(path).shape[:2]
            assert ann.size == (h, w) == c.size and min(h, w) == SPEC.size


def test_same_seed_same_bytes_other_seed_other_images(tmp_path, synth_root):
    synthesize(tmp_path / "again", SPEC)
    assert _digest(tmp_path / "again") == _digest(synth_root)
    synthesize(tmp_path / "other", SynthSpec(classes=3, train=4, val=2, size=48, seed=8))
    assert _digest(tmp_path / "other") != _digest(synth_root)


def test_boxes_sizes_positions_and_instances():
    single, several, counts, touching = [], [], [], 0
    for i in range(60):
        image, boxes = render_image(np.random.default_rng([1, i]), list(SHAPES)[i % len(SHAPES)], 64)
        h, w = image.shape[:2]
        assert min(h, w) == 64 and max(h, w) <= round(64 * 4 / 3) and image.dtype == np.uint8
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w - 1).all() and (boxes[:, 3] <= h - 1).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        sides = ((np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1) / 64).tolist()
        (single if len(boxes) == 1 else several).extend(sides)
        counts.append(len(boxes))
        touching += int(((boxes[:, :2] == 0).any(1) | (boxes[:, 2] == w - 1) | (boxes[:, 3] == h - 1)).any())
    # a single object 30-80 % of the shorter side (a rotated one's extent a little more or
    # less), two or three 25-45 % each
    assert 0.25 <= min(single) and 0.7 < max(single) <= 1.0
    assert 0.2 <= min(several) and max(several) <= 0.6
    assert set(counts) == {1, 2, 3}
    # boxes lie inside the image: only a rotated corner reaches the border, never most of them
    assert touching <= 20


def test_only_the_shape_depends_on_the_class():
    """Same seed, two classes: the images differ only where the objects are (colour, position,
    size, background and clutter are drawn identically), so colour carries no class information."""
    for seed in range(5):
        a, boxes_a = render_image(np.random.default_rng([2, seed]), "disc", 64)
        b, boxes_b = render_image(np.random.default_rng([2, seed]), "star", 64)
        assert a.shape == b.shape and len(boxes_a) == len(boxes_b)
        inside = np.zeros(a.shape[:2], bool)
        for x1, y1, x2, y2 in np.concatenate([boxes_a, boxes_b]):
            inside[y1 : y2 + 1, x1 : x2 + 1] = True
        differs = (a != b).any(-1)
        assert differs.any() and not differs[~inside].any()


def test_bad_arguments_and_non_empty_out(tmp_path, synth_root):
    with pytest.raises(DataError, match="--classes 17"):
        synthesize(tmp_path / "x", SynthSpec(classes=17))
    with pytest.raises(DataError, match="not empty; pass --overwrite"):
        synthesize(synth_root, SPEC)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/keep.txt").write_text("user data")
    with pytest.raises(DataError, match="not an earlier synth output"):
        synthesize(tmp_path / "mine", SPEC, overwrite=True)
    assert (tmp_path / "mine/keep.txt").exists()


def test_cli_synth_then_check_is_clean(tmp_path):
    runner = CliRunner()
    out = tmp_path / "demo"
    result = runner.invoke(cli, ["data", "synth", str(out), "--classes", "2", "--train", "3", "--val", "1", "--size", "40", "-q"])
    assert result.exit_code == 0, result.output
    assert "2 classes (disc, triangle)" in result.output and "train 6 images" in result.output
    # overwrite replaces an earlier output (fewer classes: no stale class folders left)
    result = runner.invoke(cli, ["data", "synth", str(out), "--classes", "1", "--train", "2", "--val", "1", "--size", "40", "--overwrite"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["data", "check", str(out), "-q", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["format"] == "ilsvrc-kaggle" and report["problems"] == []
    assert report["splits"]["train"]["images"] == 2 and report["splits"]["val"]["images"] == 1
    assert report["splits"]["train"]["classes"] == 1
