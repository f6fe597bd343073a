"""The code base stays ruff-clean, the extensionless scripts in bin/ and tools/ included."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_scripts() -> list[str]:
    """Executable Python files without a ``.py`` suffix, which ruff's directory walk skips."""
    found = []
    for folder in ("bin", "tools"):
        for path in sorted((ROOT / folder).iterdir()):
            if path.suffix != ".py" and path.is_file() and path.read_bytes().startswith(b"#!/usr/bin/env python"):
                found.append(str(path.relative_to(ROOT)))
    return found


def test_scripts_are_found():
    scripts = python_scripts()
    assert "tools/gpu-check" in scripts and "tools/bench-eval" in scripts, scripts
    assert not any(s.startswith("bin/bench") for s in scripts)  # developer tools live in tools/


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    paths = ["vgglocal", "tests", "bin", "tools", *python_scripts()]
    proc = subprocess.run([ruff, "check", "--no-cache", *paths], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
