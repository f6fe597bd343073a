"""vgglocal.Predictor and batch `vgglocal predict` on a trained tiny localiser: the same boxes as
`eval --protocol full`, every input kind, folders, globs, JSON Lines, Kaggle CSV, pictures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch.testing import assert_close

import vgglocal
from vgglocal.cli import cli
from vgglocal.config import EvalConfig
from vgglocal.data.files import expand_images
from vgglocal.data.images import load_rgb
from vgglocal.data.synth import SynthSpec, synthesize
from vgglocal.errors import UserError
from vgglocal.evaluation.ilsvrc import read_kaggle_csv
from vgglocal.inference import predictor as predictor_module
from vgglocal.inference.protocols import RunOptions

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "test"
NAMES = ["disc", "triangle", "square", "star"]


def _ok(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, (res.output, res.exception)
    return res


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny classifier and PCR localiser trained on generated data (a few steps each), and an
    eval config on the same data."""
    root = tmp_path_factory.mktemp("pred")
    synthesize(root / "synth", SynthSpec(classes=4, train=8, val=3, size=48, seed=2))
    data = f"data.root={root / 'synth'}"
    _ok("train-cls", "-c", CONFIGS / "cls-tiny.yaml", "--set", data, "--set", "train.epochs=3", "--out", root / "cls")
    _ok("train-loc", "-c", CONFIGS / "loc-tiny.yaml", "--init", root / "cls" / "model.pt", "--set", data, "--set", "train.epochs=1",
        "--out", root / "loc")
    cfg = root / "eval.yaml"
    cfg.write_text(f"data:\n  format: ilsvrc-kaggle\n  root: {root / 'synth'}\n  workers: 0\n"
                   "eval:\n  batch_size: 4\n  scales: [32, 48]\n  merge_threshold: 0.5\n")
    return root, cfg


def _val_images(root: Path) -> list[Path]:
    return sorted((root / "synth" / "ILSVRC" / "Data" / "CLS-LOC" / "val").glob("*.JPEG"))


def test_predictor_equals_eval_full_on_the_same_images(trained, tmp_path):
    root, cfg = trained
    loc, cls = root / "loc" / "model.pt", root / "cls" / "model.pt"
    _ok("eval", "-c", cfg, "--protocol", "full", "--checkpoint", loc, "--cls-checkpoint", cls, "--out", tmp_path / "e", "--quiet")
    expected = read_kaggle_csv(tmp_path / "e" / "predictions.csv")
    images = _val_images(root)
    # eval.scales [32, 48] apply to both nets in eval
    predictor = vgglocal.Predictor(loc, cls_checkpoint=cls, scales=(32, 48), merge_threshold=0.5, cls_scales=[32, 48])
    assert predictor.scales == [(32, 48)] and predictor.classes.names == NAMES
    got = predictor.predict(images, batch_size=5)  # other chunks than eval's 4
    assert len(got) == len(images) == 12
    for path, p in zip(images, got, strict=True):
        guesses = expected[path.stem]
        assert p.ids == [w for w, _ in guesses] and p.names == [NAMES[int(i)] for i in p.labels]
        # eval's submission rounds to whole pixels (half up); the predictor keeps sub-pixels
        assert torch.floor(p.boxes.double() + 0.5).tolist() == [list(map(float, b)) for _, b in guesses]
        assert p.size == tuple(load_rgb(path).shape[:2])
        assert (p.boxes[:, 2:] <= torch.tensor([p.size[1], p.size[0]])).all()  # clipped to the image
    # the COCO detections agree too (scores and boxes of every merged box)
    dets = json.loads((tmp_path / "e" / "detections.json").read_text())
    ids = {im["file_name"]: im["id"] for im in json.loads((tmp_path / "e" / "ground_truth.json").read_text())["images"]}
    first = [d for d in dets if d["image_id"] == ids[images[0].name]]
    p0 = got[0].detections
    keep = p0.scores >= 0.01  # eval.score_floor
    assert len(first) == int(keep.sum())
    assert_close(torch.tensor([d["score"] for d in first]), p0.scores[keep], atol=1e-6, rtol=0)


def test_every_input_kind_gives_the_same_prediction(trained):
    root, _ = trained
    with pytest.warns(UserWarning, match="no longer matches its features"):  # all-layers localiser, no classifier
        predictor = vgglocal.Predictor(str(root / "loc" / "model.pt"), scales="32,48", device="cpu")
    path = _val_images(root)[0]
    array = load_rgb(path)
    kinds = [path, str(path), Image.fromarray(array), array, torch.from_numpy(array).permute(2, 0, 1), torch.from_numpy(array)]
    results = predictor.predict(kinds)
    for r in results[1:]:
        assert torch.equal(r.labels, results[0].labels) and torch.equal(r.boxes, results[0].boxes)
    (single,) = predictor.predict(array)  # one image, not in a list
    assert torch.equal(single.boxes, results[0].boxes)
    d = single.to_dict()
    assert (d["height"], d["width"]) == array.shape[:2]
    assert [p["name"] for p in d["predictions"]] == single.names and len(d["predictions"]) == 4
    with pytest.raises(UserError, match="dtype float32"):
        predictor.predict(array.astype(np.float32))


def test_predict_a_folder_writes_one_line_per_image_a_kaggle_csv_and_pictures(trained, tmp_path):
    root, cfg = trained
    folder = tmp_path / "photos"
    images = _val_images(root)
    for i, src in enumerate(images[:5]):
        dest = folder / ("nested" if i % 2 else "") / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    (folder / "broken.jpg").write_bytes(b"not an image")
    loc = root / "loc" / "model.pt"
    runner = CliRunner()
    cls = ["--cls-checkpoint", str(root / "cls" / "model.pt")]  # the localiser is fine-tuned in all layers
    res = runner.invoke(cli, ["predict", "--checkpoint", str(loc), *cls, "--scales", "32,48", "-c", str(cfg), str(folder), "--batch-size", "2",
                              "--workers", "0", "--out", str(tmp_path / "p.jsonl"), "--draw", str(tmp_path / "pics"), "-q"])
    assert res.exit_code == 1, res.output  # the broken file
    assert "broken.jpg" in res.output and "Traceback" not in res.output
    lines = [json.loads(t) for t in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 6  # one per image, in sorted path order
    assert [d["image"] for d in lines] == [p for p, _ in expand_images([str(folder)])]
    (broken,) = [d for d in lines if "error" in d]
    assert Path(broken["image"]).name == "broken.jpg" and "broken.jpg" in broken["error"]
    good = [d for d in lines if "error" not in d]
    assert len(good) == 5
    for d in good:
        assert {"image", "height", "width", "predictions", "detections"} <= set(d)
        assert [p["index"] for p in d["predictions"]] and {"label", "name", "index", "score", "box"} <= set(d["predictions"][0])
        assert d["predictions"][0]["name"] in NAMES and d["predictions"][0]["label"].startswith("n0000000")
    pics = sorted(p.relative_to(tmp_path / "pics").as_posix() for p in (tmp_path / "pics").rglob("*.png"))
    assert len(pics) == 5 and any(p.startswith("nested/") for p in pics)
    pic = Image.open(tmp_path / "pics" / pics[0])
    assert min(pic.size) >= 480  # a 48-px image drawn at a legible size
    # the same folder as a Kaggle CSV, by extension
    res = runner.invoke(cli, ["predict", "--checkpoint", str(loc), *cls, "--scales", "32,48", "-c", str(cfg), str(folder / "**" / "*.JPEG"),
                              "--workers", "0", "--out", str(tmp_path / "p.csv"), "-q"])
    assert res.exit_code == 0, res.output
    csv = read_kaggle_csv(tmp_path / "p.csv")
    assert len(csv) == 5
    by_stem = {Path(d["image"]).stem: d for d in good}
    for stem, guesses in csv.items():
        assert [w for w, _ in guesses] == [p["label"] for p in by_stem[stem]["predictions"]]
    res = runner.invoke(cli, ["predict", "--checkpoint", str(loc), str(tmp_path / "none*.jpg")])
    assert res.exit_code == 2 and res.output.strip() == f"error: {tmp_path / 'none*.jpg'}: no file matches this pattern"


def test_predict_reads_a_file_list_in_its_order(trained, tmp_path):
    root, cfg = trained
    images = _val_images(root)[:2]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{images[1]}\n# skipped\n{images[0]}\n")
    res = CliRunner().invoke(cli, ["predict", "--checkpoint", str(root / "loc" / "model.pt"), "--cls-checkpoint",
                                   str(root / "cls" / "model.pt"), "--scales", "32", str(listing), "--workers", "0", "-q"])
    assert res.exit_code == 0, res.output
    assert [json.loads(t)["image"] for t in res.output.splitlines()] == [str(images[1]), str(images[0])]


def _chunk_sizes(monkeypatch) -> tuple[list[int], list[RunOptions]]:
    """Record the images per protocol-2 call of the Predictor (and the options it ran with)."""
    sizes: list[int] = []
    seen: list[RunOptions] = []
    real = predictor_module.run_protocol

    def spy(protocol, images, nets, opts, **kw):
        sizes.append(len(images))
        seen.append(opts)
        return real(protocol, images, nets, opts, **kw)

    monkeypatch.setattr(predictor_module, "run_protocol", spy)
    return sizes, seen


def test_predictor_takes_its_options_from_the_eval_config(trained, monkeypatch):
    root, _ = trained
    loc, cls = root / "loc" / "model.pt", root / "cls" / "model.pt"
    plain = vgglocal.Predictor(loc, cls_checkpoint=cls, scales=(32, 48))
    # no eval_config, no keywords: the settings it always had
    assert plain.options == RunOptions(flip=True, device=torch.device("cpu"), batch_size=32, precision="fp32", topk=5, det_topk=5,
                                       merge_threshold=EvalConfig().merge_threshold, cls_method="dense")
    ev = EvalConfig(batch_size=5, flip=False, merge_threshold=0.5, cls_method="both", device="cpu")
    predictor = vgglocal.Predictor(loc, cls_checkpoint=cls, scales=(32, 48), eval_config=ev)
    assert (predictor.options.batch_size, predictor.options.flip, predictor.options.merge_threshold,
            predictor.options.cls_method) == (5, False, 0.5, "both")
    # the keywords given win over the config
    mine = vgglocal.Predictor(loc, cls_checkpoint=cls, scales=(32, 48), eval_config=ev, flip=True, merge_threshold=0.0, topk=2)
    assert (mine.options.flip, mine.options.merge_threshold, mine.options.topk, mine.options.cls_method) == (True, 0.0, 2, "both")
    sizes, _ = _chunk_sizes(monkeypatch)
    images = _val_images(root)
    predictor.predict(images)
    assert sizes == [5, 5, 2]  # eval.batch_size, not 32
    sizes.clear()
    predictor.predict(images, batch_size=4)
    assert sizes == [4, 4, 4]


def test_predictor_applies_channels_last_and_compile(trained, monkeypatch):
    root, _ = trained
    loc, cls = root / "loc" / "model.pt", root / "cls" / "model.pt"
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(kw) or fn)  # record, do not compile
    plain = vgglocal.Predictor(loc, cls_checkpoint=cls, scales=(32, 48))
    assert compiled == []
    for net in plain.nets + plain.cls_nets:
        assert not net.model.features.conv1_1.weight.is_contiguous(memory_format=torch.channels_last)
    fast = vgglocal.Predictor(loc, cls_checkpoint=cls, scales=(32, 48), eval_config=EvalConfig(channels_last=True, compile=True))
    assert compiled == [{"dynamic": True}] * 2  # each net's conv trunk once: the localiser and the classifier
    for net in fast.nets + fast.cls_nets:
        convs = [m for m in net.model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    images = _val_images(root)[:3]
    for a, b in zip(plain.predict(images), fast.predict(images), strict=True):
        assert torch.equal(a.labels, b.labels)
        assert_close(b.boxes, a.boxes, rtol=1e-4, atol=1e-3)


def test_predictor_makes_detections_of_det_topk_labels(trained):
    root, _ = trained
    loc, cls = root / "loc" / "model.pt", root / "cls" / "model.pt"
    images = _val_images(root)
    few = vgglocal.Predictor(loc, cls_checkpoint=cls, scales=(32, 48), eval_config=EvalConfig(topk=1, det_topk=1))
    more = vgglocal.Predictor(loc, cls_checkpoint=cls, scales=(32, 48), eval_config=EvalConfig(topk=1, det_topk=3))
    assert more.options.det_topk == 3
    for a, b in zip(few.predict(images), more.predict(images), strict=True):
        assert len(a.labels) == len(b.labels) == 1 and torch.equal(a.labels, b.labels)
        assert set(a.detections.labels.tolist()) == {int(a.labels[0])}
        assert int(a.labels[0]) in set(b.detections.labels.tolist())
        assert len(set(b.detections.labels.tolist())) == 3  # the top-3 labels' merged boxes


def test_predict_command_forwards_the_config_batch_size(trained, monkeypatch):
    root, cfg = trained  # eval.batch_size: 4, merge_threshold: 0.5
    sizes, seen = _chunk_sizes(monkeypatch)
    args = ["predict", "--checkpoint", str(root / "loc" / "model.pt"), "--cls-checkpoint", str(root / "cls" / "model.pt"),
            "--scales", "32", "-c", str(cfg), *map(str, _val_images(root)[:6]), "--workers", "0", "-q"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert sizes == [4, 2]
    assert (seen[0].batch_size, seen[0].merge_threshold, seen[0].flip) == (4, 0.5, True)
    sizes.clear()
    res = CliRunner().invoke(cli, [*args, "--batch-size", "5", "--no-flip", "--merge-threshold", "0.7"])
    assert res.exit_code == 0, res.output
    assert sizes == [5, 1]
    assert (seen[-1].batch_size, seen[-1].merge_threshold, seen[-1].flip) == (5, 0.7, False)
