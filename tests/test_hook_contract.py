"""Every hook has a spec, a docs section with its exact signature, and a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from vlm_core import hookimpl, hookspecs
from vlm_core.kinds import Kind
from vlm_core.plugins import get_plugin_manager, hook_names
from vlm_core.tasks import TaskSpec

REPO = Path(__file__).parent.parent
HOOK_DOCS = (REPO / "docs" / "hooks.md").read_text()


def documented_signature(name: str) -> str | None:
    match = re.search(rf"^## {name}\n\n```python\n(.+?)\n```", HOOK_DOCS, re.M)
    return match.group(1) if match else None


def spec_signature(name: str) -> str:
    sig = inspect.signature(getattr(hookspecs, name))
    return f"{name}{sig}".replace("'", "").replace("vlm_core.tasks.", "")


def test_every_hook_is_documented_with_its_exact_signature():
    names = hook_names(get_plugin_manager())
    assert names, "no hookspecs found"
    for name in names:
        documented = documented_signature(name)
        assert documented is not None, f"docs/hooks.md has no section '## {name}'"
        assert documented == spec_signature(name), f"{name}: docs say {documented!r}"


def test_every_hook_has_a_test():
    sources = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    for name in hook_names(get_plugin_manager()):
        assert re.search(rf"def test_hook_{name}\b", sources), f"no test_hook_{name} in tests/"


def test_hook_register_tasks(vlm_registry):
    """register_tasks: the callback receives specs; the host keys them by id and plugin."""

    def run(inputs, params, ctx):
        return [{}]

    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register(
                TaskSpec(
                    id="demo.a",
                    title="A",
                    description="a",
                    domain="d",
                    run=run,
                    outputs=(Kind.METRICS,),
                )
            )
            register(
                TaskSpec(
                    id="demo.b",
                    title="B",
                    description="b",
                    domain="d",
                    run="demo_module:run",
                    inputs=(),
                    outputs=(Kind.TEXT,),
                )
            )

    reg = vlm_registry({"demo": Plugin()})
    assert reg.plugins["demo"].status == "healthy"
    assert reg.plugins["demo"].tasks == ["demo.a", "demo.b"]
    assert reg.task("demo.a").plugin == "demo"
