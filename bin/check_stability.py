"""bin/check-stability: does the demo classifier land in the same place under perturbations that
should not matter? Trains configs/demo/cls.yaml once per perturbation -- each training seed on
this machine's default CPU kernel path, and some seeds on the other path (ATEN_CPU_CAPABILITY,
and for avx2 oneDNN's and MKL's instruction sets too)
-- and reports per run the epoch at which validation error first falls below 50 % (leaving
chance), the final centre-crop error and the cls-dense errors (section 3.2), with the spread
(max - min) over runs. With --loc also the demo localiser (PCR, all layers) and its top-5
localisation error under the full protocol.

Targets: every run leaves chance by epoch 3; spread of the cls-dense top-1 error at most 2
points; with --loc, spread of the full protocol's top-5 localisation error at most 3 points.

Each finished run writes OUT/runs/NAME.json at once, so an interrupted check resumes where it
stopped (an interrupted training resumes from its last checkpoint). A benchmark, not a test:
it exits 0 whether the targets are met or not, unless --strict.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _stages import DEMO_SYNTH, ROOT, VGGLOCAL, machine

CLS_CONFIG = "configs/demo/cls.yaml"
LOC_CONFIG = "configs/demo/loc.yaml"
CHANCE = 0.5  # "left chance": validation top-1 error below 50 % (10 classes: chance is 90 %)
TARGET_EPOCH = 3
TARGET_CLS_SPREAD = 0.02
TARGET_LOC_SPREAD = 0.03


def log(msg: str) -> None:
    print(f"[check-stability {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def kernel_paths() -> tuple[str, str]:
    """(this machine's default ATen CPU kernel path, the other one to perturb with), lower case
    as ATEN_CPU_CAPABILITY takes them. AVX-512 machines fall back to avx2; AVX2 ones to default
    (the non-vectorised kernels)."""
    import torch

    default = os.environ.get("ATEN_CPU_CAPABILITY") or torch.backends.cpu.get_cpu_capability()
    default = default.lower()
    return default, ("avx2" if default.startswith("avx512") else "default")


def path_env(path: str) -> dict[str, str]:
    """The environment of a run on kernel path ``path``. For avx2 the convolutions (oneDNN) and
    matrix products (MKL) are held to AVX2 too: ATEN_CPU_CAPABILITY reaches only ATen's own
    kernels, and only with all three does an AVX-512 machine train bit for bit as an AVX2-only
    one does (measured: the same commit, seed and data on an AMD EPYC with and one without
    AVX-512). ``default`` lowers ATen's kernels alone."""
    env = {"ATEN_CPU_CAPABILITY": path}
    if path == "avx2":
        env.update(ONEDNN_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2")
    return env


def run(cmd: list[str], env: dict[str, str], what: str) -> None:
    log(f"{what}: vgglocal {' '.join(cmd)}")
    proc = subprocess.run(VGGLOCAL + cmd, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"[check-stability] {what} failed (exit {proc.returncode}); rerun bin/check-stability to resume")


def train(kind: str, cmd: list[str], folder: Path, env: dict[str, str], what: str) -> None:
    """Train into ``folder`` unless its model.pt exists; resume from last.pt when there is one."""
    if (folder / "model.pt").exists():
        return
    if (folder / "checkpoints" / "last.pt").exists():
        cmd = cmd + ["--resume"]
    else:
        shutil.rmtree(folder, ignore_errors=True)
    run([kind, *cmd, "--out", str(folder)], env, what)


def evaluate(protocol: str, folder: Path, nets: list[str], data: Path, env: dict[str, str], what: str) -> dict:
    """``vgglocal eval`` with the demo localiser's config into ``folder`` unless it finished
    before; its metrics.json."""
    if not (folder / "metrics.json").exists():
        run(["eval", "-c", LOC_CONFIG, "--set", f"data.root={data}", "--protocol", protocol, *nets, "--out", str(folder),
             "--overwrite"], env, f"{what}: eval {protocol}")
    return json.loads((folder / "metrics.json").read_text())


def commit() -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes), or "unknown" outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def epoch_lines(metrics: Path) -> list[dict]:
    """The last line of each epoch in a run's metrics.jsonl (a resumed run may repeat epochs)."""
    by_epoch: dict[int, dict] = {}
    for line in metrics.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind", "epoch") == "epoch":
            by_epoch[int(rec["epoch"])] = rec
    return [by_epoch[e] for e in sorted(by_epoch)]


def left_chance(epochs: list[dict]) -> int | None:
    """First epoch with validation top-1 error below CHANCE (None: never)."""
    return next((int(r["epoch"]) for r in epochs if r["val_top1_cls_error"] < CHANCE), None)


def one_run(name: str, seed: int, path: str, args: argparse.Namespace, data: Path) -> dict:
    out = args.out / "runs"
    result_file = out / f"{name}.json"
    before: dict = {}
    if result_file.exists():
        before = json.loads(result_file.read_text())
        if all(key in before for key in wanted_keys(args)):
            note = "" if before.get("commit") == commit() else f" (trained on commit {before.get('commit')}, not this one)"
            log(f"{name}: done before, read {result_file}{note}")
            return before
    env = dict(os.environ, **path_env(path))
    sets = ["--set", f"data.root={data}", "--set", f"seed={seed}", "--set", f"train.epochs={args.epochs}"]
    cls_dir = out / name / "cls"
    start = time.time()
    train("train-cls", ["-c", args.config, *sets], cls_dir, env, f"{name}: train-cls")
    seconds = time.time() - start
    epochs = epoch_lines(cls_dir / "metrics.jsonl")
    dense_dir = out / name / "eval-cls-dense"
    if not (dense_dir / "metrics.json").exists():
        run(["eval", "-c", args.config, "--set", f"data.root={data}", "--protocol", "cls-dense",
             "--checkpoint", str(cls_dir / "model.pt"), "--out", str(dense_dir), "--overwrite"], env, f"{name}: eval cls-dense")
    dense = json.loads((dense_dir / "metrics.json").read_text())
    result = {
        # A run completed later (--loc or --joint added) keeps the commit its classifier was trained on.
        "name": name, "seed": seed, "kernel_path": path, "epochs": args.epochs, "commit": before.get("commit", commit()),
        "val_images": dense["n_images"],
        "left_chance_epoch": left_chance(epochs),
        "val_top1_cls_error_per_epoch": [round(r["val_top1_cls_error"], 4) for r in epochs],
        "center_crop_top1_cls_error": epochs[-1]["val_top1_cls_error"],
        "cls_dense_top1_cls_error": dense["top1_cls_error"],
        "cls_dense_top5_cls_error": dense["top5_cls_error"],
        "train_cls_seconds": round(seconds, 1),
    }
    if args.loc:
        loc_dir = out / name / "loc"
        train("train-loc", ["-c", LOC_CONFIG, "--set", f"data.root={data}", "--set", f"seed={seed}", "--regression", "pcr",
                            "--finetune", "all", "--init", str(cls_dir / "model.pt")], loc_dir, env, f"{name}: train-loc")
        crop = evaluate("center-crop", out / name / "eval-center-crop", ["--checkpoint", str(loc_dir / "model.pt"),
                        "--cls-checkpoint", str(cls_dir / "model.pt")], data, env, name)
        result["loc_center_crop_loc_error"] = crop["top1_loc_error"]
        result["loc_center_crop_top5_cls_error"] = crop["top5_cls_error"]
        full = evaluate("full", out / name / "eval-full", ["--checkpoint", str(loc_dir / "model.pt"),
                        "--cls-checkpoint", str(cls_dir / "model.pt")], data, env, name)
        for key in ("top1_cls_error", "top5_cls_error", "top1_loc_error", "top5_loc_error"):
            result[f"loc_full_{key}"] = full[key]
    if args.joint:
        # Beyond the paper: the same localiser trained with the class loss too (loc.joint), so its
        # own class head ranks the boxes and `full` runs without the classifier.
        joint_dir = out / name / "loc-joint"
        train("train-loc", ["-c", LOC_CONFIG, "--set", f"data.root={data}", "--set", f"seed={seed}", "--regression", "pcr",
                            "--finetune", "all", "--joint", "--init", str(cls_dir / "model.pt")], joint_dir, env,
              f"{name}: train-loc --joint")
        full = evaluate("full", out / name / "eval-full-joint", ["--checkpoint", str(joint_dir / "model.pt")], data, env,
                        f"{name} (joint)")
        for key in ("top1_cls_error", "top5_cls_error", "top1_loc_error", "top5_loc_error"):
            result[f"joint_full_{key}"] = full[key]
    if before and before.get("commit") != commit():
        result["completed_on_commit"] = commit()
    elif "completed_on_commit" in before:
        result["completed_on_commit"] = before["completed_on_commit"]
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(result_file)
    log(f"{name}: wrote {result_file}")
    return result


LOC_KEYS = ["loc_center_crop_top5_cls_error", "loc_center_crop_loc_error", "loc_full_top1_cls_error", "loc_full_top5_cls_error", "loc_full_top1_loc_error",
            "loc_full_top5_loc_error"]
JOINT_KEYS = ["joint_full_top1_cls_error", "joint_full_top5_cls_error", "joint_full_top1_loc_error", "joint_full_top5_loc_error"]


def wanted_keys(args: argparse.Namespace) -> list[str]:
    """The summary's keys a run must have for these options (a run saved without --loc or
    --joint is completed, not retrained)."""
    return (["cls_dense_top1_cls_error", "val_images"] + (LOC_KEYS if args.loc else []) + (JOINT_KEYS if args.joint else []))


def spread(results: list[dict], key: str) -> float | None:
    values = [r[key] for r in results if r.get(key) is not None]
    return max(values) - min(values) if values else None


CLS_KEYS = ["center_crop_top1_cls_error", "cls_dense_top1_cls_error", "cls_dense_top5_cls_error"]
# column headings of the table, by summary key
HEADINGS = {
    "center_crop_top1_cls_error": "centre-crop top-1", "cls_dense_top1_cls_error": "cls-dense top-1",
    "cls_dense_top5_cls_error": "cls-dense top-5", "loc_center_crop_top5_cls_error": "centre-crop top-5",
    "loc_center_crop_loc_error": "centre-crop loc",
    "loc_full_top1_cls_error": "full top-1 cls", "loc_full_top5_cls_error": "full top-5 cls",
    "loc_full_top1_loc_error": "full top-1 loc",
    "loc_full_top5_loc_error": "full top-5 loc", "joint_full_top1_cls_error": "joint: full top-1 cls",
    "joint_full_top1_loc_error": "joint: full top-1 loc", "joint_full_top5_loc_error": "joint: full top-5 loc",
}


TABLE_KEYS = CLS_KEYS + ["loc_center_crop_loc_error", "loc_full_top1_loc_error", "loc_full_top5_loc_error",
                         "joint_full_top1_cls_error", "joint_full_top5_loc_error"]


def summary_keys(loc: bool, joint: bool) -> list[str]:
    return CLS_KEYS + (LOC_KEYS if loc else []) + (JOINT_KEYS if joint else [])


def summarise(results: list[dict], loc: bool, joint: bool = False) -> dict:
    summary: dict = {"runs": results, "machine": machine(), "val_images": sorted({r.get("val_images") for r in results} - {None})}
    for key in summary_keys(loc, joint):
        values = [r[key] for r in results]
        summary[f"{key}_mean"] = sum(values) / len(values)
        summary[f"{key}_spread"] = spread(results, key)
    late = [r["name"] for r in results if r["left_chance_epoch"] is None or r["left_chance_epoch"] > TARGET_EPOCH]
    targets = {
        f"every run leaves chance by epoch {TARGET_EPOCH}": not late,
        f"cls-dense top-1 spread <= {TARGET_CLS_SPREAD * 100:g} points": summary["cls_dense_top1_cls_error_spread"] <= TARGET_CLS_SPREAD + 1e-9,
    }
    if loc:
        targets[f"full top-5 loc spread <= {TARGET_LOC_SPREAD * 100:g} points"] = (
            summary["loc_full_top5_loc_error_spread"] <= TARGET_LOC_SPREAD + 1e-9)
    summary["targets"] = targets
    summary["targets_met"] = all(targets.values())
    return summary


def table(summary: dict, loc: bool, joint: bool = False) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    # the table keeps to the headline columns; summary.json has every key's mean and spread
    keys = [k for k in summary_keys(loc, joint) if k in TABLE_KEYS]
    lines = ["| run | seed | kernel path | left chance (epoch) | " + " | ".join(HEADINGS[k] for k in keys) + " |",
             "|---|---|---|---|" + "---|" * len(keys)]
    for r in summary["runs"]:
        lines.append(f"| {r['name']} | {r['seed']} | {r['kernel_path']} | {r['left_chance_epoch'] or 'never'} | "
                     + " | ".join(pct(r[k]) for k in keys) + " |")
    lines.append("| mean | | | | " + " | ".join(pct(summary[f"{k}_mean"]) for k in keys) + " |")
    lines.append("| spread (max - min) | | | | " + " | ".join(pct(summary[f"{k}_spread"]) for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="bin/check-stability", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2,3,4", help="Training seeds on the default kernel path (comma list; default 0-4).")
    p.add_argument("--other-path-seeds", default="0",
                   help="Training seeds on the other kernel path (comma list, may be empty; default 0).")
    p.add_argument("--epochs", type=int, default=None, help="train.epochs of each run (default: the config's, the demo's).")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "stability", help="Results folder (default runs/stability).")
    p.add_argument("--data", type=Path, default=None,
                   help="An existing demo data set (default: generate OUT/data with `vgglocal data synth --seed 0`).")
    p.add_argument("--config", default=CLS_CONFIG, help=f"Classifier config (default {CLS_CONFIG}).")
    p.add_argument("--loc", action="store_true", help="Also train and evaluate the demo localiser (full protocol).")
    p.add_argument("--joint", action="store_true",
                   help="Also train the localiser with the class loss (train-loc --joint) and evaluate it under full "
                        "without the classifier.")
    p.add_argument("--report", type=Path, default=None,
                   help="Also write the summary JSON here (reports/stability.json: the README's demo ranges and "
                        "bin/reproduce's joint-training section read it).")
    p.add_argument("--strict", action="store_true", help="Exit 1 when a target is missed.")
    args = p.parse_args()

    def seeds(text: str, flag: str) -> list[int]:
        try:
            return [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise SystemExit(f"[check-stability] {flag} {text!r}: give a comma list of integers") from None

    default_path, other_path = kernel_paths()
    plan = [(f"seed{s}-{default_path}", s, default_path) for s in seeds(args.seeds, "--seeds")]
    plan += [(f"seed{s}-{other_path}", s, other_path) for s in seeds(args.other_path_seeds, "--other-path-seeds")]
    if not plan:
        raise SystemExit("[check-stability] no runs: --seeds and --other-path-seeds are both empty")
    if args.epochs is None:
        from vgglocal.config import ConfigError, load_config

        try:
            args.epochs = load_config(ROOT / args.config).train.epochs
        except ConfigError as e:
            raise SystemExit(f"[check-stability] --config: {e}") from None
    if args.epochs < 1:
        raise SystemExit(f"[check-stability] --epochs {args.epochs}: give at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = args.out / "data"
        if not (data / "synth.json").exists():
            run(["data", "synth", str(data), *DEMO_SYNTH, "--seed", "0", "--overwrite", "-q"], dict(os.environ), "data")
    elif not (data / "LOC_train_solution.csv").exists():
        raise SystemExit(f"[check-stability] --data {data}: not a demo data set (no LOC_train_solution.csv)")
    log(f"{len(plan)} runs ({', '.join(n for n, _, _ in plan)}), {args.epochs} epochs each; default kernel path "
        f"{default_path}, other {other_path}")
    results = [one_run(name, seed, path, args, data.resolve()) for name, seed, path in plan]
    summary = summarise(results, args.loc, args.joint)
    summary["kernel_paths"] = {"default": default_path, "other": other_path}  # the machine's, besides its name
    for path in [args.out / "summary.json"] + ([args.report] if args.report else []):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1) + "\n")
    print()
    print(table(summary, args.loc, args.joint))
    print()
    for target, met in summary["targets"].items():
        print(f"{'met   ' if met else 'MISSED'} {target}")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))
    if args.strict and not summary["targets_met"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
