"""bin/reproduce's joint-training section: read from check-stability's summary, paired per run,
and spliced into an existing report without touching the rest (no training here)."""

from __future__ import annotations

import json


def _run(name, sep, joint):
    r = {"name": name, "commit": "abc1234", "val_images": 2000}
    for key, value in zip(("top1_cls_error", "top1_loc_error", "top5_loc_error"), sep, strict=True):
        r[f"loc_full_{key}"] = value
    for key, value in zip(("top1_cls_error", "top1_loc_error", "top5_loc_error"), joint, strict=True):
        r[f"joint_full_{key}"] = value
    return r


def test_joint_section_pairs_the_runs_and_splices_alone(tmp_path, monkeypatch, bin_script):
    rp = bin_script("reproduce")
    monkeypatch.setattr(rp, "STABILITY", tmp_path / "stability.json")
    rep = rp.Reproduce(tmp_path / "demo", tmp_path / "runs", tmp_path / "reproduction.md", False, 0, execute=False)
    assert "Not measured yet" in "\n".join(rep.joint_section())  # no summary: says how to make one
    runs = [_run("a", (0.10, 0.30, 0.28), (0.12, 0.29, 0.26)), _run("b", (0.14, 0.34, 0.32), (0.12, 0.35, 0.30))]
    (tmp_path / "stability.json").write_text(json.dumps({"runs": runs, "machine": "Test CPU, 2 cores"}))
    text = "\n".join(rep.joint_section())
    assert "2 runs on Test CPU, 2 cores, commit abc1234." in text
    runs[0]["completed_on_commit"] = "def5678"  # --joint added to runs trained before
    (tmp_path / "stability.json").write_text(json.dumps({"runs": runs, "machine": "Test CPU, 2 cores"}))
    text = "\n".join(rep.joint_section())
    assert "commit abc1234 (the joint localisers trained later, at def5678)." in text
    assert "Errors in percent of the 2,000 validation images" in text  # the count the runs were scored on
    assert "| separate (the paper): classifier + localiser | 2 | 12.0 ± 2.8 (10.0 to 14.0) |" in text
    assert "| joint (`train-loc --joint`, `loc.cls_weight` 1) | 1 | 12.0 ± 0.0 (12.0 to 12.0) |" in text
    # per-run differences: cls +2 and -2 points, top-5 loc -2 and -2
    assert "+0.0 ± 2.8 (-2.0 to +2.0) (joint better in 1 of 2)" in text
    assert "-2.0 ± 0.0 (-2.0 to -2.0) (joint better in 2 of 2)" in text
    before = f"# Report\n\nintro\n\n{rp.JOINT_MARK[0]}\nold section\n{rp.JOINT_MARK[1]}\n\n## The paper's orderings, checked\n\nrest\n"
    rep.report.write_text(before)
    rep.splice_section(rp.JOINT_MARK, rep.joint_section(), "joint-training")
    after = rep.report.read_text()
    assert "old section" not in after and "joint better in 2 of 2" in after
    assert after.startswith("# Report\n\nintro\n\n") and after.endswith("\n\n## The paper's orderings, checked\n\nrest\n")
