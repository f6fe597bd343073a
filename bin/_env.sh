# Shared by bin/test and bin/demo: make sure a virtual environment with vgglocal exists.
# Sourced, not executed. Sets VENV_PY to the interpreter to use.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${VIRTUAL_ENV:-}" ]; then
    VENV_PY="$VIRTUAL_ENV/bin/python"
else
    if [ ! -x "$ROOT/.venv/bin/python" ]; then
        echo "[vgglocal] creating $ROOT/.venv" >&2
        python3 -m venv "$ROOT/.venv"
    fi
    VENV_PY="$ROOT/.venv/bin/python"
fi
EXTRA="${1:-}"
# Install only when the package or a dependency is missing or pyproject.toml changed since
# the last install (stamp file), so repeated runs start immediately.
STAMP="$("$VENV_PY" -c 'import sys; print(sys.prefix)')/.vgglocal-install-$EXTRA"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] || ! "$VENV_PY" -c "import vgglocal, torch, torchvision" 2>/dev/null; then
    echo "[vgglocal] installing vgglocal${EXTRA:+[$EXTRA]} (torch 2.14.1 / torchvision 0.29.1)" >&2
    # torch first and pinned, so nothing later resolves a different (multi-GB) build.
    "$VENV_PY" -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
    "$VENV_PY" -m pip install -q --disable-pip-version-check -e "$ROOT${EXTRA:+[$EXTRA]}" "torch==2.14.1" "torchvision==0.29.1"
    touch "$STAMP"
fi
