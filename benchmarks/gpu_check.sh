#!/usr/bin/env bash
# The GPU check: every GPU acceptance line of the project in one run, judged (PASS/FAIL/SKIPPED).
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--budget SECONDS] [--only SUITE,...]
#   bash benchmarks/gpu_check.sh --dry-run --out DIR      # on the CPU, tiny sizes, < 2 minutes
#
# On the lent GPU machine (its own python3 with torch, torchvision and timm; no internet) it
# first installs the wheels carried in .gpu-wheels/ (made by scripts/gpu_wheels.sh) into a
# private folder, and registers the working tree's distributions (vlm-core and the plugins)
# there, so the plugins' entry points are found without building or pip-installing the tree.
# Then benchmarks/gpu_check.py runs the suites; see docs/benchmarks.md, "The GPU check".
# PYTHON picks the interpreter (default python3); the budget counts from here, installs included.
set -euo pipefail
cd "$(dirname "$0")/.."
export VLM_GPU_CHECK_T0=${VLM_GPU_CHECK_T0:-$(date +%s.%N)}
PYTHON=${PYTHON:-python3}
SITE=${VLM_GPU_SITE:-/tmp/vlm-gpu-site}
dry=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry=1; done
if [ "$dry" = 0 ]; then
    mkdir -p "$SITE"
    if ls .gpu-wheels/*.whl >/dev/null 2>&1; then
        echo "[gpu-check] installing $(ls .gpu-wheels/*.whl | wc -l) wheels into $SITE" >&2
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --disable-pip-version-check --target "$SITE" .gpu-wheels/*.whl
    else
        echo "[gpu-check] no .gpu-wheels/*.whl: run scripts/gpu_wheels.sh and carry .gpu-wheels" >&2
    fi
    plugin_paths=$(printf '%s:' "$PWD"/plugins/*/ | sed 's#/:#:#g')
    export PYTHONPATH="$SITE:$PWD:${plugin_paths%:}${PYTHONPATH:+:$PYTHONPATH}"
    "$PYTHON" benchmarks/gpu_wheels.py register-tree "$SITE"
fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
exec "$PYTHON" benchmarks/gpu_check.py "$@"
