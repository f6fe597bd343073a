"""Resumable stages for bin/demo and bin/reproduce: each stage runs one ``vgglocal`` command
in a subprocess; a finished stage leaves a marker (with its time) and is skipped next time,
and an interrupted training run is resumed from its last checkpoint."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VGGLOCAL = [sys.executable, "-m", "vgglocal"]
# The demo data set of bin/demo, bin/check-stability and bin/reproduce: 10 shape classes,
# 1,000 training and 50 validation images per class. With 300 per class (synth's default) the
# demo classifier needed many passes over few images and its take-off from chance came at a
# random epoch; 1,000 per class and 6 epochs see as many images in the same time.
DEMO_CLASSES = 10
DEMO_SYNTH = ["--classes", str(DEMO_CLASSES), "--train", "1000", "--val", "200"]


def machine(kernels: bool = False) -> str:
    """The CPU model (``/proc/cpuinfo``; elsewhere ``platform.processor()``) and the core count;
    ``kernels``: and the ATen CPU kernel path this process runs (``ATEN_CPU_CAPABILITY`` or the
    CPU's best), because the same commit and seed train to other numbers on another path."""
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
    except OSError:
        names = []
    name = f"{names[0] if names else platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if kernels:
        import torch

        path = os.environ.get("ATEN_CPU_CAPABILITY") or torch.backends.cpu.get_cpu_capability()
        name += f", {path.upper()} kernels"
        # oneDNN (convolutions) and MKL (matrix products) choose their instruction set on their
        # own; ATEN_CPU_CAPABILITY does not reach them, these variables do
        limits = [f"{lib} {os.environ[var].upper()}" for lib, var in (("oneDNN", "ONEDNN_MAX_CPU_ISA"),
                                                                      ("MKL", "MKL_ENABLE_INSTRUCTIONS")) if os.environ.get(var)]
        if limits:
            name += f" ({', '.join(limits)})"
    return name


class Stages:
    def __init__(self, runs: Path, prog: str, fresh: bool = False, clean: tuple[Path, ...] = (), execute: bool = True) -> None:
        """``execute=False`` only records the commands; every stage must have finished before."""
        self.runs, self.prog, self.execute = runs, prog, execute
        self.marks = runs / ".stages"
        if fresh:
            for path in (runs, *clean):
                shutil.rmtree(path, ignore_errors=True)
        self.marks.mkdir(parents=True, exist_ok=True)
        self.commands: dict[str, str] = {}

    def log(self, msg: str) -> None:
        print(f"[{self.prog} {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def done(self, name: str) -> bool:
        return (self.marks / f"{name}.done").exists()

    def seconds(self, name: str) -> float | None:
        mark = self.marks / f"{name}.done"
        return float(mark.read_text().split()[0]) if mark.exists() else None

    def stage(self, name: str, cmd: list[str], resumable: Path | None = None) -> None:
        """Run ``vgglocal CMD`` unless the stage finished before. ``resumable``: the run folder
        of a training command, resumed with --resume when it holds a last checkpoint."""
        self.commands[name] = shlex.join(["vgglocal", *cmd])
        if self.done(name):
            if self.execute:
                self.log(f"{name}: done before, skipped ({self.prog} --fresh redoes it)")
            return
        if not self.execute:
            raise SystemExit(f"[{self.prog}] stage {name} has not finished; run {self.prog} without --report-only")
        if resumable is not None and (resumable / "checkpoints" / "last.pt").exists():
            cmd = cmd + ["--resume"]
        elif resumable is not None:
            shutil.rmtree(resumable, ignore_errors=True)
        self.log(f"{name}: {shlex.join(['vgglocal', *cmd])}")
        start = time.time()
        proc = subprocess.run(VGGLOCAL + cmd, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"[{self.prog}] stage {name} failed (exit {proc.returncode}); rerun {self.prog} to resume")
        took = time.time() - start
        (self.marks / f"{name}.done").write_text(f"{took:.1f}\n")
        self.log(f"{name}: finished in {took:.0f} s")
