"""Every numeric config key has a range, checked at load time with one line naming key, value
and range; config files that are not UTF-8 YAML are one line too."""

import math

import pytest
from click.testing import CliRunner

from vgglocal.cli import cli
from vgglocal.config import RANGES, ConfigError, fields_reference, load_config


@pytest.mark.parametrize("override, key", [
    ("data.limit=-5", "data.limit"),
    ("data.max_bad_fraction=nan", "data.max_bad_fraction"),
    ("data.max_bad_fraction=1.5", "data.max_bad_fraction"),
    ("optim.lr=nan", "optim.lr"),
    ("optim.lr=.inf", "optim.lr"),
    ("data.workers=-1", "data.workers"),
    ("optim.momentum=-1", "optim.momentum"),
    ("seed=-1", "seed"),
    ("optim.weight_decay=-1", "optim.weight_decay"),
    ("data.pca_std=-0.1", "data.pca_std"),
    ("data.mean=[1, .nan, 3]", "data.mean"),
    ("eval.score_floor=2", "eval.score_floor"),
    ("train.checkpoint_every=-3", "train.checkpoint_every"),
    ("data.max_pixels=0", "data.max_pixels"),
])
def test_out_of_range_values_name_key_value_and_range(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert msg.startswith(f"{key}") and "\n" not in msg and "must be" in msg, msg


def test_every_numeric_key_has_a_range():
    numeric = {k for k, tp, _ in fields_reference() if any(t in tp for t in ("int", "float"))}
    assert numeric - set(RANGES) == set(), "give these keys a range in vgglocal.config.RANGES"
    assert set(RANGES) - {k for k, _, _ in fields_reference()} == set()


def test_defaults_and_shipped_values_are_inside_their_ranges():
    cfg = load_config()
    assert math.isfinite(cfg.optim.lr)
    load_config(None, ["optim.momentum=0", "data.max_bad_fraction=0", "data.max_bad_fraction=1", "seed=0", "data.workers=0"])


def test_cli_says_one_line_for_a_range_error():
    res = CliRunner().invoke(cli, ["train-cls", "-c", "configs/test/tiny.yaml", "--set", "optim.momentum=-1"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "optim.momentum" in res.output, res.output


def test_a_config_that_is_not_utf8_is_one_line(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml:1: not UTF-8 text \(byte 0xe9 at offset 9\)"):
        load_config(p)
    res = CliRunner().invoke(cli, ["train-cls", "-c", str(p)])
    assert res.exit_code == 2 and res.output.startswith(f"error: {p}:1: not UTF-8") and res.output.count("\n") == 1
