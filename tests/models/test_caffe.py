"""`vgglocal import-weights --format caffe`: small caffemodels of both layer formats, built here
with caffe.proto's own field types (packed floats), give the logits of a direct computation of
Caffe's net (BGR, 0..255 minus the mean pixel) with the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from vgglocal.cli import cli
from vgglocal.models.caffe import caffe_messages, read_caffemodel
from vgglocal.models.io import load_model
from vgglocal.models.vgg import VGG_SPECS

MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
WIDTH, HIDDEN, CLASSES, SIDE = 0.125, 16, 5, 1  # fc6 over a 1x1 map: the 32-px crop


def caffe_weights(arch: str, seed: int = 0, classes: int = CLASSES) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(name, kind, weight, bias) of a tiny VGG ``arch`` in Caffe's layout (FC weights (out, in))."""
    g = np.random.default_rng(seed)
    layers, cin = [], 3
    for b, block in enumerate(VGG_SPECS[arch].blocks, 1):
        for i, (_, c) in enumerate(block, 1):
            cout = max(1, round(c * WIDTH))
            layers.append((f"conv{b}_{i}", "conv", g.normal(0, (2 / (9 * cin)) ** 0.5, (cout, cin, 3, 3)).astype(np.float32),
                           g.normal(0, 0.01, cout).astype(np.float32)))
            cin = cout
    for name, fin, fout in (("fc6", cin * SIDE * SIDE, HIDDEN), ("fc7", HIDDEN, HIDDEN), ("fc8", HIDDEN, classes)):
        layers.append((name, "fc", g.normal(0, (2 / fin) ** 0.5, (fout, fin)).astype(np.float32),
                       g.normal(0, 0.01, fout).astype(np.float32)))
    return layers


def write_caffemodel(path, layers, version: int) -> None:
    """A binary NetParameter as Caffe writes it: V1 ``layers`` (enum types, legacy 4-D blob
    sizes) or V2 ``layer`` (string types, ``BlobShape``), pools, ReLUs and dropout between."""
    m = caffe_messages(packed_floats=True)
    net = m["NetParameter"](name="VGG_ILSVRC_tiny")
    net.input.append("data")
    net.input_dim.extend([10, 3, 32 * SIDE, 32 * SIDE])
    V1 = m["V1LayerParameter"]
    for i, (name, kind, w, b) in enumerate(layers):
        if version == 1:
            layer = net.layers.add(name=name, type=V1.CONVOLUTION if kind == "conv" else V1.INNER_PRODUCT)
            for arr in (w, b):
                blob = layer.blobs.add()
                dims = (1,) * (4 - arr.ndim) + arr.shape
                blob.num, blob.channels, blob.height, blob.width = dims
                blob.data.extend(arr.ravel().tolist())
            net.layers.add(name=f"relu{i}", type=V1.RELU)
            if name.endswith("fc6") or name.endswith("fc7"):
                net.layers.add(name=f"drop{i}", type=V1.DROPOUT)
        else:
            layer = net.layer.add(name=name, type="Convolution" if kind == "conv" else "InnerProduct")
            for arr in (w, b):
                blob = layer.blobs.add()
                blob.shape.dim.extend(arr.shape)
                blob.data.extend(arr.ravel().tolist())
            net.layer.add(name=f"relu{i}", type="ReLU")
    path.write_bytes(net.SerializeToString())


def caffe_forward(layers, image_bgr: np.ndarray) -> np.ndarray:
    """Caffe's VGG by hand: (BGR - mean pixel), 3x3 convs pad 1 + ReLU, 2x2 max pools after
    each block, FC + ReLU, FC + ReLU, FC."""
    x = torch.from_numpy(image_bgr - MEAN_BGR).permute(2, 0, 1)[None].double()
    convs = [lay for lay in layers if lay[1] == "conv"]
    sizes = [len(b) for b in VGG_SPECS[ARCH_OF[len(convs)]].blocks]
    k = 0
    for n in sizes:
        for _ in range(n):
            _, _, w, b = convs[k]
            x = F.relu(F.conv2d(x, torch.from_numpy(w).double(), torch.from_numpy(b).double(), padding=1))
            k += 1
        x = F.max_pool2d(x, 2, ceil_mode=True)  # Caffe rounds pooled sizes up
    x = x.flatten(1)
    fcs = [lay for lay in layers if lay[1] == "fc"]
    for j, (_, _, w, b) in enumerate(fcs):
        x = x @ torch.from_numpy(w).double().T + torch.from_numpy(b).double()
        if j < 2:
            x = F.relu(x)
    return x[0].numpy()


ARCH_OF = {sum(len(b) for b in VGG_SPECS[a].blocks): a for a in ("A", "B", "D", "E")}


# classes 1: V1 writes that fc8 weight 1x1x1x16, its bias 1x1x1x1, read from the right as [1, 16] and [1]
@pytest.mark.parametrize("arch,version,classes", [("D", 1, CLASSES), ("E", 2, CLASSES), ("D", 1, 1)])
def test_imported_caffe_net_gives_caffes_logits(tmp_path, arch, version, classes):
    layers = caffe_weights(arch, classes=classes)
    src, out = tmp_path / "tiny.caffemodel", tmp_path / "tiny.pt"
    write_caffemodel(src, layers, version)
    res = CliRunner().invoke(cli, ["import-weights", str(src), "--format", "caffe", "--arch", arch, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"caffe VGG {arch}" in res.output
    net = load_model(out)
    assert net.num_classes == classes
    assert net.normalization["mean"] == pytest.approx([123.68, 116.779, 103.939]) and net.normalization["std"] == [1, 1, 1]
    rgb = np.random.default_rng(1).integers(0, 256, (32 * SIDE, 32 * SIDE, 3)).astype(np.float32)
    expected = caffe_forward(layers, rgb[..., ::-1].copy())  # Caffe reads BGR
    mean, std = (torch.tensor(net.normalization[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    x = (torch.from_numpy(rgb).permute(2, 0, 1)[None] - mean) / std  # what eval and predict feed
    with torch.no_grad():
        logits = net(x)[0].double().numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert np.argmax(logits) == np.argmax(expected)


def test_both_formats_read_the_same_layers(tmp_path):
    layers = caffe_weights("D", seed=3)
    for version in (1, 2):
        write_caffemodel(tmp_path / f"v{version}.caffemodel", layers, version)
    v1, v2 = (read_caffemodel(tmp_path / f"v{v}.caffemodel") for v in (1, 2))
    w1 = [(lay.name, lay.type, [b.shape for b in lay.blobs]) for lay in v1 if lay.blobs]
    w2 = [(lay.name, lay.type, [b.shape for b in lay.blobs]) for lay in v2 if lay.blobs]
    assert w1 == w2 and len(w1) == 16
    for a, b in zip((lay for lay in v1 if lay.blobs), (lay for lay in v2 if lay.blobs), strict=True):
        for x, y in zip(a.blobs, b.blobs, strict=True):
            np.testing.assert_array_equal(x, y)


def test_prototxt_is_checked_against_the_model(tmp_path):
    layers = caffe_weights("D")
    src = tmp_path / "m.caffemodel"
    write_caffemodel(src, layers, 1)
    body = "\n".join(f'layers {{ name: "{n}" type: {"CONVOLUTION" if k == "conv" else "INNER_PRODUCT"} '
                     f'convolution_param {{ num_output: 8 pad: 1 kernel_size: 3 }} }}' for n, k, _, _ in layers)
    good = tmp_path / "deploy.prototxt"
    good.write_text(f'name: "VGG"\ninput: "data"\ninput_dim: 10\ninput_dim: 3\ninput_dim: 224\ninput_dim: 224\n{body}\n')
    args = ["import-weights", str(src), "--format", "caffe", "--arch", "D", "--out", str(tmp_path / "o.pt")]
    assert CliRunner().invoke(cli, [*args, "--prototxt", str(good)]).exit_code == 0
    bad = tmp_path / "other.prototxt"
    bad.write_text(body.replace('"fc8"', '"fc8_voc"'))
    res = CliRunner().invoke(cli, [*args, "--prototxt", str(bad)])
    assert res.exit_code != 0 and "other.prototxt" in res.output and "fc8" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["wrong-arch", "not-vgg", "not-caffe", "torchvision-file"])
def test_files_that_are_not_a_vgg_caffemodel_are_one_line(tmp_path, case):
    src = tmp_path / "x.caffemodel"
    arch = "D"
    if case == "wrong-arch":
        write_caffemodel(src, caffe_weights("E"), 2)
        needle = "arch E?"
    elif case == "not-vgg":  # a net with one convolution: say, a LeNet
        write_caffemodel(src, caffe_weights("D")[:1] + caffe_weights("D")[-2:], 2)
        needle = "not a VGG net"
    elif case == "not-caffe":
        src.write_bytes(b"\xff\xfe" + bytes(range(256)) * 4)
        needle = "not a Caffe model"
    else:
        torch.save({"features.0.weight": torch.zeros(1)}, src)
        needle = "x.caffemodel"
    res = CliRunner().invoke(cli, ["import-weights", str(src), "--format", "caffe", "--arch", arch, "--out", str(tmp_path / "o.pt")])
    assert res.exit_code != 0
    assert needle in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.pt").exists()


# Each holds the right number of values, so only the shape can refuse it, as Caffe's
# Net::CopyTrainedLayersFrom does (Blob::ShapeEquals). Tiny D: conv2_1 is [16, 8, 3, 3], fc7 [16, 16].
@pytest.mark.parametrize("layer,declared,version,shown,expected", [
    ("conv2_1", (8, 16, 3, 3), 2, "[8, 16, 3, 3]", "[16, 8, 3, 3]"),  # transposed
    ("conv2_1", (8, 16, 3, 3), 1, "[8, 16, 3, 3]", "[16, 8, 3, 3]"),
    ("conv2_1", (16, 8, 1, 9), 2, "[16, 8, 1, 9]", "[16, 8, 3, 3]"),
    ("fc7", (8, 32), 2, "[8, 32]", "[16, 16]"),
    ("fc7", (8, 32), 1, "[1, 1, 8, 32]", "[1, 1, 16, 16]"),  # legacy dims, target read from the right
    ("fc7", (2, 1, 8, 16), 1, "[2, 1, 8, 16]", "[out, in]"),  # num 2: no InnerProduct weight
], ids=["conv-transposed-v2", "conv-transposed-v1", "conv-1x9-v2", "fc-v2", "fc-v1", "fc-num2-v1"])
def test_a_blob_of_the_wrong_shape_is_refused(tmp_path, layer, declared, version, shown, expected):
    layers = [(n, k, w.reshape(declared) if n == layer else w, b) for n, k, w, b in caffe_weights("D")]
    src, out = tmp_path / "bad.caffemodel", tmp_path / "o.pt"
    write_caffemodel(src, layers, version)
    res = CliRunner().invoke(cli, ["import-weights", str(src), "--format", "caffe", "--arch", "D", "--out", str(out)])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert "bad.caffemodel" in lines[0] and f"layer {layer}: weight declared {shown}" in lines[0], lines[0]
    assert expected in lines[0], lines[0]
    assert ("V1 num, channels, height, width" in lines[0]) == (version == 1)
    assert not out.exists()


def test_a_legacy_bias_is_read_from_the_right(tmp_path):
    """A conv bias declared 16x1x1x1 holds 16 values, but Caffe's is 1x1x1x16."""
    layers = [(n, k, w, b.reshape(-1, 1, 1, 1) if n == "conv2_1" else b) for n, k, w, b in caffe_weights("D")]
    src, out = tmp_path / "bad.caffemodel", tmp_path / "o.pt"
    write_caffemodel(src, layers, 1)
    res = CliRunner().invoke(cli, ["import-weights", str(src), "--format", "caffe", "--arch", "D", "--out", str(out)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "layer conv2_1: bias declared [16, 1, 1, 1]" in res.output and "[out]" in res.output, res.output
    assert not out.exists()
