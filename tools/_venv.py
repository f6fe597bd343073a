"""Shared start of the developer tools in ``tools/``: run under the repository's ``.venv``.

Each tool starts with ``import _venv; _venv.reexec()`` (``tools/`` is the script's own
directory, so first on ``sys.path``). When no virtual environment is active and
``.venv/bin/python`` exists (``bin/test`` or ``bin/demo`` creates it), the tool re-executes itself
with that interpreter, so ``tools/bench-eval`` from a plain shell is ``.venv/bin/python
tools/bench-eval``. The repository root goes on ``sys.path`` too, so a tool run from a checkout
without an editable install still imports this checkout's ``vgglocal``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"


def reexec(unless_importable: str | None = None) -> None:
    """Replace this process with ``.venv/bin/python`` running the same script and arguments.

    With ``unless_importable`` (``tools/gpu-check``: ``"torch"``), an interpreter that already has
    that module is kept: the GPU machine's own ``python3`` has torch and no ``.venv``.
    """
    import importlib.util

    if str(ROOT) not in sys.path:
        sys.path.insert(1, str(ROOT))
    python = VENV / "bin" / "python"
    # compare prefixes, not executables: a venv's python is a symlink to the base interpreter
    if os.environ.get("VIRTUAL_ENV") or not python.exists() or Path(sys.prefix).resolve() == VENV.resolve():
        return
    if unless_importable and importlib.util.find_spec(unless_importable) is not None:
        return
    os.execv(str(python), [str(python), *sys.argv])


def machine(threads: int | None = None) -> dict:
    """The CPU and the kernel path a benchmark ran on: CPU model, its widest vector ISA, usable
    cores, torch's CPU kernel path and the oneDNN / MKL caps that ``ATEN_CPU_CAPABILITY=avx2
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` set to replay an AVX2-only machine."""
    import platform

    import torch

    model, isa = platform.processor() or platform.machine(), "unknown"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags")))
        isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "older"
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model, "cpu_isa": isa, "cores": len(os.sched_getaffinity(0)),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
        "mkl_enable_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS", "default"),
        "torch": torch.__version__, "threads": threads if threads is not None else torch.get_num_threads(),
    }


def machine_line(m: dict) -> str:
    """:func:`machine` as one printed line."""
    return (f"{m['cpu']} ({m['cores']} cores, {m['cpu_isa']}), torch {m['torch']} CPU kernels {m['torch_cpu_capability']}, "
            f"oneDNN ISA {m['onednn_max_cpu_isa']}, MKL {m['mkl_enable_instructions']}, {m['threads']} thread(s)")
