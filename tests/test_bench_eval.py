"""tools/bench-eval's projection over ILSVRC validation: chunks of ILSVRC-like shapes, whose
size groups are as small as dense evaluation meets them."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import numpy as np

from vgglocal.inference.dense import rescale

ROOT = Path(__file__).resolve().parents[1]
NORM = {"mean": [0.0] * 3, "std": [1.0] * 3}


def load_script():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        loader = importlib.machinery.SourceFileLoader("bench_eval", str(ROOT / "tools" / "bench-eval"))
        spec = importlib.util.spec_from_loader("bench_eval", loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "tools"))


def test_projection_chunks_have_ilsvrc_like_shapes_and_small_size_groups():
    be = load_script()
    rng = np.random.default_rng(0)
    shapes = be.ilsvrc_like_shapes(4000, rng, 224)
    share = {s: shapes.count(s) / len(shapes) for s in set(shapes)}
    assert abs(share[(375, 500)] - 0.42) < 0.03 and abs(share[(500, 375)] - 0.12) < 0.03
    assert sum(v for v in share.values() if v < 0.01) > 0.2  # the spread of other shapes
    # chunks of 32 (eval.batch_size) at the paper's scales: groups of a few images, not one batch
    groups = [be.mean_group_size(be.ilsvrc_like_shapes(32, rng, 224), [256, 384, 512]) for _ in range(10)]
    assert 1.5 < np.mean(groups) < 6
    assert be.mean_group_size([(375, 500)] * 32, [256, 384, 512]) == 32  # the old one-size projection


def test_group_sizes_follow_the_dense_engines_rescaled_sizes():
    # mean_group_size predicts dense_maps' groups: the rescaled sizes of vgglocal's own resize.
    be = load_script()
    shapes = be.ilsvrc_like_shapes(12, np.random.default_rng(3), 64)
    scales = [73, 110]
    real = {(q, rescale(np.zeros((h, w, 3), np.uint8), q, NORM)[2]) for q in scales for h, w in shapes}
    assert be.mean_group_size(shapes, scales) == len(shapes) * len(scales) / len(real)


def test_the_ranks_projection_runs_protocol_2_over_two_processes_and_gathers_on_rank_0():
    import json
    import os
    import subprocess

    res = subprocess.run([sys.executable, str(ROOT / "tools" / "bench-eval"), "--width", "0.0625", "--crop", "32", "--classes", "10",
                          "--images", "2", "--rounds", "1", "--rank-chunks", "3", "--ranks", "2", "--cores", "2", "--json"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["ranks_2_threads"] == 1 and out["ranks_2_img_s"] > 0
    assert abs(out["ranks_2_projected_full_50k_s"] * out["ranks_2_img_s"] - 50_000) < 50
    # every one of the 3 x 2 images reached rank 0, each with its top-5 labels, guesses and detections
    assert out["ranks_2_images"] == 6 and out["gather_bytes_per_image"] > 5 * (8 + 4 + 16 + 8)
