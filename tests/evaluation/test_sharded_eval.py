"""Evaluation at scale: under torchrun (gloo, CPU) 2 or 3 ranks write byte for byte the files one
process writes, for `eval` and for `predict` on a folder; a killed evaluation resumes, computing
only the parts it had not finished, and ends with the files of an uninterrupted run; a part of
another evaluation is refused; validation under DDP gives `eval --protocol center-crop`'s keys
and values. Tiny nets (1/16 width, 32 px), 12 images in parts of 3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from vgglocal.cli import cli
from vgglocal.data.synth import SynthSpec, synthesize, wnid
from vgglocal.evaluation import shard
from vgglocal.models.io import save_model
from vgglocal.models.vgg import build_vgg

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
CLASSES = 3
NORM = {"mean": [120.0, 110.0, 100.0], "std": [60.0, 60.0, 60.0]}
FILES = ("metrics.json", "predictions.csv", "predictions.txt", "detections.json", "ground_truth.json", "predictions.png")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    synthesize(root / "synth", SynthSpec(classes=CLASSES, train=1, val=4, size=48, seed=3))
    val = sorted((root / "synth" / "ILSVRC" / "Data" / "CLS-LOC" / "val").iterdir())
    val[4].write_bytes(val[4].read_bytes()[:100])  # one unreadable image, in the second part
    ids = [wnid(c) for c in range(CLASSES)]
    paths = {}
    for name, head, seed in (("loc", "pcr", 0), ("loc2", "pcr", 1), ("cls", None, 2)):
        torch.manual_seed(seed)
        model = build_vgg("A", num_classes=CLASSES, width=0.0625, crop=32, box_head=head, init="kaiming")
        if head:
            with torch.no_grad():  # boxes around the window centre, varying with the image
                model.box_head.fc8.weight.mul_(0.05)
                model.box_head.fc8.bias.copy_(torch.tensor([0.5, 0.5, 0.8, 0.8]).repeat(CLASSES))
        meta = {"train_scale": {"scale": 40, "scale_min": 40, "scale_max": 0}}
        paths[name] = str(save_model(model, root / f"{name}.pt", NORM, classes=ids, meta=meta))
    config = root / "eval.yaml"
    # data.mean / std as the checkpoints record them: validation normalises as training did
    config.write_text(yaml.safe_dump({"data": {"format": "ilsvrc-kaggle", "root": str(root / "synth"), "scale": 40, "workers": 0, **NORM},
                                      "model": {"crop": 32},
                                      "eval": {"batch_size": 3, "scales": [32, 48], "merge_threshold": 0.6, "device": "cpu"}}))
    return root, paths, str(config)


def _eval_args(setup, protocol, out, *extra, loc="loc"):
    _, paths, config = setup
    args = ["eval", "-c", config, "--protocol", protocol, "--checkpoint", paths[loc], "--out", str(out), "--draw", "4", *extra]
    return args + (["--cls-checkpoint", paths["cls"]] if protocol == "full" else ["--scales", "40"])


def _invoke(args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


def _torchrun(n, args, timeout=300):
    res = subprocess.run([*TORCHRUN, "--nproc-per-node", str(n), "-m", "vgglocal", *map(str, args)], env=ENV,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def _same_files(a: Path, b: Path) -> None:
    written = [f for f in FILES if (a / f).exists()]
    assert "metrics.json" in written and "predictions.png" in written
    for f in written:
        assert (b / f).read_bytes() == (a / f).read_bytes(), f
    assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in a.iterdir())
    assert not (b / "parts").exists() and not (a / "parts").exists()


@pytest.mark.parametrize(("protocol", "ranks"), [("full", 2), ("center-crop", 3)])
def test_torchrun_eval_writes_the_files_of_one_process(setup, tmp_path, protocol, ranks):
    _invoke(_eval_args(setup, protocol, tmp_path / "one"))
    res = _torchrun(ranks, _eval_args(setup, protocol, tmp_path / "many"))
    _same_files(tmp_path / "one", tmp_path / "many")
    metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert metrics["n_images"] == 12 and metrics["n_unreadable"] == 1
    assert 0 < metrics["top1_loc_error"] < 1  # the comparison can tell a difference
    # the unreadable image is named once, by the rank that had it
    assert sum("unreadable, counted as wrong" in t for t in res.stderr.splitlines()) == 1, res.stderr[-3000:]


def test_torchrun_predict_on_a_folder_writes_what_one_process_writes(setup, tmp_path):
    root, paths, config = setup
    folder = root / "synth" / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    for n, name in ((1, "one"), (2, "many")):
        for fmt in ("jsonl", "csv"):
            args = ["predict", folder, "-c", config, "--checkpoint", paths["loc"], "--cls-checkpoint", paths["cls"], "--batch-size", "3",
                    "--out", tmp_path / f"{name}.{fmt}", "--draw", tmp_path / f"draw-{name}", "-q"]
            res = subprocess.run(([*TORCHRUN, "--nproc-per-node", str(n), "-m", "vgglocal"] if n > 1 else [sys.executable, "-m", "vgglocal"])
                                 + [str(a) for a in args], env=ENV, capture_output=True, text=True, timeout=300)
            assert res.returncode == 1, res.stderr[-3000:]  # one image is unreadable
    lines = (tmp_path / "one.jsonl").read_text().splitlines()
    assert len(lines) == 12 and sum("error" in json.loads(t) for t in lines) == 1
    for fmt in ("jsonl", "csv"):
        assert (tmp_path / f"many.{fmt}").read_bytes() == (tmp_path / f"one.{fmt}").read_bytes(), fmt
    pictures = sorted(p.name for p in (tmp_path / "draw-one").iterdir())
    assert len(pictures) == 11 and pictures == sorted(p.name for p in (tmp_path / "draw-many").iterdir())
    for name in pictures:
        assert (tmp_path / "draw-many" / name).read_bytes() == (tmp_path / "draw-one" / name).read_bytes()


# A kill -9 in the middle: the evaluation sleeps when it starts its fourth part (parts 0 and 1
# are written by then; the protocol's merge of part k is written when part k+1 has started).
_SLOW = """
import sys, time
from pathlib import Path
import vgglocal.evaluation.shard as shard
real, calls = shard.begin_protocol, []
def slow(*args, **kwargs):
    calls.append(1)
    if len(calls) == 4:
        Path(sys.argv[1]).write_text("asleep")
        time.sleep(300)
    return real(*args, **kwargs)
shard.begin_protocol = slow
from vgglocal.cli import cli
cli(sys.argv[2:], prog_name="vgglocal")
"""


def _kill_during_the_fourth_part(setup, tmp_path, args):
    flag = tmp_path / "asleep"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW, str(flag), *map(str, args)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), proc.communicate()[1][-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _counting(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = shard.begin_protocol

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(shard, "begin_protocol", counted)
    return calls


def test_a_killed_evaluation_resumes_and_ends_with_the_files_of_an_uninterrupted_run(setup, tmp_path, monkeypatch):
    _invoke(_eval_args(setup, "full", tmp_path / "ref"))
    out = tmp_path / "killed"
    _kill_during_the_fourth_part(setup, tmp_path, _eval_args(setup, "full", out))
    parts = sorted(p.name for p in (out / "parts").iterdir())
    assert parts == ["part-00000.safetensors", "part-00001.safetensors"], parts
    before = {p: (out / "parts" / p).read_bytes() for p in parts}

    # Another checkpoint or other settings into the same folder: refused in one line, parts kept.
    for args, differ in ((_eval_args(setup, "full", out, loc="loc2"), "checkpoints"),
                         (_eval_args(setup, "full", out, "--merge-threshold", "0.3"), "config")):
        res = CliRunner().invoke(cli, args)
        errors = [t for t in res.output.splitlines() if t.startswith("error:")]
        assert res.exit_code == 2 and len(errors) == 1 and "Traceback" not in res.output, res.output
        assert f"a part of another evaluation (its {differ} differ)" in errors[0], res.output
        assert {p: (out / "parts" / p).read_bytes() for p in parts} == before

    calls = _counting(monkeypatch)
    res = _invoke(_eval_args(setup, "full", out))
    assert len(calls) == 2  # parts 2 and 3 only
    assert "resuming: 2 of 4 parts" in res.output, res.output
    _same_files(tmp_path / "ref", out)


def _interrupt_at_the_third_part(setup, out, monkeypatch, **kw):
    real, calls = shard.begin_protocol, []

    def interrupted(*args, **kwargs):  # Ctrl-C while part 2 is computed: part 1's results are not written yet
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(shard, "begin_protocol", interrupted)
    res = CliRunner().invoke(cli, _eval_args(setup, "center-crop", out, **kw))
    monkeypatch.setattr(shard, "begin_protocol", real)
    assert res.exit_code != 0 and sorted(p.name for p in (out / "parts").iterdir()) == ["part-00000.safetensors"], res.output


def test_an_interrupted_evaluation_resumes_and_overwrite_replaces_another_ones_parts(setup, tmp_path, monkeypatch):
    _invoke(_eval_args(setup, "center-crop", tmp_path / "ref"))
    out = tmp_path / "interrupted"
    _interrupt_at_the_third_part(setup, out, monkeypatch)
    calls = _counting(monkeypatch)
    _invoke(_eval_args(setup, "center-crop", out))
    assert len(calls) == 3  # parts 1, 2 and 3
    _same_files(tmp_path / "ref", out)

    # --overwrite replaces the parts of another evaluation instead of refusing them
    other = tmp_path / "other"
    _interrupt_at_the_third_part(setup, other, monkeypatch, loc="loc2")
    calls.clear()
    _invoke(_eval_args(setup, "center-crop", other, "--overwrite"))
    assert len(calls) == 4 and not (other / "parts").exists()
    _same_files(tmp_path / "ref", other)


_VALIDATE = """
import json, sys
import torch
from vgglocal import comm
from vgglocal.config import load_config
from vgglocal.data import read_split
from vgglocal.data.loader import SampleDataset, build_loader
from vgglocal.data.transforms import build_eval_transform
from vgglocal.engine.tasks import eval_scale
from vgglocal.engine.validate import evaluate
from vgglocal.inference.protocols import RunOptions
from vgglocal.models.io import load_model

env = comm.setup("cpu")
cfg = load_config(sys.argv[1], [])
records, _ = read_split(cfg.data, "val", "loc", with_missing=True)
val = SampleDataset(records, build_eval_transform(cfg.data, 32, eval_scale(cfg)), "loc", cfg.seed)
loader = build_loader(val, 2, shuffle=False, seed=cfg.seed)  # per rank: 6 + 6 of 12, 3 batches each
loader.set_epoch(0)
got = evaluate(load_model(sys.argv[2]), loader, records=records, opts=RunOptions.from_config(cfg.eval, env.device), loc=True)
if env.is_main:
    open(sys.argv[3], "w").write(json.dumps(got))
comm.teardown()
"""


def test_validation_under_ddp_gives_the_keys_and_values_of_eval_center_crop(setup, tmp_path):
    root, paths, config = setup
    script = tmp_path / "validate.py"
    script.write_text(_VALIDATE)
    res = subprocess.run([*TORCHRUN, "--nproc-per-node", "2", str(script), config, paths["loc"], str(tmp_path / "val.json")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads((tmp_path / "val.json").read_text())
    _invoke(_eval_args(setup, "center-crop", tmp_path / "eval"))
    want = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    keys = ("top1_cls_error", "top5_cls_error", "top1_loc_error", "top5_loc_error", "n_images", "n_unreadable")
    assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
    assert got["n_unreadable"] == 1 and 0 < got["top1_loc_error"] < 1


# Rank 1 of the first attempt stops (SIGKILL, as the OOM killer would) in its third part; with
# --max-restarts 1 torchelastic restarts the group, which resumes from the parts on disk.
_RESTARTED = """
import os, sys, time
from pathlib import Path
import vgglocal.evaluation.shard as shard
real, calls = shard.begin_protocol, []
def slow(*args, **kwargs):
    calls.append(1)
    if os.environ["RANK"] == "1" and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0" and len(calls) == 3:
        Path(sys.argv[1]).write_text(str(os.getpid()))
        time.sleep(300)
    return real(*args, **kwargs)
shard.begin_protocol = slow
from vgglocal.cli import cli
cli(sys.argv[2:], prog_name="vgglocal")
"""


def test_a_group_that_torchelastic_restarts_resumes_the_evaluation(setup, tmp_path):
    one_per_part = ("--set", "eval.batch_size=1")
    _invoke(_eval_args(setup, "full", tmp_path / "ref", *one_per_part))
    script, flag, out = tmp_path / "restarted.py", tmp_path / "pid", tmp_path / "restarted"
    script.write_text(_RESTARTED)
    err = tmp_path / "stderr.txt"
    with err.open("w") as f:
        proc = subprocess.Popen([*TORCHRUN, "--nproc-per-node", "2", "--max-restarts", "1", str(script), str(flag),
                                 *_eval_args(setup, "full", out, *one_per_part)], env=ENV, stdout=subprocess.DEVNULL, stderr=f)
    deadline = time.monotonic() + 120
    while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), err.read_text()[-3000:]
    time.sleep(0.2)  # the pid is written before the sleep starts
    os.kill(int(flag.read_text()), signal.SIGKILL)
    assert proc.wait(timeout=300) == 0, err.read_text()[-3000:]
    assert "resuming:" in err.read_text(), err.read_text()[-3000:]
    _same_files(tmp_path / "ref", out)


def test_torchrun_features_of_a_split_are_the_features_of_one_process(setup, tmp_path):
    import numpy as np

    root, paths, config = setup
    args = ["features", "-c", config, "--checkpoint", paths["cls"], "--split", "val", "--scales", "32,48",
            "--set", "transfer.batch_size=1", "--set", "transfer.workers=0", "--set", "transfer.device=cpu", "--quiet"]
    _invoke([*args, "--out", tmp_path / "one.npz"])
    _torchrun(2, [*args, "--out", tmp_path / "many.npz"])
    one, many = np.load(tmp_path / "one.npz"), np.load(tmp_path / "many.npz")
    assert sorted(one.files) == sorted(many.files) and len(one["features"]) == 11  # the unreadable image is skipped
    for key in one.files:
        assert np.array_equal(one[key], many[key]), key
