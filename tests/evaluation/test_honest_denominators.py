"""`eval` scores every image the ground truth lists: a missing or unreadable one counts as wrong
(as the devkit counts a missing prediction), is named in the log and counted in n_unreadable."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from vgglocal.cli import cli
from vgglocal.data.synth import SynthSpec, synthesize, wnid
from vgglocal.models.io import save_model
from vgglocal.models.vgg import build_vgg

CLASSES = 3
NORM = {"mean": [120.0, 110.0, 100.0], "std": [60.0, 60.0, 60.0]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("honest")
    full, part, only = root / "full", root / "part", root / "only"
    for r in (full, part, only):
        synthesize(r, SynthSpec(classes=CLASSES, train=1, val=4, size=48, seed=3))
    torch.manual_seed(0)
    model = build_vgg("A", num_classes=CLASSES, width=0.0625, crop=32, init="kaiming")
    ckpt = save_model(model, root / "cls.pt", NORM, classes=[wnid(c) for c in range(CLASSES)],
                      meta={"train_scale": {"scale": 48, "scale_min": 48, "scale_max": 0}})
    val = part / "ILSVRC/Data/CLS-LOC/val"
    files = sorted(val.iterdir())
    missing, broken = files[0], files[1]
    missing.unlink()
    broken.write_bytes(broken.read_bytes()[:100])
    # `only`: the same split without those two images at all (neither on disk nor in the CSV)
    for f in (missing, broken):
        (only / "ILSVRC/Data/CLS-LOC/val" / f.name).unlink()
    csv = only / "LOC_val_solution.csv"
    stems = {missing.stem, broken.stem}
    csv.write_text("".join(t for t in csv.read_text().splitlines(keepends=True) if t.split(",")[0] not in stems))
    return root, ckpt, missing, broken


def _eval(root, data, ckpt, out):
    res = CliRunner().invoke(cli, ["eval", "-c", "configs/test/tiny.yaml", "--protocol", "cls-dense", "--checkpoint", str(ckpt),
                                   "--set", f"data.root={data}", "--set", "eval.scales=[48]", "--out", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    return json.loads((out / "metrics.json").read_text()), res.output


def test_missing_and_unreadable_val_images_count_as_wrong(setup, tmp_path):
    root, ckpt, missing, broken = setup
    full, log_full = _eval(root, root / "full", ckpt, tmp_path / "full")
    part, log = _eval(root, root / "part", ckpt, tmp_path / "part")
    n = CLASSES * 4
    assert full["n_images"] == part["n_images"] == n  # every image the ground truth lists
    assert full["n_unreadable"] == 0 and part["n_unreadable"] == 2
    assert part["unreadable"] == {"missing": 1, "cannot decode": 1}
    assert missing.name in log and broken.name in log
    assert "2 of 12 images could not be read and count as wrong" in log
    # the two lost images are wrong: the errors of the ten readable ones, plus two
    only, _ = _eval(root, root / "only", ckpt, tmp_path / "only")
    assert only["n_images"] == n - 2
    for key in ("top1_cls_error", "top5_cls_error"):
        assert part[key] * n == pytest.approx(only[key] * (n - 2) + 2)
