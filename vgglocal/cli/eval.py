"""Evaluation commands: ``eval`` (the test protocols), ``score`` (Kaggle files) and ``predict``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from vgglocal.cli import cli, config_default

_PROTOCOLS = ("cls-dense", "cls-multicrop", "cls-both", "center-crop", "full")


def _log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


def _scales(values: tuple[str, ...]) -> list[tuple[int, ...]]:
    from vgglocal.inference.nets import parse_scales

    return [parse_scales(v) for v in values]


@cli.command("eval")
@click.option("-c", "--config", "config", required=True, type=click.Path(dir_okay=False),
              help="YAML config: its data section names the validation split, its eval section the defaults.")
@click.option("--protocol", type=click.Choice(_PROTOCOLS), default=None,
              help="cls-dense / cls-multicrop / cls-both (section 3.2), center-crop (localisation protocol 1), "
                   f"full (protocol 2: top-5 labels, dense boxes, greedy merge). {config_default('eval.protocol')}")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Model checkpoint (model.pt, best.pt, last.pt). Repeat to fuse classifiers or to take the union "
                   "of several localisation nets' boxes (full).")
@click.option("--scales", "scales", multiple=True, metavar="Q[,Q...]",
              help="Test scales of the checkpoint in the same position (or of all, when given once), e.g. 256 or "
                   "Table 9's 384/352,384 (S/Qs; S is a label). [default: from the checkpoint's training scale: "
                   "S-32,S,S+32 (fixed S), Smin,mid,Smax (jittered), S for center-crop; or eval.scales of -c]")
@click.option("--cls-checkpoint", "cls_checkpoints", multiple=True, type=click.Path(dir_okay=False),
              help="Classification system for the localisation protocols (repeat to fuse). Default: the "
                   "localisation nets' own classification heads.")
@click.option("--cls-scales", default=None, metavar="Q[,Q...]",
              help="Test scales of the --cls-checkpoint nets (default as for --scales).")
@click.option("--flip/--no-flip", default=None, help=f"Also evaluate the mirror images. {config_default('eval.flip')}")
@click.option("--merge-threshold", type=click.FloatRange(min=0), default=None,
              help=f"Greedy-merge threshold on the match score (full). {config_default('eval.merge_threshold')}")
@click.option("--draw", type=click.IntRange(min=0), default=0, show_default=True,
              help="Write predictions.png: a grid of the first N validation images with true and predicted boxes.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set eval.batch_size=8 (repeatable; values are YAML).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default runs/<config file name>).")
@click.option("--quiet", is_flag=True, help="No progress bar or log lines.")
def eval_cmd(config, protocol, checkpoints, scales, cls_checkpoints, cls_scales, flip, merge_threshold, draw, overrides, out, quiet) -> None:
    """Evaluate checkpoints on the validation split with one test protocol.

    Writes OUT/metrics.json (top1/top5 cls and loc error, n_images; coco_ap, coco_ap50 on COCO
    data) and, for center-crop and full, predictions.csv (Kaggle), predictions.txt (devkit) and
    (full) detections.json (COCO results). Prints the metrics as one JSON line.
    """
    from vgglocal.config import load_config
    from vgglocal.evaluation.run import EvalRequest, evaluate
    from vgglocal.inference.nets import parse_scales

    cfg = load_config(config, overrides)
    req = EvalRequest(
        protocol=protocol or cfg.eval.protocol,
        checkpoints=list(checkpoints),
        scales=_scales(scales),
        cls_checkpoints=list(cls_checkpoints),
        cls_scales=parse_scales(cls_scales) if cls_scales else (),
        flip=flip,
        merge_threshold=merge_threshold,
        draw=draw,
    )
    folder = Path(out) if out else Path("runs") / Path(config).stem
    metrics = evaluate(cfg, req, folder, progress=not quiet, log=None if quiet else _log)
    keys = ("top1_cls_error", "top5_cls_error", "top1_loc_error", "top5_loc_error", "n_images", "coco_ap", "coco_ap50")
    click.echo(json.dumps({k: metrics[k] for k in keys if k in metrics}))
    if not quiet:
        _log(f"wrote {folder / 'metrics.json'}")


@cli.command("score")
@click.argument("predictions", type=click.Path(dir_okay=False))
@click.argument("ground_truth", type=click.Path(dir_okay=False))
def score_cmd(predictions: str, ground_truth: str) -> None:
    """Score a Kaggle-format submission (ImageId,PredictionString with 'wnid x1 y1 x2 y2' up to
    five times) against ground truth in the same format (LOC_val_solution.csv) with the ILSVRC
    devkit rule. Prints one JSON object: top1/top5 cls and loc error (fractions), n_images.
    Images missing from PREDICTIONS count as wrong."""
    from vgglocal.evaluation.ilsvrc import score_files

    click.echo(json.dumps(score_files(predictions, ground_truth)))


@cli.command("predict")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Localisation checkpoint (repeat for the union of several nets' boxes).")
@click.option("--scales", "scales", multiple=True, metavar="Q[,Q...]", help="Test scales per --checkpoint (as for eval).")
@click.option("--cls-checkpoint", "cls_checkpoints", multiple=True, type=click.Path(dir_okay=False),
              help="Classification checkpoint for the labels (default: the localisation net's own head).")
@click.option("--cls-scales", default=None, metavar="Q[,Q...]", help="Test scales of the --cls-checkpoint nets.")
@click.option("-c", "--config", "config", type=click.Path(dir_okay=False), default=None,
              help="Config for the eval defaults; its validation split's boxes are drawn as ground truth when an image is in it.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@click.option("--merge-threshold", type=click.FloatRange(min=0), default=None, help=f"Greedy-merge threshold. {config_default('eval.merge_threshold')}")
@click.option("--flip/--no-flip", default=None, help=f"Also the mirror images. {config_default('eval.flip')}")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the JSON here instead of printing it.")
@click.option("--draw", type=click.Path(file_okay=False), default=None, help="Write one PNG per image with the boxes into this folder.")
def predict_cmd(images, checkpoints, scales, cls_checkpoints, cls_scales, config, overrides, merge_threshold, flip, out, draw) -> None:
    """Top-5 labels with their boxes and scores for IMAGE files (the full protocol), as JSON."""
    from vgglocal.config import load_config
    from vgglocal.evaluation.predict import predict
    from vgglocal.inference.nets import parse_scales

    cfg = load_config(config, overrides)
    truth = None
    if config is not None and draw is not None:
        from vgglocal.data import DataError, read_split

        try:
            records, _ = read_split(cfg.data, cfg.data.val_split, "cls")
            truth = {str(Path(r.path).resolve()): r for r in records}
        except DataError as e:
            _log(f"no ground truth drawn: {e}")
    results = predict(cfg, list(images), list(checkpoints), _scales(scales), list(cls_checkpoints),
                      parse_scales(cls_scales) if cls_scales else (), flip=flip, merge_threshold=merge_threshold,
                      draw=draw, truth=truth, progress=True)
    text = json.dumps(results, indent=1)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    else:
        click.echo(text)
    failed = [r for r in results if "error" in r]
    for r in failed:
        _log(f"error: {r['error']}")
    if failed:
        sys.exit(1)
