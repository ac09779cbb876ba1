#!/usr/bin/env bash
# The GPU check, run on the lent GPU machine through the device tool (never in CI):
#   carry .whl (wheels of what that machine lacks; see docs/benchmarks.md) and run
#   bash scripts/device_check.sh
# It runs the `gpu`-marked tests, `vlm doctor --json` and benchmarks/gpu_suite.py, writing
# results under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/vlm-device-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD:$PWD/plugins/medical${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD:$PWD/plugins/medical${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 VLM_HOME=/tmp/vlm-home
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
python3 -m vlm_core.cli doctor --json > "$OUT/doctor.json"; echo "doctor rc=$?"
# the vlm pytest plugin comes through its pytest11 entry point when vlm-core is installed
plugin=$(python3 -c "import importlib.metadata as m; print('' if any(e.name == 'vlm' for e in m.entry_points(group='pytest11')) else '-p vlm_core.testing.pytest_plugin')")
# only the files that hold gpu tests: the others may import what that machine lacks
files=$(grep -l "mark.gpu" tests/test_*.py plugins/*/tests/test_*.py 2>/dev/null)
python3 -m pytest $plugin -m gpu -q -rs --junitxml="$OUT/gpu-tests.xml" $files 2>&1 \
    | tee "$OUT/gpu-tests.log"
echo "pytest rc=${PIPESTATUS[0]}"
python3 benchmarks/gpu_suite.py --out "$OUT" 2>&1 | tee "$OUT/gpu-suite.log"
echo "suite rc=${PIPESTATUS[0]}"
# medical.segment's sliding window against raw MONAI (needs monai and pydicom in .whl)
python3 benchmarks/medical_segment.py --device cuda --out "$OUT" 2>&1 | tail -20
echo "medical rc=${PIPESTATUS[0]}"
# driving.detect's detector vs the same torchvision model called directly (720p, fp32, batch 8)
python3 benchmarks/driving_detect.py --device cuda --compile --out "$OUT" 2>&1 | tail -5
echo "driving rc=${PIPESTATUS[0]}"
# the fast path again with max-autotune (GEMM autotuning; minutes of compiling), time-boxed
timeout "${VLM_AUTOTUNE_TIMEOUT:-200}" python3 -m vlm_core.cli bench fastpath --device cuda \
    --compile-mode max-autotune --json "$OUT/fastpath-max-autotune.json" 2>&1 | tail -5
echo "max-autotune rc=${PIPESTATUS[0]}"
