#!/usr/bin/env bash
# Set up (scripts/setup.sh), then lint, type-check and run the default test tier.
# Extra arguments go to pytest (e.g. `-m slow`, `-k dashboard`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff check";  ruff check .
echo "== ruff format"; ruff format --check .
echo "== mypy";        mypy
# bounded, so a test that hangs fails CI within 30 minutes instead of holding it (SIGINT: pytest
# reports where it was); one pytest-xdist worker per core, at most 4 (VLM_TEST_WORKERS=N to
# choose, 0 for one process; `-n N` among the arguments wins too): the default tier takes about
# 4 minutes on 2 cores; the slow tier, in one process (VLM_TEST_WORKERS=0), under 20
workers=(-n "${VLM_TEST_WORKERS:-logical}")
if [ -z "${VLM_TEST_WORKERS:-}" ]; then workers+=(--maxprocesses 4); fi
echo "== pytest";      timeout --signal=INT --kill-after=30 "${VLM_TEST_TIMEOUT:-1800}" \
                           python -m pytest "${workers[@]}" "$@"
