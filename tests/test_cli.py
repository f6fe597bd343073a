"""The command line answers --help, usage errors and config errors without importing torch, and
shows real defaults in every --help."""

import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from vgglocal.cli import cli, config_default

ROOT = Path(__file__).resolve().parents[1]

# Walks every command (groups included), asks each for --help and makes one usage error, makes
# the config and path errors of CONFIG_ERRORS, then reports which heavy modules got imported. Runs in a fresh interpreter so that nothing the
# test session already imported hides an import.
_PROBE = r"""
import sys
import click
from click.testing import CliRunner
import vgglocal
import vgglocal.cli
from vgglocal.cli import cli

def walk(cmd, path):
    yield path
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from walk(sub, path + [name])

runner = CliRunner()
paths = list(walk(cli, []))
for path in paths:
    r = runner.invoke(cli, path + ["--help"])
    assert r.exit_code == 0, (path, r.output)
    r = runner.invoke(cli, path + ["--no-such-option"])
    assert r.exit_code == 2, (path, r.output)
# errors in what the user typed: one line, before torch is imported
for args, start in CONFIG_ERRORS:
    r = runner.invoke(cli, args)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith(start), (args, r.output)
print(len(paths), " ".join(sorted(m for m in ("torch", "torchvision", "cv2", "albumentations") if m in sys.modules)))
"""

_CONFIG_ERRORS = [
    (["train-cls", "-c", "missing.yaml"], "error: config file not found: missing.yaml"),
    (["train-cls", "-c", "configs/test/tiny.yaml", "--set", "model.arch=Z"], "error: model.arch: unknown arch 'Z'"),
    (["eval", "-c", "configs/test/tiny.yaml", "--checkpoint", "x.pt", "--set", "eval.batch_size=0"],
     "error: configs/test/tiny.yaml: eval.batch_size"),
    (["train-loc", "-c", "configs/test/loc-tiny.yaml", "--set", "optim.lrr=1"], "error: unknown config key 'optim.lrr'"),
    (["predict", "--checkpoint", "x.pt", "no-such-folder/*.jpg"], "error: no-such-folder/*.jpg: no file matches this pattern"),
]


def test_help_usage_and_config_errors_do_not_import_torch():
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    probe = f"CONFIG_ERRORS = {_CONFIG_ERRORS!r}\n" + _PROBE
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    count, *heavy = out.stdout.split()
    assert int(count) >= 10  # the group, data's group and their commands
    assert heavy == [], f"--help imported {heavy}: import them inside the command function"


def test_import_vgglocal_is_light_and_load_model_is_lazy():
    probe = (
        "import sys, vgglocal; assert 'torch' not in sys.modules, 'import vgglocal imported torch'\n"
        "f = vgglocal.load_model\n"
        "from vgglocal.models.io import load_model\n"
        "assert f is load_model and 'torch' in sys.modules and 'load_model' in dir(vgglocal)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr


def _all_help() -> str:
    runner = CliRunner()
    texts = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        texts.append(runner.invoke(cli, path + ["--help"], terminal_width=200).output)
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, path + [name])

    walk(cli, [])
    return " ".join("\n".join(texts).split())  # help is wrapped at 100 columns


def test_help_shows_values_not_config_key_names_as_defaults():
    text = _all_help()
    # "Default: eval.flip" tells a user nothing; the value must be there.
    for bad in ("Default: eval.", "default: eval.", "Default: loc.", "default: loc."):
        assert bad not in text
    assert "[default: full, or eval.protocol of -c]" in text
    assert "[default: true, or eval.flip of -c]" in text
    assert "[default: pcr, or loc.regression of -c]" in text


def test_config_default_formats():
    assert config_default("eval.merge_threshold") == "[default: 1, or eval.merge_threshold of -c]"
    assert config_default("loc.init") == "[default: none, or loc.init of -c]"
    assert config_default("train.log_every") == "[default: 20, or train.log_every of -c]"


def test_option_choices_are_the_config_tuples():
    # A choice list has one home (vgglocal.config); an option spelling its own copy would drift.
    from vgglocal import config as C
    from vgglocal.cli import cli
    from vgglocal.models.specs import TORCHVISION_ARCHS

    def choices(*path: str) -> tuple[str, ...]:
        cmd = cli
        for name in path[:-1]:
            cmd = cmd.commands[name]
        (param,) = [p for p in cmd.params if p.name == path[-1]]
        return tuple(param.type.choices)

    assert choices("train-loc", "regression") == C.REGRESSIONS == C._CHOICES["loc.regression"]
    assert choices("train-loc", "finetune") == C.FINETUNE_MODES == C._CHOICES["loc.finetune"]
    assert choices("eval", "protocol") == C.PROTOCOLS == C._CHOICES["eval.protocol"]
    for command in ("features", "transfer"):
        assert choices(command, "protocol") == C.TRANSFER_PROTOCOLS == C._CHOICES["transfer.protocol"]
        assert choices(command, "aggregate") == C.AGGREGATES == C._CHOICES["transfer.aggregate"]
    assert choices("score", "fmt") == C.FORMATS
    assert choices("export", "fmt") == C.EXPORT_FORMATS
    assert choices("data", "synth", "layout") == C.SYNTH_LAYOUTS
    assert choices("import-weights", "arch") == tuple(TORCHVISION_ARCHS)
