#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install the project into it, in the order that works:
# torch first, then the rest without build isolation (basicsr compiles against the installed torch).
# Usage: scripts/install.sh [VENV_DIR]     (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 is needed"' \
  || { echo "error: $PY is older than Python 3.10; set PYTHON=/path/to/python3.11" >&2; exit 1; }
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip setuptools wheel
echo "[install] torch + torchvision (about a minute)"
pip install -q $(grep -E '^(torch|torchvision)==' requirements.txt)
echo "[install] the rest of requirements.txt (about a minute)"
pip install -q --no-build-isolation -r requirements.txt
pip install -q --no-build-isolation --no-deps -e .
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
# strip notebook outputs on commit (a no-op outside a git checkout)
if git rev-parse --git-dir >/dev/null 2>&1; then "$VENV/bin/nbstripout" --install || true; fi
echo "[install] done in $(( $(date +%s) - start )) s: $VENV"
