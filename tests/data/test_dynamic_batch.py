"""A compiled training step keeps one graph when bad samples shrink a batch: the batch
dimension of the step's input is marked dynamic (vgglocal.data.device.to_device)."""

import torch

from vgglocal.engine.losses import LOSSES
from vgglocal.engine.schedule import PlateauSchedule
from vgglocal.engine.train import StepOptions, TrainForward, build_optimizer, train_one_epoch
from vgglocal.models.vgg import build_vgg

CROP = 32


def batch(n):
    g = torch.Generator().manual_seed(n)
    return {"image": torch.randint(0, 256, (n, 3, CROP, CROP), dtype=torch.uint8, generator=g),
            "shift": torch.full((n, 3), 118.0), "std": torch.full((n, 3), 58.0),
            "label": torch.randint(0, 10, (n,), generator=g), "bad": [("x", "bad")] * (8 - n), "size": n}


def test_compiled_step_compiles_once_over_batches_of_8_then_7():
    # aot_eager: the graph capture (dynamo) and the joint forward/backward graph (AOTAutograd)
    # that inductor would compile, in seconds instead of a minute on two cores; the recompile
    # decision is dynamo's, the same for every backend (inductor checked by hand: one graph too).
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    net = build_vgg("A", num_classes=10, width=1 / 32, fc_width=16, crop=CROP, init="kaiming")
    model = torch.compile(TrainForward(net, "cls"), backend="aot_eager")
    opts = StepOptions(progress=False, log_every=0)
    train_one_epoch(model, LOSSES["cls"], [batch(8), batch(7), batch(8), batch(5)], build_optimizer(net, 1e-3),
                    PlateauSchedule(1e-3), epoch=0, steps=4, opts=opts)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    torch._dynamo.reset()
