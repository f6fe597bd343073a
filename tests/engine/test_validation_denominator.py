"""Training-time validation scores every validation image: unreadable or missing ones count as
wrong and are named once; a split with no readable image stops the run with one line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from vgglocal.cli import cli
from vgglocal.data.synth import SynthSpec, synthesize

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "test" / "tiny.yaml")


def _data(tmp_path):
    root = tmp_path / "synth"
    synthesize(root, SynthSpec(classes=4, train=2, val=2, size=48, seed=1))
    return root, sorted((root / "ILSVRC/Data/CLS-LOC/val").iterdir())


def _train(root, out, *extra):
    return CliRunner().invoke(cli, ["train-cls", "-c", TINY, "--set", f"data.root={root}", "--set", "train.batch_size=4",
                                    "--out", str(out), *extra])


def test_unreadable_and_missing_validation_images_count_as_wrong(tmp_path):
    root, val = _data(tmp_path)
    val[0].write_bytes(val[0].read_bytes()[:100])
    val[1].unlink()
    res = _train(root, tmp_path / "run", "--set", "train.epochs=2")
    assert res.exit_code == 0, res.output
    lines = [json.loads(t) for t in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in lines if m.get("kind", "epoch") == "epoch"]
    assert [(m["val_n_images"], m["val_n_unreadable"]) for m in epochs] == [(8, 2), (8, 2)]
    assert all(m["val_top1_cls_error"] >= 2 / 8 and m["val_top5_cls_error"] >= 2 / 8 for m in epochs)
    for f in val[:2]:
        named = [t for t in res.output.splitlines() if f.name in t and "validation" in t]
        assert len(named) == 1, res.output


def test_a_validation_split_with_no_readable_image_stops_the_run(tmp_path):
    root, val = _data(tmp_path)
    for f in val:
        f.write_bytes(f.read_bytes()[:100])
    res = _train(root, tmp_path / "run")
    assert res.exit_code == 2, res.output
    errors = [t for t in res.output.splitlines() if t.startswith("error:")]
    assert len(errors) == 1 and "none of the 8 validation images could be read" in errors[0], res.output
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()
