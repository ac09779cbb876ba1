"""Start-up wall time of the CLI, and of a first `vlm run` on a fresh home.

    python benchmarks/cold_start.py [--repeats 10] [--runs 3] [--tree copy] [--drop-caches]
                                    [--tasks TASK=INPUT,...|none] [--explain] [--exit-ab N]
                                    [--json out.json]

Two parts, in fresh processes:

- **Commands**: `vlm --help` and `vlm plugins list`, ``--repeats`` times each; the median
  beside the bare interpreter's start-up (`python -c pass`) measured in the same run, against
  the 0.5 s target.
- **First runs** of 2D tasks on their bundled samples (default: driving.detect, caption.describe,
  medical.classify), ``--runs`` times each, each time on a fresh ``VLM_HOME`` with
  ``VLM_OFFLINE=1``:

  - ``cold``: ``vlm run TASK INPUT --out HOME/out --json`` — target < 5 s wall;
  - ``second_cli``: the same command again on the same home and tree (what a user's second
    command costs: bytecode written, weights' hashes remembered);
  - ``in_process``: a fresh Python process that calls :func:`vlm_core.runner.run_task` twice
    (what the dashboard does); ``second_s`` is the warm run of one image — target < 1 s
    (``*_cpu_s``: the CPU seconds of the process's threads during each call).

  Each figure is the median over the runs with its quartiles, extremes and n; CPU time
  (user + system, of the process and its children) is given beside the wall time, since other
  work on a shared machine stretches wall time but not CPU time. ``run_task_s`` is the time the
  run reports for itself (``timings_ms.total_ms``); the rest of the wall time is the process:
  the interpreter, the CLI's imports and its exit.

How cold is cold (``--tree``, ``--drop-caches``):

- ``--tree installed`` runs the `vlm` of this environment as it is: Python bytecode of the
  repository's modules already compiled by earlier runs, files in the OS page cache.
- ``--tree copy`` (the default) runs every cold run from a fresh copy of the source tree
  (``git ls-files -co --exclude-standard``: tracked and untracked-not-ignored files, no
  ``__pycache__``, no build outputs), put first on ``PYTHONPATH`` ahead of the editable
  installs, whose entry points name the same modules: the repository's own modules are
  compiled on that first run, as after a fresh clone. Third-party packages keep the bytecode
  pip compiled when it installed them, as a user's do.
- ``--drop-caches`` also evicts from the OS page cache, before every cold run, every file of
  this environment (``sys.prefix``), of the interpreter's standard library and of the tree, by
  ``posix_fadvise(POSIX_FADV_DONTNEED)`` (no root needed; Linux): the first run after a
  reboot. Other processes on the machine pay to read those files again.

``--explain`` adds one more cold run per task under ``python -X importtime`` and reports the
import time by top-level package. ``--exit-ab ROUNDS`` times the same run ending through
:func:`vlm_core.cli.quick_exit.quick_exit` and through the interpreter's ordinary exit
(teardown included), alternating, and reports what skipping the teardown saves. The JSON
(``--json``) holds every figure and the method.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 0.5  # `vlm --help`, `vlm plugins list`
COLD_TARGET_S = 5.0  # a first `vlm run` of a 2D task on a fresh home
WARM_TARGET_S = 1.0  # a second run of one image in the same process
TASKS = {
    "driving.detect": "sample:generated-street",
    "caption.describe": "sample:cracked-teapot",
    "medical.classify": "sample:synthetic-lesion",
}
IN_PROCESS = """
import json, sys, time
from pathlib import Path

t0 = time.perf_counter()
from vlm_core.runner import RunRequest, run_task

imported = time.perf_counter() - t0
task, source, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
seconds, cpu, failures = [], [], 0
for index in range(2):
    t, c = time.perf_counter(), time.process_time()
    request = RunRequest(task=task, inputs=[source], out_dir=out / f"run{index}")
    outcome = run_task(request, keep_results=False)
    seconds.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
    failures += len(outcome.failures)
print(json.dumps({"import_s": imported, "first_s": seconds[0], "second_s": seconds[1],
                  "first_cpu_s": cpu[0], "second_cpu_s": cpu[1], "failures": failures}))
"""


def vlm_command() -> list[str]:
    script = Path(sys.executable).with_name("vlm")
    if script.exists():
        return [str(script)]
    found = shutil.which("vlm")
    return [found] if found else [sys.executable, "-m", "vlm_core.cli"]


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles, extremes and n, to 3 decimals (:func:`vlm_core.bench.stats.spread`,
    which imports no torch into this process)."""
    from vlm_core.bench.stats import spread as summary

    return dict(summary(values, 3))


def measure(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> dict[str, Any]:
    """Wall seconds and CPU seconds (user + system, the process and its children) of one
    command; its stdout and stderr. A failing command stops the benchmark."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd, text=True
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-800:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "stdout": out, "stderr": err}


def time_command(cmd: list[str], repeats: int, env: dict[str, str]) -> list[float]:
    return [measure(cmd, env)["wall_s"] for _ in range(repeats)]


def copy_tree(dest: Path, source: Path = REPO) -> Path:
    """A fresh copy of the source tree: tracked and untracked-not-ignored files (no bytecode,
    no build outputs, no virtual environment)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=source,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = source / name
        if not src.is_file() or "__pycache__" in Path(name).parts:
            continue  # deleted in the work tree but still tracked
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def tree_paths(tree: Path) -> list[str]:
    """The import roots of a copied tree: the core and each plugin's package folder."""
    return [str(tree), *sorted(str(p.parent) for p in tree.glob("plugins/*/pyproject.toml"))]


def evict(roots: Sequence[Path]) -> dict[str, float]:
    """Drop every regular file under ``roots`` from the OS page cache (posix_fadvise
    DONTNEED, Linux); how many files and GiB were asked to go."""
    files = size = 0
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                try:
                    fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    files += 1
                    size += os.fstat(fd).st_size
                finally:
                    os.close(fd)
    return {"files": files, "gib": round(size / 2**30, 2)}


def imports_by_package(stderr: str, top: int = 8) -> dict[str, Any]:
    """Import seconds from ``-X importtime`` output: the total of the top-level imports and
    the self time summed by top-level package (the largest ``top``)."""
    total = 0
    by_package: dict[str, int] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        fields = line[len("import time:") :].split("|")
        try:
            own, cumulative = int(fields[0]), int(fields[1])
        except ValueError:
            continue  # the header line
        name = fields[2]
        depth = (len(name) - len(name.lstrip())) // 2
        package = name.strip().split(".")[0]
        by_package[package] = by_package.get(package, 0) + own
        if depth == 0:
            total += cumulative
    largest = sorted(by_package.items(), key=lambda kv: -kv[1])[:top]
    return {
        "total_s": round(total / 1e6, 3),
        "self_s_by_package": {k: round(v / 1e6, 3) for k, v in largest},
    }


class Runs:
    """First runs of one task: a fresh home (and tree) each time."""

    def __init__(self, args: argparse.Namespace, work: Path, base_env: dict[str, str]) -> None:
        self.args, self.work, self.base_env = args, work, base_env
        self.count = 0

    def fresh(self) -> tuple[dict[str, str], Path, list[str], Path]:
        """A new VLM_HOME (and, with --tree copy, a new copy of the tree): env, home, the vlm
        command and the folder the tree is in."""
        self.count += 1
        root = self.work / f"r{self.count}"
        home = root / "home"
        home.mkdir(parents=True)
        env = {**self.base_env, "VLM_HOME": str(home), "VLM_OFFLINE": "1"}
        if self.args.tree == "copy":
            tree = copy_tree(root / "tree")
            env["PYTHONPATH"] = os.pathsep.join(tree_paths(tree))
            where = measure([sys.executable, "-c", "import vlm_core; print(vlm_core.__file__)"],
                            env, cwd=home)["stdout"]  # fmt: skip
            if not Path(where.strip()).is_relative_to(tree):
                raise SystemExit(f"the copy is not the tree imported: vlm_core from {where}")
            return env, home, [sys.executable, "-m", "vlm_core.cli"], tree
        return env, home, vlm_command(), REPO

    def cold_pair(self, task: str, source: str) -> dict[str, Any]:
        """One cold run and the second CLI run after it, on the same home and tree."""
        env, home, vlm, tree = self.fresh()
        if self.args.drop_caches:
            evict([Path(sys.prefix), Path(sys.base_prefix) / "lib", tree])
        row: dict[str, Any] = {}
        for label in ("cold", "second_cli"):
            out = home / f"out-{label}"
            done = measure([*vlm, "run", task, source, "--out", str(out), "--json"], env, home)
            report = json.loads(done["stdout"])
            row[label] = {
                "wall_s": done["wall_s"],
                "cpu_s": done["cpu_s"],
                "run_task_s": report["timings_ms"]["total_ms"] / 1000,
            }
        return row

    def in_process(self, task: str, source: str) -> dict[str, Any]:
        env, home, _, _ = self.fresh()
        cmd = [sys.executable, "-c", IN_PROCESS, task, source, str(home / "out")]
        done = measure(cmd, env, home)  # in the home: `-c` puts the working folder on sys.path
        row = json.loads(done["stdout"].strip().splitlines()[-1])
        if row["failures"]:
            raise SystemExit(f"{task} failed in-process: {done['stderr'][-800:]}")
        return row

    def explain(self, task: str, source: str) -> dict[str, Any]:
        env, home, vlm, tree = self.fresh()
        if self.args.drop_caches:
            evict([Path(sys.prefix), Path(sys.base_prefix) / "lib", tree])
        cmd = vlm if vlm[0] == sys.executable else [sys.executable, vlm[0]]
        cmd = [cmd[0], "-X", "importtime", *cmd[1:]]
        done = measure([*cmd, "run", task, source, "--out", str(home / "out"), "--json"], env, home)
        return {"wall_s": round(done["wall_s"], 3), **imports_by_package(done["stderr"])}


#: `vlm` ending through the interpreter's ordinary exit (teardown included), for --exit-ab
ORDINARY_EXIT = "import sys; from vlm_core.cli import _main; _main(sys.argv[1:])"


def exit_ab(task: str, source: str, rounds: int, base_env: dict[str, str], work: Path) -> dict:
    """The same `vlm run` ending through quick_exit (``python -m vlm_core.cli``) and through
    the ordinary interpreter exit, alternating (the order swaps every round), a fresh home
    each time: what skipping the teardown saves."""
    seconds: dict[str, list[tuple[float, float]]] = {"quick": [], "ordinary": []}
    for index in range(rounds):
        for label in ("quick", "ordinary") if index % 2 == 0 else ("ordinary", "quick"):
            home = work / f"ab-{task}-{index}-{label}"
            home.mkdir(parents=True)
            env = {**base_env, "VLM_HOME": str(home), "VLM_OFFLINE": "1"}
            start = ["-m", "vlm_core.cli"] if label == "quick" else ["-c", ORDINARY_EXIT]
            cmd = [sys.executable, *start, "run", task, source, "--out", str(home / "out")]
            done = measure(cmd, env, home)
            seconds[label].append((done["wall_s"], done["cpu_s"]))
    row: dict[str, Any] = {"rounds": rounds}
    for i, unit in enumerate(("wall_s", "cpu_s")):
        quick = [q[i] for q in seconds["quick"]]
        ordinary = [o[i] for o in seconds["ordinary"]]
        saved = [o - q for q, o in zip(quick, ordinary, strict=True)]
        row[unit] = {
            "quick": spread(quick),
            "ordinary": spread(ordinary),
            "saved_paired": spread(saved),
        }
    return row


def bench_task(runs: Runs, task: str, source: str, count: int) -> dict[str, Any]:
    pairs = [runs.cold_pair(task, source) for _ in range(count)]
    warm = [runs.in_process(task, source) for _ in range(count)]
    row: dict[str, Any] = {"input": source}
    for label in ("cold", "second_cli"):
        row[label] = {
            key: spread([p[label][key] for p in pairs]) for key in ("wall_s", "cpu_s", "run_task_s")
        }
    keys = ("import_s", "first_s", "second_s", "first_cpu_s", "second_cpu_s")
    row["in_process"] = {key: spread([w[key] for w in warm]) for key in keys}
    row["under_target"] = {
        "cold": row["cold"]["wall_s"]["median"] < COLD_TARGET_S,
        "warm": row["in_process"]["second_s"]["median"] < WARM_TARGET_S,
    }
    if runs.args.explain:
        row["explain"] = runs.explain(task, source)
    if runs.args.exit_ab:
        row["exit_ab"] = exit_ab(task, source, runs.args.exit_ab, runs.base_env, runs.work)
    return row


def parse_tasks(text: str) -> dict[str, str]:
    if text.strip().lower() == "none":
        return {}
    tasks = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        task, _, source = item.partition("=")
        if not source and task not in TASKS:
            raise SystemExit(f"--tasks: give {task}=INPUT (no default input for {task})")
        tasks[task] = source or TASKS[task]
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="runs of each listing command")
    parser.add_argument("--runs", type=int, default=3, help="first runs of each task (median)")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help="TASK[=INPUT],... to run on a fresh home, or none")  # fmt: skip
    parser.add_argument("--tree", choices=("copy", "installed"), default="copy")
    parser.add_argument("--drop-caches", action="store_true",
                        help="evict the environment and the tree from the page cache")  # fmt: skip
    parser.add_argument("--explain", action="store_true", help="add an -X importtime run")
    parser.add_argument("--exit-ab", type=int, default=0, metavar="ROUNDS",
                        help="also time quick exit against the ordinary exit")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()
    tasks = parse_tasks(args.tasks)
    vlm = vlm_command()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vlm-cold-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLM_")}
        listing_env = {**env, "VLM_HOME": str(work / "listing-home")}
        time_command([*vlm, "--help"], 1, listing_env)  # warm the OS file cache once
        baseline = time_command([sys.executable, "-c", "pass"], args.repeats, listing_env)
        commands = {}
        for label, extra in (("vlm --help", ["--help"]), ("vlm plugins list", ["plugins", "list"])):
            times = time_command([*vlm, *extra], args.repeats, listing_env)
            median = statistics.median(times)
            commands[label] = {
                "median_s": round(median, 4),
                "min_s": round(min(times), 4),
                "runs_s": [round(t, 4) for t in times],
                "x_python_startup": round(median / statistics.median(baseline), 2),
                "under_target": median < TARGET_S,
            }
        runs = Runs(args, work, env)
        rows = {task: bench_task(runs, task, source, args.runs) for task, source in tasks.items()}
    from importlib.metadata import version

    report = {
        "method": {
            "tree": args.tree,
            "drop_caches": args.drop_caches,
            "offline": True,
            "fresh_home_per_run": True,
            "figures": "median, quartiles, extremes and n over the runs; wall and CPU seconds",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": version("torch"),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "targets": {
            "command_s": TARGET_S,
            "cold_run_s": COLD_TARGET_S,
            "warm_run_s": WARM_TARGET_S,
        },
        "target_s": TARGET_S,
        "python_startup_median_s": round(statistics.median(baseline), 4),
        "repeats": args.repeats,
        "runs": args.runs,
        "commands": commands,
        "tasks": rows,
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def print_report(report: dict[str, Any]) -> None:
    print(f"{'command':<20} {'median s':>9} {'min s':>7} {'x python':>9}  target {TARGET_S} s")
    for label, row in report["commands"].items():
        verdict = "ok" if row["under_target"] else "OVER"
        figures = f"{row['median_s']:>9.3f} {row['min_s']:>7.3f} {row['x_python_startup']:>9.1f}"
        print(f"{label:<20} {figures}  {verdict}")
    print(f"(python -c pass: {report['python_startup_median_s']:.3f} s)")
    if not report["tasks"]:
        return
    method = report["method"]
    print(
        f"\nfirst `vlm run` on a fresh VLM_HOME (tree: {method['tree']}, page cache "
        f"{'dropped' if method['drop_caches'] else 'warm'}; median [min-max] of "
        f"{report['runs']}; wall s / CPU s)"
    )
    print(
        f"{'task':<18} {'cold wall':>16} {'cpu':>6} {'run_task':>8}  {'2nd CLI':>16}  "
        f"{'in-process 1st':>14} {'2nd':>16} {'cpu':>5}  targets: cold < {COLD_TARGET_S:g} s, "
        f"warm < {WARM_TARGET_S:g} s"
    )

    def cell(s: dict[str, Any]) -> str:
        return f"{s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}]"

    for task, row in report["tasks"].items():
        cold, second, warm = row["cold"], row["second_cli"], row["in_process"]
        verdict = " ".join(f"{k} {'ok' if v else 'OVER'}" for k, v in row["under_target"].items())
        print(
            f"{task:<18} {cell(cold['wall_s']):>16} {cold['cpu_s']['median']:>6.2f} "
            f"{cold['run_task_s']['median']:>8.2f}  {cell(second['wall_s']):>16}  "
            f"{warm['first_s']['median']:>14.2f} {cell(warm['second_s']):>16} "
            f"{warm['second_cpu_s']['median']:>5.2f}  {verdict}"
        )
        if "exit_ab" in row:
            ab = row["exit_ab"]
            print(
                f"{'':<18} exit: quick {ab['wall_s']['quick']['median']:.2f} s wall "
                f"({ab['cpu_s']['quick']['median']:.2f} CPU) vs ordinary "
                f"{ab['wall_s']['ordinary']['median']:.2f} ({ab['cpu_s']['ordinary']['median']:.2f}"
                f" CPU); saved per run {ab['wall_s']['saved_paired']['median']:.2f} s wall, "
                f"{ab['cpu_s']['saved_paired']['median']:.2f} s CPU (n={ab['rounds']})"
            )
        if "explain" in row:
            parts = ", ".join(
                f"{k} {v:.2f}" for k, v in row["explain"]["self_s_by_package"].items()
            )
            print(f"{'':<18} imports {row['explain']['total_s']:.2f} s: {parts}")


if __name__ == "__main__":
    main()
