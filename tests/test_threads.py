"""Threads from the usable cores: affinity capped by the cgroup quota, shared by torchrun's local
processes, and OMP_NUM_THREADS left to the user."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vgglocal.threads import default_threads, usable_cores

AFFINITY = len(os.sched_getaffinity(0))


def cgroup(tmp_path, v2=None, v1=None):
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2)
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(str(v1[0]))
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(str(v1[1]))
    return tmp_path


@pytest.mark.parametrize(("v2", "v1", "quota"), [
    ("max 100000\n", None, None),        # v2, no limit
    ("50000 100000\n", None, 1),         # half a CPU: one thread
    ("150000 100000\n", None, 2),        # 1.5 CPUs: two threads
    (None, (-1, 100000), None),          # v1, no limit
    (None, (100000, 100000), 1),         # v1, one CPU
    ("garbage", None, None),             # unreadable: affinity alone
])
def test_usable_cores_are_the_affinity_capped_by_the_quota(tmp_path, v2, v1, quota):
    want = AFFINITY if quota is None else min(AFFINITY, quota)
    assert usable_cores(cgroup(tmp_path, v2, v1)) == want


def test_default_threads_share_the_cores_and_respect_omp_num_threads(tmp_path):
    none = cgroup(tmp_path)
    assert default_threads({}, none) == AFFINITY
    assert default_threads({"LOCAL_WORLD_SIZE": str(2 * AFFINITY)}, none) == 1  # never 0
    assert default_threads({"LOCAL_WORLD_SIZE": "1"}, none) == AFFINITY
    assert default_threads({"OMP_NUM_THREADS": "3"}, none) is None


def test_the_cli_gives_torch_the_usable_cores():
    code = ("import os, sys; sys.argv = ['vgglocal', '--version']\n"
            "from vgglocal.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "import torch; print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == [str(usable_cores())] * 2
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["1", "1"]
