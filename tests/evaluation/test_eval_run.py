"""`vgglocal eval`, `score` and `predict` end to end on a tiny generated data set and tiny nets."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from vgglocal.cli import cli
from vgglocal.config import from_dict
from vgglocal.data.synth import SynthSpec, synthesize, wnid
from vgglocal.evaluation.coco import coco_eval
from vgglocal.evaluation.ilsvrc import read_kaggle_csv
from vgglocal.evaluation.run import EvalError, EvalRequest, evaluate
from vgglocal.evaluation.score import score
from vgglocal.inference.nets import paper_scales, parse_scales
from vgglocal.models.io import save_model
from vgglocal.models.vgg import build_vgg

CLASSES = 3
NORM = {"mean": [120.0, 110.0, 100.0], "std": [60.0, 60.0, 60.0]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    synthesize(root / "synth", SynthSpec(classes=CLASSES, train=1, val=3, size=48, seed=3))
    ids = [wnid(c) for c in range(CLASSES)]
    paths = {}
    for name, head, seed in (("loc", "pcr", 0), ("loc2", "scr", 1), ("cls", None, 2)):
        torch.manual_seed(seed)
        model = build_vgg("A", num_classes=CLASSES, width=0.0625, crop=32, box_head=head, init="kaiming")
        if head:
            with torch.no_grad():  # boxes around the window centre, so merged boxes are sane
                model.box_head.fc8.weight.mul_(0.01)
                model.box_head.fc8.bias.copy_(torch.tensor([0.5, 0.5, 0.6, 0.6]).repeat(model.box_head.fc8.out_channels // 4))
        meta = {"train_scale": {"scale": 48, "scale_min": 48, "scale_max": 0}}
        paths[name] = str(save_model(model, root / f"{name}.pt", NORM, classes=ids, meta=meta))
    # The COCO view of the same images names classes by category name, not wnid.
    torch.manual_seed(0)
    coco_model = build_vgg("A", num_classes=CLASSES, width=0.0625, crop=32, box_head="pcr", init="kaiming")
    with torch.no_grad():  # every window predicts itself: at Q = 32 some hit the large objects
        coco_model.box_head.fc8.weight.zero_()
        coco_model.box_head.fc8.bias.copy_(torch.tensor([0.5, 0.5, 1.0, 1.0]).repeat(CLASSES))
    names = json.loads((root / "synth" / "synth.json").read_text())["names"]
    paths["coco"] = str(save_model(coco_model, root / "coco.pt", NORM, classes=names))
    wrong = build_vgg("A", num_classes=CLASSES + 1, width=0.0625, crop=32, box_head="pcr")
    paths["wrong"] = str(save_model(wrong, root / "wrong.pt", NORM, classes=ids + ["n99999999"]))
    return root, paths


def config(root, **eval_keys):
    data = {"format": "ilsvrc-kaggle", "root": str(root / "synth"), "workers": 0}
    return from_dict({"data": data, "eval": {"batch_size": 4, "scales": [32, 48], **eval_keys}})


def coco_config(root):
    data = {"format": "coco", "root": str(root / "synth"), "val_annotations": "annotations/instances_val.json", "workers": 0}
    return from_dict({"data": data, "eval": {"batch_size": 4, "scales": [32, 48], "score_floor": 0.0}})


def test_full_protocol_writes_files_that_score_to_the_same_metrics(setup, tmp_path):
    root, paths = setup
    req = EvalRequest("full", [paths["loc"], paths["loc2"]], cls_checkpoints=[paths["cls"]], draw=4)
    m = evaluate(config(root), req, tmp_path, progress=False)
    assert m["n_images"] == CLASSES * 3 and m["n_unreadable"] == 0
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["top5_loc_error"] == m["top5_loc_error"]
    for key in ("top1_cls_error", "top5_cls_error", "top1_loc_error", "top5_loc_error"):
        assert 0.0 <= m[key] <= 1.0
    assert m["top5_cls_error"] == 0.0  # three classes, five guesses
    # The Kaggle file scored against the data set's own solution file gives the same numbers.
    scored = score(tmp_path / "predictions.csv", root / "synth" / "LOC_val_solution.csv")
    assert scored == {k: m[k] for k in scored}
    preds = read_kaggle_csv(tmp_path / "predictions.csv")
    assert len(preds) == CLASSES * 3 and all(len(g) == 3 for g in preds.values())
    lines = (tmp_path / "predictions.txt").read_text().splitlines()
    assert len(lines) == CLASSES * 3 and all(int(v) in (1, 2, 3) for v in lines[0].split()[0::5])
    dets = json.loads((tmp_path / "detections.json").read_text())
    assert dets and {"image_id", "category_id", "bbox", "score"} <= set(dets[0])
    assert (tmp_path / "predictions.png").stat().st_size > 0
    assert m["checkpoints"][1]["scales"] == [32, 48] and m["cls_checkpoints"][0]["path"] == paths["cls"]
    assert m["scales"] == [32, 48] and m["scales_desc"] == "48/32,48 + 48/32,48"


def test_coco_ap_is_what_cocoeval_gives_on_detections_json(setup, tmp_path):
    from pycocotools.coco import COCO

    root, paths = setup
    m = evaluate(coco_config(root), EvalRequest("full", [paths["coco"]], scales=[(32,)]), tmp_path, progress=False)
    assert "coco_ap" in m and "coco_ap50" in m
    ann = root / "synth" / "annotations" / "instances_val.json"
    dets = json.loads((tmp_path / "detections.json").read_text())
    gt = COCO(str(ann))
    gt.loadRes(str(tmp_path / "detections.json"))  # loads as a results file
    ids = {im["id"] for im in gt.dataset["images"]}
    assert {d["image_id"] for d in dets} <= ids and all(0 <= d["score"] <= 1 for d in dets)
    again = coco_eval(ann, dets)
    assert again["coco_ap"] == pytest.approx(m["coco_ap"]) and again["coco_ap50"] == pytest.approx(m["coco_ap50"])


def test_center_crop_and_classification_protocols(setup, tmp_path):
    root, paths = setup
    m = evaluate(config(root, scales=[]), EvalRequest("center-crop", [paths["loc"]]), tmp_path / "cc", progress=False)
    assert m["top1_loc_error"] == m["top5_loc_error"]
    assert m["checkpoints"][0]["scales"] == [48]  # S from the checkpoint's training scale
    assert all(len(g) == 1 for g in read_kaggle_csv(tmp_path / "cc" / "predictions.csv").values())
    for protocol in ("cls-dense", "cls-multicrop", "cls-both"):
        m = evaluate(config(root), EvalRequest(protocol, [paths["cls"], paths["loc"]]), tmp_path / protocol, progress=False)
        assert set(m) >= {"top1_cls_error", "top5_cls_error", "n_images"} and "top1_loc_error" not in m
        assert m["n_images"] == CLASSES * 3
        # the classification .txt (class ids only) scores to the same numbers, top-5 included
        scored = score(str(tmp_path / protocol / "predictions.txt"), str(root / "synth"), labels=True)
        assert scored == pytest.approx({k: m[k] for k in ("top1_cls_error", "top5_cls_error", "n_images")})
    # `vgglocal compare` reads the folders' own kind: classification metrics only, as eval gave them
    r = CliRunner().invoke(cli, ["compare", str(tmp_path / "cls-dense"), str(tmp_path / "cls-both"), "--data", str(root / "synth")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    dense, both = (json.loads((tmp_path / p / "metrics.json").read_text()) for p in ("cls-dense", "cls-both"))
    assert set(out) == {"top1_cls_error", "top5_cls_error"} and out["top1_cls_error"]["images"] == CLASSES * 3
    for k in out:
        assert out[k]["a_error"] == pytest.approx(dense[k]) and out[k]["b_error"] == pytest.approx(both[k])
    r = CliRunner().invoke(cli, ["compare", str(tmp_path / "cc"), str(tmp_path / "cls-dense"), "--data", str(root / "synth"),
                                 "--metric", "top1_loc_error"])
    assert r.exit_code != 0 and "top1_loc_error: a classification evaluation" in r.output


def test_user_errors_name_the_checkpoint_or_value(setup, tmp_path):
    root, paths = setup
    with pytest.raises(EvalError, match="wrong.pt"):
        evaluate(config(root), EvalRequest("full", [paths["wrong"]]), tmp_path, progress=False)
    with pytest.raises(EvalError, match="cls.pt: a classification checkpoint"):
        evaluate(config(root), EvalRequest("full", [paths["cls"]]), tmp_path, progress=False)
    with pytest.raises(EvalError, match="one scale"):
        evaluate(config(root), EvalRequest("center-crop", [paths["loc"]]), tmp_path, progress=False)
    with pytest.raises(EvalError, match="abc"):
        parse_scales("abc")
    assert parse_scales("384/352,384") == (352, 384)


def test_paper_scales_rule():
    model = build_vgg("A", num_classes=2, width=0.0625, crop=32)
    model.meta = {"train_scale": {"scale": 384, "scale_min": 256, "scale_max": 0}}
    assert paper_scales(model, "full") == (352, 384, 416) and paper_scales(model, "center-crop") == (384,)
    model.meta = {"train_scale": {"scale": 256, "scale_min": 256, "scale_max": 512}}
    assert paper_scales(model, "cls-dense") == (256, 384, 512)


def test_cli_eval_score_and_predict(setup, tmp_path):
    root, paths = setup
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  format: ilsvrc-kaggle\n  root: {root / 'synth'}\n  workers: 0\neval:\n  batch_size: 4\n  scales: [32]\n")
    runner = CliRunner()
    r = runner.invoke(cli, ["eval", "-c", str(cfg), "--protocol", "full", "--checkpoint", paths["loc"], "--out", str(tmp_path / "o"), "--quiet", "--no-flip"])
    assert r.exit_code == 0, r.output
    printed = json.loads(r.output.strip().splitlines()[-1])
    assert printed["n_images"] == CLASSES * 3
    r = runner.invoke(cli, ["score", str(tmp_path / "o" / "predictions.csv"), str(root / "synth" / "LOC_val_solution.csv")])
    assert r.exit_code == 0 and json.loads(r.output)["top5_loc_error"] == printed["top5_loc_error"]
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageId,PredictionString\nx,n00000001 1 2 3\n")
    r = runner.invoke(cli, ["score", str(bad), str(root / "synth" / "LOC_val_solution.csv")])
    assert r.exit_code == 2 and "bad.csv:2" in r.output and "Traceback" not in r.output
    images = sorted((root / "synth" / "ILSVRC" / "Data" / "CLS-LOC" / "val").glob("*.JPEG"))[:2]
    r = runner.invoke(cli, ["predict", "--checkpoint", paths["loc"], "--scales", "32,48", "-c", str(cfg), "--draw", str(tmp_path / "pics"),
                            "--out", str(tmp_path / "p.jsonl"), *map(str, images)])
    assert r.exit_code == 0, r.output
    out = [json.loads(t) for t in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [len(o["predictions"]) for o in out] == [3, 3]
    assert {"label", "name", "score", "box"} <= set(out[0]["predictions"][0])
    assert len(list((tmp_path / "pics").glob("*.png"))) == 2


def test_threshold_sweep_matches_eval_at_each_threshold(setup, tmp_path):
    from vgglocal.evaluation.sweep import sweep_merge_threshold

    root, paths = setup
    rows = sweep_merge_threshold(config(root), EvalRequest("full", [paths["loc"]]), [0.0, 0.5, 1e9], progress=False)
    assert [r["merge_threshold"] for r in rows] == [0.0, 0.5, 1e9]
    for r in rows[::2]:
        m = evaluate(config(root), EvalRequest("full", [paths["loc"]], merge_threshold=r["merge_threshold"]), tmp_path / str(r["merge_threshold"]), progress=False)
        assert {k: m[k] for k in ("top1_loc_error", "top5_loc_error", "n_images")} == {k: r[k] for k in ("top1_loc_error", "top5_loc_error", "n_images")}


def test_an_undecodable_image_counts_as_wrong_and_is_reported(setup, tmp_path):
    import shutil

    root, paths = setup
    shutil.copytree(root / "synth", tmp_path / "synth")
    victim = sorted((tmp_path / "synth" / "ILSVRC" / "Data" / "CLS-LOC" / "val").glob("*.JPEG"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated JPEG
    m = evaluate(config(tmp_path), EvalRequest("full", [paths["loc"]]), tmp_path / "out", progress=False)
    assert m["n_unreadable"] == 1 and m["n_images"] == CLASSES * 3
    preds = read_kaggle_csv(tmp_path / "out" / "predictions.csv")
    assert preds[victim.stem] == [] and sum(1 for g in preds.values() if g) == CLASSES * 3 - 1
    assert score(tmp_path / "out" / "predictions.csv", tmp_path / "synth" / "LOC_val_solution.csv")["top5_loc_error"] == m["top5_loc_error"]
    c = evaluate(config(tmp_path), EvalRequest("cls-dense", [paths["cls"]]), tmp_path / "cls", progress=False)
    assert c["n_unreadable"] == 1 and c["n_images"] == CLASSES * 3


def test_speed_switches_and_workers_give_the_same_results(setup, tmp_path):
    # eval.channels_last and eval.workers change how, not what: same predictions, detections
    # and metrics (the merge of one chunk overlapping the next chunk's network included:
    # batch_size 4 makes three chunks).
    root, paths = setup
    req = EvalRequest("full", [paths["loc"]], cls_checkpoints=[paths["cls"]])
    plain = evaluate(config(root), req, tmp_path / "plain", progress=False)
    fast = evaluate(config(root, channels_last=True, workers=2), req, tmp_path / "fast", progress=False)
    assert {k: plain[k] for k in plain} == {k: fast[k] for k in plain}
    a, b = (read_kaggle_csv(tmp_path / d / "predictions.csv") for d in ("plain", "fast"))
    assert a.keys() == b.keys()
    for k in a:
        assert [g[0] for g in a[k]] == [g[0] for g in b[k]]
        assert torch.allclose(torch.tensor([g[1] for g in a[k]], dtype=torch.float64),
                              torch.tensor([g[1] for g in b[k]], dtype=torch.float64), atol=1.0)
    da, db = (json.loads((tmp_path / d / "detections.json").read_text()) for d in ("plain", "fast"))
    assert len(da) == len(db) > 0


def test_ilsvrc_detections_score_with_plain_pycocotools_against_the_written_ground_truth(setup, tmp_path):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from vgglocal.evaluation.coco import COCO_KEYS

    root, paths = setup
    m = evaluate(config(root, score_floor=0.0), EvalRequest("full", [paths["loc"]]), tmp_path, progress=False)
    assert set(COCO_KEYS) <= set(m) and {"voc07_map", "voc_map"} <= set(m)
    assert set(m["voc_ap_per_class"]) == {wnid(c) for c in range(CLASSES)}
    dets = json.loads((tmp_path / "detections.json").read_text())
    assert dets and all(isinstance(d["image_id"], int) and isinstance(d["category_id"], int) for d in dets)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "ground_truth.json"))
        ev = COCOeval(gt, gt.loadRes(str(tmp_path / "detections.json")), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert len(gt.getImgIds()) == CLASSES * 3 and len(gt.getAnnIds()) >= CLASSES * 3
    assert all(im["height"] > 0 and im["width"] > 0 for im in gt.dataset["images"])  # decoded sizes
    assert m["coco_ap"] == pytest.approx(ev.stats[0]) and m["coco_ar100"] == pytest.approx(ev.stats[8])


def test_a_protocol_without_detections_reports_no_detection_metric(setup, tmp_path):
    root, paths = setup
    cfg = from_dict({"data": {"format": "coco", "root": str(root / "synth"), "val_annotations": "annotations/instances_val.json", "workers": 0},
                     "eval": {"batch_size": 4, "scales": [32]}})
    m = evaluate(cfg, EvalRequest("center-crop", [paths["coco"]]), tmp_path, progress=False)
    assert "top5_loc_error" in m and not any(k.startswith(("coco_", "voc")) for k in m)
    assert not (tmp_path / "detections.json").exists()


def test_a_split_without_ground_truth_gets_one_submission_row_per_image_and_no_metrics(setup, tmp_path):
    import shutil

    root, paths = setup
    shutil.copytree(root / "synth", tmp_path / "synth")
    test = tmp_path / "synth" / "ILSVRC" / "Data" / "CLS-LOC" / "test"
    test.mkdir()
    for i, src in enumerate(sorted((tmp_path / "synth" / "ILSVRC" / "Data" / "CLS-LOC" / "val").glob("*.JPEG"))[:4], start=1):
        shutil.copy(src, test / f"ILSVRC2012_test_{i:08d}.JPEG")
    (test / "ILSVRC2012_test_00000005.JPEG").write_bytes(b"not a jpeg")  # unreadable: still one (empty) row
    m = evaluate(config(tmp_path), EvalRequest("full", [paths["loc"]], split="test"), tmp_path / "out", progress=False)
    assert m["n_images"] == 5 and m["n_unreadable"] == 1 and not any(k.endswith("error") or k.startswith("coco") for k in m)
    assert not (tmp_path / "out" / "metrics.json").exists() and (tmp_path / "out" / "submission.json").exists()
    rows = read_kaggle_csv(tmp_path / "out" / "predictions.csv")
    assert list(rows) == [f"ILSVRC2012_test_{i:08d}" for i in range(1, 6)]
    assert [len(g) for g in rows.values()] == [3, 3, 3, 3, 0]
    assert len((tmp_path / "out" / "predictions.txt").read_text().splitlines()) == 5
    truth = json.loads((tmp_path / "out" / "ground_truth.json").read_text())
    assert len(truth["images"]) == 5 and truth["annotations"] == []
    with pytest.raises(EvalError, match="no ground truth"):
        evaluate(config(tmp_path), EvalRequest("center-crop", [paths["loc"]], split="test"), tmp_path / "cc", progress=False)


def test_refusals_are_one_line(setup, tmp_path, monkeypatch):
    from vgglocal.models.io import load_model

    root, paths = setup
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  format: ilsvrc-kaggle\n  root: {root / 'synth'}\n  workers: 0\neval:\n  batch_size: 4\n  scales: [32]\n")
    runner = CliRunner()
    base = ["eval", "-c", str(cfg), "--protocol", "full", "--checkpoint", paths["loc"], "--quiet", "--no-flip"]
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(cli, base).exit_code == 0  # default folder: runs/eval/c-full
    again = runner.invoke(cli, base)
    assert again.exit_code == 2 and "runs/eval/c-full" in again.output and "--overwrite" in again.output
    assert "Traceback" not in again.output and len(again.output.strip().splitlines()) == 1
    assert runner.invoke(cli, [*base, "--overwrite"]).exit_code == 0
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    r = runner.invoke(cli, [*base, "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "training run" in r.output
    # A localiser fine-tuned in all layers: its class head no longer fits its features.
    model = load_model(paths["loc"])
    model.meta = {**model.meta, "cls_scores_valid": False, "init": "runs/cls/model.pt"}
    stale = save_model(model, tmp_path / "stale.pt", model.normalization, classes=model.classes, meta=model.meta)
    r = runner.invoke(cli, [*base[:5], "--checkpoint", str(stale), "--out", str(tmp_path / "s"), "--quiet"])
    assert r.exit_code == 2 and "--cls-checkpoint" in r.output and "runs/cls/model.pt" in r.output and len(r.output.strip().splitlines()) == 1
    ok = runner.invoke(cli, [*base[:5], "--checkpoint", str(stale), "--cls-checkpoint", paths["cls"], "--out", str(tmp_path / "s2"), "--quiet"])
    assert ok.exit_code == 0, ok.output


def test_score_reads_every_format_and_a_data_root_equals_its_solution_csv(setup, tmp_path):
    root, paths = setup
    data = root / "synth"
    evaluate(config(root, score_floor=0.0), EvalRequest("full", [paths["loc"]]), tmp_path, progress=False)
    m = json.loads((tmp_path / "metrics.json").read_text())
    csv_vs_csv = score(str(tmp_path / "predictions.csv"), str(data / "LOC_val_solution.csv"))
    csv_vs_root = score(str(tmp_path / "predictions.csv"), str(data), fmt="ilsvrc-kaggle")
    txt_vs_root = score(str(tmp_path / "predictions.txt"), str(data))  # layout detected
    assert csv_vs_root == csv_vs_csv == txt_vs_root == {k: m[k] for k in csv_vs_csv}
    dets_vs_root = score(str(tmp_path / "detections.json"), str(data))
    dets_vs_file = score(str(tmp_path / "detections.json"), str(tmp_path / "ground_truth.json"))
    for key in ("coco_ap", "coco_ap50", "coco_ar100", "voc07_map", "voc_map"):
        assert dets_vs_root[key] == pytest.approx(m[key]) and dets_vs_file[key] == pytest.approx(m[key]), key
    runner = CliRunner()
    r = runner.invoke(cli, ["score", str(tmp_path / "predictions.txt"), str(data / "LOC_val_solution.csv")])
    assert r.exit_code == 2 and "data root" in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(cli, ["score", str(tmp_path / "detections.json"), str(data), "--format", "ilsvrc-kaggle", "--split", "val"])
    assert r.exit_code == 0 and json.loads(r.output)["coco_ap"] == pytest.approx(m["coco_ap"])


def _voc_layout(root, tmp_path):
    """The synth's validation images as a VOC2007 folder (its XMLs are VOC's format) with
    class i renamed to VOC's class i and one object marked difficult, and a localiser of VOC's
    20 classes (its first three the synth's)."""
    import shutil

    from vgglocal.data.voc import VOC_CLASSES

    synth, voc = root / "synth", tmp_path / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    shutil.copytree(synth / "ILSVRC" / "Data" / "CLS-LOC" / "val", voc / "JPEGImages")
    (voc / "Annotations").mkdir()
    for i, xml in enumerate(sorted((synth / "ILSVRC" / "Annotations" / "CLS-LOC" / "val").iterdir())):
        text = xml.read_text()
        for c in range(CLASSES):
            text = text.replace(f"<name>{wnid(c)}</name>", f"<name>{VOC_CLASSES[c]}</name>")
        if i == 0:
            text = text.replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1)
        (voc / "Annotations" / xml.name).write_text(text)
    (voc / "ImageSets" / "Main" / "val.txt").write_text("".join(f"{p.stem}\n" for p in sorted((voc / "JPEGImages").iterdir())))
    return {"format": "voc", "root": str(voc)}, _window_net(list(VOC_CLASSES), tmp_path / "voc.pt", likely=CLASSES)


def _window_net(classes, path, likely=None):
    """A localiser whose every window predicts itself (at Q = 32 some hit the large objects);
    with ``likely``, classes from that index on are all but never predicted."""
    torch.manual_seed(0)
    model = build_vgg("A", num_classes=len(classes), width=0.0625, crop=32, box_head="pcr", init="kaiming")
    with torch.no_grad():
        model.box_head.fc8.weight.zero_()
        model.box_head.fc8.bias.copy_(torch.tensor([0.5, 0.5, 1.0, 1.0]).repeat(len(classes)))
        if likely is not None:
            model.cls_head.fc8.bias[likely:] -= 20.0
    return str(save_model(model, path, NORM, classes=classes))


@pytest.mark.parametrize("fmt", ["ilsvrc-kaggle", "voc", "coco"])
def test_every_metric_eval_reports_is_what_score_gives_on_the_files_it_wrote(setup, tmp_path, fmt):
    """With the default-style score floor at work (nine in ten detections below it), `vgglocal
    score` on each file `eval` wrote gives metrics.json's numbers exactly: the devkit errors from
    predictions.csv / predictions.txt, the COCO statistics and the VOC mAP from detections.json,
    against the data root and, where written, against ground_truth.json."""
    root, paths = setup
    if fmt == "voc":
        data, ckpt = _voc_layout(root, tmp_path)
    else:
        ckpt = paths["coco"] if fmt == "coco" else _window_net([wnid(c) for c in range(CLASSES)], tmp_path / "loc.pt")
        data = {"format": fmt, "root": str(root / "synth")}
        if fmt == "coco":
            data["val_annotations"] = "annotations/instances_val.json"

    def run(out, floor):
        cfg = from_dict({"data": {**data, "workers": 0}, "eval": {"batch_size": 4, "scales": [32, 48], "score_floor": floor}})
        evaluate(cfg, EvalRequest("full", [ckpt]), out, progress=False)
        return json.loads((out / "metrics.json").read_text()), json.loads((out / "detections.json").read_text())

    _, everything = run(tmp_path / "all", 0.0)
    floor = sorted(d["score"] for d in everything)[len(everything) * 9 // 10]
    metrics, written = run(tmp_path / "out", floor)
    assert 0 < len(written) < len(everything) and min(d["score"] for d in written) >= floor  # the floor is at work
    out = tmp_path / "out"
    files = [(name, data["root"], "--format", fmt) for name in ("detections.json", "predictions.csv", "predictions.txt")]
    if fmt != "coco":
        files.append(("detections.json", str(out / "ground_truth.json")))
    if fmt == "ilsvrc-kaggle":
        files.append(("predictions.csv", str(root / "synth" / "LOC_val_solution.csv")))
    reported = set()
    for name, truth, *options in files:
        r = CliRunner().invoke(cli, ["score", str(out / name), truth, *options])
        assert r.exit_code == 0, r.output
        scored = json.loads(r.output)
        assert scored and {k: metrics[k] for k in scored} == scored, (name, truth)
        reported |= set(scored)
    assert {"top1_loc_error", "top5_loc_error", "top1_cls_error", "top5_cls_error", "coco_ap", "voc07_map", "voc_map", "voc_ap_per_class"} <= reported
    assert reported >= {k for k in metrics if k.startswith(("coco_", "voc", "top"))}  # every metric recomputed


def test_no_detection_without_area_is_written_or_returned(setup, tmp_path):
    """A localiser whose every box lies nearly a window to the right of its window (to the left
    in the mirror image): near the border the boxes fall outside the image and clip to zero
    width. None of them is a detection, in detections.json or from the Predictor."""
    import vgglocal

    root, _ = setup
    torch.manual_seed(0)
    model = build_vgg("A", num_classes=CLASSES, width=0.0625, crop=32, box_head="pcr", init="kaiming")
    with torch.no_grad():
        model.box_head.fc8.weight.zero_()
        model.box_head.fc8.bias.copy_(torch.tensor([1.4, 0.5, 0.5, 0.5]).repeat(CLASSES))
    ckpt = str(save_model(model, tmp_path / "right.pt", NORM, classes=[wnid(c) for c in range(CLASSES)]))
    evaluate(config(root, score_floor=0.0), EvalRequest("full", [ckpt]), tmp_path / "out", progress=False)
    dets = json.loads((tmp_path / "out" / "detections.json").read_text())
    images = sorted((root / "synth" / "ILSVRC" / "Data" / "CLS-LOC" / "val").glob("*.JPEG"))
    preds = vgglocal.Predictor(ckpt, scales=(32, 48), device="cpu").predict([str(p) for p in images])
    b = torch.cat([p.detections.boxes for p in preds])
    written = [d["bbox"] for d in dets if min(d["bbox"][2:]) <= 0]
    returned = b[(b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])].tolist()
    assert dets and len(b) and (written, returned) == ([], []), (written[:3], returned[:3])
