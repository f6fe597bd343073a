from pathlib import Path

import pytest
import yaml

from vgglocal.config import Config, ConfigError, dump_config, fields_reference, load_config, replace

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_papers():
    cfg = load_config()
    assert (cfg.model.arch, cfg.model.crop, cfg.train.batch_size) == ("D", 224, 256)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.01, 0.9, 5e-4)
    assert cfg.model.dropout == 0.5 and cfg.optim.max_decreases == 3


def test_yaml_overrides_and_round_trip(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  arch: A\n  width: 0.5\ndata:\n  scale_min: 256\n  scale_max: 512\n")
    cfg = load_config(p, ["optim.lr=0.001", "eval.scales=[256, 384, 512]", "train.precision=bf16", "model.width=1"])
    assert cfg.model.arch == "A" and cfg.optim.lr == 0.001 and cfg.model.width == 1.0
    assert cfg.eval.scales == (256, 384, 512) and cfg.train.precision == "bf16"
    assert load_config(None, ["optim.lr=1e-3"]).optim.lr == 0.001  # YAML reads 1e-3 as text
    assert cfg.name == "c"
    out = tmp_path / "resolved.yaml"
    dump_config(cfg, out)
    assert load_config(out) == cfg
    assert isinstance(yaml.safe_load(out.read_text())["eval"]["scales"], list)


def test_unknown_key_names_key_and_valid_ones(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.learning_rate'; valid keys: lr, momentum"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"unknown config key 'modle'"):
        load_config(None, ["modle.arch=A"])
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'"):
        load_config(None, ["train.epoch=3"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=fast", r"optim.lr: expected a number, got 'fast'"),
        ("train.epochs=2.5", r"train.epochs: expected an integer, got 2.5"),
        ("train.channels_last=maybe", r"train.channels_last: expected true or false"),
        ("model.crop=100", r"model.crop: 100 must be a positive multiple of 32"),
        ("loc.regression=xyz", r"loc.regression: 'xyz' is not one of scr, pcr"),
        ("data.pipeline=tpu", r"data.pipeline: 'tpu' is not one of cpu, gpu"),
        ("optim.schedule=step", r"optim.schedule: 'step' is not one of plateau, cosine"),
        ("data.prefetch_factor=0", r"data.prefetch_factor: 0 must be >= 1"),
        ("optim.lr", r"expected key=value"),
        ("model=3", r"model is a section"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(None, [override])
    assert "\n" not in str(e.value)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(p)


def test_configs_are_frozen_and_replace_works():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.optim.lr = 1.0  # type: ignore[misc]
    cfg2 = replace(cfg, **{"optim.lr": 0.1, "model.arch": "E"})
    assert cfg2.optim.lr == 0.1 and cfg2.model.arch == "E" and cfg.optim.lr == 0.01


def test_every_shipped_config_loads():
    files = sorted((ROOT / "configs").rglob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        load_config(f)


def test_reference_lists_every_key():
    keys = {k for k, _, _ in fields_reference()}
    assert {"model.arch", "model.width", "model.crop", "data.format", "data.root", "train.epochs", "train.batch_size", "optim.lr", "seed"} <= keys
