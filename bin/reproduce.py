"""bin/reproduce's stages (run through bin/reproduce, which installs first): the paper's
comparisons in miniature on the demo data set (and, for Table 11, a transfer set of the shapes
the demo classifier never saw), every row a real training or evaluation run,
written to reports/reproduction.md (+ reports/reproduction.png when matplotlib is installed).

Scale mapping. The demo images are 128 px on the smaller side and the crop is 96 px, so the
paper's S = 256 (224 crop) maps to S = 112 and its S = 384 to S = 144; its multi-scale test
set {S - 32, S, S + 32} maps to {S - 16, S, S + 16} and the jitter range [256, 512] to
[112, 144] (what the demo configs use). Every run starts from configs/demo/{cls,loc}.yaml;
the changes per row are the ``--set`` options shown in the report's command list.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from _stages import DEMO_CLASSES, DEMO_SYNTH, ROOT, Stages

CLS_CONFIG = "configs/demo/cls.yaml"
LOC_CONFIG = "configs/demo/loc.yaml"
TRANSFER_CONFIG = "configs/demo/transfer.yaml"
CLASSES = DEMO_CLASSES
# Appendix B's transfer set: the generator's shapes after the ten the demo classifier learns.
TRANSFER_SHAPES, TRANSFER_TRAIN, TRANSFER_TEST = 6, 60, 40
TRANSFER_MARK = ("<!-- table-11: written by bin/reproduce; `bin/reproduce --only transfer` rewrites it -->",
                 "<!-- /table-11 -->")
JOINT_MARK = ("<!-- joint: written by bin/reproduce from reports/stability.json; `bin/reproduce --only joint` rewrites it -->",
              "<!-- /joint -->")
STABILITY = Path("reports") / "stability.json"  # bin/check-stability --loc --joint --report reports/stability.json
MULTI = "112,128,144"  # the jittered nets' Q = {S_min, mid, S_max}; fixed S = 128: {S - 16, S, S + 16}
FIXED = ["--set", "data.scale_max=0"]  # data.scale_max = 0: one fixed training scale data.scale


@dataclass
class Row:
    table: str
    label: str  # what varies, in the paper's words
    train: str  # training scale S
    test: str  # test scales Q
    stage: str  # the eval stage whose metrics.json holds the numbers
    paper: tuple[float | None, float | None]  # the paper's ILSVRC-2012 val. errors (top-1, top-5), %
    paper_row: str  # the paper row it stands for

# The paper's rows (Tables 3, 4, 5: top-1/top-5 classification error; 8: centre-crop
# localisation error with the true class; 9: top-5 localisation error of the full protocol).
ROWS = [
    Row("3", "A", "128", "128", "eval-A-128-single", (29.6, 10.4), "A, S=256, Q=256"),
    Row("3", "D", "128", "128", "eval-D-128-single", (27.0, 8.8), "D, S=256, Q=256"),
    Row("3", "D", "[112,144]", "128", "eval-D-jit-single", (25.6, 8.1), "D, S=[256;512], Q=384"),
    Row("4", "A", "128", MULTI, "eval-A-128-multi", (None, None), "A is not in Table 4"),
    Row("4", "D", "128", MULTI, "eval-D-128-multi", (26.6, 8.6), "D, S=256, Q=224,256,288"),
    Row("4", "D", "[112,144]", MULTI, "eval-D-jit-multi", (24.8, 7.5), "D, S=[256;512], Q=256,384,512"),
    Row("5", "dense", "[112,144]", MULTI, "eval-D-jit-multi", (24.8, 7.5), "D dense"),
    Row("5", "multi-crop", "[112,144]", MULTI, "eval-D-jit-multicrop", (24.6, 7.5), "D multi-crop"),
    Row("5", "multi-crop & dense", "[112,144]", MULTI, "eval-D-jit-both", (24.4, 7.2), "D multi-crop & dense"),
    Row("8", "1st and 2nd FC, SCR", "144", "144", "eval-loc-fc-scr-144", (None, 36.4), "S=384"),
    Row("8", "1st and 2nd FC, PCR", "144", "144", "eval-loc-fc-pcr-144", (None, 34.3), "S=384"),
    Row("8", "all, PCR", "144", "144", "eval-loc-all-pcr-144", (None, 33.1), "S=384"),
    Row("9", "single scale", "112", "112", "full-112", (None, 29.5), "256/256"),
    Row("9", "single scale", "144", "144", "full-144", (None, 28.2), "384/384"),
    Row("9", "two test scales", "144", "128,144", "full-144-2", (None, 27.5), "384/352,384"),
    Row("9", "fusion", "112 and 144", "112/112 and 144/128,144", "full-fusion", (None, 26.9),
        "fusion: 256/256 and 384/352,384"),
    Row("9", "beyond the paper: jittered loc. net", "[112,144]", MULTI, "full-jit", (None, None), "(bin/demo's net)"),
]

TITLES = {
    "3": "Table 3 analogue: classification, single test scale (dense, with flips)",
    "4": "Table 4 analogue: classification, several test scales (dense, with flips)",
    "5": "Table 5 analogue: evaluation method (net D, S in [112,144], Q = 112,128,144)",
    "8": "Table 8 analogue: localisation, centre crop with the true class (protocol 1)",
    "9": "Table 9 analogue: localisation, full protocol (top-5 labels from the D jittered "
         "classifier at Q = 112,128,144, dense boxes, greedy merge)",
}

# The orderings the paper reports; each is checked against our rows (lower error is better).
ORDERINGS = [
    ("3", "D beats A (depth)", "eval-D-128-single", "eval-A-128-single", "top1_cls_error"),
    ("3", "scale jitter beats fixed S (single test scale)", "eval-D-jit-single", "eval-D-128-single", "top1_cls_error"),
    ("4", "multi-scale test beats single scale (D, fixed S)", "eval-D-128-multi", "eval-D-128-single", "top1_cls_error"),
    ("4", "multi-scale test beats single scale (D, jittered)", "eval-D-jit-multi", "eval-D-jit-single", "top1_cls_error"),
    ("4", "scale jitter beats fixed S (multi-scale test)", "eval-D-jit-multi", "eval-D-128-multi", "top1_cls_error"),
    ("5", "multi-crop beats dense", "eval-D-jit-multicrop", "eval-D-jit-multi", "top1_cls_error"),
    ("5", "multi-crop & dense beats multi-crop", "eval-D-jit-both", "eval-D-jit-multicrop", "top1_cls_error"),
    ("8", "PCR beats SCR (fc fine-tuned)", "eval-loc-fc-pcr-144", "eval-loc-fc-scr-144", "top1_loc_error"),
    ("8", "fine-tuning all layers beats FC only (PCR)", "eval-loc-all-pcr-144", "eval-loc-fc-pcr-144", "top1_loc_error"),
    ("9", "full protocol beats centre crop (same net, S=144)", "full-144", "eval-loc-all-pcr-144", "top5_loc_error"),
    ("9", "S=144 beats S=112 (single scale)", "full-144", "full-112", "top5_loc_error"),
    ("9", "two test scales beat one", "full-144-2", "full-144", "top5_loc_error"),
    ("9", "fusion of the two nets beats the best single one", "full-fusion", "full-144-2", "top5_loc_error"),
]

# Training seed 0 vs 1 for the same row (label, seed-0 stage, seed-1 stage, metric).
SPREAD = [
    ("D, S=128, Q=128", "eval-D-128-single", "eval-D-128-s1-single", "top1_cls_error"),
    ("D, S=128, Q=112,128,144", "eval-D-128-multi", "eval-D-128-s1-multi", "top1_cls_error"),
    ("D, S=[112,144], Q=128", "eval-D-jit-single", "eval-D-jit-s1-single", "top1_cls_error"),
    ("D, S=[112,144], Q=112,128,144", "eval-D-jit-multi", "eval-D-jit-s1-multi", "top1_cls_error"),
    ("fc, SCR, S=144 (centre crop)", "eval-loc-fc-scr-144", "eval-loc-fc-scr-144-s1", "top1_loc_error"),
    ("fc, PCR, S=144 (centre crop)", "eval-loc-fc-pcr-144", "eval-loc-fc-pcr-144-s1", "top1_loc_error"),
]
SPREAD_ORDERINGS = [
    ("scale jitter beats fixed S (Q=128)", [("eval-D-jit-single", "eval-D-128-single"),
                                            ("eval-D-jit-s1-single", "eval-D-128-s1-single")], "top1_cls_error"),
    ("multi-scale test beats single scale (D, fixed S)", [("eval-D-128-multi", "eval-D-128-single"),
                                                          ("eval-D-128-s1-multi", "eval-D-128-s1-single")], "top1_cls_error"),
    ("multi-scale test beats single scale (D, jittered)", [("eval-D-jit-multi", "eval-D-jit-single"),
                                                           ("eval-D-jit-s1-multi", "eval-D-jit-s1-single")], "top1_cls_error"),
    ("PCR beats SCR (fc fine-tuned)", [("eval-loc-fc-pcr-144", "eval-loc-fc-scr-144"),
                                       ("eval-loc-fc-pcr-144-s1", "eval-loc-fc-scr-144-s1")], "top1_loc_error"),
]


# Table 11 analogue rows: (features, aggregation, stage); the paper's Caltech-256 Net-D number
# is for stacking over Q = 256, 384, 512 (it reports that stacking beat averaging there).
TRANSFER_ROWS = [
    ("demo classifier (trained on the other 10 shapes)", "stack", "transfer-trained-stack", "85.0 ± 0.2 (Net-D, stack)"),
    ("demo classifier (trained on the other 10 shapes)", "average", "transfer-trained-average",
     "below stacking (no number given)"),
    ("the same net with random weights", "stack", "transfer-random-stack", "-"),
    ("the same net with random weights", "average", "transfer-random-average", "-"),
]
TRANSFER_ORDERINGS = [
    ("trained features beat random weights (stack)", "transfer-trained-stack", "transfer-random-stack"),
    ("trained features beat random weights (average)", "transfer-trained-average", "transfer-random-average"),
    ("stacking beats averaging on Caltech-style data (trained)", "transfer-trained-stack", "transfer-trained-average"),
]


class Reproduce:
    def __init__(self, data: Path, runs: Path, report: Path, fresh: bool, data_seed: int, execute: bool = True) -> None:
        self.data, self.runs, self.report, self.data_seed = data, runs, report, data_seed
        self.transfer_data = data.with_name(data.name.replace("demo", "demo-transfer", 1))
        self.stages = Stages(runs, "bin/reproduce", fresh=fresh, execute=execute)
        self.start = time.time()
        commit = self.stages.marks / "commit"
        if execute and not commit.exists():  # the version that ran the first stage
            commit.write_text(git_commit() + "\n")

    def train(self) -> None:
        data, runs, st = str(self.data), self.runs, self.stages
        root = ["--set", f"data.root={data}"]
        if not (self.data / "LOC_val_solution.csv").exists():
            st.stage("data", ["data", "synth", data, *DEMO_SYNTH, "--seed", str(self.data_seed), "--overwrite"])
        # Table 3/4 classifiers: A and D at one fixed S, D with scale jitter (= bin/demo's classifier).
        for name, extra in (("cls-A-128", ["--set", "model.arch=A", *FIXED]), ("cls-D-128", FIXED), ("cls-D-jit", [])):
            st.stage(f"train-{name}", ["train-cls", "-c", CLS_CONFIG, *root, *extra, "--out", f"{runs}/{name}"],
                     resumable=runs / name)
        # Table 8/9 localisation nets, all initialised from the jittered D classifier (trained on
        # every S used below; the paper initialises from a classifier at the same S).
        init = ["--init", f"{runs}/cls-D-jit/model.pt"]
        locs = (("loc-fc-scr-144", "scr", "fc", 144), ("loc-fc-pcr-144", "pcr", "fc", 144),
                ("loc-all-pcr-144", "pcr", "all", 144), ("loc-all-pcr-112", "pcr", "all", 112),
                ("loc-all-pcr-jit", "pcr", "all", None))
        for name, regression, finetune, scale in locs:
            extra = [] if scale is None else [*FIXED, "--set", f"data.scale={scale}"]
            st.stage(f"train-{name}", ["train-loc", "-c", LOC_CONFIG, "--regression", regression, "--finetune", finetune,
                                       *init, *root, *extra, "--out", f"{runs}/{name}"], resumable=runs / name)
        # Seed-to-seed spread: the comparisons that came out against the paper, again with
        # training seed 1 (same data, same init for the localisers).
        seed1 = ["--set", "seed=1"]
        for name, extra in (("cls-D-128-s1", FIXED), ("cls-D-jit-s1", [])):
            st.stage(f"train-{name}", ["train-cls", "-c", CLS_CONFIG, *root, *extra, *seed1, "--out", f"{runs}/{name}"],
                     resumable=runs / name)
        for name, regression in (("loc-fc-scr-144-s1", "scr"), ("loc-fc-pcr-144-s1", "pcr")):
            st.stage(f"train-{name}", ["train-loc", "-c", LOC_CONFIG, "--regression", regression, "--finetune", "fc", *init,
                                       *root, *FIXED, "--set", "data.scale=144", *seed1, "--out", f"{runs}/{name}"],
                     resumable=runs / name)

    def evaluate(self) -> None:
        data, runs, st = str(self.data), self.runs, self.stages
        root = ["--set", f"data.root={data}"]

        def ev(name: str, config: str, protocol: str, *args: str) -> None:
            # --overwrite: a stage that did not finish reruns over its own partial output
            st.stage(name, ["eval", "-c", config, *root, "--protocol", protocol, *args, "--out", f"{runs}/{name}", "--quiet", "--overwrite"])

        for net in ("A-128", "D-128", "D-jit"):
            ckpt = f"{runs}/cls-{net}/model.pt"
            ev(f"eval-{net}-single", CLS_CONFIG, "cls-dense", "--checkpoint", ckpt, "--scales", "128")
            ev(f"eval-{net}-multi", CLS_CONFIG, "cls-dense", "--checkpoint", ckpt, "--scales", MULTI)
        jit = f"{runs}/cls-D-jit/model.pt"
        ev("eval-D-jit-multicrop", CLS_CONFIG, "cls-multicrop", "--checkpoint", jit, "--scales", MULTI)
        ev("eval-D-jit-both", CLS_CONFIG, "cls-both", "--checkpoint", jit, "--scales", MULTI)
        for name in ("loc-fc-scr-144", "loc-fc-pcr-144", "loc-all-pcr-144"):
            ev(f"eval-{name}", LOC_CONFIG, "center-crop", "--checkpoint", f"{runs}/{name}/model.pt", "--scales", "144")
        cls = ["--cls-checkpoint", jit, "--cls-scales", MULTI]
        l112, l144 = f"{runs}/loc-all-pcr-112/model.pt", f"{runs}/loc-all-pcr-144/model.pt"
        ev("full-112", LOC_CONFIG, "full", "--checkpoint", l112, "--scales", "112", *cls)
        ev("full-144", LOC_CONFIG, "full", "--checkpoint", l144, "--scales", "144", *cls)
        ev("full-144-2", LOC_CONFIG, "full", "--checkpoint", l144, "--scales", "128,144", *cls)
        ev("full-fusion", LOC_CONFIG, "full", "--checkpoint", l112, "--scales", "112", "--checkpoint", l144,
           "--scales", "128,144", *cls)
        ev("full-jit", LOC_CONFIG, "full", "--checkpoint", f"{runs}/loc-all-pcr-jit/model.pt", "--scales", MULTI, *cls)
        for net in ("D-128-s1", "D-jit-s1"):
            ev(f"eval-{net}-single", CLS_CONFIG, "cls-dense", "--checkpoint", f"{runs}/cls-{net}/model.pt", "--scales", "128")
            ev(f"eval-{net}-multi", CLS_CONFIG, "cls-dense", "--checkpoint", f"{runs}/cls-{net}/model.pt", "--scales", MULTI)
        for name in ("loc-fc-scr-144-s1", "loc-fc-pcr-144-s1"):
            ev(f"eval-{name}", LOC_CONFIG, "center-crop", "--checkpoint", f"{runs}/{name}/model.pt", "--scales", "144")

    def train_transfer_net(self) -> None:
        """The Table 11 stages' one dependency: the jittered D classifier (also Tables 3-5's)."""
        st, runs = self.stages, self.runs
        if not (self.data / "LOC_val_solution.csv").exists():
            st.stage("data", ["data", "synth", str(self.data), *DEMO_SYNTH, "--seed", str(self.data_seed), "--overwrite"])
        st.stage("train-cls-D-jit", ["train-cls", "-c", CLS_CONFIG, "--set", f"data.root={self.data}", "--out", f"{runs}/cls-D-jit"],
                 resumable=runs / "cls-D-jit")

    def transfer(self) -> None:
        """Appendix B in miniature: features of the jittered D classifier on the shapes it never
        saw, linear SVMs, the Caltech protocol; stacked vs averaged scales; random weights."""
        st, runs, data = self.stages, self.runs, str(self.transfer_data)
        if not (self.transfer_data / "synth.json").exists():
            st.stage("data-transfer", ["data", "synth", data, "--first-shape", str(CLASSES), "--classes", str(TRANSFER_SHAPES),
                                       "--layout", "caltech", "--train", str(TRANSFER_TRAIN), "--val", str(TRANSFER_TEST),
                                       "--seed", str(self.data_seed), "--overwrite"])
        ckpt = f"{runs}/cls-D-jit/model.pt"
        for weights, extra in (("trained", []), ("random", ["--random-weights"])):
            for how in ("stack", "average"):  # the second reuses the first's cached per-scale features
                st.stage(f"transfer-{weights}-{how}", ["transfer", "-c", TRANSFER_CONFIG, "--set", f"data.root={data}",
                                                       "--checkpoint", ckpt, *extra, "--aggregate", how, "--cache",
                                                       f"{runs}/transfer-features-{weights}", "--out",
                                                       f"{runs}/transfer-{weights}-{how}", "--quiet"])

    def transfer_section(self, partial: bool) -> list[str]:
        """The Table 11 analogue, between markers so that ``--only transfer`` can rewrite it alone."""
        m0 = self.metrics("transfer-trained-stack")
        lines = [TRANSFER_MARK[0], "## Table 11 analogue: very deep features on other data (Appendix B)", "",
                 f"The paper's Appendix B uses its ILSVRC nets, not fine-tuned, as feature extractors for other data sets. "
                 f"Here the other data set is `vgglocal data synth {self.transfer_data} --first-shape {CLASSES} --classes "
                 f"{TRANSFER_SHAPES} --layout caltech --train {TRANSFER_TRAIN} --val {TRANSFER_TEST}`: the "
                 f"{TRANSFER_SHAPES} shapes of the generator that the demo classifier (`cls-D-jit`, trained on the first "
                 f"{CLASSES}) never saw ({', '.join(self.transfer_names())}), {TRANSFER_TRAIN + TRANSFER_TEST} images each, "
                 "in a Caltech-256-style folder. Features: FC7 of the net applied densely at Q = "
                 f"{', '.join(str(q) for q in m0['scales'])} (the net's S_min, mid and S_max, as the paper's Caltech scales "
                 "256, 384, 512 are its nets'), global-average-pooled, averaged with the mirror image, stacked or averaged "
                 "over the scales, L2-normalised; one-vs-rest linear SVMs with C chosen on a held-out 20% of the training "
                 f"images; the Caltech protocol: {m0['train_per_class']} training images per class, the rest "
                 f"({m0['n_test'] // max(m0['n_classes'], 1)} per class) for test, {m0['splits']} random splits. "
                 f"Chance is {100 / m0['n_classes']:.1f}%. The baseline is the same architecture with random weights "
                 "(`--random-weights`: its own Kaiming initialisation, batch-norm statistics at their initial values). "
                 f"The classifier's own top-1 validation error on its 10 shapes (centre crop, last epoch): "
                 f"{self.final_val_error('cls-D-jit')}.", "",
                 "| features | scales | mean class recall (%) | ± std over splits | C per split | paper, Caltech-256 | run |",
                 "|---|---|---|---|---|---|---|"]
        for label, how, stage, paper in TRANSFER_ROWS:
            m = self.metrics(stage)
            lines.append(f"| {label} | {how} | {pct(m['mean_class_recall'])} | {pct(m['mean_class_recall_std'])} | "
                         f"{', '.join(f'{c:g}' for c in m['svm_c'])} | {paper} | `{stage}` |")
        lines += ["", "The paper's Table 11 for Net-D: VOC-2007 89.3 mAP, VOC-2012 89.0 mAP, Caltech-101 91.8 ± 1.0 and "
                  "Caltech-256 85.0 ± 0.2 mean class recall (Net-E 89.3, 89.0, 92.3 ± 0.5, 85.1 ± 0.3); the best earlier "
                  "ILSVRC features (Chatfield et al. 2014, a shallower net) had 77.6 ± 0.1 on Caltech-256.", "",
                  "| the paper finds | ours | holds |", "|---|---|---|"]
        for claim, better, worse in TRANSFER_ORDERINGS:
            mb, mw = self.metrics(better), self.metrics(worse)
            b, w = mb["mean_class_recall"], mw["mean_class_recall"]
            verdict = "yes" if b > w else ("tie" if b == w else "**no**")
            if b != w and abs(b - w) < max(mb["mean_class_recall_std"], mw["mean_class_recall_std"]):
                verdict += " (by less than the split-to-split spread)"
            lines.append(f"| {claim} | {pct(b)} vs {pct(w)} | {verdict} |")
        lines.append("")
        lines += ["(The paper has no random-weight row; it is the baseline that shows what the trained features add.)", ""]
        if partial:
            lines += [f"This section was written by `bin/reproduce --only transfer` on {cpu_name()} ({os.cpu_count()} cores, "
                      f"no GPU) at commit {git_commit()}, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; the other "
                      "tables are from the full run described under Machine and time."]
            notes = self.report.with_name("reproduction-transfer-notes.md")
            if notes.exists():  # what a person who ran it wants said about a partial run
                lines += ["", notes.read_text().strip()]
            lines += ["", "Its stages, as run:", "",
                      "| stage | seconds | command |", "|---|---|---|"]
            for name, cmd in self.stages.commands.items():
                lines.append(f"| `{name}` | {self.stages.seconds(name) or 0:.0f} | `{cmd}` |")
            lines.append("")
        lines.append(TRANSFER_MARK[1])
        return lines

    def final_val_error(self, run: str) -> str:
        log = self.runs / run / "metrics.jsonl"
        if not log.exists():
            return "unknown"
        last = [json.loads(line) for line in log.read_text().splitlines() if line.strip()][-1]
        return pct(last.get("val_top1_cls_error")) + "%"

    def transfer_names(self) -> list[str]:
        summary = self.transfer_data / "synth.json"
        return json.loads(summary.read_text())["names"] if summary.exists() else []

    def splice_section(self, mark: tuple[str, str], section: list[str], what: str) -> None:
        """``--only``: replace one marked section of the existing report (or insert it before the
        orderings), leaving every other line as it was."""
        if not self.report.exists():
            raise SystemExit(f"[bin/reproduce] {self.report} does not exist; run bin/reproduce without --only first")
        text = self.report.read_text()
        body = "\n".join(section)
        start, end = text.find(mark[0]), text.find(mark[1])
        if start >= 0 and end > start:
            text = text[:start] + body + text[end + len(mark[1]):]
        else:
            anchor = text.find("## The paper's orderings, checked")
            text = text[:anchor] + body + "\n\n" + text[anchor:] if anchor >= 0 else text.rstrip() + "\n\n" + body + "\n"
        self.report.write_text(text)
        self.stages.log(f"rewrote the {what} section of {self.report}")

    def joint_section(self) -> list[str]:
        """Beyond the paper: one net trained with the box and the class loss (``train-loc --joint``)
        against the paper's separate classifier + localiser, from bin/check-stability's runs (the
        same perturbations for both recipes, so each has its spread)."""
        lines = [JOINT_MARK[0], "## Beyond the paper: joint training of the class and box heads", ""]
        summary = json.loads(STABILITY.read_text()) if STABILITY.exists() else {}
        runs = [r for r in summary.get("runs", []) if "joint_full_top1_cls_error" in r and "loc_full_top5_loc_error" in r]
        if not runs:
            return lines + [f"Not measured yet: `bin/check-stability --loc --joint --report {STABILITY}` writes the runs "
                            "this section reads.", "", JOINT_MARK[1]]
        lines += [
            "Appendix A trains the localiser from the classifier and keeps the classifier for the labels: with every "
            "layer fine-tuned for boxes alone, the localiser's own class head no longer fits its features, so `full` "
            "needs `--cls-checkpoint`. `train-loc --joint` adds the classification loss (`loc.cls_weight` x "
            "cross-entropy, on the same crops) so that one net gives both. Both recipes below start from the same demo "
            "classifier (`configs/demo/cls.yaml`) and train `configs/demo/loc.yaml` (PCR, all layers); the separate one "
            "is evaluated with `--cls-checkpoint` (two nets), the joint one alone (one net). Each run of "
            f"`bin/check-stability` (training seed x CPU kernel path) trains both, so the rows are paired; {len(runs)} "
            f"runs on {summary.get('machine', 'an unnamed machine')}, commit {runs[0].get('commit', 'unknown')}.", "",
            "| recipe | nets at test time | full top-1 cls err. | full top-1 loc err. | full top-5 loc err. |",
            "|---|---|---|---|---|"]
        keys = ("top1_cls_error", "top1_loc_error", "top5_loc_error")
        lines.append("| separate (the paper): classifier + localiser | 2 | "
                     + " | ".join(mean_std([r[f"loc_full_{k}"] for r in runs]) for k in keys) + " |")
        lines.append("| joint (`train-loc --joint`, `loc.cls_weight` 1) | 1 | "
                     + " | ".join(mean_std([r[f"joint_full_{k}"] for r in runs]) for k in keys) + " |")
        diffs = {k: [r[f"joint_full_{k}"] - r[f"loc_full_{k}"] for r in runs] for k in keys}
        lines.append("| joint - separate, per run | | " + " | ".join(
            f"{mean_std(d, signed=True)} (joint better in {sum(x < 0 for x in d)} of {len(d)})" for d in diffs.values()) + " |")
        lines += ["", "Errors in percent of the 500 validation images, mean ± standard deviation over the runs "
                  "(min-max in brackets).", "", JOINT_MARK[1]]
        return lines

    def metrics(self, stage: str) -> dict:
        return json.loads((self.runs / stage / "metrics.json").read_text())

    def write_report(self) -> None:
        lines = [
            "# Reproduction in miniature",
            "",
            "The paper's comparisons (Tables 3, 4, 5, 8, 9 and 11) re-run on the generated demo data set: "
            f"`vgglocal data synth {self.data} {' '.join(DEMO_SYNTH)} --seed {self.data_seed}` "
            "(10,000 training and 500 validation images of 10 shape classes, 128 px). Every row of ours is a real "
            "training or evaluation run made by `bin/reproduce`; the paper's numbers are its ILSVRC-2012 "
            "validation errors. Errors are percentages of the 500 validation images (one image is 0.2 points); "
            "how far a row moves with the training seed is measured under [Seed-to-seed spread](#seed-to-seed-spread).",
            "",
            "Scale mapping: the demo images are 128 px and the crop 96 px, so the paper's S = 256 "
            "(224 crop) stands as S = 112 here, S = 384 as S = 144, its test scales {S-32, S, S+32} as "
            "{S-16, S, S+16} and its jitter [256, 512] as [112, 144]. All nets are the demo's VGG-D "
            "(A for the A row) at width 1/8 with batch norm (configs/demo/cls.yaml, configs/demo/loc.yaml; "
            "training seed 0 in both). Localisation nets are initialised from the jittered D classifier.",
            "",
        ]
        for table in ("3", "4", "5", "8", "9"):
            lines += [f"## {TITLES[table]}", ""]
            loc = table in ("8", "9")
            if loc:
                lines += ["| setting | train S | test Q | top-1 loc. err. | top-5 loc. err. | paper loc. err. | "
                          "paper row | run |", "|---|---|---|---|---|---|---|---|"]
            else:
                lines += ["| setting | train S | test Q | top-1 cls. err. | top-5 cls. err. | paper top-1 | paper top-5 | "
                          "paper row | run |", "|---|---|---|---|---|---|---|---|---|"]
            for row in (r for r in ROWS if r.table == table):
                m = self.metrics(row.stage)
                p1, p5 = (f"{v:.1f}" if v is not None else "-" for v in row.paper)
                keys = ("top1_loc_error", "top5_loc_error") if loc else ("top1_cls_error", "top5_cls_error")
                paper = [p5] if loc else [p1, p5]
                lines.append(f"| {row.label} | {row.train} | {row.test} | " + " | ".join(pct(m.get(k)) for k in keys)
                             + " | " + " | ".join(paper) + f" | {row.paper_row} | `{row.stage}` |")
            if table == "8":
                lines += ["", "Table 8 is under the centre-crop protocol, where top-1 and top-5 are the same number "
                          "(one box, the true class); the paper reports one localisation error."]
            if table == "9":
                m = self.metrics("full-144")
                lines += ["", "The paper's Table 9 reports top-5 localisation error only; compare the top-5 column. "
                          "Every row takes its labels from the same classifier (cls-dense at Q = 112,128,144): "
                          f"top-1 / top-5 classification error {pct(m.get('top1_cls_error'))} / "
                          f"{pct(m.get('top5_cls_error'))}."]
            lines.append("")
        lines += self.transfer_section(partial=False) + [""]
        lines += self.joint_section() + [""]
        lines += ["## The paper's orderings, checked", "", "| table | the paper finds | ours | holds |", "|---|---|---|---|"]
        for table, claim, better, worse, key in ORDERINGS:
            b, w = self.metrics(better).get(key), self.metrics(worse).get(key)
            verdict = "yes" if b < w else ("tie" if b == w else "**no**")
            lines.append(f"| {table} | {claim} | {pct(b)} vs {pct(w)} ({key.replace('_', ' ')}) | {verdict} |")
        lines += ["", "## Seed-to-seed spread", "",
                  "The comparisons that went against the paper, rerun with training seed 1 (`--set seed=1`: another "
                  "initialisation, data order and augmentation; same data set; the localisers start from the same "
                  "seed-0 classifier). The spread between seeds is the noise floor of a single row above.", "",
                  "| run | seed 0 | seed 1 | metric |", "|---|---|---|---|"]
        for label, s0, s1, key in SPREAD:
            lines.append(f"| {label} | {pct(self.metrics(s0).get(key))} | {pct(self.metrics(s1).get(key))} | "
                         f"{key.replace('_', ' ')} |")
        lines += ["", "| the paper finds | seed 0 | seed 1 |", "|---|---|---|"]
        for claim, pairs, key in SPREAD_ORDERINGS:
            verdicts = []
            for better, worse in pairs:
                b, w = self.metrics(better).get(key), self.metrics(worse).get(key)
                verdicts.append(f"{pct(b)} vs {pct(w)}: " + ("yes" if b < w else ("tie" if b == w else "**no**")))
            lines.append(f"| {claim} | " + " | ".join(verdicts) + " |")
        discussion = self.report.with_name("reproduction-discussion.md")
        if discussion.exists():
            lines += ["", discussion.read_text().strip()]
        lines += ["", "## Commands", "",
                  "Run from the repository root (`bin/reproduce` runs exactly these, in this order, and skips "
                  "finished ones; `bin/reproduce --fresh` redoes all). Seconds are this machine's wall time.", "",
                  "| stage | seconds | command |", "|---|---|---|"]
        total = 0.0
        for name, cmd in self.stages.commands.items():
            sec = self.stages.seconds(name) or 0.0
            total += sec
            lines.append(f"| `{name}` | {sec:.0f} | `{cmd}` |")
        if self.plot():
            lines += ["", "![errors, ours beside the paper's](reproduction.png)"]
        lines += ["", "## Machine and time", "",
                  f"- Machine: {cpu_name()}, {os.cpu_count()} cores, no GPU; {platform.platform()}",
                  f"- Software: Python {platform.python_version()}, torch {torch_version()}",
                  f"- vgglocal commit the runs started at: {self.started_at()}; report written at {git_commit()}",
                  f"- Sum of the stage times: {total / 60:.0f} min; report written "
                  f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.", ""]
        self.report.parent.mkdir(parents=True, exist_ok=True)
        self.report.write_text("\n".join(lines))
        self.stages.log(f"wrote {self.report}")

    def started_at(self) -> str:
        commit = self.stages.marks / "commit"
        return commit.read_text().strip() if commit.exists() else "unknown"

    def plot(self) -> bool:
        """Bars of our errors beside the paper's, one panel per table; False without matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.stages.log("matplotlib not installed (pip install -e '.[plot]'): no plot")
            return False
        tables = ("3", "4", "5", "8", "9")
        counts = [sum(r.table == t for r in ROWS) for t in tables]
        fig, axes = plt.subplots(len(tables), 1, figsize=(9, 2.2 + 0.55 * sum(counts)), height_ratios=counts)
        for ax, table in zip(axes, tables, strict=True):
            rows = [r for r in ROWS if r.table == table]
            key, idx = ("top5_loc_error", 1) if table in ("8", "9") else ("top1_cls_error", 0)
            ours = [100 * self.metrics(r.stage)[key] for r in rows]
            paper = [r.paper[idx] if r.paper[idx] is not None else 0.0 for r in rows]
            y = range(len(rows))
            ax.barh([i - 0.2 for i in y], ours, 0.4, label="ours (demo data)")
            ax.barh([i + 0.2 for i in y], paper, 0.4, label="paper (ILSVRC)")
            ax.set_yticks(list(y), [f"{r.label}  S={r.train}  Q={r.test}" for r in rows], fontsize=8)
            ax.invert_yaxis()
            ax.set_title(f"Table {table}: {key.replace('_', ' ')} (%)", fontsize=9)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.report.with_suffix(".png"), dpi=90)
        plt.close(fig)
        return True


def mean_std(values: list[float], signed: bool = False) -> str:
    """``mean ± std (min-max)`` in percent; the sample standard deviation (n - 1)."""
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    sign = "+" if signed else ""

    def p(v: float) -> str:
        return f"{round(100 * v, 1) + 0.0:{sign}.1f}"  # + 0.0: no "-0.0" from rounding noise

    return f"{p(mean)} ± {100 * std:.1f} ({p(min(values))} to {p(max(values))})"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def torch_version() -> str:
    import torch

    return torch.__version__


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, check=True)
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def main() -> None:
    p = argparse.ArgumentParser(prog="bin/reproduce", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fresh", action="store_true", help="Redo every stage (the data set is kept).")
    p.add_argument("--data-seed", type=int, default=0, help="Data set seed (default 0: data/demo/, shared with bin/demo).")
    p.add_argument("--report-only", action="store_true", help="Rewrite the report from finished stages; run nothing.")
    p.add_argument("--only", choices=["transfer", "joint"], default=None,
                   help="transfer: run only the Table 11 (Appendix B) stages and the classifier they use; joint: read "
                        f"{STABILITY} (bin/check-stability --loc --joint --report {STABILITY}); rewrite only that "
                        "section of the existing report.")
    args = p.parse_args()
    suffix = "" if args.data_seed == 0 else f"-{args.data_seed}"
    os.chdir(ROOT)  # the commands use paths relative to the repository root, as the report shows them
    rep = Reproduce(Path("data") / f"demo{suffix}", Path("runs") / f"reproduce{suffix}",
                    Path("reports") / f"reproduction{suffix}.md", args.fresh, args.data_seed, execute=not args.report_only)
    if args.only == "joint":
        rep.splice_section(JOINT_MARK, rep.joint_section(), "joint-training")
        return
    if args.only == "transfer":
        rep.train_transfer_net()
        rep.transfer()
        rep.splice_section(TRANSFER_MARK, rep.transfer_section(partial=True), "Table 11")
        rep.stages.log(f"total {(time.time() - rep.start) / 60:.1f} min")
        return
    rep.train()
    rep.evaluate()
    rep.transfer()
    rep.write_report()
    rep.stages.log(f"total {(time.time() - rep.start) / 60:.1f} min")


if __name__ == "__main__":
    main()
