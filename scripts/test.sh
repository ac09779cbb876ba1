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
echo "== pytest";      python -m pytest "$@"
