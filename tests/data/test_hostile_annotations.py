"""Wrong JSON types in COCO files, duplicate image ids, and annotation text files that are not
UTF-8: named problems (file, id or line, field), never tracebacks, never silent re-attachment."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vgglocal.cli import cli
from vgglocal.config import DataConfig
from vgglocal.data import DataError, read_split, scan_split
from vgglocal.data.synth import SynthSpec, synthesize


def _jpeg(path, h=20, w=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)


def _coco(root, images, categories, annotations):
    for im in images:
        if isinstance(im.get("file_name"), str):
            _jpeg(root / "train2017" / im["file_name"])
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    path = root / "annotations/instances_train2017.json"
    path.write_text(json.dumps({"images": images, "categories": categories, "annotations": annotations}))
    return path


def test_coco_wrong_types_and_duplicate_ids_are_named_problems(tmp_path):
    ann = _coco(tmp_path, [
        {"id": 1, "file_name": "a.jpg", "height": 20, "width": 30},
        {"id": "2", "file_name": "b.jpg", "height": 20, "width": 30},        # string id
        {"id": 3, "file_name": "c.jpg", "height": "20", "width": 30},        # string height
        {"id": 4, "file_name": "d.jpg", "height": 20, "width": 30},
        {"id": 4, "file_name": "e.jpg", "height": 20, "width": 30},          # same id again
        {"id": 6, "file_name": "f.jpg", "height": 20, "width": 30},
    ], [{"id": 1, "name": "dog"}, {"id": "7", "name": "cat"}], [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": "1", "bbox": [2, 2, 5, 5], "iscrowd": 0},   # string category id
        {"id": 12, "image_id": 6, "category_id": 1, "bbox": [1, "x", 5, 5], "iscrowd": 0},  # string in bbox
        {"id": 13, "image_id": 4, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0},    # whose image 4?
        {"id": 14, "image_id": 6, "category_id": 1, "bbox": [3, 3, 4, 4], "iscrowd": 0},
    ])
    scan = scan_split(DataConfig(format="coco", root=str(tmp_path)), "train2017", "all")
    ids = sorted(r.source_id for r in scan.records)
    assert ids == ["1", "3", "6"], ids  # 3 kept: its height is a problem, the image is still readable
    by = {r.source_id: r for r in scan.records}
    assert by["1"].boxes.tolist() == [[1, 1, 6, 6]] and by["6"].boxes.tolist() == [[3, 3, 7, 7]]
    text = [str(p) for p in scan.problems]
    assert all(t.startswith(str(ann)) and "\n" not in t for t in text), text

    def has(*words):
        return any(all(w in t for w in words) for t in text)

    assert has("image '2'", "id")
    assert has("image 3", "height")
    assert has("image 4", "listed 2 times", "d.jpg", "e.jpg")
    assert has("category '7'", "id")
    assert has("annotation 11", "category_id")
    assert has("annotation 12", "bbox")
    assert has("annotation 13", "image_id 4")

    res = CliRunner().invoke(cli, ["data", "check", str(tmp_path), "--format", "coco", "--split", "train2017", "-q"])
    assert res.exit_code == 1 and "Traceback" not in res.output and "listed 2 times" in res.output, res.output


def _kaggle(tmp_path):
    root = tmp_path / "synth"
    synthesize(root, SynthSpec(classes=2, train=2, val=2, size=40, seed=3))
    return root


def test_a_non_utf8_line_of_the_solution_csv_is_named_and_the_rest_kept(tmp_path):
    root = _kaggle(tmp_path)
    csv = root / "LOC_val_solution.csv"
    lines = csv.read_bytes().split(b"\n")
    lines[2] = lines[2] + b" caf\xe9"
    csv.write_bytes(b"\n".join(lines))
    scan = scan_split(DataConfig(root=str(root)), "val", "all")
    bad = [p for p in scan.problems if "line 3" in p.file]
    assert len(bad) == 1 and "UTF-8" in bad[0].message and str(csv) in bad[0].file, [str(p) for p in scan.problems]
    res = CliRunner().invoke(cli, ["data", "check", str(root), "-q", "--no-decode"])
    assert res.exit_code == 1 and "Traceback" not in res.output and "line 3" in res.output


def test_a_non_utf8_synset_mapping_is_one_line_naming_the_line(tmp_path):
    root = _kaggle(tmp_path)
    mapping = root / "LOC_synset_mapping.txt"
    mapping.write_bytes(mapping.read_bytes().replace(b"\n", b" caf\xe9\n", 2).replace(b" caf\xe9\n", b"\n", 1))
    with pytest.raises(DataError, match=r"LOC_synset_mapping\.txt line 2: not UTF-8"):
        read_split(DataConfig(root=str(root)), "train")
    res = CliRunner().invoke(cli, ["data", "check", str(root), "-q", "--no-decode"])
    assert res.exit_code == 1 and "Traceback" not in res.output and "line 2: not UTF-8" in res.output, res.output
    res = CliRunner().invoke(cli, ["train-cls", "-c", "configs/test/tiny.yaml", "--set", f"data.root={root}",
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "line 2: not UTF-8" in res.output, res.output


def test_an_unreadable_class_folder_is_a_named_problem(tmp_path, monkeypatch):
    import os

    root = _kaggle(tmp_path)
    locked = root / "ILSVRC/Data/CLS-LOC/train/n00000002"
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    scan = scan_split(DataConfig(root=str(root)), "train", "all")
    assert [(p.file, p.kind) for p in scan.problems if p.kind == "bad-folder"] == [(str(locked), "bad-folder")]
    assert scan.records and all("n00000002" not in r.path for r in scan.records)
