"""Packaging: the wheel carries the dashboard and the scaffold; `vlm plugins install` guards
torch and vlm-core."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from conftest import REPO, Vlm, builtin_plugins, one_line_error


def test_package_list_is_complete():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "vlm_core").rglob("__init__.py")
        if "plugin-template" not in p.parts
    }
    found |= {
        ".".join(("vlm_dashboard", *p.parent.relative_to(REPO / "dashboard").parts))
        for p in (REPO / "dashboard").rglob("__init__.py")
    }
    assert listed == found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(out),
            str(REPO),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("vlm_core-*.whl")
    return path


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "vlm_dashboard/app.py",
        "vlm_dashboard/state.py",
        "vlm_core/py.typed",
        "vlm_core/scaffold/plugin-template/vlm_{{name}}/plugin.py",
        "vlm_core/scaffold/plugin-template/tests/test_{{name}}.py",
    ):
        assert required in names, required
    assert not [n for n in names if n.startswith(("tests/", "plugins/", "docs/"))]
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "vlm = vlm_core.cli:main" in text and "vlm = vlm_core.testing.pytest_plugin" in text


def test_non_editable_install_finds_its_dashboard_and_scaffold(wheel, tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    code = (
        "import vlm_core, vlm_core.tasks as t, vlm_core.scaffold as s;"
        "print(vlm_core.__file__); print(t.package_file('vlm_dashboard', 'app.py'));"
        "print(len(s.render('x')))"
    )
    env = Vlm(tmp_path, [site]).env()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    core, app, count = out.stdout.split()
    assert core.startswith(str(site)) and app.startswith(str(site)) and Path(app).is_file()
    assert int(count) == 6


def fake_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal valid wheel of distribution ``name`` (metadata only)."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        digest = (
            base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        )
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def test_install_refuses_to_change_vlm_core_and_uninstall_refuses_torch(tmp_path, vlm_bare):
    index = tmp_path / "index"
    index.mkdir()
    fake_wheel(index, "vlm-core", "99.0")
    plugin = tmp_path / "needs-new-core"
    (plugin / "needs_new_core").mkdir(parents=True)
    (plugin / "needs_new_core" / "__init__.py").write_text("")
    (plugin / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "needs-new-core"\nversion = "1.0"\ndependencies = ["vlm-core>=99"]\n'
    )
    args = [
        "--pip-arg=--no-index",
        f"--pip-arg=--find-links={index}",
        "--pip-arg=--no-build-isolation",
    ]
    proc = vlm_bare("plugins", "install", str(plugin), *args)
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "would change vlm-core" in line and "-> 99.0" in line and "--force" in line
    shown = subprocess.run(
        [sys.executable, "-m", "pip", "show", "needs-new-core"], capture_output=True
    )
    assert shown.returncode != 0, "the refused plugin must not be installed"
    refused = vlm_bare("plugins", "uninstall", "torch")
    assert refused.returncode == 2 and "refusing to uninstall torch" in one_line_error(refused)


def test_install_of_a_plugin_into_a_target(tmp_path, vlm_bare):
    assert vlm_bare("plugins", "new", "tgt", "--dir", str(tmp_path)).returncode == 0
    site = tmp_path / "site"
    proc = vlm_bare(
        "plugins",
        "install",
        str(tmp_path / "vlm-tgt"),
        "--pip-arg=--no-deps",
        "--pip-arg=--no-build-isolation",
        "--pip-arg=--no-index",
        f"--pip-arg=--target={site}",
    )
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(Vlm(vlm_bare.home, [site])("plugins", "list", "--json").stdout)
    builtin = builtin_plugins()
    assert [(p["name"], p["status"]) for p in listed if p["name"] not in builtin] == [
        ("tgt", "healthy")
    ]
