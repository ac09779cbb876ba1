#!/usr/bin/env bash
# Install vlm-core, every built-in plugin under plugins/ and the test tools (Playwright for the
# browser walk included; Chromium itself comes from the system: apt-get install chromium)
# into ./.venv.
# Safe to rerun: an existing .venv is reused and brought up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
targets=(-e ".[test,browser,explain,deploy,ray]")  # browser: Playwright for scripts/browser_walk.sh
for dir in plugins/*/; do
    if [ -f "$dir/pyproject.toml" ]; then
        targets+=(-e "$dir")
    fi
done
.venv/bin/python -m pip install --quiet --disable-pip-version-check "${targets[@]}"
echo "vlm installed in .venv ($(.venv/bin/vlm --version)); plugins: $(ls -d plugins/*/ 2>/dev/null | wc -l)"
