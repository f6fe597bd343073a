"""``data check``: counts, then every problem one line each naming the file; exit 0 / 1 / 2."""

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from vgglocal.cli import cli
from vgglocal.config import DataConfig
from vgglocal.data.check import check_dataset
from vgglocal.data.synth import SynthSpec, synthesize

CLASSES, TRAIN, VAL = 2, 3, 2


def make(tmp_path):
    root = tmp_path / "synth"
    synthesize(root, SynthSpec(classes=CLASSES, train=TRAIN, val=VAL, size=40, seed=3))
    return root


def test_clean_data_set_exits_0_with_counts(tmp_path):
    root = make(tmp_path)
    result = CliRunner().invoke(cli, ["data", "check", str(root), "-q"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{root} (ilsvrc-kaggle)"
    assert lines[1].startswith(f"train: {CLASSES * TRAIN} images, {CLASSES} classes, ")
    assert lines[2].startswith(f"val: {CLASSES * VAL} images, {CLASSES} classes, ")
    assert lines[-1] == "no problems"


def test_bad_images_reported_valid_variants_accepted_nothing_lost(tmp_path):
    root = make(tmp_path)
    train = root / "ILSVRC/Data/CLS-LOC/train"
    truncated, garbage, png = (train / f"n00000001/n00000001_{i}.JPEG" for i in (1, 2, 3))
    cmyk, gray = (train / f"n00000002/n00000002_{i}.JPEG" for i in (1, 2))
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    garbage.write_bytes(np.random.default_rng(0).bytes(3000))
    Image.open(png).convert("RGB").save(png, format="PNG")           # valid: PNG under .JPEG
    Image.open(cmyk).convert("CMYK").save(cmyk, format="JPEG")        # valid: CMYK JPEG
    Image.open(gray).convert("L").save(gray, format="JPEG")           # valid: grayscale
    report = check_dataset(DataConfig(root=str(root)), ["train", "val"])
    assert report.splits["train"]["images"] == CLASSES * TRAIN and report.splits["val"]["images"] == CLASSES * VAL
    assert [(p.file, p.kind) for p in report.problems] == [(str(truncated), "bad-image"), (str(garbage), "bad-image")]
    assert "truncated" in report.problems[0].message and "not an image" in report.problems[1].message

    result = CliRunner().invoke(cli, ["data", "check", str(root), "-q"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"{truncated}: cannot decode image (image file is truncated" in result.output
    assert any(line.startswith(f"{garbage}: not an image") for line in lines)
    assert lines[-1] == "2 problems (bad-image 2)"


def test_box_outside_decoded_image_and_unknown_wnid_reported(tmp_path):
    root = make(tmp_path)
    csv = root / "LOC_val_solution.csv"
    rows = csv.read_text().splitlines()
    image_id = rows[1].split(",")[0]
    rows[1] = rows[1].rstrip() + " n00000001 2 3 500 30 n09999999 1 1 5 5 "
    csv.write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(cli, ["data", "check", str(root), "--split", "val", "--json", "-q"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["problem_counts"] == {"unknown-class": 1, "clipped-box": 1}
    assert any(image_id in p and "n09999999" in p for p in report["problems"])
    assert any(f"{image_id}.JPEG: box [2, 3, 500, 30] extends outside the" in p for p in report["problems"])
    assert report["splits"]["val"]["images"] == CLASSES * VAL


def test_missing_split_is_a_problem_and_bad_root_exits_2(tmp_path):
    root = make(tmp_path)
    result = CliRunner().invoke(cli, ["data", "check", str(root), "--split", "test", "--no-decode", "-q"])
    assert result.exit_code == 1 and "split test: " in result.output and "no such image folder" in result.output
    result = CliRunner().invoke(cli, ["data", "check", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "error:" in result.output


def test_check_with_config_and_format(tmp_path):
    root = make(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  format: coco\n  root: {root}\n")
    result = CliRunner().invoke(cli, ["data", "check", "-c", str(config), "--no-decode", "-q", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["format"] == "coco"
    result = CliRunner().invoke(cli, ["data", "check", str(root), "--format", "voc", "-q"])
    assert result.exit_code == 1 and "ImageSets/Main/train.txt: no such image set" in result.output
