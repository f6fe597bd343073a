"""A checkpoint save that fails (disk full) is one line naming the path and the free space; the
last good checkpoint stays."""

from __future__ import annotations

import errno
import io
import os
import signal
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
    # the first write of the epoch fails: best.pt when validation improved, else last.pt
    assert len(errors) == 1 and ("last.pt" in errors[0] or "best.pt" in errors[0]) and "free" in errors[0], res.output
    assert load_checkpoint(out / "checkpoints" / "last.pt")["global_step"] == before


class _FillsUp(io.RawIOBase):
    """The temporary file on a disk that fills after ``room`` bytes: writes beyond fail with ENOSPC."""

    def __init__(self, fd, room):
        self._f, self._room = io.FileIO(fd, "wb"), room

    def writable(self):
        return True

    def write(self, b):
        if len(b) > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(b)
        return self._f.write(b)

    def fileno(self):
        return self._f.fileno()

    def close(self):
        self._f.close()
        super().close()


@pytest.mark.parametrize("room", [100, 1000])
def test_a_disk_filling_inside_torch_save_zip_writer_is_the_same_one_line(tmp_path, monkeypatch, room):
    # torch.save's zip writer turns a failed write into "RuntimeError: [enforce fail at
    # inline_container.cc] . unexpected pos ..." when the disk fills after its first record
    with pytest.raises(RuntimeError, match="unexpected pos"):  # the fault, as torch gives it
        torch.save({"x": torch.zeros(1000)}, _FillsUp(os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT), room))
    (tmp_path / "probe").unlink()
    path = save_checkpoint({"x": torch.ones(2)}, tmp_path / "last.pt")
    fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: _FillsUp(fd, room) if mode == "wb" else fdopen(fd, mode, *a, **k))
    with pytest.raises(CheckpointError) as e:
        save_checkpoint({"x": torch.zeros(1000)}, path)
    monkeypatch.undo()
    msg = str(e.value)
    assert msg.startswith(f"cannot write {path}: No space left on device (") and "free" in msg, msg
    assert msg.endswith("the previous last.pt is unchanged") and "\n" not in msg, msg
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_an_interrupt_the_zip_writer_swallows_is_raised_again(tmp_path, monkeypatch):
    """torch's zip writer catches an exception from the file's write and, when the bytes were
    all written, returns as if the save succeeded: a Ctrl-C landing there would be lost."""
    path = save_checkpoint({"x": torch.ones(2)}, tmp_path / "last.pt")

    class _Interrupting:  # the file's write raises after writing, as a signal arriving then would
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data)
            raise KeyboardInterrupt

    def swallowing_save(obj, f, *args, **kwargs):  # what PyTorchStreamWriter does with it
        try:
            f.write(b"all of the record")
        except BaseException:
            pass

    monkeypatch.setattr(torch, "save", swallowing_save)
    real_writes = __import__("vgglocal.checkpoint", fromlist=["_Writes"])._Writes
    monkeypatch.setattr("vgglocal.checkpoint._Writes", lambda f: real_writes(_Interrupting(f)))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"x": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


class _SignalsWhileWriting:
    """The file for torch.save, sending this process a real SIGINT at its first ``times`` writes."""

    def __init__(self, f, times):
        self.f, self.times = f, times

    def write(self, data):
        if self.times:
            self.times -= 1
            signal.raise_signal(signal.SIGINT)
        return self.f.write(data)

    def flush(self):
        self.f.flush()


@pytest.fixture
def default_sigint():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_while_saving_comes_after_the_file_is_complete(tmp_path, monkeypatch, default_sigint):
    path = save_checkpoint({"x": torch.ones(2)}, tmp_path / "last.pt")
    real_writes = __import__("vgglocal.checkpoint", fromlist=["_Writes"])._Writes
    monkeypatch.setattr("vgglocal.checkpoint._Writes", lambda f: real_writes(_SignalsWhileWriting(f, 1)))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"x": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["x"], torch.zeros(1000))  # the new file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_while_saving_stops_at_once_and_keeps_the_old_file(tmp_path, monkeypatch, default_sigint):
    path = save_checkpoint({"x": torch.ones(2)}, tmp_path / "last.pt")
    real_writes = __import__("vgglocal.checkpoint", fromlist=["_Writes"])._Writes
    monkeypatch.setattr("vgglocal.checkpoint._Writes", lambda f: real_writes(_SignalsWhileWriting(f, 2)))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"x": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
