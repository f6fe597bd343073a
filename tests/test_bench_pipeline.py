"""tools/bench-pipeline: every rate, the ceiling's included, is timed over the same number of
images after the same untimed warm-up steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_rates_time_the_requested_images_after_the_warm_up(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "tools" / "bench-pipeline"), "--device", "cpu", "--images", "8", "--batch", "4",
           "--workers", "1", "--crop", "32", "--width", "0.0625", "--timed-images", "10", "--warmup-steps", "3",
           "--cache", str(tmp_path), "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["timed_images"] == 12 and out["warmup_steps"] == 3  # 10 images: three whole batches
    for key in ("peer_loader_img_s", "peer_e2e_img_s", "cpu_loader_img_s", "cpu_e2e_img_s", "gpu_loader_img_s",
                "gpu_e2e_img_s", "ceiling_img_s"):
        assert out[key] > 0, key
    # The gpu pipeline decoded two passes (loader alone, end to end) of 3 warm-up + 3 timed
    # batches of 4, from 8 files: each pass is sized to what it times, the files repeating.
    assert out["gpu_decode_counts"]["device"] == 2 * (3 + 3) * 4
