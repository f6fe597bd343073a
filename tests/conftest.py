"""Shared by the tests of the scripts in bin/ (no training): import one of them as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BIN = Path(__file__).resolve().parents[1] / "bin"


@pytest.fixture(scope="module")
def bin_script():
    """``bin_script("check_stability")``: bin/check_stability.py as a module (the scripts import
    _stages from bin/, and dataclasses need their module registered)."""

    def load(name: str):
        sys.path.insert(0, str(BIN))
        try:
            spec = importlib.util.spec_from_file_location(name, BIN / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        finally:
            sys.path.remove(str(BIN))

    return load
