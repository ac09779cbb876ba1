"""The conformance check catches what it promises to catch."""

from __future__ import annotations

import textwrap

import pytest

from vlm_core.plugins import load_registry
from vlm_core.testing import check_plugin

PLUGIN = """
from pydantic import Field
from vlm_core import hookimpl
from vlm_core.kinds import Kind
from vlm_core.tasks import Sample, TaskParams, TaskSpec
{imports}

class P(TaskParams):
    k: int = Field(1, ge=1, le=9, description="a knob")

def run(inputs, params, ctx):
    import numpy as np
    from vlm_core.types import Metrics
    out = []
    for image in inputs:
        {body}
        out.append({{"m": Metrics({{"h": float(image.height)}})}})
    return out

@hookimpl
def register_tasks(register):
    register(TaskSpec(id="{name}.t", title="T", description="D", domain="test", run=run, params=P,
                      outputs=(Kind.METRICS,), samples=(Sample("s", (SAMPLE,)),)))
"""


@pytest.fixture
def make_plugin(tmp_path, monkeypatch, fixture_site):
    monkeypatch.syspath_prepend(str(tmp_path))
    sample = fixture_site / "vlm_fixture_good" / "square.png"

    def make(name: str, imports: str = "", body: str = "pass"):
        source = PLUGIN.format(name=name, imports=imports, body=body)
        source = source.replace("SAMPLE", repr(str(sample)))
        (tmp_path / f"{name}_plugin.py").write_text(textwrap.dedent(source))
        module = __import__(f"{name}_plugin")
        return load_registry(extra={name: module}, use_entry_points=False)

    return make


def test_a_conformant_plugin_passes(make_plugin, vlm_home):
    report = check_plugin("fine", registry=make_plugin("fine"))
    assert report.ok, report.problems
    names = [c.name for c in report.checks]
    assert "fine.t: edge input tiny-1x1-gray.png" in names and "fine.t: bad input refused" in names


def test_torch_at_import_fails_the_check(make_plugin, vlm_home):
    report = check_plugin("heavy", registry=make_plugin("heavy", imports="import torch"))
    assert not report.ok
    assert any("no heavy imports" in p and "torch" in p for p in report.problems)


def test_a_crash_on_an_edge_input_fails_the_check(make_plugin, vlm_home):
    body = "if image.height < 2: raise ValueError('image too small')"
    report = check_plugin("fragile", registry=make_plugin("fragile", body=body))
    assert report.problems == [
        "fragile.t: edge input tiny-1x1-gray.png: ValueError: image too small",
        "fragile.t: edge input line-65535x1.png: ValueError: image too small",
    ]


def test_refusing_an_edge_input_with_input_error_is_conformant(make_plugin, vlm_home):
    body = (
        "from vlm_core.errors import InputError\n"
        "        if image.height < 2: raise InputError('needs at least 2x2 pixels')"
    )
    report = check_plugin("careful", registry=make_plugin("careful", body=body))
    assert report.ok, report.problems


def test_conformance_does_not_quarantine(make_plugin, vlm_home):
    make = make_plugin("fragile2", body="raise RuntimeError('always')")
    report = check_plugin("fragile2", registry=make)
    assert not report.ok
    assert not (vlm_home / "config.json").exists()


def test_fixture_plugin_installed_by_pip_is_conformant(vlm_conformance, monkeypatch, fixture_site):
    monkeypatch.syspath_prepend(str(fixture_site))
    monkeypatch.setenv("VLM_PLUGINS", "good")
    report = vlm_conformance("good")
    assert report.ok
