"""--resume means the same run: a config that changes what the saved position means is refused
(one line naming the keys); learning rate, epochs and logging may change and are recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from vgglocal.checkpoint import load_checkpoint, save_checkpoint
from vgglocal.cli import cli
from vgglocal.data.synth import SynthSpec, synthesize

CLS = str(Path(__file__).resolve().parents[2] / "configs" / "test" / "cls-tiny.yaml")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = tmp_path_factory.mktemp("synth")
    synthesize(data, SynthSpec(classes=4, train=4, val=2, size=48, seed=1))
    out = tmp_path_factory.mktemp("runs") / "cls"
    sets = ["--set", f"data.root={data}", "--set", "train.epochs=1"]
    res = CliRunner().invoke(cli, ["train-cls", "-c", CLS, *sets, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return data, out, sets


@pytest.mark.parametrize("change, key", [
    ("train.batch_size=4", "train.batch_size"),
    ("seed=7", "seed"),
    ("data.train_split=val", "data.train_split"),
    ("data.limit=4", "data.limit"),
])
def test_a_change_of_what_the_position_means_is_refused(run, change, key):
    data, out, sets = run
    res = CliRunner().invoke(cli, ["train-cls", "-c", CLS, *sets, "--set", change, "--set", "train.epochs=2",
                                   "--out", str(out), "--resume"])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert line.count("\n") == 0 and line.startswith("error: --resume:") and key in line, line


def test_another_data_root_is_refused(run, tmp_path):
    data, out, sets = run
    res = CliRunner().invoke(cli, ["train-cls", "-c", CLS, *sets, "--set", f"data.root={tmp_path}", "--out", str(out), "--resume"])
    assert res.exit_code == 2 and "error: --resume:" in res.output and "data.root " in res.output and res.output.count("\n") == 1, res.output


def test_world_size_times_accumulation_may_not_change_mid_epoch(run, tmp_path):
    data, out, sets = run
    mid = tmp_path / "mid"
    (mid / "checkpoints").mkdir(parents=True)
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    ck = {k: v for k, v in ck.items() if k not in ("format", "version")}
    save_checkpoint({**ck, "epoch": 0, "step": 1, "global_step": 1, "finished": False}, mid / "checkpoints" / "last.pt")
    res = CliRunner().invoke(cli, ["train-cls", "-c", CLS, *sets, "--set", "train.grad_accum=2", "--out", str(mid), "--resume"])
    assert res.exit_code == 2 and "train.grad_accum" in res.output and "mid-epoch" in res.output, res.output


def test_learning_rate_and_epochs_may_change_and_are_recorded(run, tmp_path):
    data, out, sets = run
    before = load_checkpoint(out / "checkpoints" / "last.pt")["global_step"]
    res = CliRunner().invoke(cli, ["train-cls", "-c", CLS, *sets, "--set", "optim.lr=0.005", "--set", "train.epochs=2",
                                   "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    assert "resuming with changed settings: optim.lr 0.01 -> 0.005, train.epochs 1 -> 2" in res.output
    meta = load_checkpoint(out / "checkpoints" / "last.pt")["meta"]
    assert meta["resumed"][-1]["changes"] == {"optim.lr": [0.01, 0.005], "train.epochs": [1, 2]}
    assert meta["resumed"][-1]["global_step"] == before > 0


def test_a_resume_after_a_kill_between_the_epoch_line_and_the_checkpoint_keeps_one_line_per_epoch(run, tmp_path):
    import json
    import shutil

    data, out, sets = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    # the kill came after epoch 1's metrics line was written, before last.pt moved past it
    ck = {k: v for k, v in load_checkpoint(copy / "checkpoints" / "last.pt").items() if k not in ("format", "version")}
    first = load_checkpoint(out / "checkpoints" / "last.pt")
    save_checkpoint({**ck, "epoch": 0, "step": 0, "global_step": 0, "finished": False,
                     "schedule": {**ck["schedule"], "best": float("inf")}}, copy / "checkpoints" / "last.pt")
    (copy / "model.pt").unlink(missing_ok=True)
    lines = [json.loads(t) for t in (copy / "metrics.jsonl").read_text().splitlines()]
    epochs_before = [m["epoch"] for m in lines if m.get("kind", "epoch") == "epoch"]
    assert 1 in epochs_before
    res = CliRunner().invoke(cli, ["train-cls", "-c", CLS, *sets, "--set", f"train.epochs={first['epoch']}", "--out", str(copy), "--resume"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(t) for t in (copy / "metrics.jsonl").read_text().splitlines()]
    epochs = [m["epoch"] for m in lines if m.get("kind", "epoch") == "epoch"]
    assert epochs == list(range(1, first["epoch"] + 1)), epochs
