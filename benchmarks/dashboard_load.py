"""The dashboard under load, in real browsers: click-to-result time per task, and N concurrent
sessions running tasks against one server (errors, cross-talk, server memory).

    python benchmarks/dashboard_load.py [--sessions 8] [--minutes 2] [--json out.json]

Needs Chromium (Debian: apt-get install chromium) and `pip install playwright`. Each session
runs the first task that has a bundled sample (or --task) with its own value of a numeric
parameter; after each run the run store must hold that value for the run id the session's page
shows — a result shown in the wrong session fails the check. Server memory is the resident set
of the server process and its children, sampled every second; on a machine with an NVIDIA GPU
the device memory those processes hold is sampled too (`nvidia-smi`), else it is reported as
null.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil


def server_rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


def server_gpu_mb(pid: int) -> float | None:
    """Device memory held by the server and its children (MiB), or None without nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    proc = psutil.Process(pid)
    pids = {proc.pid, *(p.pid for p in proc.children(recursive=True))}
    query = [smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
    try:
        lines = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    used = 0.0
    for line in lines.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0].isdigit() and int(fields[0]) in pids:
            used += float(fields[1])
    return used


def third_maxima(samples: list[float | None]) -> tuple[float | None, float | None]:
    """The largest sample of the first and of the last third (None when nothing was sampled)."""
    values = [v for v in samples if v is not None]
    if not values:
        return None, None
    third = max(len(values) // 3, 1)
    return max(values[:third]), max(values[-third:])


def session(index: int, url: str, task: str, param: str, value: float, until: float,
            store_path: Path, out: dict[str, Any]) -> None:  # fmt: skip
    from playwright.sync_api import sync_playwright
    from vlm_dashboard.browser import (
        CHROMIUM_ARGS,
        choose_task,
        chromium_path,
        open_run_page,
        run_and_wait,
        set_number,
    )

    from vlm_core.runstore import RunStore

    store = RunStore(store_path)
    times: list[float] = []
    errors: list[str] = []
    crosstalk = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1800})
        try:
            open_run_page(page, url)
            choose_task(page, task)
            set_number(page, param, value)
            while time.time() < until:
                try:
                    run = run_and_wait(page, task)
                except Exception as exc:  # record and carry on: the count is the result
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                times.append(run.seconds)
                record = store.get(run.run_id)
                if abs(float(record.params[param]) - value) > 1e-9:
                    crosstalk += 1
        finally:
            browser.close()
    out[f"session{index}"] = {"runs": len(times), "errors": errors, "crosstalk": crosstalk,
                               "median_s": statistics.median(times) if times else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--task", default=None, help="Task to run (default: first with a sample).")
    parser.add_argument("--param", default="gain", help="Numeric parameter varied per session.")
    parser.add_argument("--low", type=float, default=0.5)
    parser.add_argument("--high", type=float, default=2.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright
    from vlm_dashboard.browser import (
        CHROMIUM_ARGS,
        choose_task,
        chromium_path,
        dashboard_server,
        open_run_page,
        run_and_wait,
    )

    from vlm_core.config import settings
    from vlm_core.plugins import load_registry

    registry = load_registry()
    with_samples = sorted(t for t, s in registry.tasks.items() if s.samples)
    task = args.task or with_samples[0]
    report: dict[str, Any] = {"task": task, "sessions": args.sessions, "minutes": args.minutes}
    with dashboard_server(os.environ) as server:
        # click-to-result per task, one session, after one warm-up run each
        per_task = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 1800})
            open_run_page(page, server.url)
            for task_id in with_samples:
                choose_task(page, task_id)
                run_and_wait(page, task_id)
                runs = [run_and_wait(page, task_id).seconds for _ in range(5)]
                per_task[task_id] = {"median_s": round(statistics.median(runs), 3),
                                     "max_s": round(max(runs), 3)}  # fmt: skip
            browser.close()
        report["click_to_result"] = per_task
        warm_rss, warm_gpu = server_rss_mb(server.pid), server_gpu_mb(server.pid)
        rss: list[float | None] = []
        gpu: list[float | None] = []
        until = time.time() + args.minutes * 60
        results: dict[str, Any] = {}
        step = (args.high - args.low) / max(args.sessions - 1, 1)
        threads = [
            threading.Thread(target=session, args=(i, server.url, task, args.param,
                             round(args.low + i * step, 4), until, settings().run_store, results))
            for i in range(args.sessions)
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        t0 = time.time()
        while any(t.is_alive() for t in threads):
            rss.append(round(server_rss_mb(server.pid), 1))
            gpu.append(server_gpu_mb(server.pid))
            time.sleep(1)
        report["seconds"] = round(time.time() - t0, 1)
        report["server_rss_mb_after_warmup"] = round(warm_rss, 1)
        for name, series, warm in (("rss", rss, warm_rss), ("gpu", gpu, warm_gpu)):
            first, last = third_maxima(series)
            values = [v for v in series if v is not None]
            report[f"server_{name}_mb_after_warmup"] = None if warm is None else round(warm, 1)
            report[f"server_{name}_mb_first_third_max"] = first
            report[f"server_{name}_mb_last_third_max"] = last
            report[f"server_{name}_mb_peak"] = max(values) if values else None
        report["sessions_detail"] = results
        report["runs"] = sum(r["runs"] for r in results.values())
        report["errors"] = sum(len(r["errors"]) for r in results.values())
        report["crosstalk"] = sum(r["crosstalk"] for r in results.values())
    print(json.dumps({k: v for k, v in report.items() if k != "sessions_detail"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
