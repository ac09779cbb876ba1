"""The plugin author kit: scaffold → pip install → conformance → listed (one CI test)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from conftest import REPO, Vlm, builtin_plugins, pip_install_target

from vlm_core.scaffold import render


def test_scaffolded_plugin_installs_passes_conformance_and_is_listed(
    tmp_path, monkeypatch, vlm_dashboard
):
    home = tmp_path / "home"
    home.mkdir()
    site = tmp_path / "site"
    vlm = Vlm(home, [site])
    made = vlm("plugins", "new", "hello", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    root = tmp_path / "vlm-hello"
    pip_install_target([root], site)
    validate = vlm("plugins", "validate", "hello", "--json")
    assert validate.returncode == 0, validate.stdout + validate.stderr
    report = json.loads(validate.stdout)[0]
    names = [c["name"] for c in report["checks"]]
    assert report["ok"] and "no heavy imports on import" in names
    assert "hello.threshold: sample 'disk' runs" in names
    listed = json.loads(vlm("plugins", "list", "--json").stdout)
    builtin = builtin_plugins()
    assert [(p["name"], p["status"], p["tasks"]) for p in listed if p["name"] not in builtin] == [
        ("hello", "healthy", ["hello.threshold"])
    ]
    # the plugin's own tests, which use the vlm_conformance fixture from the pytest11 plugin
    env = vlm.env()
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert "2 passed" in tests.stdout
    out = tmp_path / "out"
    run = vlm(
        "run",
        "hello.threshold",
        str(site / "vlm_hello" / "samples" / "disk.png"),
        "--out",
        str(out),
    )
    assert run.returncode == 0 and (out / "disk" / "mask_overlay.jpg").is_file()
    # on the dashboard, as the author guide shows: its sample, then an upload with parameters
    monkeypatch.syspath_prepend(str(site))
    shown = vlm_dashboard("hello.threshold")
    assert shown.results == 1 and shown.shown("image")
    disk = site / "vlm_hello" / "samples" / "disk.png"
    shown = vlm_dashboard("hello.threshold", files=[disk], params={"method": "fixed", "level": 0.3})
    assert shown.results == 1 and "1 result(s)" in shown.summary


def test_scaffold_refuses_bad_names_and_existing_folders(tmp_path, vlm_bare):
    bad = vlm_bare("plugins", "new", "Hello-World", "--dir", str(tmp_path))
    assert bad.returncode == 2 and "lowercase" in bad.stderr
    assert vlm_bare("plugins", "new", "x", "--dir", str(tmp_path)).returncode == 0
    again = vlm_bare("plugins", "new", "x", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_author_guide_shows_exactly_the_scaffolded_plugin():
    guide = (REPO / "docs" / "plugin-author-guide.md").read_text()
    found = re.findall(r"### `([^`]+)`\n\n(`{3,4})\w+\n(.*?)\n\2\n", guide, re.S)
    blocks = {rel: text for rel, _fence, text in found}
    files = render("hello")
    assert set(blocks) == set(files)
    for rel, text in files.items():
        assert blocks[rel] == text.rstrip(), f"docs drifted from the template: {rel}"
