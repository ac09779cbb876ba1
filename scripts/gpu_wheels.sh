#!/usr/bin/env bash
# Download into .gpu-wheels/ (git-ignored) the wheels the lent GPU machine lacks, pinned to the
# versions installed here, and check that what must travel with the tree fits in 64 MiB:
#   bash scripts/gpu_wheels.sh            # download, measure
#   bash scripts/gpu_wheels.sh check      # what it would fetch and why, without downloading
# Then run the GPU check with the device tool, carrying .gpu-wheels (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" benchmarks/gpu_wheels.py "$@"
