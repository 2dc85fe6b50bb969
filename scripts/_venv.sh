# Sourced by quickstart.sh and test.sh: create or refresh .venv with torch==2.13.0 installed FIRST
# (anything that pulls torch before it would drag in a multi-GB CUDA build), then csrl itself.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CSRL_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
"$VENV/bin/python" -m pip install -q -e "$ROOT[${CSRL_EXTRAS:-dev}]"
"$VENV/bin/python" -c "import torch, csrl; print(f'csrl {csrl.__version__}, torch {torch.__version__}')"
# The data: CSRL_DATA_DIR if set, else ../shared/data beside the checkout when it exists.
if [ -z "${CSRL_DATA_DIR:-}" ] && [ -d "$ROOT/../shared/data" ]; then
  export CSRL_DATA_DIR="$(cd "$ROOT/../shared/data" && pwd)"
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false
