"""tools/gpu-check: the wheel list it prepares, and the whole check at tiny sizes on the CPU."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu-check"


def load_script():
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_wheels_are_vgglocal_dependencies_the_gpu_machine_lacks():
    need = load_script().wheels_needed()
    # vgglocal's own dependencies that the GPU machine does not have, and what they pull in
    for name in ("albumentations", "albucore", "pydantic", "pycocotools", "defusedxml", "click", "pyyaml", "safetensors",
                 "setuptools"):
        assert name in need, name
    # the GPU machine's packages and their own requirements are never downloaded
    for name in ("torch", "torchvision", "numpy", "scipy", "pillow", "numba", "llvmlite", "opencv-python-headless",
                 "opencv-python", "filelock", "sympy", "networkx"):
        assert name not in need, name
    assert all(v[0].isdigit() for v in need.values())  # pinned to the versions installed here


@pytest.mark.slow
def test_gpu_check_on_the_cpu_passes_every_stage(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(tmp_path / "check")],
                         capture_output=True, text=True, env=env, timeout=400)
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    failed = {k: v for k, v in summary["stages"].items() if not v["pass"]}
    assert res.returncode == 0 and summary["passed"] and not failed, (failed, res.stderr[-2000:])
    stages = summary["stages"]
    assert set(stages) == {"environment", "equality", "bench-pipeline", "synth", "train-cls", "train-loc", "eval-full", "bench-eval"}
    eq = stages["equality"]["figures"]
    assert eq["same_windows_and_targets"] and eq["same_bad_samples"] and eq["decode_counts"]["worker"] >= 1
    bench = stages["bench-pipeline"]["figures"]
    for key in ("peer_loader_img_s", "peer_e2e_img_s", "cpu_loader_img_s", "cpu_e2e_img_s", "gpu_loader_img_s",
                "gpu_e2e_img_s", "ceiling_img_s"):
        assert bench[key] > 0, key
    assert stages["train-cls"]["figures"]["samples"] > 0 and stages["train-loc"]["figures"]["samples"] > 0
    assert stages["eval-full"]["figures"]["n_images"] == 4
    assert stages["bench-eval"]["figures"]["projected_full_50k_s"] > 0
    assert summary["torch"] and summary["date"]
