"""Listing plugins never imports torch or model libraries."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import Vlm

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
        [sys.executable, "benchmarks/cold_start.py", "--repeats", "2", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=str(__import__("conftest").REPO),
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data["commands"]) == {"vlm --help", "vlm plugins list"}
    for row in data["commands"].values():
        assert row["median_s"] > 0 and len(row["runs_s"]) == 2
