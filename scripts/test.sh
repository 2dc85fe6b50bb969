#!/usr/bin/env bash
# The test suite: set up .venv (with the dev extra), then lint, type-check and run every test
# (recipe dry-runs included).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
echo "== ruff"; "$VENV/bin/ruff" check src tests bench
echo "== mypy"; "$VENV/bin/mypy"
# every recipe is dry-run inside pytest (tests/train/test_config.py, tests/pretrain/): no process per recipe here
echo "== pytest (CSRL_DATA_DIR=${CSRL_DATA_DIR:-unset})"
exec "$VENV/bin/python" -m pytest -q "$@"
