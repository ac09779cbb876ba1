"""Isolation: broken plugins are reported against their names; the rest keeps working."""

from __future__ import annotations

import json

from conftest import one_line_error


def plugins(vlm, **env):
    proc = vlm("plugins", "list", "--json", **env)
    assert proc.returncode == 0, proc.stderr
    return {p["name"]: p for p in json.loads(proc.stdout)}


def test_broken_plugins_are_listed_as_failed_with_their_reason(vlm):
    listed = plugins(vlm)
    assert listed["good"]["status"] == "healthy"
    assert sorted(listed["good"]["tasks"]) == ["good.invert", "good.shapes"]
    assert listed["good"]["version"] == "1.2.3"
    assert listed["broken_import"]["status"] == "failed"
    assert listed["broken_import"]["stage"] == "import"
    assert "frobnicate" in listed["broken_import"]["error"]
    assert listed["broken_hook"]["status"] == "failed"
    assert listed["broken_hook"]["stage"] == "register"
    assert "RuntimeError: cannot read the fixture's task table" in listed["broken_hook"]["error"]


def test_table_listing_exits_zero_and_names_failures(vlm):
    proc = vlm("plugins", "list")
    assert proc.returncode == 0
    for name in ("broken_import", "broken_hook", "misspelled", "good"):
        assert name in proc.stdout
    assert "frobnicate" in proc.stdout


def test_misspelled_hook_is_a_validation_error_naming_plugin_and_hook(vlm):
    listed = plugins(vlm)
    record = listed["misspelled"]
    assert record["status"] == "failed" and record["stage"] == "validate"
    assert "unknown hook 'register_task'" in record["error"]
    assert "did you mean 'register_tasks'" in record["error"]
    proc = vlm("plugins", "validate", "misspelled", "--quick")
    assert proc.returncode == 1
    assert "misspelled: FAILED" in proc.stdout and "register_task" in proc.stdout


def test_exit_in_run_is_reported_quarantined_and_healthy_task_still_runs(vlm, tmp_path):
    proc = vlm("run", "exits.boom")
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "plugin 'exits'" in line and "SystemExit(3)" in line
    listed = plugins(vlm)
    assert listed["exits"]["status"] == "failed"
    assert "SystemExit(3)" in listed["exits"]["error"]
    # the healthy plugin still runs, in a new process and after the failure
    sample = vlm.paths[0] / "vlm_fixture_good" / "square.png"
    ok = vlm("run", "good.invert", str(sample), "--out", str(tmp_path / "out"))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out" / "square" / "inverted.png").is_file()
    # the quarantined task refuses to run, naming its plugin, until re-enabled
    again = vlm("run", "exits.boom")
    assert again.returncode == 2 and "plugin 'exits' is failed" in one_line_error(again)
    assert vlm("plugins", "enable", "exits").returncode == 0
    assert plugins(vlm)["exits"]["status"] == "healthy"


def test_strict_mode_makes_failures_fatal_naming_the_plugin(vlm):
    proc = vlm("plugins", "list", VLM_STRICT_PLUGINS="1")
    assert proc.returncode == 1
    assert "plugin 'broken_hook'" in one_line_error(proc)
    only_exits = {"VLM_STRICT_PLUGINS": "1", "VLM_PLUGINS": "exits"}
    run = vlm("run", "exits.boom", **only_exits)
    assert run.returncode == 1 and "plugin 'exits'" in one_line_error(run)
    listing = vlm("plugins", "list", **only_exits)
    assert listing.returncode == 1 and "plugin 'exits'" in one_line_error(listing)


def test_allow_list_loads_only_named_plugins(vlm):
    assert set(plugins(vlm, VLM_PLUGINS="good,exits")) == {"good", "exits"}
    assert plugins(vlm, VLM_PLUGINS="") == {}


def test_disable_and_enable_persist_in_the_user_config(vlm):
    assert vlm("plugins", "disable", "good").returncode == 0
    config = json.loads((vlm.home / "config.json").read_text())
    assert config["disabled"] == ["good"]
    assert plugins(vlm)["good"]["status"] == "disabled"
    tasks = json.loads(vlm("tasks", "--json").stdout)
    assert "good.invert" not in [t["id"] for t in tasks]
    assert vlm("plugins", "enable", "good").returncode == 0
    assert plugins(vlm)["good"]["status"] == "healthy"
    unknown = vlm("plugins", "disable", "goood")
    assert unknown.returncode == 2 and "did you mean 'good'" in one_line_error(unknown)
