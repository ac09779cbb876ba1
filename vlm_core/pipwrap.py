"""`vlm plugins install|uninstall`: pip, with guard rails around torch and vlm-core.

Before installing, pip resolves the request with ``--dry-run --report``; if that would change
the installed torch or vlm-core, the install is refused unless ``force`` is set.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.utils import canonicalize_name

from vlm_core.errors import UsageError, VLMError

PROTECTED = ("torch", "vlm-core")


class PipError(VLMError):
    """pip itself failed."""


def _pip(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def protected_changes(specs: Sequence[str], pip_args: Sequence[str] = ()) -> list[str]:
    """What installing ``specs`` would do to torch and vlm-core, as readable lines."""
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        proc = _pip(
            ["install", "--dry-run", "--quiet", "--report", str(report_path), *pip_args, *specs]
        )
        if proc.returncode != 0:
            raise PipError(f"pip cannot resolve {' '.join(specs)}: {_last_line(proc.stderr)}")
        report = json.loads(report_path.read_text())
    changes = []
    for item in report.get("install", []):
        meta = item.get("metadata", {})
        name = canonicalize_name(meta.get("name", ""))
        if name in PROTECTED:
            current = _installed(name)
            if current != meta.get("version"):
                changes.append(f"{name} {current or 'absent'} -> {meta.get('version')}")
    return changes


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def install(specs: Sequence[str], *, force: bool = False, pip_args: Sequence[str] = ()) -> str:
    """Install plugin distributions; returns pip's last line."""
    if not specs:
        raise UsageError("name at least one package or path to install")
    if not force:
        changes = protected_changes(specs, pip_args)
        if changes:
            raise UsageError(
                f"refusing to install {' '.join(specs)}: it would change {'; '.join(changes)} "
                "(pass --force to allow)"
            )
    proc = _pip(["install", *pip_args, *specs])
    if proc.returncode != 0:
        raise PipError(f"pip install failed: {_last_line(proc.stderr)}")
    return _last_line(proc.stdout)


def uninstall(distributions: Sequence[str], *, force: bool = False) -> str:
    """Uninstall distributions (never torch or vlm-core unless ``force``)."""
    guarded = [d for d in distributions if canonicalize_name(d) in PROTECTED]
    if guarded and not force:
        raise UsageError(f"refusing to uninstall {', '.join(guarded)} (pass --force to allow)")
    proc = _pip(["uninstall", "--yes", *distributions])
    if proc.returncode != 0:
        raise PipError(f"pip uninstall failed: {_last_line(proc.stderr)}")
    return _last_line(proc.stdout)
