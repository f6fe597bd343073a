"""The paper's localisation configs (Tables 8 and 9) and the tiny test configs load and say what
their names say."""

from pathlib import Path

import pytest

from vgglocal.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    "name, scale, regression, finetune",
    [
        ("vgg-d-s384-fc-scr", 384, "scr", "fc"),  # Table 8 row 1
        ("vgg-d-s384-fc-pcr", 384, "pcr", "fc"),  # Table 8 row 2
        ("vgg-d-s384-all-pcr", 384, "pcr", "all"),  # Table 8 row 3, Table 9 S=384
        ("vgg-d-s256-all-pcr", 256, "pcr", "all"),  # Table 9 S=256
    ],
)
def test_paper_localisation_configs(name, scale, regression, finetune):
    cfg = load_config(CONFIGS / "loc" / f"{name}.yaml")
    assert (cfg.data.scale, cfg.data.scale_max, cfg.loc.regression, cfg.loc.finetune) == (scale, 0, regression, finetune)
    assert cfg.optim.lr == 1e-3 and cfg.model.arch == "D" and cfg.train.batch_size == 256
    assert cfg.loc.init == f"runs/vgg-d-s{scale}/model.pt"
    assert (CONFIGS / "cls" / f"vgg-d-s{scale}.yaml").is_file()  # the classification run it starts from


@pytest.mark.parametrize("name", ["cls-tiny", "loc-tiny"])
def test_tiny_configs_load(name):
    cfg = load_config(CONFIGS / "test" / f"{name}.yaml")
    assert cfg.model.crop == 32 and cfg.data.workers == 0
