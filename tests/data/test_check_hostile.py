"""``data check`` on hostile images: bombs are named problems, 16-bit images are notes."""


import numpy as np
from click.testing import CliRunner
from PIL import Image

from vgglocal.cli import cli
from vgglocal.config import DataConfig
from vgglocal.data.check import check_dataset
from vgglocal.data.synth import SynthSpec, synthesize


def test_bomb_is_a_problem_and_a_16_bit_image_a_note(tmp_path, bomb_png):
    root = tmp_path / "synth"
    synthesize(root, SynthSpec(classes=2, train=2, val=1, size=40, seed=3))
    train = root / "ILSVRC/Data/CLS-LOC/train"
    bomb, deep = train / "n00000001/n00000001_1.JPEG", train / "n00000002/n00000002_1.JPEG"
    bomb.write_bytes(bomb_png(13000, 13000))
    h, w = np.asarray(Image.open(deep)).shape[:2]
    Image.fromarray((np.arange(h * w).reshape(h, w) * 60 % 65536).astype(np.uint16)).save(deep, format="PNG")

    report = check_dataset(DataConfig(root=str(root)), ["train", "val"])
    assert [(p.file, p.kind) for p in report.problems] == [(str(bomb), "bad-image")]
    assert "data.max_pixels" in report.problems[0].message
    assert [(n.file, n.kind) for n in report.notes] == [(str(deep), "converted")]
    assert "16-bit" in report.notes[0].message and "I;16" in report.notes[0].message
    assert report.to_dict()["notes"] == [str(report.notes[0])]

    result = CliRunner().invoke(cli, ["data", "check", str(root), "-q"])
    assert result.exit_code == 1
    assert f"note: {deep}: 16-bit grayscale" in result.output
    assert result.output.splitlines()[-1] == "1 problems (bad-image 1); 1 notes (converted 1)"

    # Only the note left: still a clean data set (exit 0).
    Image.new("RGB", (48, 40), (90, 90, 90)).save(bomb, format="JPEG")
    result = CliRunner().invoke(cli, ["data", "check", str(root), "-q", "--set", "data.max_pixels=1000000"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "no problems; 1 notes (converted 1)"
