"""Import boundaries: the contracts in pyproject.toml ([tool.importlinter]) hold, they catch a
planted circle, upward import or plugin import, and vlm_core's modules import in no cycle.

The contracts leave out imports under ``if TYPE_CHECKING:`` (they run nothing); the cycle check
below counts them too, so a circle cannot hide behind an annotation either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"  # noqa: E501


def test_the_import_contracts_are_kept():
    # in a process of its own: lint_imports configures logging with dictConfig, which turns
    # off every logger already made (the later tests' caplog would see nothing)
    done = subprocess.run([sys.executable, "-c", LINT], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "4 kept, 0 broken" in out


def _plant(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # planted\n", encoding="utf-8")


def test_the_contracts_fail_on_a_planted_circle_upward_import_and_plugin_import(tmp_path):
    """A copy of vlm_core with one bad import per contract, checked by the real contracts: each
    contract is reported broken, naming the planted import."""
    shutil.copytree(ROOT / "vlm_core", tmp_path / "vlm_core",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    copy = tmp_path / "vlm_core"
    _plant(copy / "io" / "sniff.py", "from vlm_core.io import load as _load")  # load -> sniff
    _plant(copy / "params.py", "from vlm_core.training import config as _config")
    _plant(copy / "doctor.py", "import vlm_medical as _medical")
    _plant(copy / "errors.py", "from vlm_core import types as _types")  # types is above errors
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", LINT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "0 kept, 4 broken" in out, out
    for planted in (
        "No cycles are allowed in vlm_core.io.",
        "- .sniff -> .load (1 import)",
        "vlm_core.params -> vlm_core.training.config",
        "vlm_core.doctor -> vlm_medical",
        "vlm_core.errors -> vlm_core.types",
    ):
        assert planted in out, f"{planted} not reported:\n{out}"


def import_cycles(graph: grimp.ImportGraph, modules: Iterable[str]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm): each is
    a set of modules that import one another in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return cycles


def _describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    lines = []
    for importer in cycle:
        for imported in cycle:
            if graph.direct_import_exists(importer=importer, imported=imported):
                details = graph.get_import_details(importer=importer, imported=imported)
                at = ", ".join(f"l.{d['line_number']}" for d in details)
                lines.append(f"  {importer} -> {imported} ({at})")
    return "\n".join(lines)


def test_vlm_core_has_no_import_cycle():
    graph = grimp.build_graph("vlm_core", exclude_type_checking_imports=False, cache_dir=None)
    assert len(graph.modules) > 100  # the whole package was read
    cycles = import_cycles(graph, graph.modules)
    assert not cycles, "import cycles in vlm_core:\n" + "\n\n".join(
        _describe(graph, c) for c in cycles
    )


@pytest.mark.parametrize(
    "edges,expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_the_cycle_finder_finds_a_planted_cycle(edges, expected):
    graph = grimp.ImportGraph()
    for importer, imported in edges.items():
        graph.add_module(importer)
        for target in imported:
            graph.add_import(importer=importer, imported=target, line_number=1, line_contents="")
    assert import_cycles(graph, graph.modules) == expected
