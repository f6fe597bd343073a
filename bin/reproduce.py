"""bin/reproduce's stages (run through bin/reproduce, which installs first): the paper's
comparisons in miniature on the generated data set (and, for Table 11, a transfer set of the
shapes the classifiers never saw), every row a real training or evaluation run repeated for
several training seeds, written to reports/reproduction.md (+ reports/reproduction.png when
matplotlib is installed).

Scale mapping. The images are 128 px on the smaller side and the crop is 96 px, so the paper's
S = 256 (224 crop) maps to S = 112 and its S = 384 to S = 144; its multi-scale test set
{S - 32, S, S + 32} maps to {S - 16, S, S + 16} and the jitter range [256, 512] to [112, 144]
(what the demo configs use). Every run starts from configs/demo/{cls,loc}.yaml; the changes per
row are the ``--set`` options shown in the report's command list.

The initialisation chain of section 3.1, per training seed: net A at S = 112 from scratch; net
D at S = 112 from net A's first four convolutions and three FC layers (``model.init_from``); D
at S = 144 fine-tuned from D at 112 with a tenth of the learning rate (the paper's S = 384 net
from its S = 256 one, lr 1e-3 instead of 1e-2); the scale-jittered D fine-tuned from D at 144
(the paper's multi-scale nets from its fixed S = 384 one). The localisers start from the
classifier of their training scale (Appendix A).

Results are written as they come: after every stage, reports/reproduction/STAGE.json (its
metrics, per-image errors of every evaluation, the command, seconds, commit and machine) and
the report itself, so that a run stopped on one day continues on another, on this machine or
another; the report is rebuilt from those JSON files alone (``--report-only``). Each of the
paper's orderings is tested image by image (``vgglocal compare``'s exact sign test on each
image's difference averaged over the seeds, which score the same images), the p-values
Holm-adjusted for the number of orderings.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from _stages import DEMO_CLASSES, ROOT, Stages, machine

CLS_CONFIG = "configs/demo/cls.yaml"
LOC_CONFIG = "configs/demo/loc.yaml"
TRANSFER_CONFIG = "configs/demo/transfer.yaml"
CLASSES = DEMO_CLASSES
SEEDS = (0, 1, 2)  # training seeds of every row
# The demo's training set (1,000 per class) and 2,000 validation images, so that one image is
# 0.05 points and a paired test has images enough to resolve a point or two.
VAL_PER_CLASS = 200
SYNTH = ["--classes", str(CLASSES), "--train", "1000", "--val", str(VAL_PER_CLASS)]
# The budget: about 2.5 hours on 2 CPU cores for three seeds (measured on an AMD EPYC, 2 cores:
# an evaluation pass over the 2,000 validation images at one scale takes ~25 s for cls-dense,
# ~250 s for cls-multicrop and ~140 s for the full protocol). From scratch: CLS_EPOCHS (the
# demo's 6 less two; its validation error is below 15 % after epoch 4 on every seed of
# bin/check-stability). The fine-tuning steps of the chain: FINETUNE_EPOCHS at FINETUNE_LR (a
# tenth of the demo's 0.05, as the paper's 1e-3 is a tenth of its 1e-2). Localisers: LOC_EPOCHS
# (configs/demo/loc.yaml's 3 less one).
CLS_EPOCHS = 4
FINETUNE_EPOCHS = 1
FINETUNE_LR = 0.005
LOC_EPOCHS = 2
# Table 5 (evaluation method) at one test scale: multi-crop is 50 crops per scale and image, ten
# times a dense pass; at the jittered net's three scales it alone would cost an hour per seed.
TABLE5_Q = "128"
# The full protocol's class labels: each seed's jittered D, dense at one scale (Q = 128). Its
# top-5 classification error on this data is about 0.1 %, so more test scales would change the
# labels of a handful of images and cost two more passes per localisation row.
LABELS_Q = "128"
# Appendix B's transfer set: the generator's shapes after the ten the classifiers learn.
TRANSFER_SHAPES, TRANSFER_TRAIN, TRANSFER_TEST = 6, 60, 40
JOINT_MARK = ("<!-- joint: written by bin/reproduce from reports/stability.json; `bin/reproduce --only joint` rewrites it -->",
              "<!-- /joint -->")
STABILITY = Path("reports") / "stability.json"  # bin/check-stability --loc --joint --report reports/stability.json
MULTI = "112,128,144"  # the jittered nets' Q = {S_min, mid, S_max}
Q112, Q144 = "96,112,128", "128,144,160"  # fixed S: {S - 16, S, S + 16}
FIXED = ["--set", "data.scale_max=0"]  # data.scale_max = 0: one fixed training scale data.scale
ALPHA = 0.05


def fixed(scale: int) -> list[str]:
    return [*FIXED, "--set", f"data.scale={scale}"]


@dataclass
class Row:
    table: str
    label: str  # what varies, in the paper's words
    train: str  # training scale S
    test: str  # test scales Q
    stage: str  # the eval stage (without the seed suffix) whose results hold the numbers
    paper: tuple[float | None, float | None]  # the paper's ILSVRC-2012 val. errors (top-1, top-5), %
    paper_row: str  # the paper row it stands for


# The paper's rows (Tables 3, 4, 5: top-1/top-5 classification error; 8: centre-crop
# localisation error with the true class; 9: top-5 localisation error of the full protocol).
ROWS = [
    Row("3", "A", "112", "112", "eval-A-112-single", (29.6, 10.4), "A, S=256, Q=256"),
    Row("3", "D", "112", "112", "eval-D-112-single", (27.0, 8.8), "D, S=256, Q=256"),
    Row("3", "D", "144", "144", "eval-D-144-single", (26.8, 8.7), "D, S=384, Q=384"),
    Row("3", "D", "[112,144]", "128", "eval-D-jit-single", (25.6, 8.1), "D, S=[256;512], Q=384"),
    Row("4", "D", "112", Q112, "eval-D-112-multi", (26.6, 8.6), "D, S=256, Q=224,256,288"),
    Row("4", "D", "144", Q144, "eval-D-144-multi", (26.5, 8.6), "D, S=384, Q=352,384,416"),
    Row("4", "D", "[112,144]", MULTI, "eval-D-jit-multi", (24.8, 7.5), "D, S=[256;512], Q=256,384,512"),
    Row("5", "dense", "[112,144]", TABLE5_Q, "eval-D-jit-single", (24.8, 7.5), "D dense (Q = 256,384,512)"),
    Row("5", "multi-crop", "[112,144]", TABLE5_Q, "eval-D-jit-multicrop", (24.6, 7.5), "D multi-crop (Q = 256,384,512)"),
    Row("5", "multi-crop & dense", "[112,144]", TABLE5_Q, "eval-D-jit-both", (24.4, 7.2),
        "D multi-crop & dense (Q = 256,384,512)"),
    # Tables 6-7 (section 4.4): nets fused by averaging their soft-max posteriors. The miniature
    # has one architecture, so the paper's C and E nets have no counterpart: its 7-net submission
    # stands as the three D nets, its two best multi-scale nets (D and E) as the two best D nets.
    Row("6", "submission: the three D nets", "112, 144 and [112,144]", f"{Q112} / {Q144} / {MULTI}", "eval-fusion-3",
        (24.7, 7.5), "7 nets: D/256, D/384, D/[256;512] and C, E at 256 and 384, dense"),
    Row("6", "post-submission: the two best", "144 and [112,144]", f"{Q144} / {MULTI}", "eval-fusion-2", (24.0, 7.1),
        "D/[256;512] and E/[256;512], dense"),
    Row("7", "VGG, 2 nets", "144 and [112,144]", f"{Q144} / {MULTI}", "eval-fusion-2", (23.7, 6.8),
        "VGG (2 nets, multi-crop & dense)"),
    Row("7", "VGG, 1 net", "[112,144]", MULTI, "eval-D-jit-multi", (24.4, 7.1), "VGG (1 net, multi-crop & dense)"),
    Row("7", "VGG, submission", "112, 144 and [112,144]", f"{Q112} / {Q144} / {MULTI}", "eval-fusion-3", (24.7, 7.5),
        "VGG (ILSVRC submission, 7 nets, dense)"),
    Row("8", "1st and 2nd FC, SCR", "144", "144", "eval-loc-fc-scr-144", (None, 36.4), "S=384"),
    Row("8", "1st and 2nd FC, PCR", "144", "144", "eval-loc-fc-pcr-144", (None, 34.3), "S=384"),
    Row("8", "all, SCR (beyond the paper)", "144", "144", "eval-loc-all-scr-144", (None, None), "not in the paper"),
    Row("8", "all, PCR", "144", "144", "eval-loc-all-pcr-144", (None, 33.1), "S=384"),
    Row("9", "single scale", "112", "112", "full-112", (None, 29.5), "256/256"),
    Row("9", "single scale", "144", "144", "full-144", (None, 28.2), "384/384"),
    Row("9", "two test scales", "144", "128,144", "full-144-2", (None, 27.5), "384/352,384"),
    Row("9", "fusion", "112 and 144", "112/112 and 144/128,144", "full-fusion", (None, 26.9),
        "fusion: 256/256 and 384/352,384"),
]

TITLES = {
    "3": "Table 3 analogue: classification, single test scale (dense, with flips)",
    "4": "Table 4 analogue: classification, several test scales (dense, with flips)",
    "5": f"Table 5 analogue: evaluation method (net D, S in [112,144], one test scale Q = {TABLE5_Q}; the paper: three)",
    "6": "Table 6 analogue: ConvNet fusion (soft-max posteriors averaged over the nets; dense, with flips)",
    "7": "Table 7 analogue: VGG's rows of the comparison with the state of the art (the other teams' nets are not "
         "reproduced; ours dense, the paper's 2-net and 1-net rows multi-crop & dense)",
    "8": "Table 8 analogue: localisation, centre crop with the true class (protocol 1)",
    "9": f"Table 9 analogue: localisation, full protocol (top-5 labels from the D jittered "
         f"classifier at Q = {LABELS_Q}, dense boxes, greedy merge)",
}

# The orderings the paper reports (table, claim, better stage, worse stage, metric); each is
# tested on our rows, image by image, each image's difference averaged over the seeds (lower error is better).
ORDERINGS = [
    ("3", "D beats A (depth)", "eval-D-112-single", "eval-A-112-single", "top1_cls_error"),
    ("3", "S=144 beats S=112 (fixed S, D)", "eval-D-144-single", "eval-D-112-single", "top1_cls_error"),
    ("3", "scale jitter beats fixed S (single test scale)", "eval-D-jit-single", "eval-D-144-single", "top1_cls_error"),
    ("4", "multi-scale test beats single scale (D, fixed S)", "eval-D-112-multi", "eval-D-112-single", "top1_cls_error"),
    ("4", "multi-scale test beats single scale (D, jittered)", "eval-D-jit-multi", "eval-D-jit-single", "top1_cls_error"),
    ("4", "scale jitter beats fixed S (multi-scale test)", "eval-D-jit-multi", "eval-D-144-multi", "top1_cls_error"),
    ("5", "multi-crop beats dense", "eval-D-jit-multicrop", "eval-D-jit-single", "top1_cls_error"),
    ("5", "multi-crop & dense beats multi-crop", "eval-D-jit-both", "eval-D-jit-multicrop", "top1_cls_error"),
    ("6", "fusing the two best nets beats the best single one", "eval-fusion-2", "eval-D-jit-multi", "top1_cls_error"),
    ("6", "the two best nets beat the submission's larger ensemble", "eval-fusion-2", "eval-fusion-3", "top1_cls_error"),
    ("8", "PCR beats SCR (fc fine-tuned)", "eval-loc-fc-pcr-144", "eval-loc-fc-scr-144", "top1_loc_error"),
    ("8", "PCR beats SCR (all layers fine-tuned)", "eval-loc-all-pcr-144", "eval-loc-all-scr-144", "top1_loc_error"),
    ("8", "fine-tuning all layers beats FC only (PCR)", "eval-loc-all-pcr-144", "eval-loc-fc-pcr-144", "top1_loc_error"),
    ("9", "full protocol beats centre crop (same net, S=144)", "full-144", "eval-loc-all-pcr-144", "top5_loc_error"),
    ("9", "S=144 beats S=112 (single scale)", "full-144", "full-112", "top5_loc_error"),
    ("9", "two test scales beat one", "full-144-2", "full-144", "top5_loc_error"),
    ("9", "fusion of the two nets beats the best single one", "full-fusion", "full-144-2", "top5_loc_error"),
    # Appendix B: the SVM's top-1 error on every test image of every Caltech split (the sets
    # are balanced, so it is one minus the mean class recall)
    ("11", "trained features beat random weights (stack)", "transfer-trained-stack", "transfer-random-stack",
     "top1_cls_error"),
    ("11", "trained features beat random weights (average)", "transfer-trained-average", "transfer-random-average",
     "top1_cls_error"),
    ("11", "stacking beats averaging over scales (trained)", "transfer-trained-stack", "transfer-trained-average",
     "top1_cls_error"),
]


# Table 11 analogue rows: (features, aggregation, stage); the paper's Caltech-256 Net-D number
# is for stacking over Q = 256, 384, 512 (it reports that stacking beat averaging there).
TRANSFER_ROWS = [
    ("jittered D classifier (trained on the other 10 shapes)", "stack", "transfer-trained-stack", "85.0 ± 0.2 (Net-D, stack)"),
    ("jittered D classifier (trained on the other 10 shapes)", "average", "transfer-trained-average",
     "below stacking (no number given)"),
    ("the same net with random weights", "stack", "transfer-random-stack", "-"),
    ("the same net with random weights", "average", "transfer-random-average", "-"),
]


class Reproduce:
    def __init__(self, data: Path, runs: Path, report: Path, fresh: bool, data_seed: int, execute: bool = True,
                 seeds: tuple[int, ...] = SEEDS) -> None:
        self.data, self.runs, self.report, self.data_seed, self.seeds = data, runs, report, data_seed, seeds
        self.transfer_data = data.with_name(data.name.replace("reproduce", "reproduce-transfer", 1))
        self.results = report.with_suffix("")  # reports/reproduction/: one JSON per finished stage
        self.stages = Stages(runs, "bin/reproduce", fresh=fresh, execute=execute)
        self.execute = execute
        self.start = time.time()

    # ------------------------------------------------------------------ stages

    def data_stage(self) -> None:
        if not (self.data / "LOC_val_solution.csv").exists():
            self.stages.stage("data", ["data", "synth", str(self.data), *SYNTH, "--seed", str(self.data_seed), "--overwrite"])

    def train(self, name: str, cmd: list[str]) -> None:
        self.stages.stage(f"train-{name}", [*cmd, "--set", f"data.root={self.data}", "--out", f"{self.runs}/{name}"],
                          resumable=self.runs / name)
        self.record(f"train-{name}", self.runs / name, per_image=False)

    def ev(self, name: str, config: str, protocol: str, *args: str) -> None:
        # --overwrite: a stage that did not finish reruns over its own partial output
        self.stages.stage(name, ["eval", "-c", config, "--set", f"data.root={self.data}", "--protocol", protocol, *args,
                                 "--out", f"{self.runs}/{name}", "--quiet", "--overwrite"])
        self.record(name, self.runs / name, per_image=True)

    def chain(self, s: int) -> None:
        """The classifiers of one training seed: section 3.1's initialisation chain (module doc)."""
        runs, sx = self.runs, f"-s{s}"
        cls = ["train-cls", "-c", CLS_CONFIG, "--set", f"seed={s}", "--set", f"train.epochs={CLS_EPOCHS}"]
        finetune = ["--set", f"train.epochs={FINETUNE_EPOCHS}", "--set", f"optim.lr={FINETUNE_LR}"]
        self.train(f"cls-A-112{sx}", [*cls, "--set", "model.arch=A", *fixed(112)])
        self.train(f"cls-D-112{sx}", [*cls, *fixed(112), "--set", f"model.init_from={runs}/cls-A-112{sx}/model.pt"])
        self.train(f"cls-D-144{sx}", [*cls, *fixed(144), *finetune, "--set", f"model.pretrained={runs}/cls-D-112{sx}/model.pt"])
        self.train(f"cls-D-jit{sx}", [*cls, *finetune, "--set", f"model.pretrained={runs}/cls-D-144{sx}/model.pt"])

    def seed(self, s: int) -> None:
        """Every training and evaluation of one training seed."""
        runs, sx = self.runs, f"-s{s}"
        seed = ["--set", f"seed={s}"]
        self.chain(s)
        for net, single, multi in (("A-112", "112", None), ("D-112", "112", Q112), ("D-144", "144", Q144),
                                   ("D-jit", "128", MULTI)):
            ckpt = f"{runs}/cls-{net}{sx}/model.pt"
            self.ev(f"eval-{net}-single{sx}", CLS_CONFIG, "cls-dense", "--checkpoint", ckpt, "--scales", single)
            if multi:  # net A is not in the paper's Table 4
                self.ev(f"eval-{net}-multi{sx}", CLS_CONFIG, "cls-dense", "--checkpoint", ckpt, "--scales", multi)
        jit = f"{runs}/cls-D-jit{sx}/model.pt"
        # Tables 6-7: the nets fused (section 4.4), each at its own multi-scale Q of Table 4.
        d112, d144 = f"{runs}/cls-D-112{sx}/model.pt", f"{runs}/cls-D-144{sx}/model.pt"
        self.ev(f"eval-fusion-2{sx}", CLS_CONFIG, "cls-dense", "--checkpoint", d144, "--scales", Q144,
                "--checkpoint", jit, "--scales", MULTI)
        self.ev(f"eval-fusion-3{sx}", CLS_CONFIG, "cls-dense", "--checkpoint", d112, "--scales", Q112,
                "--checkpoint", d144, "--scales", Q144, "--checkpoint", jit, "--scales", MULTI)
        self.ev(f"eval-D-jit-multicrop{sx}", CLS_CONFIG, "cls-multicrop", "--checkpoint", jit, "--scales", TABLE5_Q)
        self.ev(f"eval-D-jit-both{sx}", CLS_CONFIG, "cls-both", "--checkpoint", jit, "--scales", TABLE5_Q)
        # Localisers (Appendix A), each from the classifier of its training scale.
        loc = ["train-loc", "-c", LOC_CONFIG, *seed, "--set", f"train.epochs={LOC_EPOCHS}"]
        for name, regression, finetune_mode, scale in (("fc-scr-144", "scr", "fc", 144), ("fc-pcr-144", "pcr", "fc", 144),
                                                        ("all-scr-144", "scr", "all", 144), ("all-pcr-144", "pcr", "all", 144),
                                                        ("all-pcr-112", "pcr", "all", 112)):
            init = f"{runs}/cls-D-{scale}{sx}/model.pt"
            self.train(f"loc-{name}{sx}", [*loc, "--regression", regression, "--finetune", finetune_mode, "--init", init,
                                           *fixed(scale)])
        for name in ("fc-scr-144", "fc-pcr-144", "all-scr-144", "all-pcr-144"):
            self.ev(f"eval-loc-{name}{sx}", LOC_CONFIG, "center-crop", "--checkpoint", f"{runs}/loc-{name}{sx}/model.pt",
                    "--scales", "144")
        labels = ["--cls-checkpoint", jit, "--cls-scales", LABELS_Q]
        l112, l144 = f"{runs}/loc-all-pcr-112{sx}/model.pt", f"{runs}/loc-all-pcr-144{sx}/model.pt"
        self.ev(f"full-112{sx}", LOC_CONFIG, "full", "--checkpoint", l112, "--scales", "112", *labels)
        self.ev(f"full-144{sx}", LOC_CONFIG, "full", "--checkpoint", l144, "--scales", "144", *labels)
        self.ev(f"full-144-2{sx}", LOC_CONFIG, "full", "--checkpoint", l144, "--scales", "128,144", *labels)
        self.ev(f"full-fusion{sx}", LOC_CONFIG, "full", "--checkpoint", l112, "--scales", "112", "--checkpoint", l144,
                "--scales", "128,144", *labels)

    def run(self) -> None:
        """Seed by seed, so that a partial run already has every row for its first seeds; the
        report is rewritten after each seed (and each stage's JSON as it finishes)."""
        self.data_stage()
        for s in self.seeds:
            self.seed(s)
            self.transfer(s)
            self.write_report()

    # ------------------------------------------------------------------ results as they go

    def record(self, stage: str, folder: Path, per_image: bool) -> None:
        """reports/reproduction/STAGE.json for a finished stage, unless written before for
        this very run (its stage marker's time)."""
        if not self.execute:
            return
        out = self.results / f"{stage}.json"
        seconds = self.stages.seconds(stage)
        if out.exists() and json.loads(out.read_text()).get("seconds") == seconds:
            return
        result: dict = {"stage": stage, "command": self.stages.commands.get(stage), "seconds": seconds,
                        "commit": git_commit(), "machine": machine(kernels=True),
                        "torch": torch_version(), "finished": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}
        metrics_file = folder / "metrics.json"
        if metrics_file.exists():
            metrics = json.loads(metrics_file.read_text())
            result["metrics"] = metrics
        else:  # a training run: its last epoch's validation
            lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]
            epochs = [r for r in lines if r.get("kind", "epoch") == "epoch"]
            result["metrics"] = {k: v for k, v in (epochs[-1] if epochs else {}).items() if isinstance(v, (int, float))}
            result["val_top1_cls_error_per_epoch"] = [round(r["val_top1_cls_error"], 4) for r in epochs
                                                      if "val_top1_cls_error" in r]
        if per_image and stage.startswith("transfer-"):  # the SVM's class for every split's test images
            with open(folder / "predictions.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            result["images"] = len(rows)
            result["per_image"] = {"top1_cls_error": encode([r["class"] != r["predicted"] for r in rows])}
        elif per_image:
            from vgglocal.evaluation.compare import per_image_errors, predictions_file

            file, labels = predictions_file(folder)
            ids, errors = per_image_errors(file, str(self.data), labels=labels)
            result["images"] = len(ids)
            result["per_image"] = {k: encode(v) for k, v in errors.items()}
        self.results.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result) + "\n")
        tmp.replace(out)

    def result(self, stage: str) -> dict:
        path = self.results / f"{stage}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def metrics(self, stage: str) -> dict:
        """A finished stage's metrics (its JSON under reports/; {} when it has not run)."""
        return self.result(stage).get("metrics", {})

    def values(self, stage: str, key: str) -> list[float]:
        """``key`` of ``stage`` for every seed that has it."""
        return [m[key] for m in (self.metrics(f"{stage}-s{s}") for s in self.seeds) if m.get(key) is not None]

    def cell(self, stage: str, key: str) -> str:
        v = self.values(stage, key)
        return mean_std_short(v) if v else "-"

    def ordering(self, better: str, worse: str, key: str) -> dict | None:
        """The image-level paired test of ``better`` against ``worse`` over the seeds both finished."""
        from vgglocal.evaluation.compare import paired_test

        pairs = [(self.result(f"{better}-s{s}"), self.result(f"{worse}-s{s}")) for s in self.seeds]
        pairs = [(b, w) for b, w in pairs if key in b.get("per_image", {}) and key in w.get("per_image", {})]
        if not pairs:
            return None
        return paired_test([decode(b["per_image"][key]) for b, _ in pairs], [decode(w["per_image"][key]) for _, w in pairs],
                           alpha=ALPHA)

    def transfer(self, s: int) -> None:
        """Appendix B in miniature, for training seed ``s``: features of its jittered D classifier
        on the shapes it never saw, linear SVMs, the Caltech protocol (its splits drawn with the
        same seed); stacked vs averaged scales; the same net with random weights (seeded by
        ``s`` too)."""
        st, runs, data, sx = self.stages, self.runs, str(self.transfer_data), f"-s{s}"
        if not (self.transfer_data / "synth.json").exists():
            st.stage("data-transfer", ["data", "synth", data, "--first-shape", str(CLASSES), "--classes", str(TRANSFER_SHAPES),
                                       "--layout", "caltech", "--train", str(TRANSFER_TRAIN), "--val", str(TRANSFER_TEST),
                                       "--seed", str(self.data_seed), "--overwrite"])
        ckpt = f"{runs}/cls-D-jit{sx}/model.pt"  # the end of this seed's chain
        for weights, extra in (("trained", []), ("random", ["--random-weights"])):
            for how in ("stack", "average"):  # the second reuses the first's cached per-scale features
                name = f"transfer-{weights}-{how}{sx}"
                st.stage(name, ["transfer", "-c", TRANSFER_CONFIG, "--set", f"data.root={data}", "--set", f"seed={s}",
                                "--checkpoint", ckpt, *extra, "--aggregate", how, "--cache",
                                f"{runs}/transfer-features-{weights}{sx}", "--out", f"{runs}/{name}", "--quiet"])
                self.record(name, runs / name, per_image=True)

    def transfer_section(self) -> list[str]:
        """The Table 11 analogue (its orderings are tested with the others)."""
        title = ["## Table 11 analogue: very deep features on other data (Appendix B)", ""]
        m0 = next((m for m in (self.metrics(f"transfer-trained-stack-s{s}") for s in self.seeds) if m), None)
        if m0 is None:
            return [*title, "Not run yet (each seed's last stages)."]
        lines = [*title,
                 f"The paper's Appendix B uses its ILSVRC nets, not fine-tuned, as feature extractors for other data sets. "
                 f"Here the other data set is `vgglocal data synth {self.transfer_data} --first-shape {CLASSES} --classes "
                 f"{TRANSFER_SHAPES} --layout caltech --train {TRANSFER_TRAIN} --val {TRANSFER_TEST}`: the "
                 f"{TRANSFER_SHAPES} shapes of the generator that the classifiers (each seed's jittered D, `cls-D-jit-s*`, "
                 f"trained on the first {CLASSES}) never saw ({', '.join(self.transfer_names())}), "
                 f"{TRANSFER_TRAIN + TRANSFER_TEST} images each, in a Caltech-256-style folder. Features: FC7 of the net "
                 f"applied densely at Q = {', '.join(str(q) for q in m0['scales'])} (the net's S_min, mid and S_max, as "
                 "the paper's Caltech scales 256, 384, 512 are its nets'), global-average-pooled, averaged with the mirror "
                 "image, stacked or averaged over the scales, L2-normalised; one-vs-rest linear SVMs with C chosen on a "
                 f"held-out 20% of the training images; the Caltech protocol: {m0['train_per_class']} training images per "
                 f"class, the rest ({m0['n_test'] // max(m0['n_classes'], 1)} per class) for test, {m0['splits']} random "
                 f"splits per seed (drawn with the seed). Chance is {100 / m0['n_classes']:.1f}%. The baseline is the same "
                 "architecture with random weights (`--random-weights`: its own Kaiming initialisation seeded by the seed, "
                 "batch-norm statistics at their initial values). The classifiers' own top-1 validation error on their 10 "
                 f"shapes (centre crop, last epoch): {self.cell('train-cls-D-jit', 'val_top1_cls_error')}.", "",
                 "| features | scales | mean class recall (%), over seeds | ± std over splits (mean over seeds) | "
                 "C chosen (every split) | paper, Caltech-256 | run |",
                 "|---|---|---|---|---|---|---|"]
        for label, how, stage, paper in TRANSFER_ROWS:
            per_seed = [m for m in (self.metrics(f"{stage}-s{s}") for s in self.seeds) if m]
            if not per_seed:
                lines.append(f"| {label} | {how} | - | - | - | {paper} | `{stage}-s*` |")
                continue
            spread = pct(sum(m["mean_class_recall_std"] for m in per_seed) / len(per_seed))
            chosen = sorted({c for m in per_seed for c in m["svm_c"]})
            lines.append(f"| {label} | {how} | {self.cell(stage, 'mean_class_recall')} | {spread} | "
                         f"{', '.join(f'{c:g}' for c in chosen)} | {paper} | `{stage}-s*` |")
        lines += ["", "The paper's Table 11 for Net-D: VOC-2007 89.3 mAP, VOC-2012 89.0 mAP, Caltech-101 91.8 ± 1.0 and "
                  "Caltech-256 85.0 ± 0.2 mean class recall (Net-E 89.3, 89.0, 92.3 ± 0.5, 85.1 ± 0.3); the best earlier "
                  "ILSVRC features (Chatfield et al. 2014, a shallower net) had 77.6 ± 0.1 on Caltech-256. The paper has "
                  "no random-weight row; it is the baseline that shows what the trained features add. Its orderings are "
                  "tested image by image with the others (below)."]
        return lines

    def transfer_names(self) -> list[str]:
        # the generator's own shape order, so that a report rebuilt without the data says the same
        from vgglocal.data.synth import SHAPES

        return list(SHAPES)[CLASSES: CLASSES + TRANSFER_SHAPES]

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
            anchor = text.find("## The paper's orderings, tested")
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
            f"runs on {summary.get('machine', 'an unnamed machine')}, commit {runs[0].get('commit', 'unknown')}"
            + (f" (the joint localisers trained later, at {runs[0]['completed_on_commit']})" if runs[0].get("completed_on_commit") else "")
            + ".", "",
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
        counts = sorted({r["val_images"] for r in runs if r.get("val_images")})
        images = f"the {counts[0]:,} validation images" if len(counts) == 1 else "the validation images"
        lines += ["", f"Errors in percent of {images}, mean ± standard deviation over the runs "
                  "(min-max in brackets).", "", JOINT_MARK[1]]
        return lines

    # ------------------------------------------------------------------ the report

    def write_report(self) -> None:
        n_val = CLASSES * VAL_PER_CLASS
        done = sorted(p.stem for p in self.results.glob("*.json")) if self.results.exists() else []
        seeds = ", ".join(str(s) for s in self.seeds)
        lines = [
            "# Reproduction in miniature",
            "",
            "The paper's comparisons (Tables 3-9 and 11) re-run on a generated data set: "
            f"`vgglocal data synth {self.data} {' '.join(SYNTH)} --seed {self.data_seed}` "
            f"({CLASSES * 1000:,} training and {n_val:,} validation images of {CLASSES} shape classes, 128 px). Every "
            f"number of ours comes from real training and evaluation runs made by `bin/reproduce`, once per training "
            f"seed ({seeds}); a cell is the mean ± standard deviation over the seeds in percent of the {n_val:,} "
            f"validation images (one image is {100 / n_val:.2f} points), with the range in brackets. The paper's "
            "numbers are its ILSVRC-2012 validation errors.",
            "",
            "Scale mapping: the images are 128 px and the crop 96 px, so the paper's S = 256 "
            "(224 crop) stands as S = 112 here, S = 384 as S = 144, its test scales {S-32, S, S+32} as "
            "{S-16, S, S+16} and its jitter [256, 512] as [112, 144]. All nets are the demo's (configs/demo/cls.yaml, "
            "configs/demo/loc.yaml): VGG-D (A for the A rows) at width 1/8 with batch norm. The initialisation chain "
            f"of section 3.1, per seed: A at S = 112 from scratch ({CLS_EPOCHS} epochs); D at 112 from A's first four "
            f"convolutions and three FC layers (the same); D at 144 fine-tuned from D at 112 ({FINETUNE_EPOCHS} "
            f"epoch{'s' if FINETUNE_EPOCHS != 1 else ''} at lr {FINETUNE_LR}); the jittered D fine-tuned from D at 144 "
            f"(the same). Localisers ({LOC_EPOCHS} epochs) start from the classifier of their training scale.",
            "",
            f"Stages finished: {len(done)} (a partial report says '-' where a row has not run).",
            "",
        ]
        for table in ("3", "4", "5", "6", "7", "8", "9"):
            lines += [f"## {TITLES[table]}", ""]
            loc = table in ("8", "9")
            if loc:
                lines += ["| setting | train S | test Q | top-1 loc. err. | top-5 loc. err. | paper loc. err. | "
                          "paper row | run |", "|---|---|---|---|---|---|---|---|"]
            else:
                lines += ["| setting | train S | test Q | top-1 cls. err. | top-5 cls. err. | paper top-1 | paper top-5 | "
                          "paper row | run |", "|---|---|---|---|---|---|---|---|---|"]
            for row in (r for r in ROWS if r.table == table):
                p1, p5 = (f"{v:.1f}" if v is not None else "-" for v in row.paper)
                keys = ("top1_loc_error", "top5_loc_error") if loc else ("top1_cls_error", "top5_cls_error")
                paper = [p5] if loc else [p1, p5]
                lines.append(f"| {row.label} | {row.train} | {row.test} | " + " | ".join(self.cell(row.stage, k) for k in keys)
                             + " | " + " | ".join(paper) + f" | {row.paper_row} | `{row.stage}-s*` |")
            if table == "8":
                lines += ["", "Table 8 is under the centre-crop protocol, where top-1 and top-5 are the same number "
                          "(one box, the true class); the paper reports one localisation error."]
            if table == "9":
                lines += ["", "The paper's Table 9 reports top-5 localisation error only; compare the top-5 column. "
                          "Every row takes its labels from the same classifier (each seed's jittered D, cls-dense at "
                          f"Q = {LABELS_Q}): top-1 / top-5 classification error {self.cell('full-144', 'top1_cls_error')} / "
                          f"{self.cell('full-144', 'top5_cls_error')}."]
            lines.append("")
        lines += self.transfer_section() + [""]
        lines += self.joint_section() + [""]
        lines += ["## The paper's orderings, tested", "",
                  "Each ordering compares two rows image by image over the validation images. Every seed scores "
                  "the same images, so the image is the sample: each image's difference (the paper's better row "
                  "minus the other) is averaged over the seeds, and `vgglocal compare`'s exact two-sided sign test "
                  "runs on the images where that average is not zero (with one seed: McNemar's exact test; "
                  "[docs/metrics.md](../docs/metrics.md#is-a-really-better-than-b)). The orderings are tested "
                  f"together, so their p-values are adjusted for their number (Holm's step-down method): *holds*: "
                  f"the paper's better row has the lower error at Holm-adjusted p < {ALPHA}; *fails*: the other row "
                  f"has, at adjusted p < {ALPHA}; *not resolved*: no significant difference. The difference has its "
                  "paired bootstrap 95 % interval (images resampled); the images column counts where each row is "
                  "better on the seeds' average; *seeds agreeing* counts the seeds whose own difference points the "
                  "overall way, with the paired t test over the seeds (a seed a sample: the conservative view); "
                  "*pooled p* is the test that counts every (seed, image), shown for comparison only.", "",
                  "| table | the paper finds | ours (mean over seeds) | difference, 95 % interval | images better in (better / other) "
                  "| seeds agreeing (t over seeds) | pooled p | p | Holm p | verdict |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        from vgglocal.evaluation.compare import holm

        tests = [(row, self.ordering(row[2], row[3], row[4])) for row in ORDERINGS]
        ran = [t for _, t in tests if t is not None]
        adjusted = iter(holm([t["p_value"] for t in ran]) if ran else [])
        for (table, claim, _, _, key), t in tests:
            if t is None:
                lines.append(f"| {table} | {claim} | - | - | - | - | - | - | - | not run |")
                continue
            p_holm = next(adjusted)
            verdict = ("holds" if t["difference"] < 0 else "**fails**") if p_holm < ALPHA and t["difference"] else "not resolved"
            t_p = t["t_p_value"]
            t_view = "" if t_p is None else " (no spread)" if t_p == 0 else f" (p {fmt_p(t_p)})"
            lines.append(f"| {table} | {claim} | {pct(t['a_error'])} vs {pct(t['b_error'])} ({key.replace('_', ' ')}, "
                         f"{t['pairs']} seed{'s' if t['pairs'] != 1 else ''}) | {100 * t['difference']:+.2f} "
                         f"[{100 * t['ci95'][0]:+.2f}, {100 * t['ci95'][1]:+.2f}] | {t['a_better']} / {t['b_better']} | "
                         f"{t['pairs_agreeing']} of {t['pairs']}{t_view} | {fmt_p(t['pooled_p_value'])} | "
                         f"{fmt_p(t['p_value'])} | {fmt_p(p_holm)} | {verdict} |")
        lines += ["", "## Training runs", "", "Each classifier's centre-crop validation top-1 error after every epoch "
                  "(the seeds in order):", "", "| run | seed | per epoch (%) |", "|---|---|---|"]
        for name in sorted({n.rsplit("-s", 1)[0] for n in done if n.startswith("train-")}):
            for s in self.seeds:
                per = self.result(f"{name}-s{s}").get("val_top1_cls_error_per_epoch")
                if per:
                    lines.append(f"| `{name}` | {s} | {', '.join(f'{100 * v:.1f}' for v in per)} |")
        discussion = self.report.with_name("reproduction-discussion.md")
        if discussion.exists():
            lines += ["", discussion.read_text().strip()]
        lines += ["", "## Commands, machines and commits", "",
                  "Run from the repository root (`bin/reproduce` runs exactly these, seed by seed, and skips finished "
                  "ones; `bin/reproduce --fresh` redoes all). Seconds are the wall time on the machine named; each "
                  "stage's full record, per-image errors included, is in "
                  f"[`{self.results}/`]({self.results.name}/).", "",
                  "| stage | seconds | machine | commit | finished | command |", "|---|---|---|---|---|---|"]
        total = 0.0
        records = [self.result(n) for n in done]
        for r in sorted(records, key=lambda r: r.get("finished", "")):
            total += r.get("seconds") or 0.0
            lines.append(f"| `{r['stage']}` | {r.get('seconds') or 0:.0f} | {r.get('machine', '?')} | {r.get('commit', '?')} | "
                         f"{r.get('finished', '?')} | `{r.get('command')}` |")
        if self.plot():
            lines += ["", "![errors, ours beside the paper's](reproduction.png)"]
        machines = sorted({r.get("machine", "?") for r in records})
        lines += ["", "## Machine and time", "",
                  f"- Machines: {'; '.join(machines) or 'none yet'} (no GPU); this report written on {machine(kernels=True)}, "
                  f"{platform.platform()}, Python {platform.python_version()}, torch {torch_version()}",
                  f"- vgglocal commits of the stages: {self.stage_commits(records)}; report written at {git_commit()}",
                  f"- Sum of the stage times: {total / 60:.0f} min; report written "
                  f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.", ""]
        self.report.parent.mkdir(parents=True, exist_ok=True)
        self.report.write_text("\n".join(lines))
        self.stages.log(f"wrote {self.report}")

    @staticmethod
    def stage_commits(records: list[dict]) -> str:
        """Each commit the stages ran at, with how many, oldest first (from the records alone,
        so that a report rebuilt on another machine says the same)."""
        counts = Counter(r.get("commit", "unknown") for r in sorted(records, key=lambda r: r.get("finished", "")))
        return ", ".join(f"{c} ({n} stage{'s' if n != 1 else ''})" for c, n in counts.items()) or "none yet"

    def plot(self) -> bool:
        """Bars of our mean errors (whiskers: the range over seeds) beside the paper's, one panel
        per table; False without matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.stages.log("matplotlib not installed (pip install -e '.[plot]'): no plot")
            return False
        tables = ("3", "4", "5", "6", "8", "9")  # Table 7 repeats rows of 4 and 6
        counts = [sum(r.table == t for r in ROWS) for t in tables]
        fig, axes = plt.subplots(len(tables), 1, figsize=(9, 2.2 + 0.55 * sum(counts)), height_ratios=counts)
        for ax, table in zip(axes, tables, strict=True):
            rows = [r for r in ROWS if r.table == table]
            key, idx = ("top5_loc_error", 1) if table in ("8", "9") else ("top1_cls_error", 0)
            values = [[100 * v for v in self.values(r.stage, key)] for r in rows]
            ours = [sum(v) / len(v) if v else 0.0 for v in values]
            err = [[m - min(v) if v else 0 for m, v in zip(ours, values, strict=True)],
                   [max(v) - m if v else 0 for m, v in zip(ours, values, strict=True)]]
            paper = [r.paper[idx] if r.paper[idx] is not None else 0.0 for r in rows]
            y = range(len(rows))
            ax.barh([i - 0.2 for i in y], ours, 0.4, xerr=err, capsize=2, label="ours (mean, range over seeds)")
            ax.barh([i + 0.2 for i in y], paper, 0.4, label="paper (ILSVRC)")
            ax.set_yticks(list(y), [f"{r.label}  S={r.train}  Q={r.test}" for r in rows], fontsize=8)
            ax.invert_yaxis()
            ax.set_title(f"Table {table}: {key.replace('_', ' ')} (%)", fontsize=9)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.report.with_suffix(".png"), dpi=90)
        plt.close(fig)
        return True


def encode(errors) -> str | list[float]:
    """Per-image errors for the stage JSON: a string of 0s and 1s when every error is 0 or 1
    (one labelled class per image), else the numbers."""
    values = [float(v) for v in errors]
    if all(v in (0.0, 1.0) for v in values):
        return "".join("1" if v else "0" for v in values)
    return [round(v, 6) for v in values]


def decode(errors: str | list[float]):
    import numpy as np

    return np.array([c == "1" for c in errors], np.float64) if isinstance(errors, str) else np.asarray(errors, np.float64)


def mean_std_short(values: list[float]) -> str:
    """``mean ± std (min-max)`` in percent over the seeds; one seed: its value."""
    if len(values) == 1:
        return f"{100 * values[0]:.1f} (1 seed)"
    return mean_std(values)


def fmt_p(p: float) -> str:
    # below the smallest double the exact test's p underflows to 0; it is not zero
    return f"{p:.2g}" if p > 0 else "< 1e-300"


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


def torch_version() -> str:
    import torch

    return torch.__version__


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        # reports/ excluded: the run rewrites its own report after every seed, which is no change
        # to the code the later stages run
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)reports"],
                               cwd=ROOT, capture_output=True, text=True, check=True)
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def main() -> None:
    p = argparse.ArgumentParser(prog="bin/reproduce", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fresh", action="store_true", help="Redo every stage (the data set is kept).")
    p.add_argument("--data-seed", type=int, default=0, help="Data set seed (default 0: data/reproduce/).")
    p.add_argument("--seeds", default=",".join(str(s) for s in SEEDS),
                   help=f"Training seeds, each for every row (comma list; default {','.join(str(s) for s in SEEDS)}).")
    p.add_argument("--report-only", action="store_true",
                   help="Rewrite the report from reports/reproduction/*.json (finished stages); run nothing.")
    p.add_argument("--only", choices=["transfer", "joint"], default=None,
                   help="transfer: run only the Table 11 (Appendix B) stages and the classifier chains they use (each "
                        f"seed's), then rewrite the report; joint: read {STABILITY} (bin/check-stability --loc --joint "
                        f"--report {STABILITY}) and rewrite only that section of the existing report.")
    args = p.parse_args()
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        raise SystemExit(f"[bin/reproduce] --seeds {args.seeds!r}: give a comma list of integers") from None
    if not seeds:
        raise SystemExit("[bin/reproduce] --seeds: give at least one seed")
    suffix = "" if args.data_seed == 0 else f"-{args.data_seed}"
    os.chdir(ROOT)  # the commands use paths relative to the repository root, as the report shows them
    rep = Reproduce(Path("data") / f"reproduce{suffix}", Path("runs") / f"reproduce{suffix}",
                    Path("reports") / f"reproduction{suffix}.md", args.fresh, args.data_seed,
                    execute=not args.report_only, seeds=seeds)
    if args.only == "joint":
        rep.splice_section(JOINT_MARK, rep.joint_section(), "joint-training")
        return
    if args.only == "transfer":
        rep.data_stage()
        for s in seeds:
            rep.chain(s)
            rep.transfer(s)
        rep.write_report()
        rep.stages.log(f"total {(time.time() - rep.start) / 60:.1f} min")
        return
    if args.report_only:
        if not list(rep.results.glob("*.json")):
            raise SystemExit(f"[bin/reproduce] no finished stages under {rep.results}/; run bin/reproduce first")
        rep.write_report()
        return
    rep.run()
    rep.stages.log(f"total {(time.time() - rep.start) / 60:.1f} min")


if __name__ == "__main__":
    main()
