"""A checkpoint save that fails (disk full) is one line naming the path and the free space; the
last good checkpoint stays."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from vgglocal.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vgglocal.cli import cli
from vgglocal.data.synth import SynthSpec, synthesize

CLS = str(Path(__file__).resolve().parents[2] / "configs" / "test" / "cls-tiny.yaml")


def _disk_full(obj, f, *args, **kwargs):
    f.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_save_checkpoint_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint({"x": torch.ones(2)}, tmp_path / "last.pt")
    monkeypatch.setattr(torch, "save", _disk_full)
    with pytest.raises(CheckpointError) as e:
        save_checkpoint({"x": torch.zeros(2)}, path)
    msg = str(e.value)
    assert msg.startswith(f"cannot write {path}: No space left on device") and "free" in msg and "\n" not in msg, msg
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left behind


def test_training_on_a_full_disk_stops_with_one_line(tmp_path, monkeypatch):
    data = tmp_path / "synth"
    synthesize(data, SynthSpec(classes=4, train=4, val=2, size=48, seed=1))
    out = tmp_path / "run"
    sets = ["--set", f"data.root={data}", "--set", "train.epochs=1"]
    assert CliRunner().invoke(cli, ["train-cls", "-c", CLS, *sets, "--out", str(out)]).exit_code == 0
    before = load_checkpoint(out / "checkpoints" / "last.pt")["global_step"]
    monkeypatch.setattr(torch, "save", _disk_full)
    res = CliRunner().invoke(cli, ["train-cls", "-c", CLS, *sets, "--set", "train.epochs=2", "--out", str(out), "--resume"])
    monkeypatch.undo()
    assert res.exit_code == 2, (res.output, res.exception)
    errors = [t for t in res.output.splitlines() if t.startswith("error:")]
    assert len(errors) == 1 and "last.pt" in errors[0] and "free" in errors[0], res.output
    assert load_checkpoint(out / "checkpoints" / "last.pt")["global_step"] == before
