"""bin/reproduce's bookkeeping (no training): each stage's JSON under reports/ with per-image
errors, cells as mean ± std over seeds, the orderings' image-level paired tests (Holm-adjusted), Tables 6-7's fusion stages, and a partial
report while stages are missing."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def rp(bin_script):
    return bin_script("reproduce")


def _stage(rep, name, metrics, per_image=None, seconds=10.0):
    rep.results.mkdir(parents=True, exist_ok=True)
    record = {"stage": name, "command": f"vgglocal eval {name}", "seconds": seconds, "commit": "abc1234",
              "machine": "Test CPU, 2 cores", "finished": "2026-12-04 10:00", "metrics": metrics}
    if per_image is not None:
        record["per_image"] = per_image
    (rep.results / f"{name}.json").write_text(json.dumps(record))


def test_report_cells_orderings_and_partial_runs(rp, tmp_path, monkeypatch):
    monkeypatch.setattr(rp, "STABILITY", tmp_path / "stability.json")
    rep = rp.Reproduce(tmp_path / "reproduce", tmp_path / "runs", tmp_path / "reports" / "reproduction.md", False, 0,
                       execute=False, seeds=(0, 1))
    # D right where A is wrong on 12 of 20 images in each seed, never the other way round
    a_wrong, d_wrong = "1" * 12 + "0" * 8, "0" * 20
    for s, (a, d) in enumerate([(0.60, 0.00), (0.60, 0.00)]):
        _stage(rep, f"eval-A-112-single-s{s}", {"top1_cls_error": a, "top5_cls_error": 0.1}, {"top1_cls_error": a_wrong})
        _stage(rep, f"eval-D-112-single-s{s}", {"top1_cls_error": d, "top5_cls_error": 0.0}, {"top1_cls_error": d_wrong})
    # S=144 against S=112: one seed only, and the same images wrong: no difference to resolve
    _stage(rep, "eval-D-144-single-s0", {"top1_cls_error": 0.0, "top5_cls_error": 0.0}, {"top1_cls_error": d_wrong})
    _stage(rep, "train-cls-A-112-s0", {"val_top1_cls_error": 0.5})
    rep.write_report()
    text = rep.report.read_text()
    assert "| A | 112 | 112 | 60.0 ± 0.0 (60.0 to 60.0) | 10.0 ± 0.0 (10.0 to 10.0) | 29.6 | 10.4 |" in text
    assert "| D | 144 | 144 | 0.0 (1 seed) |" in text
    assert "| D | [112,144] | 128 | - | - |" in text  # not run yet
    depth = next(line for line in text.splitlines() if "D beats A (depth)" in line)
    # the image is the sample: 12 images, not 24 (seed, image) pairs; the pooled p beside it;
    # Holm over the two orderings that ran doubles the smaller p
    assert "0.0 vs 60.0" in depth and "2 seeds" in depth and "| 12 / 0 |" in depth and depth.endswith("| holds |")
    assert "| 2 of 2 (no spread) |" in depth
    assert "-60.00 [" in depth and f"| {2 * 0.5 ** 24:.2g} | {2 * 0.5 ** 12:.2g} | {4 * 0.5 ** 12:.2g} |" in depth
    s144 = next(line for line in text.splitlines() if "S=144 beats S=112" in line)
    assert s144.endswith("| not resolved |") and "1 seed)" in s144
    jitter = next(line for line in text.splitlines() if "scale jitter beats fixed S (single" in line)
    assert jitter.endswith("| not run |")
    assert "Stages finished: 6" in text and "Test CPU, 2 cores" in text and "`vgglocal eval eval-A-112-single-s0`" in text
    assert "Not measured yet" in text  # the joint section without reports/stability.json


def test_record_writes_per_image_errors_from_the_eval_folder(rp, tmp_path):
    from vgglocal.data.synth import SynthSpec, synthesize

    data = tmp_path / "reproduce"
    synthesize(data, SynthSpec(classes=2, train=1, val=3, size=32, seed=0))
    rep = rp.Reproduce(data, tmp_path / "runs", tmp_path / "reports" / "reproduction.md", False, 0, seeds=(0,))
    folder = tmp_path / "runs" / "full-144-s0"
    folder.mkdir(parents=True)
    rows = (data / "LOC_val_solution.csv").read_text().splitlines()
    first = rows[1].split(",")[0]
    # every image right except the first, whose box moves away from its object
    wrong = [rows[0]] + [f"{first},{rows[1].split(',')[1].split()[0]} 0 0 1 1"] + rows[2:]
    (folder / "predictions.csv").write_text("\n".join(wrong) + "\n")
    (folder / "metrics.json").write_text(json.dumps({"protocol": "full", "top5_loc_error": 1 / 6}))
    (rep.stages.marks / "full-144-s0.done").write_text("12.0\n")
    rep.stages.commands["full-144-s0"] = "vgglocal eval ..."
    rep.record("full-144-s0", folder, per_image=True)
    saved = json.loads((tmp_path / "reports" / "reproduction" / "full-144-s0.json").read_text())
    assert saved["seconds"] == 12.0 and saved["metrics"]["top5_loc_error"] == pytest.approx(1 / 6)
    assert saved["images"] == 6 and saved["per_image"]["top5_loc_error"].count("1") == 1
    assert saved["per_image"]["top1_cls_error"] == "000000"
    rep.record("full-144-s0", folder, per_image=True)  # the same finished stage: not rewritten
    assert json.loads((tmp_path / "reports" / "reproduction" / "full-144-s0.json").read_text()) == saved


def test_table_11_over_seeds_and_its_orderings_image_by_image(rp, tmp_path, monkeypatch):
    monkeypatch.setattr(rp, "STABILITY", tmp_path / "stability.json")
    rep = rp.Reproduce(tmp_path / "reproduce", tmp_path / "runs", tmp_path / "reports" / "reproduction.md", False, 0,
                       execute=False, seeds=(0, 1, 2))
    common = {"scales": [112, 128, 144], "train_per_class": 60, "n_test": 240, "n_classes": 6, "splits": 3}
    # trained features right on 30 of 40 test images where random ones are wrong, never the reverse
    for s in range(3):
        for stage, recall, wrong in (("transfer-trained-stack", 0.9 + 0.01 * s, "0" * 40),
                                     ("transfer-random-stack", 0.2, "1" * 30 + "0" * 10),
                                     ("transfer-trained-average", 0.9, "0" * 40),
                                     ("transfer-random-average", 0.25, "1" * 30 + "0" * 10)):
            _stage(rep, f"{stage}-s{s}", {**common, "mean_class_recall": recall, "mean_class_recall_std": 0.01 * (s + 1),
                                          "svm_c": [0.1, 10.0 ** s, 1.0]}, {"top1_cls_error": wrong})
    rep.write_report()
    text = rep.report.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| jittered D classifier") and "| stack |" in line)
    assert "| 91.0 ± 1.0 (90.0 to 92.0) | 2.0 | 0.1, 1, 10, 100 |" in row and "`transfer-trained-stack-s*`" in row
    assert "hexagon, diamond" in text  # the shapes' names without the data set on disk
    trained = next(line for line in text.splitlines() if "| 11 | trained features beat random weights (stack)" in line)
    assert "3 seeds" in trained and "| 30 / 0 |" in trained and trained.endswith("| holds |")  # 30 images, once each
    stack = next(line for line in text.splitlines() if "| 11 | stacking beats averaging" in line)
    assert stack.endswith("| not resolved |")


def test_record_of_a_transfer_stage_keeps_every_test_image(rp, tmp_path):
    rep = rp.Reproduce(tmp_path / "reproduce", tmp_path / "runs", tmp_path / "reports" / "reproduction.md", False, 0,
                       seeds=(0,))
    folder = tmp_path / "runs" / "transfer-trained-stack-s0"
    folder.mkdir(parents=True)
    (folder / "predictions.csv").write_text("split,image,class,predicted\n0,a/1,a,a\n0,\"b,2\",b,a\n1,a/1,a,a\n")
    (folder / "metrics.json").write_text(json.dumps({"mean_class_recall": 0.75}))
    (rep.stages.marks / "transfer-trained-stack-s0.done").write_text("3.0\n")
    rep.record("transfer-trained-stack-s0", folder, per_image=True)
    saved = json.loads((tmp_path / "reports" / "reproduction" / "transfer-trained-stack-s0.json").read_text())
    assert saved["images"] == 3 and saved["per_image"] == {"top1_cls_error": "010"}


def test_tables_6_and_7_fuse_the_d_nets_at_their_own_scales(rp, tmp_path, monkeypatch):
    """Section 4.4 in miniature: cls-dense over two and three D classifiers, each with its own
    Table 4 scales; their rows in Tables 6 and 7 and the two orderings of Table 6."""
    monkeypatch.setattr(rp, "STABILITY", tmp_path / "stability.json")
    rep = rp.Reproduce(tmp_path / "reproduce", tmp_path / "runs", tmp_path / "reports" / "reproduction.md", False, 0,
                       execute=False, seeds=(0,))
    ran: dict[str, list[str]] = {}
    monkeypatch.setattr(rep.stages, "stage", lambda name, cmd, resumable=None: ran.__setitem__(name, cmd))
    rep.seed(0)
    two, three = ran["eval-fusion-2-s0"], ran["eval-fusion-3-s0"]
    assert two[two.index("--protocol") + 1] == "cls-dense"
    nets = [(a, b) for a, b in zip(three, three[1:], strict=False) if a == "--checkpoint"]
    assert [b.rsplit("/", 2)[-2] for _, b in nets] == ["cls-D-112-s0", "cls-D-144-s0", "cls-D-jit-s0"]
    scales = [three[i + 1] for i, a in enumerate(three) if a == "--scales"]
    assert scales == [rp.Q112, rp.Q144, rp.MULTI]
    assert two.count("--checkpoint") == 2 and [two[i + 1] for i, a in enumerate(two) if a == "--scales"] == [rp.Q144, rp.MULTI]

    # the fused pair right on 10 images the best single net misses, the three-net fusion between
    best, pair, trio = "1" * 10 + "0" * 10, "0" * 20, "1" * 4 + "0" * 16
    _stage(rep, "eval-D-jit-multi-s0", {"top1_cls_error": 0.5, "top5_cls_error": 0.1}, {"top1_cls_error": best})
    _stage(rep, "eval-fusion-2-s0", {"top1_cls_error": 0.0, "top5_cls_error": 0.0}, {"top1_cls_error": pair})
    _stage(rep, "eval-fusion-3-s0", {"top1_cls_error": 0.2, "top5_cls_error": 0.05}, {"top1_cls_error": trio})
    rep.write_report()
    text = rep.report.read_text()
    assert "## Table 6 analogue: ConvNet fusion" in text and "## Table 7 analogue" in text
    assert "| post-submission: the two best | 144 and [112,144] |" in text and "| 24.0 | 7.1 |" in text
    assert "| VGG, 1 net | [112,144] |" in text and "`eval-D-jit-multi-s*`" in text
    single = next(line for line in text.splitlines() if "fusing the two best nets beats the best single one" in line)
    assert "| 10 / 0 |" in single and f"| {2 * 0.5 ** 10:.2g} |" in single
    larger = next(line for line in text.splitlines() if "the submission's larger ensemble" in line)
    assert "| 4 / 0 |" in larger and larger.endswith("| not resolved |")
