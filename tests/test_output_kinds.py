"""Output kinds: one registration per kind, looked up by the runner, the exporters, `vlm run`
and the dashboard. A fixture plugin, ``heat``, registers a kind of its own (``heat.map``, with
its own output class) and a task returning it, and gets a `vlm run` line, its files under
``--out`` and its rendering on the dashboard's Run and History pages with no core edit."""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
from conftest import REPO, cli
from streamlit.testing.v1 import AppTest

from vlm_core import hookimpl
from vlm_core.kinds import Kind
from vlm_core.outputs import OutputKind, OutputKinds, validate_output_kind
from vlm_core.outputs.builtin import builtin_output_kinds
from vlm_core.plugins import load_registry
from vlm_core.tasks import TaskParams, TaskSpec
from vlm_core.types import OUTPUT_TYPES, Mask, Text

APP = str(REPO / "dashboard" / "app.py")

# ------------------------------------------------------------------ the fixture plugin "heat"


@dataclass(frozen=True, eq=False)
class HeatMap:
    """The plugin's own output type: a (H, W) float map and what it is of."""

    kind: ClassVar[str] = "heat.map"
    values: np.ndarray
    label: str = "heat"


def heat_summary(heat: HeatMap) -> dict[str, Any]:
    return {"shape": list(heat.values.shape), "peak": float(heat.values.max()), "label": heat.label}


@dataclass
class PeaksRun:
    """OUT/<name>.peaks.csv: one line per item (a run-level file)."""

    name: str
    rows: list[str]

    def finish(self, run: Any) -> None:
        run.write_text("item,peak\n" + "".join(self.rows), run.out / f"{self.name}.peaks.csv")


def write_heat_npy(item: Any, name: str, heat: HeatMap) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, heat.values, allow_pickle=False)
    item.write_bytes(buffer.getvalue(), item.folder / f"{name}.npy")


def add_heat_peak(item: Any, name: str, heat: HeatMap) -> None:
    peaks = item.run_file(f"peaks:{name}", lambda: PeaksRun(name, []))
    peaks.rows.append(f"{item.folder.name},{item.summarise(heat)['peak']:g}\n")


def heat_line(summary: dict[str, Any]) -> str:
    return f"peak {summary['peak']:.2f} of {summary['label']}"


def render_heat(name: str, heat: HeatMap, source: Any, key: str, **context: Any) -> None:
    import streamlit as st

    st.markdown(f"Heat map **{name}** peaks at {heat.values.max():.2f}")
    st.slider("Gain", 0.0, 2.0, 1.0, key=f"{key}:{name}:gain")


def heat_history(name: str, summary: dict[str, Any]) -> None:
    import streamlit as st

    st.markdown(f"Past heat map {name}: peak {summary['peak']:.2f}")


HEAT_KIND = OutputKind(
    name="heat.map",
    type="test_output_kinds:HeatMap",  # a "module:Class" string, imported on first use
    summary=heat_summary,
    exporters={"npy": write_heat_npy, "peaks": "test_output_kinds:add_heat_peak"},
    cli_line=heat_line,
    render="test_output_kinds:render_heat",
    history="test_output_kinds:heat_history",
    description="a heat map",
)


class HeatParams(TaskParams):
    pass


def run_heat(inputs: Any, params: HeatParams, ctx: Any) -> list[dict[str, Any]]:
    values = np.linspace(0.0, 0.75, 12, dtype=np.float32).reshape(3, 4)
    return [{"heat": HeatMap(values, label="sun"), "note": Text("warm")}]


def heat_plugin(kinds: tuple[Any, ...] = (HEAT_KIND,), outputs: tuple[str, ...] = ()) -> object:
    """An in-process plugin module registering ``kinds`` and the task ``heat.detect``."""
    module = types.ModuleType("vlm_heat")

    @hookimpl
    def register_output_kinds(register: Any) -> None:
        for kind in kinds:
            register(kind)

    @hookimpl
    def register_tasks(register: Any) -> None:
        register(
            TaskSpec(
                id="heat.detect",
                title="Heat",
                description="Makes a heat map.",
                domain="test",
                run=run_heat,
                params=HeatParams,
                inputs=(),
                outputs=outputs or ("heat.map", Kind.TEXT),
            )
        )

    module.register_output_kinds = register_output_kinds  # type: ignore[attr-defined]
    module.register_tasks = register_tasks  # type: ignore[attr-defined]
    return module


@pytest.fixture
def heat_registry(vlm_home, monkeypatch):
    """The process-wide registry (CLI) and the dashboard's hold the heat plugin alone."""
    from vlm_dashboard import serving

    from vlm_core import plugins

    def load() -> Any:
        return load_registry(extra={"heat": heat_plugin()}, use_entry_points=False)

    monkeypatch.setattr(plugins, "_cached", load())
    monkeypatch.setattr(serving, "load_registry", load)
    return plugins._cached


# ------------------------------------------------------------------ the hook


def test_hook_register_output_kinds(vlm_registry):
    """register_output_kinds: the callback receives kinds; the host keys them by name, records
    the plugin, and the plugin's task may declare its kind beside the core's."""
    reg = vlm_registry({"heat": heat_plugin()})
    assert reg.plugins["heat"].status == "healthy", reg.plugins["heat"].error
    assert reg.plugins["heat"].output_kinds == ["heat.map"]
    assert reg.plugins["heat"].to_json()["output_kinds"] == ["heat.map"]
    assert reg.output_kinds["heat.map"].plugin == "heat"
    assert reg.output_kinds["mask"].plugin == ""  # the core's, through the same hook
    assert reg.task("heat.detect").outputs == ("heat.map", Kind.TEXT)


def test_the_core_kinds_come_through_the_hook_and_every_name_resolves():
    """One registration per core kind (every Kind, every core output type), and every
    "module:function" it names imports: a typo fails here, not on a user's run."""
    kinds = builtin_output_kinds()
    assert set(kinds) == {str(k) for k in Kind}
    assert {kinds[str(cls.kind)].resolve_type() for cls in OUTPUT_TYPES} == set(OUTPUT_TYPES)
    import vlm_dashboard.renderers as renderers

    for name, kind in kinds.items():
        assert validate_output_kind(kind, None) == [], name
        assert kind.resolve_render() is getattr(renderers, f"render_{name}")
        assert callable(kind.resolve_history()) and kind.exporters, name
        assert all(callable(func) for _, func in kind.resolve_exporters())


@pytest.mark.parametrize(
    ("kind", "outputs", "expected"),
    [
        (OutputKind(name="map", type=HeatMap), (), "must be named 'heat.<kind>'"),
        (OutputKind(name="other.map", type=HeatMap), (), "must be named 'heat.<kind>'"),
        (OutputKind(name="heat.map", type=Mask), (), "Mask.kind is <Kind.MASK: 'mask'>"),
        (OutputKind(name="heat.map", type="no colon"), (), "type must be 'module:Class'"),
        (OutputKind(name="heat.map", type=HeatMap, render=3), (), "render is neither callable"),  # type: ignore[arg-type]
        (OutputKind(name="heat.map", type=HeatMap, exporters={"a b": print}), (), "'a b'"),
        ("heat.map", (), "registered str, not an OutputKind"),
        (HEAT_KIND, ("heat.other",), "'heat.other' is not an output kind"),
        (HEAT_KIND, ("medical.report",), "'medical.report' is not an output kind"),
    ],
)
def test_an_invalid_kind_or_an_undeclared_one_fails_the_plugin(
    vlm_registry, kind, outputs, expected
):
    reg = vlm_registry({"heat": heat_plugin((kind,), outputs)})
    record = reg.plugins["heat"]
    assert record.status == "failed" and record.stage == "validate"
    assert expected in (record.error or "")
    assert "heat.map" not in reg.output_kinds and not reg.tasks


def test_an_invalid_kind_is_not_offered_as_a_known_one(vlm_registry):
    reg = vlm_registry({"heat": heat_plugin((OutputKind(name="map", type=HeatMap),), ("map",))})
    error = reg.plugins["heat"].error or ""
    assert "'map' is not an output kind (one of attribution, boxes, caption, embeddings," in error
    assert ", map," not in error


def test_a_kind_registered_twice_fails_the_plugin(vlm_registry):
    reg = vlm_registry({"heat": heat_plugin((HEAT_KIND, HEAT_KIND))})
    assert "output kind 'heat.map' is registered twice" in (reg.plugins["heat"].error or "")


def test_a_failed_plugin_takes_its_kinds_with_it(vlm_registry):
    reg = vlm_registry({"heat": heat_plugin()})
    reg.mark_failed("heat", "run", "crashed")
    assert "heat.map" not in reg.output_kinds and "mask" in reg.output_kinds


def test_an_output_of_no_kind_is_the_plugins_fault():
    from vlm_core.errors import TaskRunError
    from vlm_core.runner import call_task
    from vlm_core.tasks import RunContext

    spec = TaskSpec(id="heat.detect", title="t", description="d", domain="x", run=run_heat,
                    inputs=(), outputs=("heat.map", "text"))  # fmt: skip
    ctx = RunContext(task=spec.id, plugin="heat", requested_device="cpu", seed=0)
    with pytest.raises(TaskRunError, match="is a HeatMap, not a core type or the type of a"):
        call_task(spec, [], HeatParams(), ctx)  # the core's kinds only: heat.map is unknown
    table = OutputKinds([*builtin_output_kinds().values(), HEAT_KIND])
    assert set(call_task(spec, [], HeatParams(), ctx, table)[0]) == {"heat", "note"}


def test_a_kind_without_functions_is_summarised_by_its_scalar_fields():
    bare = OutputKind(name="heat.map", type=HeatMap)
    heat = HeatMap(np.zeros((2, 2)), label="cold")
    assert bare.summarise(heat) == {"kind": "heat.map", "label": "cold"}
    assert bare.line({"kind": "heat.map"}) == "heat.map" and bare.resolve_render() is None
    assert OutputKinds([bare]).line({"kind": "gone.kind"}) == "gone.kind"


# ------------------------------------------------------------------ acceptance: no core edits


def test_a_plugin_kind_gets_its_cli_line_and_its_files(heat_registry, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = cli(["run", "heat.detect", "--out", str(out)], capsys)
    assert code == 0, stderr
    assert "heat.detect: heat: peak 0.75 of sun; note: 'warm'" in stdout

    (item,) = [p for p in out.iterdir() if p.is_dir()]
    assert np.load(item / "heat.npy").shape == (3, 4)
    assert (out / "heat.peaks.csv").read_text() == f"item,peak\n{item.name},0.75\n"
    summary = json.loads((item / "result.json").read_text())
    assert summary["outputs"]["heat"] == {"kind": "heat.map", "shape": [3, 4], "peak": 0.75,
                                          "label": "sun"}  # fmt: skip
    assert sorted(summary["files"]) == [f"{item.name}/heat.npy", f"{item.name}/note.txt"]

    code, stdout, _ = cli(["run", "heat.detect", "--json"], capsys)
    assert code == 0 and json.loads(stdout)["results"][0]["outputs"]["heat"]["peak"] == 0.75


def test_a_plugin_kind_is_rendered_on_the_run_and_history_pages(heat_registry, monkeypatch):
    import streamlit as st

    st.cache_resource.clear()
    monkeypatch.setenv("VLM_DEBUG", "1")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at = at.switch_page("pages/run.py").run()
    at = at.selectbox(key="run.task").set_value("heat.detect").run()
    (button,) = [b for b in at.button if b.label == "Run"]
    at = button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(m.value for m in at.markdown)
    assert "Heat map **heat** peaks at 0.75" in shown  # the plugin's renderer, with its widget
    assert any(s.key and s.key.endswith(":heat:gain") for s in at.slider)

    at = at.switch_page("pages/history.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(m.value for m in at.markdown)
    assert "**heat** · heat.map" in shown and "Past heat map heat: peak 0.75" in shown
    st.cache_resource.clear()


def test_docs_describe_every_core_kind_with_its_fields_and_formats():
    """docs/output-kinds.md has a section per core kind giving its constructor's fields in
    order and naming each exporter format, so the reference cannot drift from the table."""
    import ast
    import dataclasses
    import re

    docs = (REPO / "docs" / "output-kinds.md").read_text()
    for name, kind in builtin_output_kinds().items():
        match = re.search(rf"^### {name}\n\n(.+?)(?=^##)", docs, re.M | re.S)
        assert match, f"docs/output-kinds.md has no section '### {name}'"
        section = match.group(1)
        cls = kind.resolve_type()
        fields = [f.name for f in dataclasses.fields(cls)]
        signature = re.match(rf"`({cls.__name__}\([^`]*\))`", section)
        assert signature, f"{name}: the section does not start with `{cls.__name__}(...)`"
        call = ast.parse(signature.group(1), mode="eval").body
        assert isinstance(call, ast.Call)
        documented = [a.id for a in call.args if isinstance(a, ast.Name)]
        assert documented + [k.arg for k in call.keywords] == fields, name
        for fmt in kind.exporters:
            assert f"`{fmt}`" in section, f"{name}: exporter '{fmt}' not described"
