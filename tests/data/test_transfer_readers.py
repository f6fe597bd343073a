"""Readers of the Appendix B data sets (Caltech-101/256 folders, VOC classification labels, VOC
action people) on hand-made miniatures; bad files named, skipped and counted; Caltech splits."""

import json

import numpy as np
import pytest
from PIL import Image

from vgglocal.config import DataConfig
from vgglocal.data import DataError, detect_format, scan_split
from vgglocal.data.caltech import caltech_splits
from vgglocal.data.labelled import read_labelled
from vgglocal.data.synth import SynthSpec, synthesize
from vgglocal.data.voc_labels import SCORED_ACTIONS, VOC_ACTIONS


def jpeg(path, h=20, w=24):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)


# ----------------------------------------------------------------------------- Caltech


def test_caltech_256_layout(tmp_path):
    base = tmp_path / "256_ObjectCategories"
    for folder, n in (("001.ak47", 2), ("002.american-flag", 1), ("257.clutter", 1)):
        for k in range(n):
            jpeg(base / folder / f"{folder[:3]}_{k + 1:04d}.jpg")
    (base / "001.ak47" / "notes.txt").write_text("stray file")
    assert detect_format(str(tmp_path)) == "caltech"
    scan = scan_split(DataConfig(format="caltech", root=str(tmp_path)), "train")
    assert scan.classes.ids == ["001.ak47", "002.american-flag", "257.clutter"]
    assert scan.classes.names == ["ak47", "american-flag", "clutter"]
    assert [r.label for r in scan.records] == [0, 0, 1, 2]
    assert scan.records[0].source_id == "001.ak47/001_0001"
    assert [(p.kind, p.file.endswith("notes.txt")) for p in scan.problems] == [("bad-image", True)]


def test_caltech_101_layout_keeps_the_background_class(tmp_path):
    base = tmp_path / "101_ObjectCategories"
    for folder in ("BACKGROUND_Google", "Faces", "accordion"):
        jpeg(base / folder / "image_0001.jpg")
    (base / "empty_class").mkdir()
    items = read_labelled(DataConfig(format="caltech", root=str(base)), "all", "caltech")
    assert items.classes == ["BACKGROUND_Google", "Faces", "accordion", "empty_class"]
    assert items.targets.tolist() == [0, 1, 2]
    assert [p.kind for p in items.problems] == ["missing-file"]  # the empty folder, named
    with pytest.raises(DataError, match="data.format caltech"):
        read_labelled(DataConfig(format="voc", root=str(base)), "all", "caltech")


def test_caltech_splits_sizes_and_seed():
    labels = np.repeat(np.arange(3), [40, 35, 31])
    splits = caltech_splits(labels, n_train=30, n_test=50, n_splits=3, seed=0)
    assert len(splits) == 3
    for train, test in splits:
        assert np.bincount(labels[train]).tolist() == [30, 30, 30]
        assert np.bincount(labels[test]).tolist() == [10, 5, 1]  # at most 50: the rest
        assert not set(train) & set(test)
    capped = caltech_splits(labels, n_train=20, n_test=12, n_splits=1, seed=0)[0]
    assert np.bincount(labels[capped[1]]).tolist() == [12, 12, 11]
    again = caltech_splits(labels, 30, 50, 3, seed=0)
    for (a, b), (c, d) in zip(splits, again, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert not np.array_equal(splits[0][0], splits[1][0])  # the splits differ from each other
    assert not np.array_equal(splits[0][0], caltech_splits(labels, 30, 50, 1, seed=1)[0][0])
    with pytest.raises(DataError, match="inline_skate: 31 images"):
        caltech_splits(labels, 31, 0, 1, 0, class_names=["a", "b", "inline_skate"])


def test_synth_transfer_set_in_the_caltech_layout(tmp_path):
    s = synthesize(tmp_path / "t", SynthSpec(classes=2, train=3, val=1, size=32, first_shape=10, layout="caltech"))
    assert s["names"] == ["hexagon", "diamond"] and s["images"] == 8
    items = read_labelled(DataConfig(format="caltech", root=str(tmp_path / "t")), "all", "caltech")
    assert items.classes == ["001.hexagon", "002.diamond"] and np.bincount(items.targets).tolist() == [4, 4]
    assert json.loads((tmp_path / "t" / "synth.json").read_text())["layout"] == "caltech"
    with pytest.raises(DataError, match="--classes 7"):
        synthesize(tmp_path / "u", SynthSpec(classes=7, first_shape=10, layout="caltech"))


# ----------------------------------------------------------------------------- VOC


def voc_xml(path, objects, size=(30, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    body = ""
    for o in objects:
        actions = ""
        if "actions" in o:
            actions = "<actions>" + "".join(f"<{a}>{int(a in o['actions'])}</{a}>" for a in VOC_ACTIONS) + "</actions>"
        box = o.get("box", (2, 3, 20, 25))
        body += (f"<object><name>{o['name']}</name><difficult>{int(o.get('difficult', False))}</difficult>{actions}"
                 f"<bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>")
    path.write_text(f"<annotation><size><width>{size[1]}</width><height>{size[0]}</height></size>{body}</annotation>")


def make_voc(root, ids, task="Main"):
    (root / "ImageSets" / task).mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / task / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)


def test_voc_classification_labels(tmp_path):
    root = tmp_path / "VOC2007"
    make_voc(root, ["a", "b", "c", "d", "e"])
    for i in "abcde":
        if i != "c":
            jpeg(root / "JPEGImages" / f"{i}.jpg")
    voc_xml(root / "Annotations/a.xml", [{"name": "dog"}, {"name": "cat", "difficult": True}, {"name": "unicorn"}])
    voc_xml(root / "Annotations/b.xml", [{"name": "cat", "difficult": True}, {"name": "cat"}])
    voc_xml(root / "Annotations/c.xml", [{"name": "dog"}])  # image missing
    (root / "Annotations/d.xml").write_text("<annotation><object>")  # malformed
    items = read_labelled(DataConfig(format="voc", root=str(tmp_path)), "train", "voc-cls")
    assert items.ids == ["a", "b"]  # c: no image, d: malformed XML, e: no XML; each skipped
    cls = {c: k for k, c in enumerate(items.classes)}
    assert len(items.classes) == 20 and items.targets.dtype == np.int8
    a, b = items.targets[0], items.targets[1]
    assert a[cls["dog"]] == 1 and a[cls["cat"]] == 0  # cat is difficult-only in a: ignored
    assert b[cls["cat"]] == 1  # one non-difficult cat is enough
    assert (np.delete(a, [cls["dog"], cls["cat"]]) == -1).all()
    kinds = sorted(p.kind for p in items.problems)
    assert kinds == ["bad-xml", "missing-file", "missing-file", "unknown-class"]
    assert any("unicorn" in p.message for p in items.problems)


def test_voc_action_people(tmp_path):
    root = tmp_path / "VOC2012"
    make_voc(root, ["2010_000001", "2010_000002", "2010_000003"], task="Action")
    for i in ("2010_000001", "2010_000002", "2010_000003"):
        jpeg(root / "JPEGImages" / f"{i}.jpg", 30, 40)
    voc_xml(root / "Annotations/2010_000001.xml", [
        {"name": "person", "actions": {"phoning"}, "box": (1, 2, 10, 20)},
        {"name": "bicycle"},  # object 2: not a person with actions
        {"name": "person", "actions": {"ridingbike", "other"}, "box": (5, 5, 60, 25)},  # clipped to the image
    ])
    voc_xml(root / "Annotations/2010_000002.xml", [{"name": "person", "actions": {"walking"}, "box": (30, 5, 10, 20)}])
    voc_xml(root / "Annotations/2010_000003.xml", [{"name": "person", "actions": {"jumping"}}])
    items = read_labelled(DataConfig(format="voc", root=str(tmp_path)), "train", "voc-action")
    assert items.classes == list(VOC_ACTIONS) and SCORED_ACTIONS == VOC_ACTIONS[1:]
    assert items.ids == ["2010_000001/1", "2010_000001/3", "2010_000003/1"]  # object numbers as in the devkit
    act = {a: k for k, a in enumerate(items.classes)}
    assert items.targets[0, act["phoning"]] == 1 and (items.targets[0] == 1).sum() == 1
    assert items.targets[1, act["ridingbike"]] == 1 and items.targets[1, act["other"]] == 1
    np.testing.assert_array_equal(items.records[0].boxes, [[1, 2, 10, 20]])
    np.testing.assert_array_equal(items.records[1].boxes, [[5, 5, 40, 25]])
    kinds = sorted(p.kind for p in items.problems)
    assert kinds == ["bad-box", "clipped-box"]  # the inverted box (dropped, with its item), the clipped one


@pytest.mark.parametrize("task, kind", [("Main", "voc-cls"), ("Action", "voc-action")])
def test_a_voc_image_set_that_is_not_utf8_is_one_line_naming_it(tmp_path, task, kind):
    root = tmp_path / "VOC2012"
    make_voc(root, ["a"], task=task)
    ids_file = root / "ImageSets" / task / "train.txt"
    ids_file.write_bytes(b"a\n\xe9t\xe9\n")  # Latin-1
    with pytest.raises(DataError) as e:
        read_labelled(DataConfig(format="voc", root=str(tmp_path)), "train", kind)
    msg = str(e.value)
    assert msg.startswith(f"{ids_file} line 2: not UTF-8 text (byte 0xe9)") and "\n" not in msg, msg
