"""End to end: train-cls / train-loc on `data synth` output, kill -9 and --resume, torchrun on
CPU (gloo), and the one-line errors. Tiny: VGG-D at 1/16 width, 32-px crops, 48 images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.testing import assert_close

from vgglocal.checkpoint import load_checkpoint
from vgglocal.cli import cli
from vgglocal.config import load_config
from vgglocal.data.synth import SynthSpec, synthesize
from vgglocal.models.build import build_model
from vgglocal.models.io import load_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "test"
CLS = str(CONFIGS / "cls-tiny.yaml")
LOC = str(CONFIGS / "loc-tiny.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(*args: str):
    res = invoke(*args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def metrics(run: Path, kind: str = "epoch") -> list[dict]:
    """The run's metrics.jsonl lines of one kind: "epoch" or "step" (the learning curve)."""
    lines = [json.loads(t) for t in (run / "metrics.jsonl").read_text().splitlines()]
    return [m for m in lines if m["kind"] == kind]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, SynthSpec(classes=4, train=12, val=4, size=48, seed=1))
    return root


@pytest.fixture(scope="module")
def cls_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "cls"
    ok("train-cls", "-c", CLS, "--set", f"data.root={data}", "--out", out)
    return out


def test_train_cls_lowers_the_loss_and_writes_a_run_load_model_reads(cls_run, data):
    lines = metrics(cls_run)
    assert [m["epoch"] for m in lines] == list(range(1, 16))  # one full batch of 8 images per epoch
    assert sum(m["loss"] for m in lines[-3:]) / 3 < 0.75 * lines[0]["loss"]
    for key in ("step", "lr", "val_top1_cls_error", "val_top5_cls_error", "images_per_s", "bad_samples"):
        assert key in lines[0], key
    cfg = load_config(cls_run / "config.yaml")
    assert cfg.data.root == str(data) and cfg.name == "cls-tiny"
    model = load_model(cls_run / "model.pt")
    assert model.classes == ["n00000001", "n00000002", "n00000003", "n00000004"]
    # the readable names of LOC_synset_mapping.txt travel beside the wnids
    mapping = dict(line.split(" ", 1) for line in (data / "LOC_synset_mapping.txt").read_text().splitlines())
    assert model.class_names == [mapping[w] for w in model.classes] == ["disc", "triangle", "square", "star"]
    assert model.normalization == {"mean": list(cfg.data.mean), "std": list(cfg.data.std)}
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    for name in ("last.pt", "best.pt"):
        assert load_model(cls_run / "checkpoints" / name).num_classes == 4


def _states(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def test_train_loc_pcr_all_lowers_the_box_loss_and_keeps_the_frozen_class_head(cls_run, data, tmp_path):
    out = tmp_path / "loc"
    ok("train-loc", "-c", LOC, "--regression", "pcr", "--finetune", "all", "--init", cls_run / "model.pt",
       "--set", f"data.root={data}", "--out", out)
    lines = metrics(out)
    assert lines[1]["loss"] < 0.8 * lines[0]["loss"]
    assert {"val_top1_loc_error", "val_top5_loc_error", "val_box_loss"} <= set(lines[0])
    model = load_model(out / "model.pt")
    assert model.box_head_kind == "pcr" and model.box_head.fc8.out_channels == 16
    init, new = _states(cls_run / "model.pt"), _states(out / "model.pt")
    for k, v in init.items():
        changed = not torch.equal(v, new[k])
        assert changed == k.startswith("features."), k  # cls head frozen; every conv trained
    assert model.meta["regression"] == "pcr" and model.meta["finetune"] == "all" and not model.meta["cls_scores_valid"]


def test_train_loc_fc_leaves_every_conv_weight_bit_identical(cls_run, data, tmp_path):
    out = tmp_path / "loc-fc"
    ok("train-loc", "-c", LOC, "--regression", "scr", "--finetune", "fc", "--init", cls_run / "model.pt",
       "--set", f"data.root={data}", "--set", "loc.head_bias=mean", "--out", out)
    init, new = _states(cls_run / "model.pt"), _states(out / "model.pt")
    convs = [k for k in init if k.startswith("features.")]
    assert convs and all(torch.equal(init[k], new[k]) for k in convs)
    assert all(torch.equal(init[k], new[k]) for k in init if k.startswith("cls_head."))
    assert not torch.equal(init["cls_head.fc6.weight"], new["box_head.fc6.weight"])  # FC6 of the box head trained
    assert new["box_head.fc8.weight"].shape[0] == 4  # SCR
    assert load_model(out / "model.pt").meta["cls_scores_valid"]


def test_train_loc_joint_trains_the_class_head_and_full_needs_no_classifier(cls_run, data, tmp_path):
    out = tmp_path / "loc-joint"
    ok("train-loc", "-c", LOC, "--regression", "pcr", "--finetune", "all", "--joint", "--init", cls_run / "model.pt",
       "--set", f"data.root={data}", "--set", "loc.cls_weight=0.5", "--out", out)
    init, new = _states(cls_run / "model.pt"), _states(out / "model.pt")
    assert all(not torch.equal(v, new[k]) for k, v in init.items())  # every layer, the class head too, trained
    meta = load_model(out / "model.pt").meta
    assert meta["joint"] and meta["cls_weight"] == 0.5 and meta["cls_scores_valid"]
    # the net's own class head ranks the boxes: protocol 2 without --cls-checkpoint
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"data: {{format: ilsvrc-kaggle, root: {data}, workers: 0}}\neval: {{batch_size: 4, scales: [32]}}\n")
    res = ok("eval", "-c", cfg, "--protocol", "full", "--checkpoint", out / "model.pt", "--out", tmp_path / "ev")
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n_images"] == 16
    # the separately trained localiser of the same recipe is refused there
    sep = tmp_path / "loc-sep"
    ok("train-loc", "-c", LOC, "--regression", "pcr", "--finetune", "all", "--init", cls_run / "model.pt",
       "--set", f"data.root={data}", "--set", "train.epochs=1", "--out", sep)
    res = invoke("eval", "-c", cfg, "--protocol", "full", "--checkpoint", sep / "model.pt", "--out", tmp_path / "ev2")
    assert res.exit_code != 0 and "--cls-checkpoint" in res.output


def test_joint_loss_is_the_box_loss_plus_weighted_cross_entropy():
    from vgglocal.engine.losses import JointLoss, box_loss, classification_loss

    g = torch.Generator().manual_seed(0)
    boxes, logits = torch.randn(6, 16, generator=g), torch.randn(6, 4, generator=g)
    batch = {"target": torch.rand(6, 4, generator=g), "target_label": torch.tensor([0, 1, 2, 3, 0, 1])}
    got = JointLoss(16, 0.25)(torch.cat([boxes, logits], 1), batch)
    want = box_loss(boxes, batch["target"], batch["target_label"]) + 0.25 * classification_loss(logits, batch["target_label"])
    assert_close(got, want)


def test_resume_refuses_switching_joint_training(cls_run, data, tmp_path):
    out = tmp_path / "loc"
    ok("train-loc", "-c", LOC, "--init", cls_run / "model.pt", "--set", f"data.root={data}", "--set", "train.epochs=1",
       "--out", out)
    res = invoke("train-loc", "-c", LOC, "--init", cls_run / "model.pt", "--joint", "--set", f"data.root={data}",
                 "--set", "train.epochs=2", "--out", out, "--resume")
    assert res.exit_code != 0 and "loc.joint" in res.output


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
def test_kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run(data, tmp_path, pipeline):
    # dropout on: the resumed run must restore the RNG state, not just weights and sampler.
    # data.pipeline gpu runs its device half (batched decode, windows) on the CPU device here.
    sets = ["--set", f"data.root={data}", "--set", "data.limit=0", "--set", "data.flip=true", "--set", "model.dropout=0.5",
            "--set", "train.epochs=2", "--set", "train.batch_size=4", "--set", "train.checkpoint_every=1",
            "--set", f"data.pipeline={pipeline}"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    ok("train-cls", "-c", CLS, *sets, "--out", ref)
    proc = subprocess.Popen([sys.executable, "-m", "vgglocal", "train-cls", "-c", CLS, *sets, "--out", str(killed)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    at_kill = load_checkpoint(last)
    assert at_kill["step"] > 0 and not at_kill["finished"]  # killed in the middle of an epoch
    assert not (killed / "model.pt").exists()
    ok("train-cls", "-c", CLS, *sets, "--out", killed, "--resume")
    assert [m["epoch"] for m in metrics(killed)] == [1, 2]
    # the learning curve has each step once: lines the killed attempt wrote after its last
    # checkpoint were dropped and rewritten by the resumed run
    steps, ref_steps = metrics(killed, "step"), metrics(ref, "step")
    assert [m["step"] for m in steps] == [m["step"] for m in ref_steps] == list(range(1, 25))
    assert [m["loss"] for m in steps] == pytest.approx([m["loss"] for m in ref_steps], rel=1e-4)
    a, b = _states(ref / "checkpoints" / "last.pt"), _states(last)
    for k in a:
        assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)
    assert load_checkpoint(last)["global_step"] == load_checkpoint(ref / "checkpoints" / "last.pt")["global_step"] == 24


def test_torchrun_two_processes_give_the_weights_of_one_process(data, tmp_path):
    # no batch norm (per-process statistics differ by design); augmentation is a function of
    # (seed, epoch, sample), the same in any process
    sets = ["--set", f"data.root={data}", "--set", "data.limit=0", "--set", "model.batch_norm=false",
            "--set", "train.epochs=1"]
    one, two = tmp_path / "one", tmp_path / "two"
    ok("train-cls", "-c", CLS, *sets, "--out", one)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "vgglocal", "train-cls", "-c", CLS, *sets, "--out", str(two)],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = load_checkpoint(one / "checkpoints" / "last.pt"), load_checkpoint(two / "checkpoints" / "last.pt")
    assert (a["world_size"], b["world_size"], a["global_step"], b["global_step"]) == (1, 2, 6, 6)
    for k, v in a["state_dict"].items():
        assert_close(v, b["state_dict"][k], rtol=1e-4, atol=1e-6, msg=k)
    torch.manual_seed(0)  # the runs' init (tasks seeds before building the model)
    init = build_model(load_config(one / "config.yaml").model).state_dict()
    assert all(not torch.equal(init[k], v) for k, v in a["state_dict"].items())  # every layer trained
    m1, m2 = metrics(one), metrics(two)
    assert len(m2) == 1 and m2[0]["samples"] == m1[0]["samples"] == 48  # rank 0 writes; counts reduced
    assert m2[0]["val_n_images"] == m1[0]["val_n_images"] == 16
    assert m2[0]["val_top1_cls_error"] == pytest.approx(m1[0]["val_top1_cls_error"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "train.grad_accum=3"], "error: train.batch_size: 8 is not divisible by world size 1 x train.grad_accum 3"),
        (["--set", "train.batch_sizes=3"], "error: unknown config key 'train.batch_sizes'"),
        (["--set", "train.batch_size=400"], "error: train.batch_size: 400 is more than the 8 training images"),
        (["--set", "model.num_classes=5"], "error: model.num_classes: 5, but"),
        (["--set", "train.sync_bn=true"], "error: train.sync_bn: SyncBatchNorm runs on CUDA devices only"),
        (["--set", "model.arch=F"], "error: model.arch: unknown arch 'F'; choose from A, A-LRN, B, C, D, E"),
    ],
)
def test_bad_input_is_one_line_error(data, tmp_path, args, message):
    res = invoke("train-cls", "-c", CLS, "--set", f"data.root={data}", "--out", tmp_path / "r", *args)
    assert res.exit_code == 2
    assert res.output.strip().startswith(message) and len(res.output.strip().splitlines()) == 1, res.output


def test_an_existing_run_is_never_overwritten_and_train_loc_needs_init(cls_run, data, tmp_path):
    res = invoke("train-cls", "-c", CLS, "--set", f"data.root={data}", "--out", cls_run)
    assert res.exit_code == 2 and "pass --resume to continue it or --out DIR" in res.output
    res = invoke("train-loc", "-c", LOC, "--set", f"data.root={data}", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "train-loc needs --init" in res.output
    res = invoke("train-loc", "-c", LOC, "--init", tmp_path / "missing.pt", "--set", f"data.root={data}", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "missing.pt" in res.output
    from vgglocal.models.io import save_model
    from vgglocal.models.vgg import add_box_head

    loc = load_model(cls_run / "model.pt")
    add_box_head(loc, "pcr")
    save_model(loc, tmp_path / "loc.pt", loc.normalization, classes=loc.classes, meta={"init": "runs/cls/model.pt"})
    res = invoke("train-loc", "-c", LOC, "--init", tmp_path / "loc.pt", "--set", f"data.root={data}", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "a localisation checkpoint" in res.output and "runs/cls/model.pt" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


def test_a_diverging_run_stops_with_a_one_line_message(data, tmp_path):
    res = invoke("train-cls", "-c", CLS, "--set", f"data.root={data}", "--set", "optim.lr=1.0e+12",
                 "--set", "optim.warmup_epochs=0", "--out", tmp_path / "nan")
    assert res.exit_code == 2
    errors = [t for t in res.output.splitlines() if t.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: non-finite training loss at epoch "), res.output
    assert "kept the last good checkpoint" in errors[0] or "no checkpoint had been written yet" in errors[0]
    assert "Traceback" not in res.output
    assert not (tmp_path / "nan" / "model.pt").exists()


def test_resume_refuses_a_different_model_or_finetune_mode(cls_run, data, tmp_path):
    res = invoke("train-cls", "-c", CLS, "--set", f"data.root={data}", "--set", "model.width=0.125", "--out", cls_run, "--resume")
    assert res.exit_code == 2 and "model.width is 0.125, the run in" in res.output
    out = tmp_path / "loc"
    ok("train-loc", "-c", LOC, "--finetune", "fc", "--init", cls_run / "model.pt", "--set", f"data.root={data}",
       "--set", "train.epochs=1", "--out", out)
    res = invoke("train-loc", "-c", LOC, "--finetune", "all", "--set", f"data.root={data}", "--out", out, "--resume")
    assert res.exit_code == 2 and "loc.finetune is 'all', the run in" in res.output
    # a run that reached train.epochs, resumed with more, continues where it stopped
    ok("train-loc", "-c", LOC, "--finetune", "fc", "--set", f"data.root={data}", "--set", "train.epochs=2", "--out", out, "--resume")
    assert [m["epoch"] for m in metrics(out)] == [1, 2]
    assert load_checkpoint(out / "checkpoints" / "last.pt")["global_step"] == 24


def test_resume_on_an_empty_folder_trains_with_step_lines_tensorboard_and_readable_files(data, tmp_path):
    pytest.importorskip("tensorboard", reason="train.tensorboard needs the tensorboard extra (pip install '.[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "fresh"
    umask = os.umask(0o022)  # the usual default; files must come out 0644 under it
    try:
        res = ok("train-cls", "-c", CLS, "--set", f"data.root={data}", "--set", "train.epochs=1", "--set", "train.batch_size=4",
                 "--set", "train.tensorboard=true", "--out", out, "--resume")
    finally:
        os.umask(umask)
    assert f"--resume: no checkpoint at {out / 'checkpoints' / 'last.pt'} yet; starting the run fresh" in res.output
    steps = metrics(out, "step")
    assert [(m["epoch"], m["step"]) for m in steps] == [(1, 1), (1, 2)]  # log_every 1, two steps of 4 images
    assert all(m["loss"] > 0 and m["lr"] > 0 and m["images_per_s"] > 0 for m in steps)
    (epoch,) = metrics(out)
    assert epoch["loss"] == pytest.approx((steps[0]["loss"] + steps[1]["loss"]) / 2, rel=1e-6)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_s", "epoch/loss", "val/top1_cls_error"} <= tags
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(m["step"], pytest.approx(m["loss"])) for m in steps]
    assert events.Scalars("val/top1_cls_error")[0].value == pytest.approx(epoch["val_top1_cls_error"])
    for name in ("model.pt", "checkpoints/last.pt", "checkpoints/best.pt", "config.yaml", "metrics.jsonl"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


def test_plot_draws_the_learning_curves_of_two_runs(cls_run, tmp_path):
    pytest.importorskip("matplotlib", reason="vgglocal plot needs the plot extra (pip install '.[plot]')")
    from PIL import Image

    from vgglocal.engine.curves import read_curves

    curves = read_curves(cls_run)
    assert [s for s, _ in curves.loss] == [m["step"] for m in metrics(cls_run, "step")] == list(range(1, 16))
    assert [v for _, v in curves.val["val_top1_cls_error"]] == [m["val_top1_cls_error"] for m in metrics(cls_run)]
    assert "val_loc_error" not in curves.val
    other = tmp_path / "other"
    other.mkdir()
    # a run from before step lines: its loss curve is the epoch means
    (other / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "step": 4 * e, "loss": 2.0 / e, "val_loc_error": 0.5}) + "\n"
                                                 for e in (1, 2)))
    assert read_curves(other).loss == [(4, 2.0), (8, 1.0)] and read_curves(other).val == {"val_loc_error": [(4, 0.5), (8, 0.5)]}
    out = tmp_path / "curves.png"
    res = ok("plot", cls_run, other, "--out", out)
    assert res.output.strip() == str(out)
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[1] > image.shape[0] > 400  # two panels side by side
    assert (image < 200).any(axis=2).mean() > 0.01  # axes, curves and text were drawn
    res = invoke("plot", tmp_path / "nothing-here", "--out", out)
    assert res.exit_code == 2 and res.output.strip() == f"error: {tmp_path / 'nothing-here'}: no metrics.jsonl (not a training run folder?)"
