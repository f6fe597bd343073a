"""Data commands: ``data synth``, ``data check``, ``data stats``."""

from __future__ import annotations

import json
import sys

import click

from vgglocal.cli import cli
from vgglocal.config import FORMATS, SYNTH_LAYOUTS

_FORMATS = ("auto", *FORMATS)


@cli.group("data")
def data_group() -> None:
    """Generate, check and summarise data sets (ILSVRC Kaggle/original layout, VOC, COCO)."""


def _data_options(fn):
    """ROOT plus --format / -c / --set / --split (ROOT: the data set folder; default data.root of -c)."""
    options = [
        click.argument("root", required=False, type=click.Path(file_okay=False)),
        click.option("--format", "fmt", type=click.Choice(_FORMATS), default=None,
                     help="Layout of ROOT (default: data.format of -c, else detected from the files)."),
        click.option("-c", "--config", type=click.Path(dir_okay=False), default=None,
                     help="YAML config whose data section (format, root, splits, paths) to use."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a config key, e.g. --set data.val_split=val2017 (repeatable)."),
        click.option("--split", "splits", multiple=True, metavar="NAME",
                     help="Split to read: train, val (the config's roles) or a literal name such as test (repeatable)."),
    ]
    for option in reversed(options):  # click lists options in decoration order, outermost first
        fn = option(fn)
    return fn


def _data_config(root: str | None, fmt: str | None, config: str | None, overrides: tuple[str, ...]):
    """DataConfig from -c/--set, then ROOT and --format on top (auto-detected when not given)."""
    from vgglocal.config import load_config
    from vgglocal.data import detect_format

    cfg = load_config(config, overrides)
    changes = {}
    if root is not None:
        changes["data.root"] = root
    elif config is None:
        raise click.UsageError("give ROOT or -c CONFIG")
    if fmt not in (None, "auto"):
        changes["data.format"] = fmt
    elif fmt == "auto" or config is None:
        changes["data.format"] = detect_format(root if root is not None else cfg.data.root)
    if changes:
        from vgglocal.config import replace

        cfg = replace(cfg, **changes)
    return cfg.data


def _progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@data_group.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--classes", type=click.IntRange(min=1), default=10, show_default=True,
              help="Number of classes, one shape each (disc, triangle, square, star, plus, ring, ...; at most 16).")
@click.option("--train", "train", type=click.IntRange(min=1), default=300, show_default=True,
              help="Training images PER CLASS.")
@click.option("--val", "val", type=click.IntRange(min=0), default=50, show_default=True,
              help="Validation images PER CLASS.")
@click.option("--size", type=click.IntRange(min=32), default=128, show_default=True,
              help="Shorter image side in pixels (the longer side is 1 to 4/3 times it).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed; the output is a pure function of all options.")
@click.option("--first-shape", type=click.IntRange(min=0), default=0, show_default=True,
              help="Index of the first shape used: 10 gives a transfer set of the shapes a 10-class demo classifier never saw.")
@click.option("--layout", type=click.Choice(SYNTH_LAYOUTS), default="ilsvrc", show_default=True,
              help="ilsvrc: Kaggle layout + COCO JSON. caltech: 256_ObjectCategories/NNN.<shape>/*.jpg with --train + "
                   "--val images per class and no split (read with data.format caltech).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier synth output in OUT (only files synth writes).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def synth_cmd(out: str, classes: int, train: int, val: int, size: int, seed: int, first_shape: int, layout: str,
              overwrite: bool, quiet: bool) -> None:
    """Generate the demo data set in OUT: shapes on cluttered backgrounds, classes told apart by
    shape only, 1-3 instances per image, written in the ILSVRC Kaggle layout (JPEGs, XML,
    LOC_*_solution.csv, LOC_synset_mapping.txt) and as COCO JSON (OUT/annotations/instances_*.json).
    Read it with data.format ilsvrc-kaggle (or coco) and data.root OUT; with --layout caltech,
    data.format caltech (the transfer set of Appendix B's demonstration:
    --first-shape 10 --classes 6 --layout caltech)."""
    from vgglocal.data.synth import SynthSpec, synthesize

    s = synthesize(out, SynthSpec(classes=classes, train=train, val=val, size=size, seed=seed, first_shape=first_shape,
                                  layout=layout), progress=_progress(quiet), overwrite=overwrite)
    if layout == "caltech":
        click.echo(f"wrote {out}: {s['classes']} classes ({', '.join(s['names'])}); {s['images']} images "
                   f"({s['images_per_class']} per class) in the Caltech layout")
        return
    click.echo(f"wrote {out}: {s['classes']} classes ({', '.join(s['names'])}); "
               f"train {s['train_images']} images / {s['train_boxes']} boxes, val {s['val_images']} images / {s['val_boxes']} boxes")


@data_group.command("check")
@_data_options
@click.option("--no-decode", is_flag=True, help="Skip decoding the images (annotations only; much faster).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes decoding images.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (counts, problem counts, problems) instead.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def check_cmd(root, fmt, config, overrides, splits, no_decode, workers, as_json, quiet) -> None:
    """Report the images, classes and boxes of each split of ROOT (default: train and val), then
    every problem, one line each, naming the file: undecodable images, bad or clipped boxes,
    unknown classes, missing files, unsafe paths. Exit status 0 when clean, 1 when problems were
    found, 2 when ROOT cannot be read at all.

    ROOT is the data set folder (default: data.root of -c)."""
    from vgglocal.data.check import check_dataset

    cfg = _data_config(root, fmt, config, overrides)
    report = check_dataset(cfg, list(splits) or ["train", "val"], decode=not no_decode, workers=workers,
                           progress=_progress(quiet))
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        click.echo(f"{report.root} ({report.format})")
        for name, s in report.splits.items():
            click.echo(f"{name}: {s['images']} images, {s['classes']} classes, {s['boxes']} boxes, "
                       f"{s['images_with_boxes']} images with boxes")
        for p in report.problems:
            click.echo(str(p))
        for n in report.notes:
            click.echo(f"note: {n}")
        if report.problems:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(report.problem_counts().items()))
            summary = f"{len(report.problems)} problems ({counts})"
        else:
            summary = "no problems"
        if report.notes:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(report.note_counts().items()))
            summary += f"; {len(report.notes)} notes ({counts})"
        click.echo(summary)
    if report.problems:
        sys.exit(1)


@data_group.command("stats")
@_data_options
@click.option("--max-pixels", type=click.IntRange(min=1), default=4_000_000, show_default=True,
              help="Pixels sampled in all (bounds memory and time).")
@click.option("--max-images", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Images decoded at most (a seeded random subset).")
@click.option("--seed", type=int, default=0, show_default=True, help="Picks the images and pixels.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here (for data.stats).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def stats_cmd(root, fmt, config, overrides, splits, max_pixels, max_images, seed, out, quiet) -> None:
    """Mean RGB, per-channel std and the RGB covariance's eigenvalues/eigenvectors (0..255 units;
    eigvec columns are the eigenvectors) of a split's images (default: train), as JSON on stdout.
    Point data.stats at the --out file to use them for mean subtraction and the colour shift.

    ROOT is the data set folder (default: data.root of -c)."""
    from vgglocal.data import read_split
    from vgglocal.data.stats import compute_stats, write_stats

    cfg = _data_config(root, fmt, config, overrides)
    records = []
    for split in splits or ["train"]:
        records += read_split(cfg, split, task="all")[0]
    stats = compute_stats(records, max_pixels=max_pixels, max_images=max_images, seed=seed, progress=_progress(quiet))
    if out:
        write_stats(stats, out)
    click.echo(json.dumps(stats))
