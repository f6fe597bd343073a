import json
import subprocess
import sys

import pytest
import torch
import torchvision
from click.testing import CliRunner

import vgglocal
from vgglocal.checkpoint import CheckpointError, save_checkpoint
from vgglocal.cli import cli
from vgglocal.models.io import TORCHVISION_NORMALIZATION, load_model, save_model
from vgglocal.models.vgg import build_vgg


def _run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("builder, arch", [("vgg16", "D"), ("vgg11", "A"), ("vgg19", "E"), ("vgg16_bn", "D")])
def test_torchvision_import_gives_same_logits(tmp_path, builder, arch):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, builder)().eval()
    if builder.endswith("_bn"):  # non-trivial BN statistics, so a wrong mapping shows
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    src = tmp_path / f"{builder}.pth"
    torch.save(tv.state_dict(), src)
    out = tmp_path / "imported.pt"
    res = _run("import-weights", str(src), "--format", "torchvision", "--arch", arch, "--out", str(out))
    assert res.exit_code == 0, res.output
    model = vgglocal.load_model(out)
    assert not model.training
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours, theirs = model(x), tv(x)
    assert ours.shape == theirs.shape == (2, 1000)
    assert (ours - theirs).abs().max().item() < 1e-4
    torch.testing.assert_close(torch.tensor(model.normalization["mean"]), torch.tensor(TORCHVISION_NORMALIZATION["mean"]))
    assert model.meta["source"] == f"torchvision {builder}"


def test_import_with_wrong_arch_is_one_line_error(tmp_path):
    sd = torchvision.models.vgg11(num_classes=3).state_dict()
    src = tmp_path / "vgg11.pth"
    torch.save(sd, src)
    res = CliRunner().invoke(cli, ["import-weights", str(src), "--arch", "D", "--out", str(tmp_path / "x.pt")])
    assert res.exit_code == 2
    assert "--arch D expects 13 conv layers, the weights have 8 (arch A?)" in res.output
    assert not (tmp_path / "x.pt").exists()


def test_save_and_load_round_trip_keeps_metadata(tmp_path):
    model = build_vgg("C", num_classes=5, width=0.0625, crop=32, batch_norm=True).eval()
    path = save_model(model, tmp_path / "m.pt", {"mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]}, classes=list("abcde"), meta={"epoch": 3})
    loaded = load_model(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert loaded.classes == list("abcde") and loaded.meta == {"epoch": 3}
    assert loaded.normalization == {"mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]}
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))


class _Evil:
    def __reduce__(self):
        return (subprocess.call, (["touch", "/tmp/vgglocal-pwned"],))


def test_loading_never_runs_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "vgglocal", "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="not a readable vgglocal checkpoint"):
        load_model(path)


@pytest.mark.parametrize("content", [b"", b"garbage bytes", None])
def test_bad_checkpoint_files_are_one_line_errors(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"some": torch.zeros(1)}, path)  # readable, but not ours
    else:
        path.write_bytes(content)
    res = CliRunner().invoke(cli, ["info", str(path)])
    assert res.exit_code == 2
    assert res.output.startswith("error: ") and str(path) in res.output and res.output.count("\n") == 1


def test_checkpoint_save_is_atomic_and_leaves_no_temp(tmp_path):
    target = tmp_path / "ck.pt"
    save_checkpoint({"x": torch.ones(2)}, target)
    save_checkpoint({"x": torch.zeros(2)}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_info_json_for_paper_net_d():
    res = _run("info", "D", "--classes", "1000", "--json")
    out = json.loads(res.output)
    assert out["params"] == 138_357_544
    assert out["macs"] == pytest.approx(15.47e9, rel=2e-3)


def test_info_on_checkpoint_and_dense_cost(tmp_path):
    model = build_vgg("A", num_classes=10, width=0.125, crop=64)
    path = save_model(model, tmp_path / "a.pt", {"mean": [0.0] * 3, "std": [1.0] * 3})
    crop = json.loads(_run("info", str(path), "--json").output)
    dense = json.loads(_run("info", str(path), "--image", "128", "--json").output)
    assert crop["params"] == sum(p.numel() for p in model.parameters())
    assert dense["map"] == 3 and dense["macs"] > 3 * crop["macs"]


def test_unknown_arch_is_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "vgglocal", "info", "F"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "'F' is neither an arch (A, A-LRN, B, C, D, E) nor a checkpoint file" in proc.stderr
    assert "Traceback" not in proc.stderr
