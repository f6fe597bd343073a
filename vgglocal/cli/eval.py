"""Evaluation commands: ``eval`` (the test protocols), ``score`` (Kaggle files), ``compare`` (two
evaluations, image by image), ``report`` and ``predict``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from vgglocal.cli import cli, config_default
from vgglocal.config import FORMATS, ILSVRC_METRICS, PROTOCOLS


def _log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


def _main_process() -> bool:
    """Rank 0 of torchrun, or a plain process (read before torch is imported): the one that
    reports what the image arguments left out."""
    return os.environ.get("RANK", "0") == "0"


def _scales(values: tuple[str, ...]) -> list[tuple[int, ...]]:
    from vgglocal.inference.nets import parse_scales

    return [parse_scales(v) for v in values]


@cli.command("eval")
@click.option("-c", "--config", "config", required=True, type=click.Path(dir_okay=False),
              help="YAML config: its data section names the validation split, its eval section the defaults.")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default=None,
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
@click.option("--split", default=None, metavar="NAME",
              help="Split to run on (default: data.val_split). A split without ground truth, such as ILSVRC's test, "
                   "gets the submission files and no metrics.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default runs/eval/<config file name>-<protocol>[-<split>]); never a training run's.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier evaluation in the output folder.")
@click.option("--quiet", is_flag=True, help="No progress bar or log lines.")
def eval_cmd(config, protocol, checkpoints, scales, cls_checkpoints, cls_scales, flip, merge_threshold, draw, overrides, split, out,
             overwrite, quiet) -> None:
    """Evaluate checkpoints on a split (default: the validation split) with one test protocol.

    Writes OUT/metrics.json (top1/top5 cls and loc error, n_images; for full also the COCO
    statistics coco_* and the VOC mAP voc07_map, voc_map) and the submission files:
    predictions.csv (Kaggle) and predictions.txt (devkit) for center-crop and full,
    detections.json (COCO results) with ground_truth.json (the split as COCO instances) for
    full, predictions.txt (devkit classification format) for the cls protocols. On a split
    without ground truth the same files, and submission.json instead of metrics.json. Prints
    the metrics as one JSON line.
    """
    from vgglocal.config import load_config

    cfg = load_config(config, overrides)  # config errors before torch is imported
    from vgglocal.evaluation.run import METRIC_KEYS, EvalRequest, evaluate
    from vgglocal.inference.nets import parse_scales

    req = EvalRequest(
        protocol=protocol or cfg.eval.protocol,
        checkpoints=list(checkpoints),
        scales=_scales(scales),
        cls_checkpoints=list(cls_checkpoints),
        cls_scales=parse_scales(cls_scales) if cls_scales else (),
        flip=flip,
        merge_threshold=merge_threshold,
        draw=draw,
        split=split or "",
    )
    name = "-".join([Path(config).stem, req.protocol] + ([split] if split else []))
    folder = Path(out) if out else Path("runs") / "eval" / name
    metrics = evaluate(cfg, req, folder, progress=not quiet, log=None if quiet else _log, overwrite=overwrite)
    click.echo(json.dumps({k: v for k, v in metrics.items() if k in METRIC_KEYS and not k.endswith("_per_class")}))
    if not quiet:
        _log(f"wrote {folder}/")


@cli.command("score")
@click.argument("predictions", type=click.Path(dir_okay=False))
@click.argument("ground_truth", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Layout of a GROUND_TRUTH data root (default: detected from its files).")
@click.option("--split", default=None, metavar="NAME", help="Split of a GROUND_TRUTH data root (default: val).")
@click.option("--labels", is_flag=True,
              help="PREDICTIONS is the devkit's classification .txt (up to five class ids per line, as eval writes "
                   "for the cls-* protocols): classification errors only.")
def score_cmd(predictions: str, ground_truth: str, fmt: str | None, split: str | None, labels: bool) -> None:
    """Score PREDICTIONS against GROUND_TRUTH and print the metrics as one JSON object.

    PREDICTIONS: a Kaggle CSV (ImageId,PredictionString, 'wnid x1 y1 x2 y2' up to five times)
    or a devkit .txt (one line per image, devkit class ids) → the ILSVRC devkit's top-1/top-5
    localisation and classification errors (fractions) and n_images (--labels: a .txt of
    class ids only → the classification errors); images missing from
    PREDICTIONS count as wrong. A COCO results .json → the twelve COCO statistics (coco_*)
    and the VOC mAP (voc07_map 11-point, voc_map area, per class).

    GROUND_TRUTH: a Kaggle solution CSV (LOC_val_solution.csv), a COCO instances JSON, or a
    data root of any supported layout (--format, --split), read as eval reads it.
    """
    from vgglocal.evaluation.score import score

    click.echo(json.dumps(score(predictions, ground_truth, fmt=fmt, split=split, labels=labels)))


@cli.command("compare")
@click.argument("runs", nargs=-1, required=True, metavar="A B [A2 B2 ...]")
@click.option("--data", "ground_truth", required=True, type=click.Path(),
              help="Ground truth: a data root of any supported layout, or a Kaggle solution CSV.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Layout of a --data root (default: detected from its files).")
@click.option("--split", default=None, metavar="NAME", help="Split of a --data root (default: val).")
@click.option("--metric", "metrics", multiple=True, type=click.Choice(ILSVRC_METRICS),
              help="Metric to compare (repeatable; default all that both have: the classification ones for a "
                   "cls-* evaluation).")
@click.option("--labels", is_flag=True,
              help="A and B given as files are devkit classification .txt (class ids only; an eval folder says "
                   "so itself).")
@click.option("--bootstrap", default=10_000, show_default=True, type=click.IntRange(min=100),
              help="Bootstrap resamples for the 95 % interval.")
def compare_cmd(runs: tuple[str, ...], ground_truth: str, fmt: str | None, split: str | None, metrics: tuple[str, ...],
                labels: bool, bootstrap: int) -> None:
    """Is A's error really lower than B's? Compare two evaluations of the same images image by
    image and print, per metric, both errors, the difference A - B with a paired bootstrap
    95 % interval, the images each gets right where the other does not, the exact sign-test
    (McNemar) p-value and the verdict at p < 0.05: a, b or "not resolved".

    A and B: `vgglocal eval` output folders (their predictions.csv or predictions.txt) or
    prediction files. More pairs (A2 B2: the same two recipes trained with another seed)
    are tested together, image by image: each image's difference averaged over the pairs (the
    pooled count over every pair and image, the pairs' agreement and a t test over the pairs
    are printed beside it). Prints one JSON object keyed by metric. Evaluations of another split,
    number of images or set of predicted images, or center-crop against another protocol, are
    refused in one line.
    """
    from vgglocal.evaluation.compare import compare

    if len(runs) % 2:
        raise click.UsageError(f"{len(runs)} evaluations given: give them in pairs, A B [A2 B2 ...]")
    result = compare(runs[0::2], runs[1::2], ground_truth, metrics=metrics or None, fmt=fmt, split=split, labels=labels,
                     bootstrap=bootstrap)
    click.echo(json.dumps(result))


@cli.command("report")
@click.argument("eval_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--data", "data_root", type=click.Path(file_okay=False, exists=True), default=None,
              help="Data root the evaluation ran on (default: the one recorded in metrics.json).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="Layout of the data root (default: as recorded, else detected).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="HTML file to write. [default: EVAL_DIR/report.html]")
def report_cmd(eval_dir: str, data_root: str | None, fmt: str | None, out: str | None) -> None:
    """Write one self-contained HTML page (pictures embedded) for an evaluation: EVAL_DIR is
    `vgglocal eval`'s --out folder, or a folder holding several (one section per protocol).

    Each section: the metrics table; for the localisation protocols the ILSVRC view
    (localisation error per class, top-1 and top-5; the confusion matrix of the top-1 labels;
    the best and the worst localised images with the top-1 box and the true boxes); for
    detections (protocol full) the VOC precision-recall curve and AP of every class; for the
    classification protocols the confusion matrix. Needs matplotlib (the plot extra).
    """
    from vgglocal.evaluation.report import write_report

    path = write_report(eval_dir, out, data_root=data_root, fmt=fmt, log=_log)
    click.echo(f"wrote {path}")


@cli.command("predict")
@click.argument("images", nargs=-1, required=True)
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Localisation checkpoint (repeat for the union of several nets' boxes).")
@click.option("--scales", "scales", multiple=True, metavar="Q[,Q...]",
              help="Test scales per --checkpoint (as for eval). [default: from the checkpoint's training scale, or eval.scales of -c]")
@click.option("--cls-checkpoint", "cls_checkpoints", multiple=True, type=click.Path(dir_okay=False),
              help="Classification checkpoint ranking the labels and weighting the boxes (repeat to fuse). Default: the "
                   "localisation net's own classification head.")
@click.option("--cls-scales", default=None, metavar="Q[,Q...]", help="Test scales of the --cls-checkpoint nets.")
@click.option("-c", "--config", "config", type=click.Path(dir_okay=False), default=None,
              help="Config for the eval defaults; its validation split's boxes are drawn as ground truth when an image is in it.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@click.option("--merge-threshold", type=click.FloatRange(min=0), default=None, help=f"Greedy-merge threshold. {config_default('eval.merge_threshold')}")
@click.option("--flip/--no-flip", default=None, help=f"Also the mirror images. {config_default('eval.flip')}")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help=f"Images per batch. {config_default('eval.batch_size')}")
@click.option("--workers", type=click.IntRange(min=0), default=None, help=f"Processes decoding images. {config_default('data.workers')}")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of stdout: FILE.jsonl (JSON Lines) or FILE.csv (Kaggle submission).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
              help="Output format [default: csv for an --out ending in .csv, else jsonl].")
@click.option("--draw", type=click.Path(file_okay=False), default=None,
              help="Write one PNG per image into this folder: boxes with names and scores, ground truth, a legend.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def predict_cmd(images, checkpoints, scales, cls_checkpoints, cls_scales, config, overrides, merge_threshold, flip, batch_size,
                workers, out, fmt, draw, quiet) -> None:
    """Top-5 labels with their boxes and scores, and the detections, for IMAGES: files, folders
    (searched recursively for image files), glob patterns ("photos/**/*.jpg") and .txt/.lst file
    lists (one path per line, relative to the list's folder), by protocol 2 ("full": dense
    boxes, greedy merge) in batches. Writes JSON Lines, one object per image
    ({"image", "height", "width", "predictions": [{"label", "name", "index", "score", "box"}],
    "detections": [...]}; boxes x1 y1 x2 y2 in image pixels), or a Kaggle CSV (ImageId: the
    picture's name, the file stem or the path below a folder argument; a name that is not UTF-8
    is refused). A folder's symlink loops, named pipes, devices and folder symlinks are skipped,
    each named in one line; files without an image extension are counted. Exit status 1 when an
    image could not be read (its line has "error")."""
    from vgglocal.config import load_config, replace
    from vgglocal.data.files import check_utf8_names, expand_images

    # config and path errors before torch is imported
    cfg = load_config(config, overrides)
    options = {"eval.merge_threshold": merge_threshold, "eval.flip": flip, "eval.batch_size": batch_size}
    cfg = replace(cfg, **{k: v for k, v in options.items() if v is not None})
    ev = cfg.eval
    fmt = fmt or ("csv" if out and out.lower().endswith(".csv") else "jsonl")
    if fmt == "csv" and not out:
        raise click.UsageError("--format csv writes a file: give --out FILE.csv")
    items = expand_images(images, log=_log if _main_process() else None)
    if fmt == "csv":
        check_utf8_names(items, out)
    from vgglocal.data.images import ImageLimits
    from vgglocal.evaluation.predict import predict_files
    from vgglocal.inference.nets import check_class_heads, parse_scales
    from vgglocal.inference.predictor import Predictor

    truth = None
    if config is not None and draw is not None:
        from vgglocal.data import DataError, read_split

        try:
            records, _ = read_split(cfg.data, cfg.data.val_split, "cls")
            truth = {str(Path(r.path).resolve()): r for r in records}
        except DataError as e:
            _log(f"no ground truth drawn: {e}")
    from vgglocal import comm

    # Under torchrun each rank predicts its share on its own device; rank 0 writes the files.
    env = comm.setup(ev.device, cfg.train.dist_timeout, key="eval.device")
    log = _log if env.is_main else (lambda msg: _log(f"rank {env.rank}: {msg}"))
    try:
        with comm.peers_watched(env, "prediction", "run the command again"):
            predictor = Predictor(list(checkpoints), list(cls_checkpoints) or None, scales=_scales(scales) or list(ev.scales) or None,
                                  cls_scales=parse_scales(cls_scales) if cls_scales else list(ev.scales) or None, eval_config=ev,
                                  device=env.device)
            if predictor.cls_nets is None:
                check_class_heads(predictor.nets)  # as eval's full protocol: a stale class head would rank the boxes
            stream = None
            if fmt == "jsonl" and env.is_main:
                if out:
                    Path(out).parent.mkdir(parents=True, exist_ok=True)
                    stream = open(out, "w")  # noqa: SIM115 - closed below
                else:
                    stream = sys.stdout
            try:
                summary = predict_files(predictor, items, jsonl=stream, csv=out if fmt == "csv" and env.is_main else None, draw=draw,
                                        truth=truth, batch_size=predictor.options.batch_size,
                                        workers=cfg.data.workers if workers is None else workers, score_floor=ev.score_floor,
                                        progress=not quiet, log=log, limits=ImageLimits.of(cfg.data))
            finally:
                if stream is not None and stream is not sys.stdout:
                    stream.close()
    finally:
        comm.teardown()
    if not env.is_main:
        sys.exit(1 if summary["n_failed"] else 0)
    if out and not quiet:
        _log(f"wrote {out}: {summary['n_images']} images" + (f", {summary['n_failed']} unreadable" if summary["n_failed"] else ""))
    if summary["n_failed"]:
        sys.exit(1)
