#!/usr/bin/env bash
# The main job on the embedded default: set up .venv, then a short unsupervised SimCSE run from the
# packaged all-MiniLM-L6-v2 ([CLS] + training-only MLP), ending with its before/after STS table.
# Extra arguments go to `csrl train`, e.g. --set train.seed=7 --output-dir runs/seed7
# A rerun starts afresh: the previous run's records are moved to <run>/overwritten/<time>/ (nothing is
# deleted); pass --resume RUN_DIR to continue an interrupted run instead.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
if [ -z "${CSRL_DATA_DIR:-}" ]; then
  echo "No data: set CSRL_DATA_DIR to the data folder, or run: $VENV/bin/csrl data fetch --groups sts,train" >&2
  exit 2
fi
case " $* " in
  *" --resume "*) exec "$VENV/bin/csrl" train --threads "$(nproc)" "$@" ;;
  *) exec "$VENV/bin/csrl" train configs/quickstart-cpu.yaml --overwrite --threads "$(nproc)" "$@" ;;
esac
