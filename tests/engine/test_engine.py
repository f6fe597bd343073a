"""The engine on in-memory data: fit, accumulation, non-finite stop, validation metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from vgglocal.checkpoint import load_checkpoint
from vgglocal.data.loader import build_loader
from vgglocal.data.records import Sample
from vgglocal.engine.distributed import DistEnv
from vgglocal.engine.losses import LOSSES
from vgglocal.engine.resume import Checkpointer
from vgglocal.engine.runs import RunDir
from vgglocal.engine.schedule import PlateauSchedule
from vgglocal.engine.tasks import freeze_for_finetune, mean_box_target
from vgglocal.engine.train import (
    NonFiniteLossError,
    StepOptions,
    TrainForward,
    build_optimizer,
    channels_last,
    fit,
    train_one_epoch,
)
from vgglocal.engine.validate import evaluate
from vgglocal.inference.options import InferenceOptions
from vgglocal.models.io import load_model
from vgglocal.models.vgg import add_box_head, build_vgg

NORM = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def tiny(seed=0, box=None, batch_norm=False, classes=3):
    torch.manual_seed(seed)
    return build_vgg("A", num_classes=classes, width=0.0625, fc_width=32, crop=32, dropout=0.0,
                     batch_norm=batch_norm, box_head=box, init="kaiming")


def loader_for(data, batch, shuffle=True):
    loader = build_loader(data, batch, shuffle=shuffle, seed=0, drop_last=shuffle)

    def at(epoch, start):
        loader.set_epoch(epoch, start)
        return loader

    return loader, at


def run_fit(tmp_path, net, data, task="cls", epochs=3, lr=0.01, loss_fn=None, checkpoint_every=0):
    loader, at = loader_for(data, 4)
    val, _ = loader_for(data, 8, shuffle=False)
    opt = build_optimizer(net, lr)
    sched = PlateauSchedule(lr, patience=5)
    run = RunDir(tmp_path / "run")
    run.last.parent.mkdir(parents=True)
    env = DistEnv()
    ckpt = Checkpointer(run, net, opt, sched, {"normalization": NORM, "classes": ["a", "b", "c"], "meta": {}}, env, task)
    opts = StepOptions(log_every=2, checkpoint_every=checkpoint_every, progress=False)
    out = fit(TrainForward(net, task), loss_fn or LOSSES[task], opt, sched, at, loader.batches_per_epoch,
              lambda: evaluate(net, val, records=[Sample(str(i), int(c)) for i, c in enumerate(data.labels)], opts=InferenceOptions()), epochs=epochs, metric="top1_cls_error",
              opts=opts, env=env, checkpoints=ckpt)
    return out, run


def test_fit_lowers_the_loss_and_writes_a_loadable_run(tmp_path, items):
    net = tiny()
    out, run = run_fit(tmp_path, net, items(24), epochs=8)
    lines = [m for m in run.read_metrics() if m["kind"] == "epoch"]
    assert [m["epoch"] for m in lines] == list(range(1, 9))
    assert (lines[-1]["loss"] + lines[-2]["loss"]) / 2 < 0.8 * lines[0]["loss"]
    for key in ("step", "lr", "val_top1_cls_error", "val_top5_cls_error", "images_per_s", "bad_samples"):
        assert key in lines[0]
    assert lines[-1]["step"] == 8 * 6
    # the learning curve: a "step" line every log_every (2) steps, 6 steps per epoch
    steps = [m for m in run.read_metrics() if m["kind"] == "step"]
    assert [m["step"] for m in steps] == list(range(2, 49, 2))
    assert [m["epoch"] for m in steps] == [e for e in range(1, 9) for _ in range(3)]
    assert all(m["loss"] > 0 and m["lr"] == 0.01 and m["images_per_s"] > 0 for m in steps)
    # each epoch's loss is the sample-weighted mean of its three equal windows
    for e, line in enumerate(lines):
        assert line["loss"] == pytest.approx(sum(m["loss"] for m in steps[3 * e : 3 * e + 3]) / 3, rel=1e-6)
    last = load_checkpoint(run.last)
    assert (last["epoch"], last["step"], last["global_step"], last["finished"]) == (8, 0, 48, True)
    loaded = load_model(run.last)
    assert_close(loaded.state_dict()["features.conv1_1.weight"], net.features.conv1_1.weight.detach())
    assert load_model(run.best).classes == ["a", "b", "c"]


def test_grad_accumulation_equals_one_large_batch(items):
    data = items(16)
    nets = [tiny(1), tiny(1)]
    for net, (micro, accum) in zip(nets, [(8, 1), (4, 2)], strict=True):
        loader, _ = loader_for(data, micro)
        opt = build_optimizer(net, 0.05)
        train_one_epoch(TrainForward(net, "cls"), LOSSES["cls"], loader, opt, PlateauSchedule(0.05), epoch=0,
                        steps=loader.batches_per_epoch // accum, opts=StepOptions(grad_accum=accum, progress=False))
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values(), strict=True):
        assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    assert not torch.equal(nets[0].features.conv1_1.weight, tiny(1).features.conv1_1.weight)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, items):
    calls = {"n": 0}

    def poisoned(out, batch):
        calls["n"] += 1
        loss = LOSSES["cls"](out, batch)
        return loss * float("nan") if calls["n"] == 9 else loss  # step 9 = epoch 2, step 3

    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 3 \(global step 9\).*last good checkpoint .*last\.pt \(epoch 2, step 2\)"):
        run_fit(tmp_path, tiny(), items(24), epochs=3, loss_fn=poisoned, checkpoint_every=2)
    run = RunDir(tmp_path / "run")
    last = load_checkpoint(run.last)
    assert (last["epoch"], last["step"], last["global_step"]) == (1, 2, 8)
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert [m["kind"] for m in run.read_metrics()] == ["step"] * 3 + ["epoch"] + ["step"]  # step 9 not recorded


def test_evaluate_protocol1_decodes_to_original_pixels_and_judges_the_true_class():
    net = tiny(box="pcr", classes=2).eval()
    with torch.no_grad():
        # constant outputs: class scores favour class 1; class 0's box fills the window, class 1's
        # box is its top-left quarter
        net.cls_head.fc8.weight.zero_()
        net.cls_head.fc8.bias.copy_(torch.tensor([0.0, 1.0]))
        net.box_head.fc8.weight.zero_()
        net.box_head.fc8.bias.copy_(torch.tensor([0.5, 0.5, 1.0, 1.0, 0.25, 0.25, 0.5, 0.5]))
    # window: origin (16, 8) in an image rescaled by 0.5 (so the window is x 32..96, y 16..80 in
    # original pixels, 64 px wide); decoded class-0 box = [32, 16, 96, 80], class-1 box = [32, 16, 64, 48].
    recs = [
        Sample("a", 0, np.array([[32, 16, 95, 79]], np.float32), np.array([0])),  # hit (devkit IoU 1)
        Sample("b", 0, np.array([[32, 16, 95, 79]], np.float32), np.array([1])),  # box of another class: miss
        Sample("c", 1, np.array([[0, 0, 10, 10], [32, 16, 63, 47]], np.float32), np.array([1, 1])),  # 2nd box hits
        Sample("d", 1, np.array([[32, 16, 95, 79]], np.float32), np.array([1])),  # IoU 0.25: miss
    ]
    items = [{"image": torch.zeros(3, 32, 32), "label": torch.tensor(r.label), "target": torch.tensor([0.5, 0.5, 1.0, 1.0]),
              "target_label": torch.tensor(r.label), "index": torch.tensor(i), "origin": torch.tensor([16.0, 8.0]),
              "scale": torch.tensor(0.5), "flipped": torch.tensor(False), "image_hw": torch.tensor([96, 96])}
             for i, r in enumerate(recs)]
    batches = [torch.utils.data.default_collate(items[:3]), torch.utils.data.default_collate(items[1:])]  # #1, #2 seen twice
    m = evaluate(net, batches, records=recs, opts=InferenceOptions(), loc=True)
    assert m["n_images"] == 4
    assert m["top1_cls_error"] == pytest.approx(0.5)  # predicts class 1 everywhere
    assert m["top5_cls_error"] == 0.0
    assert m["top1_loc_error"] == m["top5_loc_error"] == pytest.approx(0.5)
    # the two class-1 records miss by (.25, .25, .5, .5): 0.5 * 0.625 each, averaged over 4
    assert m["box_loss"] == pytest.approx(2 * 0.5 * (2 * 0.25**2 + 2 * 0.5**2) / 4)


def test_optimizer_decays_weights_only_and_skips_frozen_parameters():
    net = tiny(box="pcr")
    freeze_for_finetune(net, "fc")
    opt = build_optimizer(net, 0.01, weight_decay=5e-4)
    ids = {id(p): n for n, p in net.named_parameters()}
    decay = {ids[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    none = {ids[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decay == {f"box_head.{f}.weight" for f in ("fc6", "fc7", "fc8")}
    assert none == {f"box_head.{f}.bias" for f in ("fc6", "fc7", "fc8")}


def test_fc_finetuning_leaves_convs_and_batchnorm_statistics_untouched(items):
    net = tiny(batch_norm=True)
    add_box_head(net, "pcr")
    freeze_for_finetune(net, "fc")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data = items(16)
    loader, _ = loader_for(data, 4)
    opt = build_optimizer(net, 0.05)
    train_one_epoch(TrainForward(net, "loc"), LOSSES["loc"], loader, opt, PlateauSchedule(0.05), epoch=0,
                    steps=loader.batches_per_epoch, opts=StepOptions(progress=False))
    after = net.state_dict()
    for k, v in before.items():
        same = torch.equal(v, after[k])
        assert same == (not k.startswith("box_head.")), k


@pytest.mark.parametrize("task", ["cls", "loc"])
def test_train_forward_equals_the_model_maps_with_gradients(task):
    net = tiny(box="pcr")
    net.train()  # dropout 0: deterministic
    x = torch.randn(3, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    fast = TrainForward(net, task)(x)
    key = "scores" if task == "cls" else "boxes"
    slow = net.maps(x)[key].flatten(1)
    assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    head = net.cls_head if task == "cls" else net.box_head
    g_fast = torch.autograd.grad(fast.square().sum(), head.fc6.weight)[0]
    g_slow = torch.autograd.grad(slow.square().sum(), head.fc6.weight)[0]
    assert_close(g_fast, g_slow, rtol=1e-4, atol=1e-6)


def test_non_finite_weights_are_caught_before_the_epoch_end_checkpoint(tmp_path, items):
    net = tiny()
    calls = {"n": 0}

    def overflow(out, batch):
        calls["n"] += 1
        loss = LOSSES["cls"](out, batch)
        if calls["n"] == 12:  # last step of epoch 2: the loss is finite, the weights are not
            with torch.no_grad():
                net.cls_head.fc8.bias[0] = float("inf")
        return loss

    with pytest.raises(NonFiniteLossError, match=r"non-finite weights after epoch 2, step 6 \(global step 12\).*\(end of epoch 1\)"):
        run_fit(tmp_path, net, items(24), epochs=3, loss_fn=overflow)
    last = load_checkpoint(RunDir(tmp_path / "run").last)
    assert last["global_step"] == 6 and torch.isfinite(last["state_dict"]["cls_head.fc8.bias"]).all()


def test_bf16_autocast_and_channels_last_train(items):
    net = channels_last(tiny())
    loader, _ = loader_for(items(16), 8)
    opt = build_optimizer(net, 0.01)
    before = net.features.conv1_1.weight.detach().clone()
    out = train_one_epoch(TrainForward(net, "cls"), LOSSES["cls"], loader, opt, PlateauSchedule(0.01), epoch=0, steps=2,
                          opts=StepOptions(precision="bf16", channels_last=True, progress=False))
    assert np.isfinite(out["loss"]) and out["samples"] == 16 and out["global_step"] == 2
    assert net.features.conv1_1.weight.dtype == torch.float32  # autocast: fp32 master weights
    assert not torch.equal(before, net.features.conv1_1.weight)


def test_mean_box_target_averages_evenly_spaced_items(items):
    data = items(10)
    got = mean_box_target(data, samples=4)  # items 0, 3, 6, 9
    assert_close(got, data.targets[[0, 3, 6, 9]].mean(0))
    net = add_box_head(tiny(), "pcr", bias=got)
    assert_close(net.box_head.fc8.bias, got.repeat(3))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_an_all_bad_micro_batch_steps_through_the_model_with_zero_loss(items, compiled):
    # Every sample of the second micro-batch was bad: the step still runs the model on an
    # empty [0, 3, crop, crop] batch (keeping DDP ranks in step) and counts only the good ones.
    net = tiny()
    data = items(8)
    good = {k: torch.stack([data[i][k] for i in range(4)]) for k in data[0]}
    good["bad"] = []
    empty = {"bad": [("a.jpg", "broken"), ("b.jpg", "broken")]}
    model = TrainForward(net, "cls")
    if compiled:
        torch._dynamo.reset()
        model = torch.compile(model)
    opt = build_optimizer(net, 0.01)
    before = net.features.conv1_1.weight.detach().clone()
    out = train_one_epoch(model, LOSSES["cls"], [good, empty], opt, PlateauSchedule(0.01), epoch=0, steps=1,
                          opts=StepOptions(grad_accum=2, progress=False))
    assert np.isfinite(out["loss"]) and out["samples"] == 4 and out["bad"] == 2
    assert not torch.equal(before, net.features.conv1_1.weight)
