"""Training commands: ``train-cls`` (section 3.1), ``train-loc`` (Appendix A) and ``plot``
(learning curves of runs).

The training commands run unchanged under ``torchrun --nproc-per-node N -m vgglocal ...``: the batch size in the
config is global and is split across the processes.
"""

from __future__ import annotations

import os
import sys

import click

from vgglocal.cli import cli, config_default
from vgglocal.config import FINETUNE_MODES, REGRESSIONS

_CONFIG = click.option("-c", "--config", "config", required=True, type=click.Path(dir_okay=False),
                       help="YAML config (configs/cls/*.yaml, configs/loc/*.yaml).")
_SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                    help="Override a config key, e.g. --set optim.lr=0.001 (repeatable; values are YAML).")
_RESUME = click.option("--resume", is_flag=True,
                       help="Continue the run in the output folder from its checkpoints/last.pt; start it fresh "
                              "(and say so) when it has none yet, so one command serves a preemptible job.")
_OUT = click.option("--out", type=click.Path(file_okay=False), default=None,
                    help="Run folder (default runs/<config file name>).")


def _log(msg: str) -> None:
    # Between progress bars, on stderr: stdout stays free for results.
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@cli.command("train-cls")
@_CONFIG
@_SET
@_RESUME
@_OUT
def train_cls_cmd(config: str, overrides: tuple[str, ...], resume: bool, out: str | None) -> None:
    """Train a classification net (paper section 3.1): SGD with momentum, the plateau schedule
    (lr / 10 when validation top-1 error stops improving, three times), validation every epoch.

    Initialises from scratch (model.init), from a net-A checkpoint (model.init_from) or from any
    checkpoint (model.pretrained). Writes runs/<name>/ with config.yaml, metrics.jsonl,
    checkpoints/last.pt and best.pt, and model.pt.
    """
    from vgglocal.config import load_config
    from vgglocal.models.build import check_arch

    cfg = load_config(config, overrides)  # config errors before torch is imported
    check_arch(cfg.model)
    from vgglocal.engine.tasks import train_classifier

    run = train_classifier(cfg, out=out, resume=resume, log=_log)
    if _is_main():
        click.echo(str(run / "model.pt"))


@cli.command("train-loc")
@_CONFIG
@click.option("--regression", type=click.Choice(REGRESSIONS), default=None,
              help="Box head: scr (4 outputs shared by all classes) or pcr (4 per class). " + config_default("loc.regression"))
@click.option("--finetune", type=click.Choice(FINETUNE_MODES), default=None,
              help="fc: train the box head's FC6, FC7 and new last layer, convs frozen; all: every layer "
                   "except the (frozen) classification head. " + config_default("loc.finetune"))
@click.option("--init", "init", type=click.Path(dir_okay=False), default=None,
              help="Classification checkpoint trained at the same scale (model.pt, best.pt or last.pt). " + config_default("loc.init"))
@click.option("--joint", is_flag=True, default=None,
              help="Train the classification head too (loss: box + loc.cls_weight x cross-entropy), so the net's own "
                   "class scores stay valid and `eval --protocol full` needs no --cls-checkpoint. " + config_default("loc.joint"))
@_SET
@_RESUME
@_OUT
def train_loc_cmd(config: str, regression: str | None, finetune: str | None, init: str | None, joint: bool | None,
                  overrides: tuple[str, ...], resume: bool, out: str | None) -> None:
    """Train a localisation net (paper Appendix A): the classifier's FC layers regress the box
    (cx, cy, w, h)/crop with a Euclidean loss; validation is the centre-crop error with the
    ground-truth class (protocol 1). The classification head is kept, frozen, in the checkpoint;
    with --joint it trains too (beyond the paper), on the same crops.

    --regression, --finetune, --init and --joint override the config's loc.* keys.
    """
    from vgglocal.config import load_config, replace

    cfg = load_config(config, overrides)  # config errors before torch is imported
    options = {"loc.regression": regression, "loc.finetune": finetune, "loc.init": init, "loc.joint": True if joint else None}
    cfg = replace(cfg, **{k: v for k, v in options.items() if v is not None})
    from vgglocal.engine.tasks import train_localizer

    run = train_localizer(cfg, out=out, resume=resume, log=_log)
    if _is_main():
        click.echo(str(run / "model.pt"))


@cli.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), default="curves.png", show_default=True, help="PNG to write.")
@click.option("--log-loss", is_flag=True, help="Logarithmic loss axis.")
def plot_cmd(runs: tuple[str, ...], out: str, log_loss: bool) -> None:
    """Learning curves of training RUN folders (their metrics.jsonl): the training loss of the
    step lines (every train.log_every steps) and the validation errors of each epoch, against
    the optimiser step, one colour per run. Needs matplotlib (pip install 'vgglocal[plot]')."""
    from vgglocal.engine.curves import plot_runs

    click.echo(str(plot_runs(list(runs), out, log_loss=log_loss)))
