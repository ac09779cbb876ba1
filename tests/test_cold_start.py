"""Listing plugins never imports torch or model libraries; the cold-start benchmark
(benchmarks/cold_start.py) measures the listing commands and first runs on fresh homes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Vlm

sys.path.insert(0, str(REPO / "benchmarks"))

CODE = """
import json, sys
from vlm_core.cli import main
try:
    main(["plugins", "list", "--json"])
except SystemExit:
    pass
heavy = ("torch", "torchvision", "timm", "open_clip", "monai", "streamlit", "numpy")
main_heavy = [m for m in heavy if m in sys.modules]
print("HEAVY=" + json.dumps(main_heavy))
"""


def test_listing_plugins_leaves_torch_unimported(vlm: Vlm):
    proc = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, env=vlm.env()
    )
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout.split("HEAVY=")[0])
    assert {p["name"] for p in listed} >= {"good", "exits", "broken_hook"}
    heavy = json.loads(proc.stdout.split("HEAVY=")[1])
    assert "torch" not in heavy
    assert heavy == [], f"listing imported {heavy}"


def test_cold_start_benchmark_script_reports_both_commands(tmp_path):
    out = tmp_path / "cold.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/cold_start.py", "--repeats", "2", "--tasks", "none",
         "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=str(REPO),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data["commands"]) == {"vlm --help", "vlm plugins list"}
    for row in data["commands"].values():
        assert row["median_s"] > 0 and len(row["runs_s"]) == 2
    assert data["tasks"] == {} and data["targets"]["cold_run_s"] == 5.0


def test_the_fresh_tree_has_the_sources_and_no_bytecode_or_ignored_files(tmp_path: Path):
    import cold_start

    repo = tmp_path / "repo"
    (repo / "pkg" / "__pycache__").mkdir(parents=True)
    (repo / "pkg" / "mod.py").write_text("x = 1\n")
    (repo / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (repo / "new.py").write_text("y = 2\n")  # untracked, not ignored: part of the work tree
    (repo / "build").mkdir()
    (repo / "build" / "out.txt").write_text("ignored")
    (repo / ".gitignore").write_text("build/\n__pycache__/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "pkg/mod.py", ".gitignore"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=repo, check=True)
    copy = cold_start.copy_tree(tmp_path / "copy", repo)
    found = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file())
    assert found == [".gitignore", "new.py", "pkg/mod.py"]


def test_import_times_are_summed_by_package():
    import cold_start

    text = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:    100000 |     100000 |     torch._C",
            "import time:   2000000 |    2100000 |   torch",
            "import time:    300000 |     300000 |   numpy",
            "import time:     50000 |    2450000 | vlm_core.runner",
            "import time:    500000 |     500000 | PIL",
        ]
    )
    found = cold_start.imports_by_package(text)
    assert found["total_s"] == 2.95  # the top-level imports' cumulative times
    assert found["self_s_by_package"] == {"torch": 2.1, "PIL": 0.5, "numpy": 0.3, "vlm_core": 0.05}


@pytest.mark.slow
def test_a_first_run_is_measured_cold_then_again_and_in_process(tmp_path):
    out = tmp_path / "cold.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/cold_start.py", "--repeats", "1", "--runs", "1",
         "--tasks", "caption.describe", "--exit-ab", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=str(REPO),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    row = data["tasks"]["caption.describe"]
    assert data["method"]["tree"] == "copy" and row["input"] == "sample:cracked-teapot"
    for part in ("cold", "second_cli"):
        assert row[part]["wall_s"]["n"] == 1
        assert row[part]["wall_s"]["median"] > row[part]["run_task_s"]["median"] > 0
    assert row["in_process"]["first_s"]["median"] > 0 and row["in_process"]["second_s"]["n"] == 1
    assert set(row["under_target"]) == {"cold", "warm"}
    for unit in ("wall_s", "cpu_s"):
        ab = row["exit_ab"][unit]
        assert ab["quick"]["n"] == ab["ordinary"]["n"] == ab["saved_paired"]["n"] == 1
        assert ab["saved_paired"]["median"] == pytest.approx(
            ab["ordinary"]["median"] - ab["quick"]["median"], abs=2e-3
        )
    assert "first `vlm run` on a fresh VLM_HOME" in proc.stdout
