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
