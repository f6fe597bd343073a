"""Appendix B commands: ``features`` (very deep image descriptors) and ``transfer`` (linear SVMs
on them for VOC classification, Caltech-101/256 and VOC-2012 action classification).

Library modules that import torch are imported inside the commands, so ``vgglocal --help``
stays fast."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import click

from vgglocal.cli import cli, config_default
from vgglocal.config import AGGREGATES, TRANSFER_PROTOCOLS


def _log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


def _scales(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        scales = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated sizes such as 256,384,512", param_hint="--scales") from None
    if not scales or any(q <= 0 for q in scales):
        raise click.BadParameter(f"{text!r}: expected positive sizes", param_hint="--scales")
    return scales


def _config(config: str | None, overrides: tuple[str, ...], protocol: str | None, aggregate: str | None):
    from vgglocal.config import load_config

    extra = [f"transfer.protocol={protocol}"] if protocol else []
    extra += [f"transfer.aggregate={aggregate}"] if aggregate else []
    return load_config(config, [*overrides, *extra])


def _config_option(required: bool, help: str):
    return click.option("-c", "--config", "config", required=required, type=click.Path(dir_okay=False), help=help)


_COMMON = [
    click.option("--checkpoint", "checkpoints", multiple=True, required=True, type=click.Path(dir_okay=False),
                 help="Classification checkpoint whose FC7 activations are the features; repeat for late fusion "
                      "(the nets' descriptors are stacked, as Appendix B fuses D and E)."),
    click.option("--protocol", type=click.Choice(TRANSFER_PROTOCOLS), default=None,
                 help="voc-cls (ImageSets/Main, multi-label), caltech (class folders), voc-action (ImageSets/Action, "
                      "one item per person). " + config_default("transfer.protocol")),
    click.option("--scales", default=None, metavar="Q[,Q...]",
                 help="Smallest image side(s) Q at which the net is applied densely. " + config_default("transfer.scales")),
    click.option("--aggregate", type=click.Choice(AGGREGATES), default=None,
                 help="Combine the per-scale descriptors by averaging (Appendix B: VOC) or stacking (Caltech). "
                      + config_default("transfer.aggregate")),
    click.option("--random-weights", is_flag=True,
                 help="Baseline: the checkpoint's architecture with fresh random weights (its own init scheme, seeded by `seed`)."),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="Override a config key, e.g. --set transfer.device=cuda (repeatable; values are YAML)."),
    click.option("--quiet", is_flag=True, help="No progress bar or log lines."),
]


def _common(fn):
    for option in reversed(_COMMON):
        fn = option(fn)
    return fn


@cli.command("features")
@click.argument("images", nargs=-1)
@_config_option(False, "YAML config: the data section (any data.format) of the split to describe, and the transfer "
                       "section. Optional with IMAGES (then transfer's defaults and --set apply).")
@_common
@click.option("--split", default=None, metavar="NAME",
              help="Split of -c's data to describe: train / val (data.train_split / data.val_split) or a literal name "
                   "such as trainval or test. Caltech has no splits: any name reads every image. Default: train.")
@click.option("--boxes", is_flag=True, help="Also describe each item's box region (voc-action: the person box).")
@click.option("--per-scale", is_flag=True,
              help="Also store the per-scale descriptors (before aggregation), so transfer can re-aggregate them.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .npz file.")
def features_cmd(images, config, checkpoints, protocol, scales, aggregate, random_weights, overrides, quiet, split, boxes,
                 per_scale, out) -> None:
    """Appendix B image descriptors of IMAGES, or of every item of a split of -c's data: FC7 of
    the net applied densely at each Q, global-average-pooled, averaged with the mirror image,
    averaged or stacked over the scales, L2-normalised; several --checkpoint are stacked (late
    fusion). The nets' own input normalisation is used.

    IMAGES: files, folders (searched recursively for image files), glob patterns
    ("photos/**/*.jpg") and .txt/.lst file lists (one path per line), as for predict (what a
    folder leaves out is named in one line each). A split
    (-c, --split) of any data.format: by the transfer protocol's reader (Appendix B's targets)
    when data.format is its layout (voc-cls, voc-action: voc; caltech: caltech), else every
    image of the split with its class index (ilsvrc, ilsvrc-kaggle, coco, ...).

    OUT.npz holds `features` [N, D] float32 (and `box_features` with --boxes), `ids` (image
    files: their names), `paths`, `targets` (class index [N], -1 where unknown and for IMAGES;
    or VOC labels [N, C] in 1/0/-1), `classes` (empty for IMAGES), `bad` (images that could not
    be decoded, skipped) and `settings` (JSON).
    """
    if not images and config is None:
        raise click.UsageError("give IMAGES (files, folders, globs, file lists) or -c CONFIG with the data to describe")
    if images and (split is not None or boxes or protocol is not None):
        flag = "--split" if split is not None else "--boxes" if boxes else "--protocol"
        raise click.UsageError(f"{flag} reads -c's data; IMAGES are described as they are (give one or the other)")
    if images:
        from vgglocal.data.files import expand_images

        # path errors before torch is imported; what a folder leaves out told by rank 0 alone
        items = expand_images(images, log=None if quiet or os.environ.get("RANK", "0") != "0" else _log)
    cfg = _config(config, overrides, None, aggregate)
    from vgglocal import comm
    from vgglocal.transfer.features import extract_features, extract_image_features

    # Under torchrun each rank describes its share of the images on its own device; rank 0
    # collects them and writes OUT.
    env = comm.setup(cfg.transfer.device, cfg.train.dist_timeout, key="transfer.device")
    cfg = dataclasses.replace(cfg, transfer=dataclasses.replace(cfg.transfer, device=str(env.device)))
    log = None if quiet else (_log if env.is_main else lambda msg: _log(f"rank {env.rank}: {msg}"))
    try:
        with comm.peers_watched(env, "feature extraction", "run the command again"):
            if images:
                fs = extract_image_features(cfg, list(checkpoints), items, scales=_scales(scales), random_weights=random_weights,
                                            progress=not quiet, log=log)
            else:
                fs = extract_features(cfg, list(checkpoints), split or "train", protocol=protocol, scales=_scales(scales), boxes=boxes,
                                      random_weights=random_weights, progress=not quiet, log=log)
    finally:
        comm.teardown()
    if not env.is_main:
        return
    path = fs.save(out, cfg.transfer.aggregate, keep_scales=per_scale)
    dim = fs.descriptors(cfg.transfer.aggregate).shape[1]
    click.echo(json.dumps({"out": str(path), "items": len(fs), "dim": int(dim), "n_unreadable": len(fs.bad)}))


@cli.command("transfer")
@_config_option(True, "YAML config: data (format voc or caltech, root, splits) and transfer sections.")
@_common
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Folder of cached per-scale features, reused when checkpoints, data and scales match "
                   "(default OUT/features); share it between runs that differ only in --aggregate.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
def transfer_cmd(config, checkpoints, protocol, scales, aggregate, random_weights, overrides, quiet, cache, out) -> None:
    """Train one-vs-rest linear SVMs on Appendix B features of the training split and score the
    test split; the SVMs' C is chosen on a held-out 20% of the training data.

    Writes OUT/metrics.json and OUT/per_class.csv: voc-cls voc07_cls_map (11-point) and voc_cls_map
    (area) with per-class AP; caltech mean_class_recall and mean_class_recall_std over
    transfer.splits random splits; voc-action voc_action_map (image + box) and
    voc_action_map_image. Prints the main metrics as one JSON line.
    """
    from vgglocal.transfer.run import TransferRequest, run_transfer

    cfg = _config(config, overrides, protocol, aggregate)
    req = TransferRequest(protocol=cfg.transfer.protocol, checkpoints=list(checkpoints), aggregate=cfg.transfer.aggregate,
                          scales=_scales(scales), random_weights=random_weights, cache=cache)
    metrics = run_transfer(cfg, req, out, progress=not quiet, log=None if quiet else _log)
    keys = ("voc07_cls_map", "voc_cls_map", "mean_class_recall", "mean_class_recall_std", "voc_action_map",
            "voc_action_map_image", "n_unreadable")
    click.echo(json.dumps({k: metrics[k] for k in keys if k in metrics}))
    if not quiet:
        _log(f"wrote {Path(out) / 'metrics.json'}")
