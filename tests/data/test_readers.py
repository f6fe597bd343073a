"""Every reader round-trips a hand-made miniature of its format, boxes exact; bad entries are
reported one line each and nothing else is lost."""

import json

import numpy as np
import pytest
import scipy.io
from PIL import Image

from vgglocal.config import DataConfig
from vgglocal.data import DataError, detect_format, read_split, scan_split

N1, N2 = "n01000001", "n02000002"


def jpeg(path, h, w, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path, quality=90)


def xml(path, stem, h, w, objects):
    path.parent.mkdir(parents=True, exist_ok=True)
    objs = "".join(f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in
                   [(o[0], o[1], o[2] if len(o) > 2 else False) for o in objects])
    path.write_text(f"<annotation><filename>{stem}</filename><size><width>{w}</width><height>{h}</height>"
                    f"<depth>3</depth></size>{objs}</annotation>")


def by_id(records):
    return {r.source_id: r for r in records}


def assert_boxes(record, boxes, labels):
    np.testing.assert_array_equal(record.boxes, np.asarray(boxes, np.float32).reshape(-1, 4))
    assert record.boxes.dtype == np.float32 and record.box_labels.dtype == np.int64
    assert record.box_labels.tolist() == labels


# ----------------------------------------------------------------------------- Kaggle


def make_kaggle(root):
    # Deliberately not in wnid order: class index must still be sorted wnid order.
    (root / "LOC_synset_mapping.txt").write_text(f"{N2} goldfish, Carassius auratus\n{N1} tench, Tinca tinca\n")
    data, ann = root / "ILSVRC/Data/CLS-LOC", root / "ILSVRC/Annotations/CLS-LOC"
    jpeg(data / f"train/{N1}/{N1}_1.JPEG", 30, 40)
    jpeg(data / f"train/{N1}/{N1}_2.JPEG", 30, 40)  # no boxes: classification only
    jpeg(data / f"train/{N2}/{N2}_7.JPEG", 40, 30)
    jpeg(data / "val/ILSVRC2012_val_00000001.JPEG", 20, 25)
    jpeg(data / "val/ILSVRC2012_val_00000002.JPEG", 25, 20)
    jpeg(data / "test/ILSVRC2012_test_00000001.JPEG", 20, 20)
    (root / "LOC_train_solution.csv").write_text(
        "ImageId,PredictionString\n"
        f"{N2}_7,{N2} 0 0 29 39 {N2} 3 4 10 12 \n"
        f"{N1}_1,{N1} 1 2 30 25 \n")
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        f"ILSVRC2012_val_00000002,{N1} 2 3 15 20 \n"
        f"ILSVRC2012_val_00000001,{N2} 5 6 24 19 {N2} 1 1 4 4 \n")
    xml(ann / f"train/{N2}/{N2}_7.xml", f"{N2}_7", 40, 30, [(N2, (0, 0, 29, 39)), (N2, (3, 4, 10, 12))])
    xml(ann / f"train/{N1}/{N1}_1.xml", f"{N1}_1", 30, 40, [(N1, (1, 2, 30, 25))])
    xml(ann / "val/ILSVRC2012_val_00000002.xml", "v2", 25, 20, [(N1, (2, 3, 15, 20))])
    xml(ann / "val/ILSVRC2012_val_00000001.xml", "v1", 20, 25, [(N2, (5, 6, 24, 19)), (N2, (1, 1, 4, 4))])
    return root


def test_kaggle_round_trip(tmp_path):
    cfg = DataConfig(format="ilsvrc-kaggle", root=str(make_kaggle(tmp_path)))
    records, classes = read_split(cfg, "train", "cls")
    assert classes.ids == [N1, N2] and classes.names == ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    assert [r.source_id for r in records] == [f"{N1}_1", f"{N1}_2", f"{N2}_7"]
    r = by_id(records)
    assert [r[k].label for k in r] == [0, 0, 1]
    assert_boxes(r[f"{N1}_1"], [[1, 2, 30, 25]], [0])
    assert_boxes(r[f"{N1}_2"], [], [])
    assert_boxes(r[f"{N2}_7"], [[0, 0, 29, 39], [3, 4, 10, 12]], [1, 1])
    assert r[f"{N2}_7"].path == str(tmp_path / f"ILSVRC/Data/CLS-LOC/train/{N2}/{N2}_7.JPEG")
    assert r[f"{N2}_7"].size == (0, 0)  # the CSV has no sizes (documented)
    loc, _ = read_split(cfg, "train", "loc")
    assert [x.source_id for x in loc] == [f"{N1}_1", f"{N2}_7"]
    val, _ = read_split(cfg, "val", "cls")
    v = by_id(val)
    assert [x.source_id for x in val] == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"]
    assert v["ILSVRC2012_val_00000001"].label == 1 and v["ILSVRC2012_val_00000002"].label == 0
    assert_boxes(v["ILSVRC2012_val_00000001"], [[5, 6, 24, 19], [1, 1, 4, 4]], [1, 1])
    test, _ = read_split(cfg, "test", "all")
    assert len(test) == 1 and test[0].label == -1
    with pytest.raises(DataError, match=r"split 'test' .* has no labelled images"):
        read_split(cfg, "test", "cls")
    assert scan_split(cfg, "train").problems == [] and detect_format(str(tmp_path)) == "ilsvrc-kaggle"


def test_kaggle_xml_fallback_gives_the_same_boxes_with_sizes(tmp_path):
    cfg = DataConfig(format="ilsvrc-kaggle", root=str(make_kaggle(tmp_path)))
    from_csv = by_id(read_split(cfg, "train", "all")[0] + read_split(cfg, "val", "all")[0])
    (tmp_path / "LOC_train_solution.csv").unlink()
    (tmp_path / "LOC_val_solution.csv").unlink()
    from_xml = by_id(read_split(cfg, "train", "all")[0] + read_split(cfg, "val", "all")[0])
    assert from_csv.keys() == from_xml.keys()
    for k in from_csv:
        assert_boxes(from_xml[k], from_csv[k].boxes, from_csv[k].box_labels.tolist())
        assert from_xml[k].label == from_csv[k].label
    assert from_xml[f"{N2}_7"].size == (40, 30)


def test_kaggle_bad_entries_reported_rest_kept(tmp_path):
    make_kaggle(tmp_path)
    jpeg(tmp_path / "ILSVRC/Data/CLS-LOC/train/n07777777/n07777777_1.JPEG", 10, 10)  # folder not a class
    (tmp_path / "LOC_train_solution.csv").write_text(
        "ImageId,PredictionString\n"
        f"{N2}_7,{N2} 0 0 29 39 {N2} 20 5 10 9 {N2} -4 3 10 9 \n"   # inverted: dropped; negative: clipped
        f"{N1}_1,{N1} 1 2 30 25 n09999999 1 1 5 5 {N1} x 1 5 5 \n"  # unknown wnid, non-numeric: skipped
        f"{N1}_99,{N1} 1 1 5 5 \n"                                   # no such image
        f"{N1}_2,{N1} 1 1 5 \n")                                     # malformed: line skipped
    scan = scan_split(DataConfig(root=str(tmp_path)), "train", "all")
    r = by_id(scan.records)
    assert sorted(r) == [f"{N1}_1", f"{N1}_2", f"{N2}_7"]
    assert_boxes(r[f"{N2}_7"], [[0, 0, 29, 39], [0, 3, 10, 9]], [1, 1])
    assert_boxes(r[f"{N1}_1"], [[1, 2, 30, 25]], [0])
    assert r[f"{N1}_2"].label == 0 and len(r[f"{N1}_2"].boxes) == 0
    text = [str(p) for p in scan.problems]
    assert all("\n" not in t for t in text)
    assert sorted(scan.problem_counts().items()) == [("bad-box", 2), ("bad-csv", 1), ("clipped-box", 1),
                                                     ("missing-file", 1), ("unknown-class", 2)]
    assert any(f"({N1}_1)" in t and "non-numeric" in t for t in text)
    assert any("line 2" in t and "[20, 5, 10, 9]" in t and "dropped" in t for t in text)
    assert any("clipped to [0, 3, 10, 9]" in t for t in text)
    assert any(f"({N1}_1)" in t and "n09999999" in t for t in text)
    assert any(f"{N1}_99" in t and "no image file" in t for t in text)
    assert any("n07777777" in t and "not a class" in t for t in text)


def test_limit_is_evenly_spaced_and_covers_classes(tmp_path):
    cfg = DataConfig(root=str(make_kaggle(tmp_path)), limit=2)
    records, _ = read_split(cfg, "train", "cls")
    assert [r.source_id for r in records] == [f"{N1}_1", f"{N2}_7"]


# ----------------------------------------------------------------------------- original layout


def make_original(root):
    jpeg(root / f"train/{N1}/{N1}_1.JPEG", 30, 40)
    jpeg(root / f"train/{N2}/{N2}_7.JPEG", 40, 30)
    jpeg(root / "val/ILSVRC2012_val_00000001.JPEG", 20, 25)
    jpeg(root / "val/ILSVRC2012_val_00000002.JPEG", 25, 20)
    xml(root / f"bbox/train/{N1}/{N1}_1.xml", f"{N1}_1", 30, 40, [(N1, (1, 2, 45, 25)), ("n09999999", (1, 1, 5, 5))])
    xml(root / "bbox/val/ILSVRC2012_val_00000001.xml", "v1", 20, 25, [(N2, (5, 6, 24, 19))])
    data = root / "devkit/data"
    data.mkdir(parents=True)
    # Devkit ids are not in wnid order (as in the real devkit); a non-leaf synset is ignored.
    synsets = np.array([(1, N2, "goldfish", 0), (2, N1, "tench", 0), (3, "n00000000", "fish", 2)],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")])
    scipy.io.savemat(data / "meta.mat", {"synsets": synsets.reshape(-1, 1)})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n")
    return root


def test_original_layout_round_trip(tmp_path):
    cfg = DataConfig(format="ilsvrc", root=str(make_original(tmp_path)))
    scan = scan_split(cfg, "train", "all")
    assert scan.classes.ids == [N1, N2] and scan.classes.devkit_ids == [2, 1] and scan.classes.names == ["tench", "goldfish"]
    r = by_id(scan.records)
    assert_boxes(r[f"{N1}_1"], [[1, 2, 40, 25]], [0])  # clipped to the 40-wide image
    assert r[f"{N1}_1"].size == (30, 40) and r[f"{N2}_7"].label == 1
    assert sorted(p.kind for p in scan.problems) == ["clipped-box", "unknown-class"]
    val = by_id(read_split(cfg, "val", "cls")[0])
    # ground truth in devkit ids: 1 = goldfish (index 1), 2 = tench (index 0)
    assert val["ILSVRC2012_val_00000001"].label == 1 and val["ILSVRC2012_val_00000002"].label == 0
    assert_boxes(val["ILSVRC2012_val_00000001"], [[5, 6, 24, 19]], [1])
    assert [x.source_id for x in read_split(cfg, "val", "loc")[0]] == ["ILSVRC2012_val_00000001"]
    assert detect_format(str(tmp_path)) == "ilsvrc"
    jpeg(tmp_path / "ILSVRC2012_img_test/ILSVRC2012_test_00000001.JPEG", 20, 20)  # the test tar's images, no labels
    test, _ = read_split(cfg, "test", "all")
    assert [(x.source_id, x.label, len(x.boxes)) for x in test] == [("ILSVRC2012_test_00000001", -1, 0)]


def test_original_layout_map_clsloc_and_no_devkit(tmp_path):
    make_original(tmp_path)
    for f in (tmp_path / "devkit/data").iterdir():
        f.unlink()
    cfg = DataConfig(format="ilsvrc", root=str(tmp_path))
    _, classes = read_split(cfg, "train")
    assert classes.ids == [N1, N2] and classes.devkit_ids is None  # from the train folders
    val = by_id(read_split(cfg, "val", "cls")[0])  # labels from the XML boxes without a devkit
    assert list(val) == ["ILSVRC2012_val_00000001"] and val["ILSVRC2012_val_00000001"].label == 1
    (tmp_path / "devkit/data/map_clsloc.txt").write_text(f"{N2} 7 goldfish\n{N1} 3 tench\n")
    assert read_split(cfg, "train")[1].devkit_ids == [3, 7]


# ----------------------------------------------------------------------------- VOC


def make_voc(root):
    voc = root / "VOCdevkit/VOC2007"
    for i, (h, w) in enumerate([(50, 60), (40, 40), (30, 30)], start=1):
        jpeg(voc / f"JPEGImages/{i:06d}.jpg", h, w)
    xml(voc / "Annotations/000001.xml", "000001.jpg", 50, 60, [("dog", (5, 5, 50, 45)), ("person", (1, 1, 10, 20))])
    xml(voc / "Annotations/000002.xml", "000002.jpg", 40, 40, [("cat", (2, 3, 40, 40), True)])
    xml(voc / "Annotations/000003.xml", "000003.jpg", 30, 30, [("unicorn", (1, 1, 9, 9)), ("car", (3, 4, 12, 30))])
    main = voc / "ImageSets/Main"
    main.mkdir(parents=True)
    (main / "trainval.txt").write_text("000001\n000002\n000003\n")
    (main / "val.txt").write_text("000002\n000004\n")
    (main / "empty.txt").write_text("")
    return voc


def test_voc_round_trip(tmp_path):
    make_voc(tmp_path)
    cfg = DataConfig(format="voc", root=str(tmp_path), train_split="trainval")
    scan = scan_split(cfg, "train", "cls")
    assert scan.classes.ids[:3] == ["aeroplane", "bicycle", "bird"] and len(scan.classes) == 20
    idx = {c: i for i, c in enumerate(scan.classes.ids)}
    r = by_id(scan.records)
    assert list(r) == ["000001", "000002", "000003"]
    assert_boxes(r["000001"], [[5, 5, 50, 45], [1, 1, 10, 20]], [idx["dog"], idx["person"]])
    assert r["000001"].label == idx["dog"] and r["000001"].size == (50, 60)  # largest box
    assert_boxes(r["000002"], [[2, 3, 40, 40]], [idx["cat"]])  # difficult kept, box exactly at the edge kept
    assert r["000002"].difficult_mask().tolist() == [True] and r["000001"].difficult_mask().tolist() == [False, False]
    assert_boxes(r["000003"], [[3, 4, 12, 30]], [idx["car"]])
    assert [(p.kind, "unicorn" in p.message) for p in scan.problems] == [("unknown-class", True)]
    val = scan_split(cfg, "val", "all")
    assert [x.source_id for x in val.records] == ["000002"]
    assert [p.kind for p in val.problems] == ["missing-file"] and "000004" in val.problems[0].file
    with pytest.raises(DataError, match="split 'empty'"):
        read_split(cfg, "empty")
    assert detect_format(str(tmp_path / "VOCdevkit/VOC2007")) == "voc"


def test_voc_custom_class_list(tmp_path):
    make_voc(tmp_path)
    (tmp_path / "classes.txt").write_text("# mine\nunicorn Unicorn\ncar\n")
    cfg = DataConfig(format="voc", root=str(tmp_path / "VOCdevkit/VOC2007"), train_split="trainval", classes=str(tmp_path / "classes.txt"))
    scan = scan_split(cfg, "train", "all")
    assert scan.classes.ids == ["unicorn", "car"] and scan.classes.names == ["Unicorn", "car"]
    assert_boxes(by_id(scan.records)["000003"], [[1, 1, 9, 9], [3, 4, 12, 30]], [0, 1])


# ----------------------------------------------------------------------------- COCO


def make_coco(root, name="train2017"):
    images = root / name
    jpeg(images / "a.jpg", 20, 30)
    jpeg(images / "b.jpg", 20, 30)
    jpeg(images / "sub/c.jpg", 10, 10)
    (root / "secret.txt").write_text("x")
    doc = {
        "images": [{"id": 3, "file_name": "b.jpg", "height": 20, "width": 30},
                   {"id": 1, "file_name": "a.jpg", "height": 20, "width": 30},
                   {"id": 5, "file_name": "../../etc/passwd", "height": 1, "width": 1},
                   {"id": 6, "file_name": "/etc/passwd", "height": 1, "width": 1},
                   {"id": 9, "file_name": "../secret.txt", "height": 1, "width": 1},
                   {"id": 7, "file_name": "missing.jpg", "height": 5, "width": 5},
                   {"id": 8, "file_name": "sub/c.jpg", "height": 10, "width": 10}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 18, "bbox": [2, 3, 10, 5], "iscrowd": 0, "area": 50},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0.5, 0, 20, 15], "iscrowd": 0, "area": 300},
            {"id": 3, "image_id": 3, "category_id": 18, "bbox": [25, 10, 10, 5], "iscrowd": 0, "area": 50},
            {"id": 4, "image_id": 3, "category_id": 99, "bbox": [1, 1, 2, 2], "iscrowd": 0, "area": 4},
            {"id": 5, "image_id": 3, "category_id": 1, "bbox": [1, 1, 4, 4], "iscrowd": 1, "area": 16},
            {"id": 6, "image_id": 8, "category_id": 18, "bbox": [1, 1, 3, 3], "iscrowd": 0, "area": 9},
            {"id": 7, "image_id": 8, "category_id": 18, "bbox": [5, 5, -2, 3], "iscrowd": 0, "area": 0},
        ],
    }
    (root / "annotations").mkdir(exist_ok=True)
    (root / f"annotations/instances_{name}.json").write_text(json.dumps(doc))
    return root


def test_coco_round_trip_and_bad_entries(tmp_path):
    make_coco(tmp_path)
    cfg = DataConfig(format="coco", root=str(tmp_path), train_split="train2017")
    scan = scan_split(cfg, "train", "all")
    assert scan.classes.ids == ["person", "dog"] and scan.classes.coco_ids == [1, 18]
    r = by_id(scan.records)
    assert list(r) == ["1", "3", "8"]
    assert_boxes(r["1"], [[2, 3, 12, 8], [0.5, 0, 20.5, 15]], [1, 0])  # xywh → xyxy, annotation order
    assert r["1"].label == 0 and r["1"].size == (20, 30)  # the larger box is the person
    assert_boxes(r["3"], [[25, 10, 30, 15]], [1])  # clipped to width 30; crowd and unknown category left out
    assert_boxes(r["8"], [[1, 1, 4, 4]], [1])
    assert r["8"].path == str(tmp_path / "train2017/sub/c.jpg")
    text = [str(p) for p in scan.problems]
    assert sorted(scan.problem_counts().items()) == [("bad-box", 1), ("bad-path", 3), ("clipped-box", 1),
                                                     ("missing-file", 1), ("unknown-class", 1)]
    assert any("'../../etc/passwd'" in t and "escapes" in t for t in text)
    assert any("'/etc/passwd'" in t for t in text) and any("'../secret.txt'" in t for t in text)
    assert all(not p.file.endswith("passwd") for p in scan.problems)
    assert all("\n" not in t for t in text)
    assert detect_format(str(tmp_path)) == "coco"


def test_coco_val_role_uses_val_split_name_and_paths(tmp_path):
    make_coco(tmp_path, "val2017")
    cfg = DataConfig(format="coco", root=str(tmp_path), val_split="val2017")
    records, classes = read_split(cfg, "val", "loc")
    assert [r.source_id for r in records] == ["1", "3", "8"] and len(classes) == 2
    moved = DataConfig(format="coco", root=str(tmp_path), val_annotations="annotations/instances_val2017.json",
                       val_images="val2017/sub")
    records = scan_split(moved, "val", "all").records
    assert [r.source_id for r in records] == []  # file names resolve under val2017/sub now: all missing
    with pytest.raises(DataError, match=r"instances_nope\.json: no such COCO annotation file"):
        read_split(DataConfig(format="coco", root=str(tmp_path)), "nope")


def test_coco_not_json_is_one_line_error(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/instances_train.json").write_text("{not json")
    with pytest.raises(DataError, match=r"instances_train\.json: not a COCO instances file") as e:
        read_split(DataConfig(format="coco", root=str(tmp_path)), "train")
    assert "\n" not in str(e.value)


def test_missing_root_and_split_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        read_split(DataConfig(root=str(tmp_path / "nope")), "train")
    make_kaggle(tmp_path)
    with pytest.raises(DataError, match="no such image folder for split 'val2'"):
        read_split(DataConfig(root=str(tmp_path)), "val2")
