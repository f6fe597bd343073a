"""vgglocal export: the ONNX file (run by onnxruntime) and the TorchScript file give PyTorch's
maps at two input sizes, and carry the preprocessing metadata."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.testing import assert_close

from vgglocal.cli import cli
from vgglocal.models.export import read_metadata
from vgglocal.models.io import load_model, save_model
from vgglocal.models.vgg import build_vgg

NORM = {"mean": [120.0, 110.0, 100.0], "std": [60.0, 58.0, 57.0]}
SIZES = [(1, 64, 64), (2, 100, 132)]  # (N, H, W): the crop itself, and not multiples of 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = build_vgg("A", num_classes=3, width=1 / 16, crop=64, box_head="pcr", init="kaiming")
    path = tmp_path_factory.mktemp("ckpt") / "loc.pt"
    save_model(net, path, NORM, classes=["n1", "n2", "n3"], class_names=["disc", "ring, hoop", "star"],
               meta={"train_scale": {"scale": 72, "scale_min": 72, "scale_max": 0}})
    return path


def _reference(path, x):
    net = load_model(path)
    with torch.no_grad():
        m = net.maps(x)
    return m["scores"], m["boxes"]


def _export(path, fmt, out):
    res = CliRunner().invoke(cli, ["export", str(path), "--format", fmt, "--out", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "outputs scores, boxes" in res.output


def _check_metadata(meta):
    assert meta["crop"] == 64 and meta["stride"] == 32 and meta["box_head"] == "pcr"
    assert meta["input"]["mean"] == NORM["mean"] and meta["input"]["std"] == NORM["std"]
    assert meta["classes"] == ["n1", "n2", "n3"] and meta["class_names"] == ["disc", "ring, hoop", "star"]
    assert meta["outputs"] == ["scores", "boxes"] and meta["train_scale"]["scale"] == 72


def test_onnx_round_trip_at_two_sizes(checkpoint, tmp_path):
    pytest.importorskip("onnx", reason="vgglocal export --format onnx needs the export extra (pip install '.[export]')")
    pytest.importorskip("onnxscript", reason="vgglocal export --format onnx needs the export extra (pip install '.[export]')")
    ort = pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime (the export extra)")
    out = tmp_path / "model.onnx"
    _export(checkpoint, "onnx", out)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["scores", "boxes"]
    g = torch.Generator().manual_seed(1)
    for n, h, w in SIZES:
        x = torch.randn(n, 3, h, w, generator=g)
        scores, boxes = session.run(None, {"image": x.numpy()})
        ref_scores, ref_boxes = _reference(checkpoint, x)
        assert scores.shape == (n, 3, h // 32 - 1, w // 32 - 1) and boxes.shape == (n, 12, h // 32 - 1, w // 32 - 1)
        assert_close(torch.from_numpy(scores), ref_scores, rtol=1e-4, atol=1e-5)
        assert_close(torch.from_numpy(boxes), ref_boxes, rtol=1e-4, atol=1e-5)
    meta = json.loads(session.get_modelmeta().custom_metadata_map["vgglocal"])
    _check_metadata(meta)
    assert read_metadata(out) == meta


@pytest.mark.filterwarnings("ignore:.*torch.jit.load. is deprecated:FutureWarning")
def test_torchscript_round_trip_at_two_sizes(checkpoint, tmp_path):
    out = tmp_path / "model.ts"
    _export(checkpoint, "torchscript", out)
    module = torch.jit.load(str(out))
    for n, h, w in SIZES:
        x = torch.from_numpy(np.random.default_rng(h).normal(size=(n, 3, h, w)).astype(np.float32))
        with torch.no_grad():
            scores, boxes = module(x)
        ref_scores, ref_boxes = _reference(checkpoint, x)
        assert_close(scores, ref_scores, rtol=1e-5, atol=1e-6)
        assert_close(boxes, ref_boxes, rtol=1e-5, atol=1e-6)
    _check_metadata(read_metadata(out))


def test_export_of_a_missing_checkpoint_is_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "nope.pt"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2 and res.output.strip().startswith("error: checkpoint not found:")
