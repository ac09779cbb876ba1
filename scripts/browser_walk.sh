#!/usr/bin/env bash
# The browser walk (tests/test_browser_walk.py): `vlm dashboard` in headless Chromium, every
# task run from its bundled sample, one task trained and its weights run, a run repeated from
# History, every page opened; fails on any exception or error box. Run after scripts/test.sh
# (which sets up .venv). Where Chromium or Playwright is missing it says so in one line and
# exits 0. Bounded: 240 s. Extra arguments go to pytest. Screenshots: VLM_TEST_ARTIFACTS=DIR
# (then `python scripts/dashboard_screenshots.py --from DIR` for the user guide's images).
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
if [ ! -x "$python" ]; then
    echo "browser walk: no .venv (run bash scripts/setup.sh first)" >&2
    exit 1
fi
if ! "$python" -c "import playwright" 2>/dev/null; then
    echo "browser walk skipped: Playwright is not installed (.venv/bin/pip install -e '.[browser]')"
    exit 0
fi
if [ -z "${CHROMIUM_PATH:-}" ] && ! command -v chromium >/dev/null \
    && ! command -v chromium-browser >/dev/null; then
    echo "browser walk skipped: Chromium is not installed (apt-get install chromium)"
    exit 0
fi
echo "== browser walk"
start=$SECONDS
status=0
# SIGINT at the bound: pytest then reports where the walk was and the fixtures stop the server
timeout --signal=INT --kill-after=20 240 "$python" -m pytest -m browser -p no:cacheprovider \
    --log-cli-level=INFO --log-cli-format="%(asctime)s %(message)s" \
    tests/test_browser_walk.py "$@" || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ] || [ "$status" -eq 2 ]; then
    echo "browser walk: failed or stopped at its bound of 240 s (exit $status)" >&2
fi
echo "browser walk: $((SECONDS - start)) s"
exit "$status"
