"""A training run says what it skipped: each bad file named once in the log, counted per epoch
in metrics.jsonl, and the reader's dropped annotations summarised at the start."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from vgglocal.cli import cli
from vgglocal.data.synth import SynthSpec, synthesize

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "test" / "tiny.yaml")


def test_skipped_files_are_named_once_and_counted_per_epoch(tmp_path):
    root = tmp_path / "synth"
    synthesize(root, SynthSpec(classes=4, train=4, val=2, size=48, seed=1))
    bad = root / "ILSVRC/Data/CLS-LOC/train/n00000001/n00000001_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    with (root / "LOC_train_solution.csv").open("a") as f:
        f.write("n00000002_1,n00000002 9 9 3 3 \n")  # inverted box; and the ImageId is listed again
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train-cls", "-c", TINY, "--set", f"data.root={root}", "--set", "train.epochs=2",
                                   "--set", "data.max_bad_fraction=0.5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    named = [line for line in res.output.splitlines() if str(bad) in line]
    assert len(named) == 1 and "skipped" in named[0] and "truncated" in named[0].lower(), res.output
    summary = [line for line in res.output.splitlines() if "vgglocal data check" in line]
    assert len(summary) == 1 and "train split" in summary[0] and "bad-csv 1" in summary[0], res.output
    epochs = [json.loads(t) for t in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in epochs if m.get("kind", "epoch") == "epoch"]
    assert [m["bad_samples"] for m in epochs] == [1, 1]
