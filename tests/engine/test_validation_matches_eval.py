"""Training-time validation scores a checkpoint exactly as ``eval --protocol center-crop`` does:
the same crops, the same ranking of the labels, boxes clipped to the image and rounded to
whole pixels before the devkit IoU."""

from __future__ import annotations

import pytest
import torch

from vgglocal.config import from_dict
from vgglocal.data import read_split
from vgglocal.data.loader import SampleDataset, build_loader
from vgglocal.data.synth import SynthSpec, synthesize, wnid
from vgglocal.data.transforms import build_eval_transform, normalization_of
from vgglocal.engine.tasks import eval_scale
from vgglocal.engine.validate import evaluate
from vgglocal.evaluation.ilsvrc import center_crop_errors, pad_guesses, protocol1_errors
from vgglocal.evaluation.run import EvalRequest
from vgglocal.evaluation.run import evaluate as run_eval
from vgglocal.inference.localize import center_crop_boxes
from vgglocal.inference.protocols import RunOptions
from vgglocal.models.io import save_model
from vgglocal.models.vgg import build_vgg

CLASSES = 3

def test_the_box_is_rounded_to_whole_pixels_before_the_devkit_iou():
    gt_labels, gt_boxes = torch.tensor([[1]]), torch.tensor([[[0.0, 0.0, 9.0, 9.0]]], dtype=torch.float64)
    box = torch.tensor([[0.0, 0.0, 19.4, 9.0]])  # inclusive width 20.4: IoU 100 / 204 < 0.5
    assert protocol1_errors(torch.tensor([1]), box, gt_boxes, gt_labels).tolist() == [1.0]
    # as written to the submission: x2 = 19, width 20, IoU exactly 0.5: a hit
    assert center_crop_errors(torch.tensor([1]), box, gt_labels, gt_boxes).tolist() == [0.0]

@pytest.mark.slow
def test_validation_equals_eval_center_crop_for_one_checkpoint(tmp_path):
    synthesize(tmp_path / "synth", SynthSpec(classes=CLASSES, train=1, val=6, size=48, seed=5))
    cfg = from_dict({"data": {"format": "ilsvrc-kaggle", "root": str(tmp_path / "synth"), "scale": 40, "workers": 0},
                     "model": {"crop": 32}, "eval": {"batch_size": 4, "scales": []}})
    torch.manual_seed(0)
    net = build_vgg("A", num_classes=CLASSES, width=0.0625, crop=32, box_head="pcr", init="kaiming").eval()
    with torch.no_grad():
        # Boxes 1.6 windows wide around the window centre, varying a little with the image: most
        # reach past the 48-px image, so clipping decides whether they hit.
        net.box_head.fc8.weight.mul_(0.05)
        net.box_head.fc8.bias.copy_(torch.tensor([0.5, 0.5, 1.6, 1.6]).repeat(CLASSES))
    meta = {"train_scale": {"scale": 40, "scale_min": 40, "scale_max": 0}}
    ckpt = save_model(net, tmp_path / "loc.pt", normalization_of(cfg.data), classes=[wnid(c) for c in range(CLASSES)], meta=meta)

    # Validation, with the validation set and loader training builds (engine.tasks).
    records, _ = read_split(cfg.data, "val", "loc", with_missing=True)
    val = SampleDataset(records, build_eval_transform(cfg.data, 32, eval_scale(cfg)), "loc", cfg.seed)
    loader = build_loader(val, cfg.eval.batch_size, shuffle=False, seed=cfg.seed)
    loader.set_epoch(0)
    got = evaluate(net, loader, records=records, opts=RunOptions.from_config(cfg.eval, torch.device("cpu")), loc=True)

    want = run_eval(cfg, EvalRequest("center-crop", [str(ckpt)]), tmp_path / "eval", progress=False)
    assert want["checkpoints"][0]["scales"] == [eval_scale(cfg)] and want["n_images"] == got["n_images"] == len(records)
    keys = ("top1_cls_error", "top5_cls_error", "top1_loc_error", "top5_loc_error", "n_images")
    assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
    assert 0 < got["top1_loc_error"] < 1  # some boxes hit, some miss: the comparison can tell a difference

    # The case really needs the clipping: scored unclipped, the same boxes give another error.
    loader.set_epoch(0)
    misses = []
    for batch in loader:
        with torch.no_grad():
            maps = net.maps(batch["image"])
        boxes = center_crop_boxes(maps["boxes"], batch["label"], batch["origin"].float(), batch["scale"].float(), 32.0,
                                  torch.full_like(batch["image_hw"], 10**6), batch["flipped"])  # no image border
        gl, gb = pad_guesses([(records[i].box_labels, records[i].boxes) for i in batch["index"].tolist()])
        misses.append(center_crop_errors(batch["label"], boxes, gl, gb))
    assert torch.cat(misses).mean().item() != pytest.approx(got["top1_loc_error"])


def test_validation_decodes_large_jpegs_as_eval_does(tmp_path):
    # A JPEG four times the validation scale on its short side: libjpeg could decode it at 1/4
    # (the training crops do), but validation must see eval's pixels, which decodes it whole.
    import numpy as np
    from PIL import Image

    from vgglocal.data.images import load_rgb
    from vgglocal.data.records import Sample
    from vgglocal.data.transforms import EvalTransform

    rng = np.random.default_rng(0)
    pixels = (rng.random((160, 200, 3)) * 40 + np.linspace(0, 200, 200)[None, :, None]).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=90)
    cfg = from_dict({"data": {"format": "ilsvrc-kaggle", "root": str(tmp_path), "scale": 40}, "model": {"crop": 32}})
    transform = build_eval_transform(cfg.data, 32, 40)
    val = SampleDataset([Sample(str(tmp_path / "big.jpg"), 0)], transform, "cls", 0)
    want = EvalTransform(40, 32, transform.mean, transform.std)(load_rgb(tmp_path / "big.jpg")).image
    torch.testing.assert_close(val[0]["image"], want, rtol=0, atol=0)
