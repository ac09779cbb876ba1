"""The GPU check (benchmarks/gpu_check.sh): planning under a budget, one JSON per suite written
as it finishes, a judged summary, a killed run that keeps what finished, the wheels that travel.

The fast tests drive the runner with stub suites; the real dry run (every suite at tiny sizes on
the CPU) is under the ``slow`` marker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from importlib import metadata
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check
import gpu_wheels
from gpu_check import Check, Ctx, Line, Suite, judge, plan

STUBS = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from gpu_check import Line, Suite

    def quick(ctx):
        return {"rows": [{"n": 1}], "values": {"q.ok": True},
                "notes": {"q.ok": "fine"}, "raw": {}}

    def second(ctx):
        return {"rows": [], "values": {"s.ratio": 0.97}, "notes": {"s.ratio": "0.97"},
                "raw": {"s.ratio": 50.0}}

    def slow(ctx):
        (ctx.out / "slow.pid").write_text(str(os.getpid()))
        time.sleep(60)
        return {"rows": [], "values": {}, "notes": {}, "raw": {}}

    SUITES = [Suite("quick", quick, 30, 1, 1), Suite("second", second, 30, 1, 1),
              Suite("slow", slow, 120, 1, 1)]
    LINES = [Line("q.ok", "quick", "works", "yes"),
             Line("s.ratio", "second", "ratio", ">= 0.95", "speed", (">=", 0.95), ("a", 100.0)),
             Line("z.slow", "slow", "sleeps", "finishes")]
    """
)


def _measured(values: dict, notes: dict | None = None) -> dict:
    return {"rows": [], "values": values, "notes": notes or {}, "raw": {}}


def test_plan_keeps_priority_order_and_drops_what_does_not_fit():
    suites = [Suite(n, lambda c: {}, 60, est, 1) for n, est in
              (("a", 30), ("b", 50), ("c", 10), ("d", 40))]  # fmt: skip
    decided = plan(suites, 75, dry_run=False)
    assert decided["a"] is None and decided["c"] is None  # 30 + 10 fit
    assert decided["b"].startswith("budget: needs about 50 s, 45 s of --budget")
    assert decided["d"].startswith("budget: needs about 40 s")  # 40 + 40 > 75
    assert plan(suites, 75, dry_run=True) == dict.fromkeys("abcd")  # dry estimates: 1 s each
    only = plan(suites, 1000, dry_run=False, only={"c"})
    assert only["c"] is None and only["a"] == "not selected (--only)"


def test_judge_speed_works_dry_and_failed_suites():
    speed = Line("x.ratio", "s", "ratio", ">= 0.95", "speed", (">=", 0.95), ("anchor", 200.0))
    works = Line("x.ok", "s", "works", "yes")
    ok = {"status": "ok", "dry_run": False, **_measured({"x.ratio": 0.9, "x.ok": True})}
    ok["raw"] = {"x.ratio": 100.0}
    row = judge(speed, ok, None)
    assert (row["status"], row["reason"]) == ("FAIL", "0.9 misses >= 0.95")
    assert row["anchor"] == {"name": "anchor", "h200": 200.0, "raw_here": 100.0,
                             "raw_over_anchor": 0.5}  # fmt: skip
    assert judge(speed, {**ok, "values": {"x.ratio": 0.99}}, None)["status"] == "PASS"
    assert judge(works, ok, None)["status"] == "PASS"
    broken = {**ok, "values": {"x.ok": False}, "notes": {"x.ok": "loss is nan"}}
    assert (judge(works, broken, None)["status"], judge(works, broken, None)["reason"]) == (
        "FAIL", "loss is nan")  # fmt: skip
    dry = judge(speed, {**ok, "dry_run": True}, None)
    assert dry["status"] == "SKIPPED" and "dry run" in dry["reason"]
    assert judge(works, {**ok, "dry_run": True}, None)["status"] == "PASS"  # works lines count
    unmeasured = judge(speed, {**ok, "values": {"x.ratio": None},
                               "notes": {"x.ratio": "needs CUDA"}}, None)  # fmt: skip
    assert (unmeasured["status"], unmeasured["reason"]) == ("SKIPPED", "needs CUDA")
    crashed = {"status": "timeout", "error": "timed out after its cap of 5 s"}
    assert judge(speed, crashed, None)["reason"] == "suite 's' timed out after its cap of 5 s"
    assert judge(speed, None, "budget: 3 s left")["status"] == "SKIPPED"


def test_each_suite_writes_its_json_and_the_summary_judges_every_line(tmp_path):
    def fine(ctx: Ctx) -> dict:
        assert os.environ["VLM_HOME"] != os.environ.get("HOME")  # a private vlm home
        return _measured({"a.ok": True, "a.ratio": 1.2}, {"a.ratio": "1.2"})

    def boom(ctx: Ctx) -> dict:
        raise RuntimeError("no kernel image")

    def hang(ctx: Ctx) -> dict:
        time.sleep(30)
        return {}

    def dies(ctx: Ctx) -> dict:
        os._exit(3)

    suites = [Suite("fine", fine, 30, 1, 1), Suite("boom", boom, 30, 1, 1),
              Suite("hang", hang, 0.5, 0.1, 0.1), Suite("dies", dies, 30, 1, 1),
              Suite("late", fine, 30, 10_000, 10_000)]  # fmt: skip
    lines = [Line("a.ok", "fine", "w", "g"), Line("a.ratio", "fine", "r", "g", "speed"),
             Line("b", "boom", "w", "g"), Line("h", "hang", "w", "g"),
             Line("d", "dies", "w", "g"), Line("l", "late", "w", "g")]  # fmt: skip
    check = Check(suites, lines, tmp_path, dry_run=False, budget_s=100, t0=time.time())
    summary = check.run()
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        "boom.json", "dies.json", "fine.json", "hang.json", "summary.json"]  # fmt: skip
    assert json.loads((tmp_path / "fine.json").read_text())["values"]["a.ratio"] == 1.2
    status = {r["id"]: (r["status"], r["reason"]) for r in summary["lines"]}
    assert status["a.ok"] == ("PASS", "") and status["a.ratio"][0] == "PASS"
    assert status["b"] == ("FAIL", "suite 'boom' raised RuntimeError: no kernel image")
    assert status["h"] == ("FAIL", "suite 'hang' timed out after its cap of 0 s")
    assert status["d"][0] == "FAIL" and "crashed (exit 3)" in status["d"][1]
    assert status["l"][0] == "SKIPPED" and status["l"][1].startswith("budget")
    assert summary["complete"] and summary["counts"] == {"PASS": 2, "FAIL": 3, "SKIPPED": 1}
    md = (tmp_path / "summary.md").read_text()
    assert "| b | w |  | g |  | FAIL | suite 'boom' raised RuntimeError: no kernel image |" in md
    assert not check.home.exists()  # the private vlm home is removed


def test_a_run_killed_after_the_second_suite_keeps_their_json(tmp_path):
    """SIGTERM while the third suite runs: the two finished suites' JSON are intact, the
    running suite's process is gone, and the summary says the run was killed."""
    (tmp_path / "stub_suites.py").write_text(STUBS)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"),
                             "--registry", "stub_suites", "--out", str(out), "--budget", "100"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.time() + 20
    while not (out / "slow.pid").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert (out / "slow.pid").exists(), proc.communicate(timeout=5)[0]
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert json.loads((out / "quick.json").read_text())["status"] == "ok"
    assert json.loads((out / "second.json").read_text())["values"] == {"s.ratio": 0.97}
    assert not (out / "slow.json").exists() and not list(out.glob(".*.tmp"))
    with pytest.raises(ProcessLookupError):
        os.kill(int((out / "slow.pid").read_text()), 0)
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["complete"] and summary["stopped"] == "killed by signal 15 (SIGTERM)"
    status = {r["id"]: (r["status"], r["reason"]) for r in summary["lines"]}
    assert status["q.ok"][0] == "PASS" and status["s.ratio"][0] == "PASS"
    assert status["z.slow"] == ("SKIPPED", "killed by signal 15 (SIGTERM)")


def test_the_registry_lists_every_gpu_line_and_fits_the_budget():
    suites, lines = gpu_check.load_registry(preload=False)
    names = [s.name for s in suites]
    assert len(set(names)) == len(names) and {line.suite for line in lines} == set(names)
    ids = {line.id for line in lines}
    assert len(ids) == len(lines)
    required = {"backbone.vit_b16", "backbone.resnet50", "fastpath.speedup", "fastpath.mfu",
                "clip.image", "medical.sliding_window", "gan.dcgan", "detect.fcos",
                "detect.fasterrcnn", "executor.end_to_end", "pipeline.driving",
                "pipeline.classify", "gpu_tests.oom", "ddp.nccl",
                "dashboard.run", "familiarity.cost", "explain.time", "export.vit",
                "export.detector", "onnx.cuda", "onnx.tensorrt", "ray.one_gpu"}  # fmt: skip
    assert required <= ids
    trainable = {"art.generate", "caption.describe", "driving.detect", "medical.classify",
                 "medical.segment"}  # fmt: skip
    assert {f"train.{t}" for t in trainable} <= ids
    installs = 30  # seconds to install the carried wheels, counted in the budget
    assert sum(s.estimate_s for s in suites) + installs <= gpu_check.GPU_BUDGET_S
    assert sum(s.dry_estimate_s for s in suites) <= gpu_check.DRY_BUDGET_S
    assert all(s.estimate_s <= s.cap_s for s in suites)
    # the optional runtimes come last: they never push a core suite out of the budget
    assert names[-1] == "optional"


def test_the_wheel_set_never_holds_torch_and_says_why_it_leaves_out_av():
    fetch, left = gpu_wheels.closure()
    assert {"monai", "open-clip-torch", "pydicom", "streamlit", "pydantic"} <= set(fetch)
    assert not {"torch", "torchvision", "timm", "numpy", "pillow"} & set(fetch)
    assert left["torch"] == "on the GPU machine" and left["av"].startswith("excluded: 36 MB")
    for name, (version, by) in fetch.items():
        assert version == metadata.version(name) and by


def test_the_carry_is_measured_against_64_mib(tmp_path, monkeypatch, capsys):
    wheels = tmp_path / ".gpu-wheels"
    wheels.mkdir()
    (wheels / "a-1.0-py3-none-any.whl").write_bytes(b"x" * 2**20)
    monkeypatch.setattr(gpu_wheels, "REPO", tmp_path)
    monkeypatch.setattr(gpu_wheels, "WHEELS", wheels)
    assert gpu_wheels.carry_bytes() == {"(working tree)": 0, ".gpu-wheels": 2**20}
    monkeypatch.setattr(gpu_wheels, "CARRY_LIMIT", 2**20 - 1)
    monkeypatch.setattr(gpu_wheels, "closure", lambda: ({}, {}))
    monkeypatch.setattr(sys, "argv", ["gpu_wheels.py", "check"])
    assert gpu_wheels.main() == 1
    assert "over the carry limit" in capsys.readouterr().err


def test_the_working_tree_counts_towards_what_travels(tmp_path, monkeypatch):
    """The device tool's 64 MiB covers the tracked and untracked-not-ignored files too."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text(".gpu-wheels/\n")
    (tmp_path / "tracked.bin").write_bytes(b"t" * 1000)
    (tmp_path / ".gpu-wheels").mkdir()
    (tmp_path / ".gpu-wheels" / "a-1.0-py3-none-any.whl").write_bytes(b"w" * 500)
    subprocess.run(["git", "-C", str(tmp_path), "add", "tracked.bin"], check=True)
    (tmp_path / "untracked.txt").write_bytes(b"u" * 100)
    monkeypatch.setattr(gpu_wheels, "REPO", tmp_path)
    sizes = gpu_wheels.carry_bytes()
    assert sizes == {"(working tree)": 1000 + 100 + len(".gpu-wheels/\n"), ".gpu-wheels": 500}


def test_register_tree_makes_the_plugins_entry_points_resolvable(tmp_path):
    """On the GPU machine the tree is on PYTHONPATH, not pip-installed: the dist-infos written
    into the site folder carry the entry points."""
    gpu_wheels.register_tree(tmp_path)
    found = {d.metadata["Name"]: d for d in metadata.distributions(path=[str(tmp_path)])}
    assert set(found) == {"vlm-core", "vlm-art", "vlm-caption", "vlm-driving", "vlm-medical"}
    plugins = {ep.name: ep.value for d in found.values() for ep in d.entry_points
               if ep.group == "vlm.plugins"}  # fmt: skip
    assert plugins == {
        "art": "vlm_art.plugin",
        "caption": "vlm_caption.plugin",
        "driving": "vlm_driving.plugin",
        "medical": "vlm_medical.plugin",
    }
    assert [ep.value for ep in found["vlm-core"].entry_points if ep.group == "pytest11"] == [
        "vlm_core.testing.pytest_plugin"]  # fmt: skip


# --- the real dry run -----------------------------------------------------------------------------


def _dry_run(out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.Popen(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run",
                             "--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip


@pytest.mark.slow
def test_dry_run_lists_every_gpu_line_in_under_two_minutes(tmp_path):
    _, lines = gpu_check.load_registry(preload=False)
    started = time.time()
    proc = _dry_run(tmp_path)
    output = proc.communicate(timeout=150)[0].decode()
    wall = time.time() - started
    assert proc.returncode == 0, output[-3000:]
    assert wall < 120, f"dry run took {wall:.0f} s"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dry_run"] and summary["complete"]
    ran = [s["name"] for s in summary["suites"] if s["status"] == "ok"]
    assert sorted(p.stem for p in tmp_path.glob("*.json") if p.stem != "summary") == sorted(ran)
    for suite in ran:  # the same JSON shape as on the GPU
        result = json.loads((tmp_path / f"{suite}.json").read_text())
        assert {"rows", "values", "notes", "raw", "wall_s", "device"} <= set(result)
    rows = {r["id"]: r for r in summary["lines"]}
    assert set(rows) == {line.id for line in lines}
    assert all(r["status"] in gpu_check.STATUSES for r in rows.values())
    assert all(r["reason"] for r in rows.values() if r["status"] == "SKIPPED")
    assert not [r for r in rows.values() if r["status"] == "FAIL"], output[-3000:]
    assert rows["train.medical.segment"]["status"] == "PASS"
    md = (tmp_path / "summary.md").read_text()
    assert all(f"| {line.id} |" in md for line in lines)


@pytest.mark.slow
def test_dry_run_killed_after_the_second_suite_keeps_their_json(tmp_path):
    suites, _ = gpu_check.load_registry(preload=False)
    first, second = suites[0].name, suites[1].name
    proc = _dry_run(tmp_path)
    deadline = time.time() + 90
    while not (tmp_path / f"{second}.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # gpu_check.sh execs the Python runner: same process
    proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    for name in (first, second):
        assert json.loads((tmp_path / f"{name}.json").read_text())["status"] == "ok"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped"] == "killed by signal 15 (SIGTERM)" and not summary["complete"]
