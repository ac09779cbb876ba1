"""The conformance check catches what it promises to catch."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from vlm_core.kinds import Kind
from vlm_core.plugins import load_registry
from vlm_core.tasks import TaskSpec, TinySettings, validate_spec
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


# ---------------------------------------------------------------------------------------------
# Training, eval and weights: a trainable task is trained with its tiny settings, evaluated,
# reloaded and run with the fresh weights; a break in any of them fails the check by name.

TRAINABLE = """
from pydantic import Field
from vlm_core import hookimpl
from vlm_core.kinds import Capability, Kind
from vlm_core.tasks import Sample, TaskParams, TaskSpec, TinySettings


class P(TaskParams):
    weights: str = Field("", max_length=4096, description="A `vlm train` output (empty: none).")


class TP(TaskParams):
    hidden: int = Field(8, ge=1, le=64, description="Hidden units.")


def write_data(folder, n=8):
    import numpy as np
    np.save(folder / "x.npy", np.random.default_rng(0).normal(size=(n, 4)).astype("float32"))


def build(data, params, ctx):
    import numpy as np
    import torch
    from torch.utils.data import TensorDataset
    from vlm_core.training import TrainSetup

    hidden = ctx.weights_card.get("hidden", params.hidden)
    {build}
    x = torch.from_numpy(np.load(data / "x.npy"))
    y = (x.sum(1) > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, 2))

    def loss(m, batch):
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    return TrainSetup(model=model, train_data=TensorDataset(x[:6], y[:6]),
                      val_data=TensorDataset(x[6:], y[6:]), loss=loss, card={{"hidden": hidden}})


def run(inputs, params, ctx):
    from vlm_core.types import Metrics
    from vlm_core.weights.trained import load_trained

    {run}
    if weights:
        trained = load_trained(weights, plugin=ctx.plugin, task=ctx.task)
        ctx.record_weights("net", trained.sha256)
    return [{{"m": Metrics({{"trained": float(bool(weights))}})}}]


@hookimpl
def register_tasks(register):
    register(TaskSpec(
        id="{name}.t", title="T", description="D", domain="test", run=run, params=P,
        train=build, train_params=TP, inputs=(), outputs=(Kind.METRICS,),
        samples=(Sample("untrained"),),
        capabilities=frozenset({{Capability.RUN, Capability.TRAIN, Capability.EVAL}}),
        tiny=TinySettings(train_data=write_data, train_params={{"hidden": 4}},
                          train_config={{"max_steps": 3, "batch_size": 2, "val_every": 3}}),
    ))
"""

GOOD_BUILD = "pass"
GOOD_RUN = "weights = params.weights"


@pytest.fixture
def make_trainable(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(name: str, build: str = GOOD_BUILD, run: str = GOOD_RUN):
        source = TRAINABLE.format(name=name, build=build, run=run)
        (tmp_path / f"{name}_plugin.py").write_text(textwrap.dedent(source))
        module = __import__(f"{name}_plugin")
        return load_registry(extra={name: module}, use_entry_points=False)

    return make


TRAINING_STEPS = [
    "trains on tiny data",
    "evaluates (vlm eval)",
    "save/load round trip",
    "runs with weights= the fresh checkpoint",
]


def test_a_trainable_task_is_trained_evaluated_reloaded_and_run_with_its_weights(
    make_trainable, vlm_home
):
    report = check_plugin("learns", registry=make_trainable("learns"))
    assert report.ok, report.problems
    checks = {c.name: c.detail for c in report.checks}
    for step in TRAINING_STEPS:
        assert f"learns.t: {step}" in checks
    assert checks["learns.t: trains on tiny data"].startswith("3 steps in ")
    assert "(as recorded in training)" in checks["learns.t: evaluates (vlm eval)"]
    assert "tensors equal" in checks["learns.t: save/load round trip"]


def test_a_broken_train_builder_fails_the_check_naming_the_task_and_step(make_trainable, vlm_home):
    build = "raise ValueError('no labels in the data')"
    report = check_plugin("nobuild", registry=make_trainable("nobuild", build=build))
    assert not report.ok
    (problem,) = report.problems  # training stops at the first failed step
    assert problem.startswith("nobuild.t: trains on tiny data: task 'nobuild.t' could not set up ")
    assert problem.endswith("ValueError: no labels in the data")


def test_a_broken_eval_fails_the_check_naming_the_task_and_step(make_trainable, vlm_home):
    build = "if ctx.purpose == 'eval': raise KeyError('architecture')"
    report = check_plugin("noeval", registry=make_trainable("noeval", build=build))
    names = [c.name for c in report.checks]
    assert "noeval.t: trains on tiny data" in names
    (problem,) = report.problems
    assert problem.startswith(
        "noeval.t: evaluates (vlm eval): task 'noeval.t' could not set up eval"
    )
    assert problem.endswith("KeyError: 'architecture'")


def test_a_weights_loader_that_ignores_weights_fails_the_check(make_trainable, vlm_home):
    run = "weights = ''  # the loader drops the weights it was given"
    report = check_plugin("noweights", registry=make_trainable("noweights", run=run))
    (problem,) = report.problems
    assert problem.startswith(
        "noweights.t: runs with weights= the fresh checkpoint: the run did not record the "
        "weights it was given"
    )


def test_a_weights_loader_that_fails_fails_the_check(make_trainable, vlm_home):
    run = "weights = params.weights and params.weights + '.missing'"
    report = check_plugin("badweights", registry=make_trainable("badweights", run=run))
    (problem,) = report.problems
    assert problem.startswith("badweights.t: runs with weights= the fresh checkpoint: ")
    assert ".missing" in problem


def test_a_trainable_task_without_tiny_training_data_fails_the_check(make_trainable, vlm_home):
    registry = make_trainable("untested")
    spec = registry.tasks["untested.t"]
    registry.tasks["untested.t"] = dataclasses.replace(spec, tiny=TinySettings())
    report = check_plugin("untested", registry=registry)
    (problem,) = report.problems
    assert problem.startswith("untested.t: trains on tiny data: declare TaskSpec(tiny=")


def test_tiny_settings_are_validated_with_the_spec():
    spec = TaskSpec(id="x.t", title="T", description="D", domain="d", run="m:f",
                    outputs=(Kind.METRICS,), tiny=TinySettings(params={"nope": 1},
                    train_config={"max_steps": 0}))  # fmt: skip
    problems = validate_spec(spec, "x")
    assert "task 'x.t': tiny.params 'nope': Extra inputs are not permitted" in problems
    assert "task 'x.t': tiny training settings need a train builder" in problems
