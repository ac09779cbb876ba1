"""Cold-start wall time of `vlm --help` and `vlm plugins list`.

Each command runs in a fresh process, ``--repeats`` times; the median is reported beside the
bare interpreter's start-up (`python -c pass`) measured in the same run, and against the 0.5 s
target. Plugins are whatever is installed in this environment (the README's set-up installs
every built-in one).

    python benchmarks/cold_start.py [--repeats 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 0.5


def vlm_command() -> list[str]:
    script = Path(sys.executable).with_name("vlm")
    if script.exists():
        return [str(script)]
    found = shutil.which("vlm")
    return [found] if found else [sys.executable, "-m", "vlm_core.cli"]


def time_command(cmd: list[str], repeats: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-500:]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()
    vlm = vlm_command()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "VLM_HOME": home}
        time_command(
            [*vlm, "--help"], 1, env
        )  # warm the OS file cache once, as a user's shell would
        baseline = time_command([sys.executable, "-c", "pass"], args.repeats, env)
        rows = {}
        for label, extra in (("vlm --help", ["--help"]), ("vlm plugins list", ["plugins", "list"])):
            runs = time_command([*vlm, *extra], args.repeats, env)
            median = statistics.median(runs)
            rows[label] = {
                "median_s": round(median, 4),
                "min_s": round(min(runs), 4),
                "runs_s": [round(t, 4) for t in runs],
                "x_python_startup": round(median / statistics.median(baseline), 2),
                "under_target": median < TARGET_S,
            }
    report = {
        "target_s": TARGET_S,
        "python_startup_median_s": round(statistics.median(baseline), 4),
        "repeats": args.repeats,
        "commands": rows,
    }
    print(f"{'command':<20} {'median s':>9} {'min s':>7} {'x python':>9}  target {TARGET_S} s")
    for label, row in rows.items():
        verdict = "ok" if row["under_target"] else "OVER"
        figures = f"{row['median_s']:>9.3f} {row['min_s']:>7.3f} {row['x_python_startup']:>9.1f}"
        print(f"{label:<20} {figures}  {verdict}")
    print(f"(python -c pass: {report['python_startup_median_s']:.3f} s)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
