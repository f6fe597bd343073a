"""Read the authors' released Caffe models (``VGG_ILSVRC_16_layers.caffemodel``, ``..._19_...``).

No Caffe install and no generated ``caffe_pb2`` module: the few messages of BVLC Caffe's
``src/caffe/proto/caffe.proto`` that hold a net's weights (``NetParameter``, the V2
``LayerParameter``, the V1 ``V1LayerParameter`` of the released VGG files, ``BlobProto``,
``BlobShape``) are declared here, with their field numbers, as a descriptor for the protobuf
runtime (the ``protobuf`` package, already a dependency of tensorboard and onnx). The packages
that ship ready bindings are either unmaintained or pull in all of Caffe; declaring five
messages keeps the reader small and the field numbers checkable against caffe.proto.

One deliberate difference: ``BlobProto.data`` (``repeated float data = 5 [packed = true]``) is
declared as ``repeated bytes``. A packed repeated field and a bytes field have the same wire
format (one length-delimited record), so the parser hands over the raw little-endian float32
bytes, which :func:`numpy.frombuffer` views without copying, instead of 138 million Python
floats for VGG-16. Caffe writes these fields packed, as caffe.proto declares them; a file with
unpacked floats (not produced by Caffe) is refused by name. ``double_data`` likewise.

Caffe feeds the net BGR images in 0..255 minus the mean pixel ``[103.939, 116.779, 123.68]``
(BGR order, from the authors' model page). vgglocal feeds RGB 0..255 through
``(x - mean) / std``; the conversion reverses the first convolution's input channels (an exact
identity: the same sums in another order) and records ``mean = [123.68, 116.779, 103.939]``,
``std = [1, 1, 1]``, so eval and predict give the net exactly the numbers Caffe gave it.
Caffe's max pooling rounds output sizes up where PyTorch's rounds down: identical on the
224 crop and at every size whose maps stay even (multiples of 32), which is what the paper's
dense evaluation uses.

Every blob must have exactly the shape Caffe would load it into (``Net::CopyTrainedLayersFrom``
refuses any other: ``Blob::ShapeEquals``): a Convolution weight ``[out, in, kh, kw]``, an
InnerProduct weight ``[out, in]``, a bias ``[out]``. V2 ``BlobShape`` dims are compared as they
are; the legacy ``num, channels, height, width`` of V1 files against that shape read from the
right (a bias is ``1x1x1xOUT``, an InnerProduct weight ``1x1xOUTxIN``). Equal element counts are
not enough: a transposed kernel holds as many numbers as the right one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from vgglocal.checkpoint import CheckpointError
from vgglocal.models.checks import check_hparams, expected_shapes
from vgglocal.models.vgg import VGG, VGG_SPECS

__all__ = ["CAFFE_NORMALIZATION", "CaffeLayer", "DeclaredShape", "read_caffemodel", "read_prototxt", "convert_caffe",
           "import_caffe", "caffe_messages"]

# RGB order, 0..255 units (vgglocal's convention); std 1: Caffe subtracts the mean pixel only.
CAFFE_NORMALIZATION = {"mean": [123.68, 116.779, 103.939], "std": [1.0, 1.0, 1.0]}

# V1LayerParameter.LayerType, from caffe.proto (only the names are used: the type of a layer).
_V1_TYPES = {
    "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3, "CONTRASTIVE_LOSS": 37,
    "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6, "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7,
    "ELTWISE": 25, "EXP": 38, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11,
    "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
    "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18, "SIGMOID": 19,
    "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22, "SLICE": 33,
    "TANH": 23, "WINDOW_DATA": 24, "THRESHOLD": 31,
}
# V1 enum names -> the V2 string types, for the layers a VGG net has
_V1_TO_V2 = {"CONVOLUTION": "Convolution", "INNER_PRODUCT": "InnerProduct", "RELU": "ReLU", "POOLING": "Pooling",
             "DROPOUT": "Dropout", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "DATA": "Data"}

_MESSAGES: dict[str, Any] | None = None
_LEGACY = " (V1 num, channels, height, width)"


def caffe_messages(packed_floats: bool = False) -> dict[str, Any]:
    """Message classes for ``NetParameter`` and what it holds (field numbers as in caffe.proto).

    ``packed_floats=True`` declares ``BlobProto.data`` as caffe.proto does (``repeated float``,
    packed): what Caffe itself writes, for building test files; the reader uses the bytes view.
    """
    global _MESSAGES
    if _MESSAGES is not None and not packed_floats:
        return _MESSAGES
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    package = "vgglocal_caffe_packed" if packed_floats else "vgglocal_caffe"
    fd = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package, syntax="proto2")

    def message(name: str, fields: list[tuple]) -> descriptor_pb2.DescriptorProto:
        m = fd.message_type.add(name=name)
        for fname, number, label, ftype, type_name, packed in fields:
            f = m.field.add(name=fname, number=number, label=label, type=ftype)
            if type_name:
                f.type_name = f".{package}.{type_name}"
            if packed:
                f.options.packed = True
        return m

    R, OPT = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    floats = (F.TYPE_FLOAT, F.TYPE_DOUBLE) if packed_floats else (F.TYPE_BYTES, F.TYPE_BYTES)
    message("BlobShape", [("dim", 1, R, F.TYPE_INT64, None, True)])
    message("BlobProto", [
        ("num", 1, OPT, F.TYPE_INT32, None, False), ("channels", 2, OPT, F.TYPE_INT32, None, False),
        ("height", 3, OPT, F.TYPE_INT32, None, False), ("width", 4, OPT, F.TYPE_INT32, None, False),
        ("data", 5, R, floats[0], None, packed_floats), ("diff", 6, R, floats[0], None, packed_floats),
        ("shape", 7, OPT, F.TYPE_MESSAGE, "BlobShape", False),
        ("double_data", 8, R, floats[1], None, packed_floats),
    ])
    message("LayerParameter", [
        ("name", 1, OPT, F.TYPE_STRING, None, False), ("type", 2, OPT, F.TYPE_STRING, None, False),
        ("bottom", 3, R, F.TYPE_STRING, None, False), ("top", 4, R, F.TYPE_STRING, None, False),
        ("blobs", 7, R, F.TYPE_MESSAGE, "BlobProto", False),
    ])
    v1 = message("V1LayerParameter", [
        ("bottom", 2, R, F.TYPE_STRING, None, False), ("top", 3, R, F.TYPE_STRING, None, False),
        ("name", 4, OPT, F.TYPE_STRING, None, False), ("type", 5, OPT, F.TYPE_ENUM, "V1LayerParameter.LayerType", False),
        ("blobs", 6, R, F.TYPE_MESSAGE, "BlobProto", False),
    ])
    enum = v1.enum_type.add(name="LayerType")
    for name, number in _V1_TYPES.items():
        enum.value.add(name=name, number=number)
    message("NetParameter", [
        ("name", 1, OPT, F.TYPE_STRING, None, False), ("layers", 2, R, F.TYPE_MESSAGE, "V1LayerParameter", False),
        ("input", 3, R, F.TYPE_STRING, None, False), ("input_dim", 4, R, F.TYPE_INT32, None, False),
        ("layer", 100, R, F.TYPE_MESSAGE, "LayerParameter", False),
    ])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    names = ("NetParameter", "LayerParameter", "V1LayerParameter", "BlobProto", "BlobShape")
    classes = {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{n}")) for n in names}
    if not packed_floats:
        _MESSAGES = classes
    return classes


# Axes of the (weight, bias) blobs Caffe's layers hold: ConvolutionLayer's weight is
# [num_output, channels, kernel_h, kernel_w], InnerProductLayer's [num_output, C*H*W]
# (transpose off, as in VGG), both biases [num_output].
_BLOB_AXES = {"Convolution": (4, 1), "InnerProduct": (2, 1)}
_BLOB_FORMS = {"Convolution": ("[out, in, kh, kw]", "[out]"), "InnerProduct": ("[out, in]", "[out]")}


class DeclaredShape(NamedTuple):
    """A blob's shape as its file declares it: ``BlobShape.dim`` (V2), or ``legacy``: the 4-D
    ``num, channels, height, width`` of V1 files."""

    dims: tuple[int, ...]
    legacy: bool

    def equals(self, target: tuple[int, ...]) -> bool:
        """Caffe's ``Blob::ShapeEquals`` against a blob of shape ``target``: legacy dims are
        ``LegacyShape(-4..-1)`` of the target (read from the right, 1 for a missing leading
        axis, at most 4 axes); V2 dims must be the target's exactly."""
        if self.legacy:
            return len(target) <= 4 and self.dims == (1,) * (4 - len(target)) + tuple(target)
        return self.dims == tuple(target)

    def like(self, target: tuple[int, ...]) -> str:
        """``target`` written as this blob declares shapes (legacy: padded to 4-D with leading 1s)."""
        return str(list((1,) * (4 - len(target)) + tuple(target) if self.legacy else target))

    def __str__(self) -> str:
        return str(list(self.dims))


class CaffeLayer:
    """One layer of a Caffe net: name, V2 type string, its blobs as float32 arrays, and each
    blob's shape as the file declares it (``declared``, what Caffe compares)."""

    def __init__(self, name: str, type: str, blobs: list[np.ndarray], declared: list[DeclaredShape] | None = None):
        self.name, self.type, self.blobs = name, type, blobs
        self.declared = declared if declared is not None else [DeclaredShape(tuple(b.shape), False) for b in blobs]

    def __repr__(self) -> str:
        return f"CaffeLayer({self.name!r}, {self.type!r}, {[list(b.shape) for b in self.blobs]})"


def _blob(blob: Any, where: str, axes: int | None) -> tuple[np.ndarray, DeclaredShape]:
    """A ``BlobProto`` as a float32 array, and its declared shape. As in ``Blob::FromProto``,
    any of the legacy ``num, channels, height, width`` present makes those four the shape,
    else ``shape.dim``. A legacy array drops leading 1s down to ``axes`` (the axes Caffe's layer
    gives this blob: ``LegacyShape`` indexes from the right), so a valid V1 blob reads as its V2
    twin; whether the shape is the right one is :meth:`DeclaredShape.equals`' question."""
    legacy = any(blob.HasField(f) for f in ("num", "channels", "height", "width"))
    if legacy:
        dims = tuple(int(d) for d in (blob.num, blob.channels, blob.height, blob.width))
    else:
        dims = tuple(int(d) for d in blob.shape.dim)
    shape = dims
    while legacy and axes is not None and len(shape) > axes and shape[0] == 1:
        shape = shape[1:]
    count = math.prod(dims) if dims else 0
    if blob.data:
        values = np.frombuffer(b"".join(blob.data), dtype="<f4")
    elif blob.double_data:
        values = np.frombuffer(b"".join(blob.double_data), dtype="<f8").astype(np.float32)
    else:
        values = np.zeros(0, np.float32)
    if values.size != count or count == 0:
        raise ValueError(f"{where}: blob of shape {list(dims)} holds {values.size} values"
                         + (" (unpacked floats: not written by Caffe)" if count and not values.size else ""))
    return values.reshape(shape), DeclaredShape(dims, legacy)


def _layer(name: str, type: str, blobs: Any) -> CaffeLayer:
    axes = _BLOB_AXES.get(type, ())
    read = [_blob(b, f"layer {name}", axes[j] if j < len(axes) else None) for j, b in enumerate(blobs)]
    return CaffeLayer(name, type, [a for a, _ in read], [d for _, d in read])


def read_caffemodel(path: str | Path) -> list[CaffeLayer]:
    """The layers of a binary ``.caffemodel`` (V1 ``layers`` or V2 ``layer`` format), in order."""
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"caffemodel not found: {path}")
    net = caffe_messages()["NetParameter"]()
    try:
        net.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeError, ValueError):
        raise CheckpointError(f"{path}: not a Caffe model (its bytes do not parse as a NetParameter protobuf)") from None
    layers = []
    enum = net.DESCRIPTOR.fields_by_name["layers"].message_type.enum_types_by_name["LayerType"]
    try:
        for layer in net.layer:
            layers.append(_layer(layer.name, layer.type, layer.blobs))
        for layer in net.layers:
            v1 = enum.values_by_number[layer.type].name if layer.type in enum.values_by_number else "NONE"
            layers.append(_layer(layer.name, _V1_TO_V2.get(v1, v1), layer.blobs))
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return layers


def read_prototxt(path: str | Path) -> list[tuple[str, str]]:
    """``(name, type)`` of every layer of a text deploy file (V1 or V2), other settings skipped."""
    from google.protobuf import text_format

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"prototxt not found: {path}")
    net = caffe_messages()["NetParameter"]()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), net, allow_unknown_field=True)
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a Caffe prototxt ({str(e).splitlines()[0][:100]})") from None
    enum = net.DESCRIPTOR.fields_by_name["layers"].message_type.enum_types_by_name["LayerType"]
    named = [(layer.name, layer.type) for layer in net.layer]
    named += [(layer.name, _V1_TO_V2.get(enum.values_by_number[layer.type].name, "?")) for layer in net.layers]
    return named


def convert_caffe(layers: list[CaffeLayer], arch: str) -> VGG:
    """A vgglocal :class:`VGG` holding a Caffe VGG net's weights (module docstring: channel
    order and normalisation). Refuses, naming what it found, anything that is not a plain VGG
    of Table 1's configuration ``arch``: 3x3 convolutions in ``arch``'s count, three fully
    connected layers."""
    convs = [layer for layer in layers if layer.type == "Convolution"]
    fcs = [layer for layer in layers if layer.type == "InnerProduct"]
    expected = sum(len(b) for b in VGG_SPECS[arch].blocks)
    if not convs or len(fcs) != 3:
        raise ValueError(f"not a VGG net: {len(convs)} convolution and {len(fcs)} inner-product layers "
                         f"(a VGG has {expected} and 3)")
    if len(convs) != expected:
        other = {sum(len(b) for b in s.blocks): a for a, s in VGG_SPECS.items() if a in ("A", "B", "D", "E")}
        hint = f" (arch {other[len(convs)]}?)" if len(convs) in other else ""
        raise ValueError(f"--arch {arch} has {expected} convolution layers, the model {len(convs)}{hint}")
    for layer in convs + fcs:
        if len(layer.blobs) != 2:
            raise ValueError(f"layer {layer.name}: {len(layer.blobs)} blobs, expected a weight and a bias")
        for what, blob, declared, axes, form in zip(("weight", "bias"), layer.blobs, layer.declared,
                                                    _BLOB_AXES[layer.type], _BLOB_FORMS[layer.type], strict=True):
            if blob.ndim != axes:  # no setting of this layer type gives a blob that shape
                raise ValueError(f"layer {layer.name}: {what} declared {declared}{_LEGACY if declared.legacy else ''}, "
                                 f"a Caffe {layer.type} {what} is {form}")
    first = convs[0].blobs[0]
    if first.ndim != 4 or first.shape[1] != 3:
        raise ValueError(f"layer {convs[0].name}: weight of shape {list(first.shape)}, not a convolution over 3 colour channels")
    width = first.shape[0] / 64
    last = convs[-1].blobs[0].shape[0]
    fc6, fc7, fc8 = (layer.blobs[0] for layer in fcs)
    cells = fc6.shape[-1] / last if fc6.ndim >= 2 else 0
    side = round(cells ** 0.5)
    if side < 1 or side * side * last != fc6.shape[-1]:
        raise ValueError(f"layer {fcs[0].name}: {fc6.shape[-1]} inputs are not {last} channels of a square map")
    try:
        hp = check_hparams({"arch": arch, "num_classes": int(fc8.shape[0]), "width": float(width), "fc_width": int(fc6.shape[0]),
                            "crop": 32 * side, "batch_norm": False}, "the model")
    except CheckpointError as e:
        raise ValueError(str(e).removeprefix("the model: ")) from None
    shapes = expected_shapes(hp)
    ours = [n.rsplit(".", 1)[0] for n in shapes if n.endswith(".weight")]
    state: dict[str, torch.Tensor] = {}
    for name, layer in zip(ours, convs + fcs, strict=True):
        weight, bias = layer.blobs
        target = shapes[f"{name}.weight"]
        # What Net::CopyTrainedLayersFrom copies into: the conv kernel as is, the FC-as-conv kernel
        # (out, C, H, W) as InnerProduct's (out, C*H*W), the bias (out,).
        caffe = target if layer.type == "Convolution" else (target[0], math.prod(target[1:]))
        for what, declared, expected in (("weight", layer.declared[0], caffe), ("bias", layer.declared[1], target[:1])):
            if not declared.equals(expected):
                raise ValueError(f"layer {layer.name}: {what} declared {declared}{_LEGACY if declared.legacy else ''}, "
                                 f"expected {declared.like(expected)} for arch {arch} at width {width:g} "
                                 f"(fc width {hp['fc_width']}, {hp['num_classes']} classes)")
        # Caffe's InnerProduct weight is (out, C*H*W) over a C, H, W blob: our FC-as-conv kernel.
        state[f"{name}.weight"] = torch.from_numpy(weight.copy()).reshape(target)
        state[f"{name}.bias"] = torch.from_numpy(bias.copy()).reshape(-1)
    # BGR -> RGB: the first convolution reads its input channels in reversed order.
    state["features.conv1_1.weight"] = state["features.conv1_1.weight"].flip(1).contiguous()
    model = VGG(**hp)
    model.load_state_dict(state, strict=True)
    model.normalization = {k: list(v) for k, v in CAFFE_NORMALIZATION.items()}
    model.classes = None
    model.class_names = None
    model.meta = {"source": f"caffe VGG {arch}", "input": "converted from Caffe's BGR 0..255 minus mean pixel "
                  "[103.939, 116.779, 123.68]: first conv reordered to RGB, normalization = that mean, std 1"}
    return model.eval()


def import_caffe(path: str | Path, arch: str, out: str | Path, prototxt: str | Path | None = None) -> VGG:
    """Read a ``.caffemodel`` (and, when given, check its layers against the ``.prototxt`` deploy
    file), convert it with :func:`convert_caffe`, and save a vgglocal checkpoint at ``out``."""
    from vgglocal.models.io import save_model

    layers = read_caffemodel(path)
    if prototxt is not None:
        deploy = {name: kind for name, kind in read_prototxt(prototxt) if kind in ("Convolution", "InnerProduct")}
        weighted = {layer.name: layer.type for layer in layers if layer.type in ("Convolution", "InnerProduct")}
        if deploy != weighted:
            missing = sorted(set(deploy) ^ set(weighted))[:3]
            raise CheckpointError(f"{prototxt}: its convolution / inner-product layers do not match {path}'s "
                                  f"(differ: {', '.join(missing) or 'types'})")
    try:
        model = convert_caffe(layers, arch)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    save_model(model, out, model.normalization, classes=None, meta=model.meta)
    return model
