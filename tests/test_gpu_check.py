"""tools/gpu-check: the wheel list it prepares, and the whole check at tiny sizes on the CPU."""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
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


STAGES = ["environment", "equality", "ceiling", "bench-pipeline", "synth", "train-cls", "train-loc", "eval-full", "bench-eval"]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def group_gone(pgid: int, wait: float) -> bool:
    """Whether process group ``pgid`` has no process left within ``wait`` seconds."""
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_a_run_killed_mid_way_leaves_a_valid_partial_summary(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(out), "--work", str(tmp_path / "work")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(), start_new_session=True)
    try:
        end = time.monotonic() + 240
        done = {}
        while time.monotonic() < end and not done:
            time.sleep(0.1)
            try:
                summary = json.loads((out / "summary.json").read_text())  # written atomically: never half a file
            except FileNotFoundError:
                continue
            done = {k: v for k, v in summary["stages"].items() if "seconds" in v}
        assert done, "no stage finished within 240 s"
        proc.send_signal(signal.SIGKILL)  # gpu-check alone, in the middle of the next stage
        proc.wait()
        summary = json.loads((out / "summary.json").read_text())
        assert summary["complete"] is False and summary["passed"] is False
        first = summary["stages"]["environment"]
        assert first["pass"] and first["figures"]["torch"] and summary["deadline_s"] == 480
        assert (out / "logs" / "environment.out").read_text().strip().endswith("}")
        # the stage under way dies with it (PR_SET_PDEATHSIG), with what it had logged so far
        assert group_gone(proc.pid, 20), "a stage outlived the killed gpu-check"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_the_global_deadline_bounds_the_run_and_skips_what_does_not_fit(tmp_path):
    out = tmp_path / "out"
    start = time.monotonic()
    res = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--deadline", "15", "--out", str(out),
                          "--work", str(tmp_path / "work")], capture_output=True, text=True, env=env(), timeout=120,
                         start_new_session=True)
    took = time.monotonic() - start
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(res.stdout.strip().splitlines()[-1]) == summary
    assert res.returncode == 1 and summary["complete"] and not summary["passed"]
    assert list(summary["stages"]) == STAGES
    # the interpreter's own start-up comes before the deadline's clock; a few seconds of slack
    assert summary["elapsed_s"] <= 15 and took < 15 + 20, (took, summary["elapsed_s"])
    cut = [v for v in summary["stages"].values() if "deadline" in v.get("skipped", "") or "deadline" in v.get("error", "")]
    assert cut, summary["stages"]
    assert all(v["limit_s"] <= 15 for v in summary["stages"].values() if "limit_s" in v)


def test_a_folder_that_is_not_a_gpu_check_one_is_not_replaced(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    res = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(tmp_path)], capture_output=True,
                         text=True, env=env(), timeout=120)
    assert res.returncode != 0 and "not empty" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep"


@pytest.mark.slow
def test_gpu_check_on_the_cpu_passes_every_stage(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(tmp_path / "check"),
                          "--work", str(tmp_path / "work")], capture_output=True, text=True, env=env(), timeout=470)
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary == json.loads((tmp_path / "check" / "summary.json").read_text())
    failed = {k: v for k, v in summary["stages"].items() if not v["pass"]}
    assert res.returncode == 0 and summary["passed"] and summary["complete"] and not failed, (failed, res.stderr[-2000:])
    stages = summary["stages"]
    assert list(stages) == STAGES
    eq = stages["equality"]["figures"]
    assert eq["same_windows_and_targets"] and eq["same_bad_samples"] and eq["decode_counts"]["worker"] >= 1
    assert eq["all_decoded_on_device"] and stages["environment"]["figures"]["decode_444_mean_diff"] < 2
    bench = stages["bench-pipeline"]["figures"]
    for key in ("peer_loader_img_s", "peer_e2e_img_s", "cpu_loader_img_s", "cpu_e2e_img_s", "gpu_loader_img_s",
                "gpu_e2e_img_s", "ceiling_img_s"):
        assert bench[key] > 0, key
    assert stages["ceiling"]["figures"]["torchvision_vgg16_img_s"] > 0
    head = summary["headline"]
    assert head["gpu_over_peer"] == bench["gpu_over_peer"] and head["gpu_over_torchvision_vgg16"] > 0
    assert stages["train-cls"]["figures"]["samples"] > 0 and stages["train-loc"]["figures"]["samples"] > 0
    assert stages["eval-full"]["figures"]["n_images"] == 4
    assert stages["bench-eval"]["figures"]["projected_full_50k_s"] > 0
    assert summary["torch"] and summary["date"]
    assert not (tmp_path / "check" / "data").exists()  # the work files stay out of --out


def test_equality_fails_when_the_device_decoder_was_not_used(tmp_path, monkeypatch, capsys):
    # A device decoder that fails every call sends every JPEG to the host fall-back (Pillow):
    # the pipelines then agree trivially, and the stage must say so rather than pass.
    import vgglocal.data.device as device

    script = load_script()
    assert script.stage_equality("cpu", tmp_path / "ok") == 0
    ok = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ok["all_decoded_on_device"] and ok["decode_counts"]["device"] == ok["jpegs"] > 0
    assert ok["mean_pixel_diff"] < 2

    def broken(*args, **kwargs):
        raise RuntimeError("nvJPEG unavailable")

    monkeypatch.setattr(device, "decode_jpeg", broken)
    assert script.stage_equality("cpu", tmp_path / "fallback") == 1
    fell = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not fell["all_decoded_on_device"] and fell["decode_counts"]["host_fallback"] == fell["jpegs"]
    assert fell["same_windows_and_targets"]  # everything else agrees: only the decode count tells
