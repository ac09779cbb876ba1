"""The dashboard: its Home page lists plugins and tasks with their health; `vlm dashboard` serves
it with XSRF protection, an upload limit and error details only in debug mode."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from click.testing import CliRunner
from conftest import FIXTURE_PLUGIN_NAMES, REPO, Vlm
from streamlit.testing.v1 import AppTest

APP = str(REPO / "dashboard" / "app.py")


@pytest.fixture(autouse=True)
def fresh_streamlit_caches(monkeypatch):
    """The app caches the registry per server process; each test is a fresh 'server'."""
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    # AppTest executes the app as sys.modules["__main__"] and leaves it there, which breaks
    # later tests that start processes with the "spawn" method (they re-import __main__)
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])


@pytest.fixture
def with_fixture_plugins(monkeypatch, fixture_site, vlm_home):
    monkeypatch.syspath_prepend(str(fixture_site))


def test_home_lists_plugins_tasks_and_failures(with_fixture_plugins, monkeypatch):
    monkeypatch.setenv("VLM_PLUGINS", ",".join(FIXTURE_PLUGIN_NAMES))  # not the built-in ones
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "vlm"
    subheaders = " ".join(s.value for s in at.subheader)
    for name in ("good", "exits", "broken_hook", "broken_import", "misspelled"):
        assert name in subheaders
    errors = " ".join(e.value for e in at.error)
    assert "Plugin 'broken_hook' failed" in errors and "frobnicate" in errors
    assert at.metric[0].value == "2 / 5 healthy"
    tables = [df.value for df in at.dataframe]
    assert any("good.invert" in list(t["task"]) for t in tables)


def test_home_with_zero_plugins(vlm_home, monkeypatch):
    monkeypatch.setenv("VLM_PLUGINS", "")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "No plugins are installed" in at.info[0].value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vlm_dashboard_serves_the_app(tmp_path):
    port = free_port()
    vlm = Vlm(tmp_path, [])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vlm_core.cli",
            "dashboard",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        env=vlm.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        body = ""
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/_stcore/health", timeout=2
                ) as r:
                    body = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert body == "ok", "the dashboard did not answer its health check within 60 s"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert "<title>" in r.read().decode().lower().replace("<title >", "<title>")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(20)


def test_vlm_dashboard_passes_upload_limit_error_details_and_xsrf(monkeypatch):
    from vlm_core.cli import supervise
    from vlm_core.cli.app import cli

    calls = []
    monkeypatch.setattr(
        supervise, "run_supervised", lambda cmd, env, name: calls.append((cmd, env)) or 0
    )
    monkeypatch.delenv("VLM_DEBUG", raising=False)
    assert CliRunner().invoke(cli, ["dashboard", "--max-upload-mb", "5"]).exit_code == 0
    assert CliRunner().invoke(cli, ["--debug", "dashboard"]).exit_code == 0

    def option(cmd: list[str], name: str) -> str:
        return cmd[cmd.index(name) + 1]

    (plain, _), (debug, debug_env) = calls
    assert option(plain, "--server.maxUploadSize") == "5"
    assert option(plain, "--client.showErrorDetails") == "none"
    assert option(plain, "--server.enableXsrfProtection") == "true"
    assert option(debug, "--server.maxUploadSize") == "200"
    assert option(debug, "--client.showErrorDetails") == "full"
    assert debug_env["VLM_DEBUG"] == "1"
