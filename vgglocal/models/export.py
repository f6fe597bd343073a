"""Export a checkpoint's fully convolutional network for serving: ONNX or TorchScript.

The exported graph is the dense network of section 3.2 / Appendix A: a whole normalised image
``image [N, 3, H, W]`` (float32, H and W at least the crop) in, the raw maps out: ``scores
[N, C, h, w]`` (class logits) and, for a localisation net, ``boxes [N, 4 or 4C, h, w]``, with
``h = floor(H/32) - crop/32 + 1`` (and w alike). Height and width are dynamic. Rescaling,
normalisation, soft-max, box decoding and the greedy merge stay outside (they are cheap and
image-dependent); what the graph expects and how to read its outputs is written into the file
as one JSON document (:func:`export_metadata`): ONNX ``metadata_props["vgglocal"]``, the
TorchScript archive's extra file ``vgglocal.json``.

ONNX goes through ``torch.onnx.export(dynamo=True)`` (the torch.export-based exporter, which
needs the ``onnx`` and ``onnxscript`` packages: the ``export`` extra).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vgglocal.config import EXPORT_FORMATS as FORMATS
from vgglocal.errors import UserError
from vgglocal.models.vgg import STRIDE, VGG

__all__ = ["FORMATS", "METADATA_KEY", "DenseMaps", "export_metadata", "export_model", "read_metadata"]

METADATA_KEY = "vgglocal"  # ONNX metadata_props key; TorchScript extra file f"{METADATA_KEY}.json"
_ONNX_LIMIT = 2 * 1024**3 - 64 * 1024**2  # protobuf's 2 GiB, with room for the graph


class ExportError(UserError):
    """The model cannot be exported as asked (missing extra, bad format)."""


class DenseMaps(nn.Module):
    """The net without its input padding, returning its raw maps as a tuple (exportable).

    ``forward(image Tensor[N, 3, H, W]) -> (scores Tensor[N, C, h, w], boxes Tensor[N, 4|4C, h, w])``,
    or ``(scores,)`` for a classification net. H and W must be at least ``crop``: the VGG
    module pads smaller inputs, a shape-dependent branch an exported graph cannot keep.
    """

    def __init__(self, net: VGG) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        f = self.net.features(image)
        if self.net.box_head is None:
            return (self.net.cls_head(f),)
        return self.net.cls_head(f), self.net.box_head(f)


def export_metadata(net: VGG) -> dict[str, Any]:
    """What a serving program needs besides the graph: preprocessing, output layout, classes."""
    norm = getattr(net, "normalization", None) or {"mean": [0.0] * 3, "std": [1.0] * 3}
    meta = getattr(net, "meta", None) or {}
    names = getattr(net, "class_names", None) or getattr(net, "classes", None)
    outputs = ["scores"] + (["boxes"] if net.box_head is not None else [])
    return {
        "format": "vgglocal-dense-maps/1",
        "arch": net.arch,
        "crop": net.crop,
        "stride": STRIDE,
        "num_classes": net.num_classes,
        "box_head": net.box_head_kind,
        "classes": list(net.classes) if getattr(net, "classes", None) is not None else None,
        "class_names": list(names) if names is not None else None,
        "input": {
            "name": "image",
            "layout": "NCHW float32, RGB",
            "resize": "isotropic: smallest side to a test scale Q (bilinear), no crop; H, W >= crop",
            "normalize": "(pixel - mean) / std, pixels in 0..255",
            "mean": [float(v) for v in norm["mean"]],
            "std": [float(v) for v in norm["std"]],
        },
        "outputs": outputs,
        "scores": "class logits [N, C, h, w]; h = floor(H/32) - crop/32 + 1; soft-max over C, average over "
                  "locations for the image's posteriors",
        "boxes": "[N, 4 or 4C, h, w]: per location (i, j) and class (PCR; SCR: one), (cx, cy, w, h) / crop in "
                 "the window whose top-left corner is (32 j, 32 i) in the rescaled image; divide by Q / min(height, "
                 "width) for original pixels" if net.box_head is not None else None,
        "train_scale": meta.get("train_scale"),
    }


def _example(net: VGG) -> Tensor:
    # Two images, sides above the crop and unequal, so the exporter marks batch, height and
    # width as dynamic instead of specialising any of them to 1 or to each other.
    return torch.zeros(2, 3, net.crop + STRIDE, net.crop + 2 * STRIDE)


def _export_onnx(wrapper: DenseMaps, net: VGG, out: Path, metadata: dict[str, Any]) -> None:
    try:
        import onnx  # noqa: F401  (the exporter's dependencies)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"--format onnx needs the export extra (pip install 'vgglocal[export]'): {e}") from None
    dims = {
        0: torch.export.Dim("batch", min=1),
        2: torch.export.Dim("height", min=net.crop),
        3: torch.export.Dim("width", min=net.crop),
    }
    program = torch.onnx.export(wrapper, (_example(net),), dynamo=True, input_names=["image"],
                                output_names=metadata["outputs"], dynamic_shapes={"image": dims}, verbose=False)
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    size = sum(p.numel() * p.element_size() for p in net.parameters())
    # Weights above protobuf's 2 GiB go to FILE.data beside the graph.
    program.save(str(out), external_data=size > _ONNX_LIMIT)


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    # Recent torch marks torch.jit as deprecated (a FutureWarning on every call); TorchScript is
    # still what C++ (libtorch) serving loads, and the user asked for it by name.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        yield


def _export_torchscript(wrapper: DenseMaps, net: VGG, out: Path, metadata: dict[str, Any]) -> None:
    # Tracing records the convolutions, which take any H, W; DenseMaps has no shape branch.
    with _quiet_jit(), torch.no_grad():
        traced = torch.jit.trace(wrapper, (_example(net),), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={f"{METADATA_KEY}.json": json.dumps(metadata)})


def export_model(net: VGG, fmt: str, out: str | Path) -> dict[str, Any]:
    """Write ``net`` (eval mode, CPU, float32) as ``fmt`` (onnx | torchscript) to ``out``;
    returns the metadata written into the file."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = net.float().cpu().eval()
    metadata = export_metadata(net)
    wrapper = DenseMaps(net).eval()
    (_export_onnx if fmt == "onnx" else _export_torchscript)(wrapper, net, out, metadata)
    return metadata


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an exported file (ONNX or TorchScript, told by the content)."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(2)
    if head == b"PK":  # TorchScript archives are zip files
        extra = {f"{METADATA_KEY}.json": ""}
        with _quiet_jit():
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        return json.loads(extra[f"{METADATA_KEY}.json"])
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props[METADATA_KEY])
