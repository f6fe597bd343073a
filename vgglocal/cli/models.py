"""Model commands: ``info`` and ``import-weights``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vgglocal.cli import cli
from vgglocal.config import EXPORT_FORMATS, WEIGHT_FORMATS
from vgglocal.models.specs import TORCHVISION_ARCHS, VGG_SPECS  # plain data: no torch at --help


@cli.command("info")
@click.argument("target")
@click.option("--classes", type=click.IntRange(min=1), default=None, help="Number of classes (default 1000, or the checkpoint's).")
@click.option("--crop", type=click.IntRange(min=32), default=None, help="Crop size in pixels, a multiple of 32 (default 224).")
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=None, help="Width multiplier for conv channels and FC width (default 1).")
@click.option("--image", type=click.IntRange(min=32), default=None, help="Input side for the multiply-add count (default: the crop; larger gives the dense cost).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with keys params and macs.")
def info_cmd(target: str, classes: int | None, crop: int | None, width: float | None, image: int | None, as_json: bool) -> None:
    """Parameters and multiply-adds per image of an ARCH (A, A-LRN, B, C, D, E) or a CHECKPOINT."""
    from vgglocal.models.summary import summarize

    if target in VGG_SPECS:
        hp = {"arch": target, "num_classes": classes or 1000, "crop": crop or 224, "width": width or 1.0}
    elif Path(target).exists():
        from vgglocal.models.io import load_model_checkpoint

        hp = dict(load_model_checkpoint(target)["model"])
        for key, value in (("num_classes", classes), ("crop", crop), ("width", width)):
            if value is not None:
                hp[key] = value
    else:
        raise click.UsageError(f"{target!r} is neither an arch ({', '.join(VGG_SPECS)}) nor a checkpoint file")
    if hp["crop"] % 32:
        raise click.BadParameter(f"{hp['crop']} is not a multiple of 32", param_hint="--crop")
    result = summarize(hp, image=image)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"arch        {result['arch']}  (width {result['width']:g}, crop {result['crop']}, {result['num_classes']} classes"
               f"{', ' + result['box_head'].upper() + ' box head' if result['box_head'] else ''})")
    click.echo(f"params      {result['params']:,}")
    click.echo(f"multiply-adds  {result['macs'] / 1e9:.2f} G per {result['image']}x{result['image']} image"
               f" (score map {result['map']}x{result['map']})")


@cli.command("import-weights")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(WEIGHT_FORMATS), default="torchvision", show_default=True,
              help="torchvision: a state dict (torch.save(model.state_dict())); caffe: the authors' .caffemodel (V1 or V2 layers).")
@click.option("--arch", type=click.Choice(tuple(TORCHVISION_ARCHS)), required=True, help="Table 1 config: A=vgg11, B=vgg13, D=vgg16, E=vgg19 (the _bn files too).")
@click.option("--prototxt", type=click.Path(dir_okay=False), default=None,
              help="caffe only: the deploy .prototxt; its convolution and inner-product layers must match the model's.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Where to write the vgglocal checkpoint.")
def import_weights_cmd(path: str, fmt: str, arch: str, prototxt: str | None, out: str) -> None:
    """Convert published VGG weights into a vgglocal checkpoint, recording the input
    normalisation they expect: a torchvision state dict (ImageNet weights), or the paper's own
    Caffe models (VGG_ILSVRC_16_layers.caffemodel, VGG_ILSVRC_19_layers.caffemodel; no Caffe
    install needed). Caffe's BGR, 0..255, mean-pixel input is kept exactly: the first
    convolution is reordered to RGB and the mean pixel stored as the normalisation."""
    if prototxt is not None and fmt != "caffe":
        raise click.BadParameter("only with --format caffe", param_hint="--prototxt")
    if fmt == "caffe":
        from vgglocal.models.caffe import import_caffe

        model = import_caffe(path, arch, out, prototxt)
    else:
        from vgglocal.models.io import import_torchvision

        model = import_torchvision(path, arch, out)
    n = sum(p.numel() for p in model.parameters())
    click.echo(f"wrote {out}: {model.meta['source']} as arch {arch}, {model.num_classes} classes, {n:,} params")


@cli.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="onnx", show_default=True,
              help="onnx (torch.onnx, needs the export extra: pip install 'vgglocal[export]') or torchscript.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="File to write (model.onnx, model.ts).")
def export_cmd(checkpoint: str, fmt: str, out: str) -> None:
    """Export CHECKPOINT's fully convolutional net for serving: input image [N, 3, H, W]
    (normalised, H and W dynamic, at least the crop), outputs the class-score map and, for a
    localisation net, the box map. The preprocessing it expects (test scales, mean/std), the
    output layout and the class ids and names are written into the file as JSON (ONNX
    metadata_props["vgglocal"]; TorchScript extra file vgglocal.json)."""
    from vgglocal.models.export import export_model
    from vgglocal.models.io import load_model

    net = load_model(checkpoint)
    meta = export_model(net, fmt, out)
    click.echo(f"wrote {out}: {fmt}, arch {meta['arch']} (crop {meta['crop']}), outputs {', '.join(meta['outputs'])}")
