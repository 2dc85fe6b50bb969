#!/usr/bin/env bash
# The test suite: set up .venv (with the dev extra), then lint, type-check and run every test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
echo "== ruff"; "$VENV/bin/ruff" check src tests bench
echo "== mypy"; "$VENV/bin/mypy"
echo "== configs"; for f in configs/*.yaml configs/losses/*.yaml; do "$VENV/bin/csrl" train "$f" --dry-run >/dev/null; done; echo "all recipes dry-run"
echo "== pytest (CSRL_DATA_DIR=${CSRL_DATA_DIR:-unset})"
exec "$VENV/bin/python" -m pytest -q "$@"
