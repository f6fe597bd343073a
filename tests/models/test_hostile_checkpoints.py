"""Damaged and hostile checkpoint files: every loader answers one CheckpointError line naming the
file and the fault, before allocating what the file asks for; the CLI exits 2 without a traceback."""

import zipfile

import pytest
import torch
from click.testing import CliRunner

from vgglocal.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vgglocal.cli import cli
from vgglocal.models.io import load_model, model_state
from vgglocal.models.vgg import build_vgg

NORM = {"mean": [1.0, 2.0, 3.0], "std": [1.0, 1.0, 1.0]}


def _good() -> dict:
    return model_state(build_vgg("A", num_classes=3, width=0.0625, crop=32), NORM, ["a", "b", "c"])


def _with(**changes) -> dict:
    ck = _good()
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            ck[outer] = dict(ck[outer])
            if value is _DROP:
                ck[outer].pop(inner)
            else:
                ck[outer][inner] = value
        elif value is _DROP:
            ck.pop(key)
        else:
            ck[key] = value
    return ck


_DROP = object()


def _wrong_shape() -> dict:
    ck = _good()
    ck["state_dict"] = dict(ck["state_dict"])
    ck["state_dict"]["features.conv1_1.weight"] = torch.zeros(5, 3, 3, 3)
    return ck


def _missing_tensor() -> dict:
    ck = _good()
    ck["state_dict"] = {k: v for k, v in ck["state_dict"].items() if k != "cls_head.fc8.bias"}
    return ck


def _not_a_tensor() -> dict:
    ck = _good()
    ck["state_dict"] = dict(ck["state_dict"], **{"cls_head.fc8.bias": [1.0, 2.0, 3.0]})
    return ck


# name -> (checkpoint dict written with save_checkpoint, or raw bytes), a word the message must hold
HOSTILE = {
    "text-renamed": (b"this is just a text file\n" * 20, "not a readable"),
    "empty": (b"", "not a readable"),
    "a-list": ("list", "not a vgglocal checkpoint"),
    "no-model-key": (_with(model=_DROP), "'model'"),
    "model-not-dict": (_with(model="vgg16"), "'model'"),
    "no-state-dict": (_with(state_dict=_DROP), "'state_dict'"),
    "state-dict-not-dict": (_with(state_dict=[1, 2, 3]), "'state_dict'"),
    "terabyte-width": (_with(**{"model.width": 1e6}), "model.width"),
    "huge-fc-width": (_with(**{"model.fc_width": 10**9}), "model.fc_width"),
    "negative-classes": (_with(**{"model.num_classes": -5}), "model.num_classes"),
    "huge-classes": (_with(**{"model.num_classes": 10**12}), "model.num_classes"),
    "string-classes": (_with(**{"model.num_classes": "three"}), "model.num_classes"),
    "bad-crop": (_with(**{"model.crop": 33}), "model.crop"),
    "bad-arch": (_with(**{"model.arch": "Z"}), "model.arch"),
    "unknown-hparam": (_with(**{"model.evil": 1}), "model.evil"),
    "bad-box-head": (_with(**{"model.box_head": "xyz"}), "model.box_head"),
    "bad-dropout": (_with(**{"model.dropout": 7.0}), "model.dropout"),
    "bad-kind": (_with(kind="weird"), "kind"),
    "kind-mismatch": (_with(kind="loc"), "kind"),
    "wrong-shape": (_wrong_shape(), "features.conv1_1.weight"),
    "missing-tensor": (_missing_tensor(), "cls_head.fc8.bias"),
    "tensor-is-a-list": (_not_a_tensor(), "cls_head.fc8.bias"),
    "bad-normalization": (_with(normalization={"mean": [1.0], "std": [0.0, 1.0, 1.0]}), "normalization"),
    "normalization-not-dict": (_with(normalization="imagenet"), "normalization"),
    "classes-wrong-length": (_with(classes=["a"]), "classes"),
    "classes-not-strings": (_with(classes=[1, 2, 3]), "classes"),
    "meta-not-dict": (_with(meta=[1]), "meta"),
}


def _write(tmp_path, name):
    content, _ = HOSTILE[name]
    path = tmp_path / f"{name}.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "list":
        torch.save([1, 2, 3], path)
    else:
        save_checkpoint(content, path)
    return path


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_load_model_names_the_file_and_the_fault(tmp_path, name):
    path = _write(tmp_path, name)
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg, msg
    assert HOSTILE[name][1] in msg, msg


def test_a_truncated_checkpoint_is_one_line(tmp_path):
    path = save_checkpoint(_good(), tmp_path / "whole.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(tmp_path / "cut.pt")
    assert zipfile.is_zipfile(path)


def test_the_good_checkpoint_loads():
    # the fixture itself must be valid, or every test above would pass for the wrong reason
    model = build_vgg("A", num_classes=3, width=0.0625, crop=32)
    ck = model_state(model, NORM, ["a", "b", "c"])
    assert ck["kind"] == "cls"


@pytest.mark.parametrize("name", ["text-renamed", "no-model-key", "model-not-dict", "terabyte-width", "negative-classes",
                                  "wrong-shape", "state-dict-not-dict"])
def test_cli_commands_answer_one_line(tmp_path, name):
    path = _write(tmp_path, name)
    runs = {
        "info": ["info", str(path)],
        "predict": ["predict", "--checkpoint", str(path), str(tmp_path / "x.jpg")],
        "train-loc": ["train-loc", "-c", "configs/test/tiny.yaml", "--init", str(path), "--out", str(tmp_path / "run"),
                      "--set", f"data.root={tmp_path}"],
    }
    (tmp_path / "x.jpg").write_bytes(b"")
    for cmd, args in runs.items():
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2, (cmd, res.output, res.exception)
        lines = [line for line in res.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and str(path) in lines[0], (cmd, res.output)
        assert "Traceback" not in res.output


def test_load_checkpoint_still_reads_a_training_checkpoint(tmp_path):
    path = save_checkpoint({**_good(), "optimizer": {"state": {}, "param_groups": []}, "epoch": 1}, tmp_path / "last.pt")
    assert load_checkpoint(path)["epoch"] == 1
    assert load_model(path).num_classes == 3


# ---------------------------------------------------------------------------- torchvision files


def _tv_state(hidden: int = 8, classes: int = 3) -> dict:
    """A torchvision vgg11 layout state dict with small FC layers."""
    import torchvision

    sd = {f"features.{k}": v for k, v in torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["A"]).state_dict().items()}
    sd.update({"classifier.0.weight": torch.zeros(hidden, 512 * 7 * 7), "classifier.0.bias": torch.zeros(hidden),
               "classifier.3.weight": torch.zeros(hidden, hidden), "classifier.3.bias": torch.zeros(hidden),
               "classifier.6.weight": torch.zeros(classes, hidden), "classifier.6.bias": torch.zeros(classes)})
    return sd


def _tv_variants() -> dict:
    good = _tv_state()
    out = {"good": good}
    out["fc8-wrong-inputs"] = {**good, "classifier.6.weight": torch.zeros(3, 5)}
    out["fc7-wrong-shape"] = {**good, "classifier.3.weight": torch.zeros(8, 9)}
    out["conv-wrong-shape"] = {**good, "features.0.weight": torch.zeros(64, 3, 5, 5)}
    out["bias-missing"] = {k: v for k, v in good.items() if k != "classifier.6.bias"}
    out["not-a-tensor"] = {**good, "classifier.6.bias": "three"}
    # a stride-0 view: a few bytes on disk, a billion classes once a model is built for it
    out["billion-classes"] = {**good, "classifier.6.weight": torch.zeros(1, 8).expand(10**9, 8),
                              "classifier.6.bias": torch.zeros(1).expand(10**9)}
    return out


def test_import_weights_rejects_damaged_torchvision_files(tmp_path):
    variants = _tv_variants()
    res = CliRunner().invoke(cli, ["import-weights", str(_save(tmp_path, "good", variants["good"])), "--arch", "A",
                                   "--out", str(tmp_path / "good-out.pt")])
    assert res.exit_code == 0, res.output
    for name, sd in variants.items():
        if name == "good":
            continue
        src = _save(tmp_path, name, sd)
        res = CliRunner().invoke(cli, ["import-weights", str(src), "--arch", "A", "--out", str(tmp_path / f"{name}-out.pt")])
        assert res.exit_code == 2, (name, res.output, res.exception)
        assert res.output.startswith(f"error: {src}: ") and res.output.count("\n") == 1, (name, res.output)
        assert not (tmp_path / f"{name}-out.pt").exists()


def _save(tmp_path, name, sd):
    path = tmp_path / f"{name}.pth"
    torch.save(sd, path)
    return path


def test_vgglocal_debug_still_shows_the_traceback(tmp_path):
    import os
    import subprocess
    import sys

    path = _write(tmp_path, "text-renamed")
    env = {k: v for k, v in os.environ.items() if k != "VGGLOCAL_DEBUG"}
    plain = subprocess.run([sys.executable, "-m", "vgglocal", "info", str(path)], env=env, capture_output=True, text=True)
    assert plain.returncode == 2 and plain.stderr == f"error: {path}: not a readable vgglocal checkpoint (not a torch.save file: it starts with b'this')\n"
    debug = subprocess.run([sys.executable, "-m", "vgglocal", "info", str(path)], env={**env, "VGGLOCAL_DEBUG": "1"},
                           capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "CheckpointError" in debug.stderr
