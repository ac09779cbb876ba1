"""Task specs and parameter models: the contract is enforced at registration."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from vlm_core import hookimpl
from vlm_core.errors import ParameterError, PluginValidationError
from vlm_core.kinds import Capability, Kind
from vlm_core.params import parse_pairs, validate_params
from vlm_core.tasks import TaskParams, TaskSpec, param_problems, validate_spec


class Good(TaskParams):
    size: int = Field(64, ge=8, le=4096, description="Input size in pixels.")
    mode: Literal["fast", "best"] = Field("fast", description="Speed/quality trade-off.")
    labels: list[str] = Field(default_factory=list, max_length=50, description="Class filter.")
    flag: bool = Field(False, description="A switch.")


def run(inputs, params, ctx):
    return [{}]


def spec(**kw) -> TaskSpec:
    base = dict(
        id="p.t",
        title="T",
        description="D",
        domain="test",
        run=run,
        params=Good,
        outputs=(Kind.METRICS,),
    )
    base.update(kw)
    return TaskSpec(**base)


def test_a_good_spec_has_no_problems():
    assert validate_spec(spec(), "p") == []
    tracking = spec(inputs=(Kind.VIDEO,), outputs=(Kind.TRACKS, Kind.VIDEO, Kind.METRICS))
    assert validate_spec(tracking, "p") == []


def test_parameter_rules():
    class Bad(TaskParams):
        a: int = Field(1, description="no bounds")
        b: float = Field(0.5, ge=0, description="lower bound only")
        c: str = Field("x", description="unbounded string")
        d: int = Field(ge=0, le=1, description="no default")
        e: int = Field(1, ge=0, le=3)

    problems = "\n".join(param_problems(Bad))
    assert "'a' needs both bounds" in problems and "'b' needs both bounds" in problems
    assert "'c' needs max_length" in problems and "'d' has no default" in problems
    assert "'e' has no description" in problems

    class Loose(BaseModel):
        a: int = Field(1, ge=0, le=2, description="ok")

    assert "reject unknown keys" in param_problems(Loose)[0]


@pytest.mark.parametrize(
    "kw,expected",
    [
        ({"id": "Bad-Id"}, "not of the form"),
        ({"id": "other.t"}, "must start with the plugin name 'p.'"),
        ({"title": " "}, "empty title"),
        ({"outputs": ()}, "no output kinds"),
        ({"inputs": (Kind.BOXES,)}, "cannot be an input kind"),
        ({"inputs": (Kind.TRACKS,)}, "cannot be an input kind"),
        ({"outputs": ("trakcs",)}, "'trakcs' is not an output kind (one of attribution, boxes"),
        ({"run": "not a path"}, "module:function"),
        ({"memory_mb": 0}, "memory_mb"),
        ({"train": "no path"}, "train must be 'module:function'"),
        ({"capabilities": frozenset({Capability.RUN, Capability.TRAIN})}, "need a train builder"),
        ({"train": "m:build"}, "needs the 'train' capability"),
        ({"train": "m:build", "train_params": BaseModel}, "train_params must subclass"),
        ({"train_defaults": {"seed": 3}}, "train_defaults may not set 'seed'"),
        ({"train_defaults": {"device": "cuda"}}, "train_defaults may not set 'device'"),
        ({"train_defaults": {"learning_rate": 1e-4}}, "train_defaults 'learning_rate'"),
        ({"train_defaults": {"lr": -1.0}}, "train_defaults 'lr'"),
        ({"train_defaults": {"epochs": 2, "max_steps": 5}}, "give epochs or max_steps"),
    ],
)
def test_spec_problems(kw, expected):
    assert expected in "\n".join(validate_spec(spec(**kw), "p"))


def test_invalid_spec_marks_the_plugin_failed(vlm_registry):
    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register(spec(id="p.t", outputs=()))

    reg = vlm_registry({"p": Plugin()})
    assert reg.plugins["p"].status == "failed" and "no output kinds" in reg.plugins["p"].error


def test_duplicate_task_ids_fail_the_second_plugin(vlm_registry):
    class One:
        @hookimpl
        def register_tasks(self, register):
            register(spec())

    class Two:
        @hookimpl
        def register_tasks(self, register):
            register(spec())
            register(spec())

    reg = vlm_registry({"p": One()})
    assert reg.plugins["p"].status == "healthy"
    reg = vlm_registry({"p": Two()})
    assert "registered twice" in reg.plugins["p"].error


def test_strict_mode_raises_validation_errors(vlm_registry, monkeypatch):
    class Typo:
        @hookimpl
        def register_tsks(self, register):
            pass

    monkeypatch.setenv("VLM_STRICT_PLUGINS", "1")
    expected = r"plugin 'typo'.*register_tsks.*register_tasks"
    with pytest.raises(PluginValidationError, match=expected):
        vlm_registry({"typo": Typo()})


def test_params_from_strings():
    s = spec()
    params = validate_params(
        s, parse_pairs(["size=128", "mode=best", 'labels=["car"]', "flag=true"])
    )
    assert (params.size, params.mode, params.labels, params.flag) == (128, "best", ["car"], True)
    with pytest.raises(ParameterError, match=r"unknown parameter 'sise'.*did you mean 'size'"):
        validate_params(s, {"sise": "1"})
    with pytest.raises(ParameterError, match="greater than or equal to 8"):
        validate_params(s, {"size": "2"})
    with pytest.raises(ParameterError, match="expected KEY=VALUE"):
        parse_pairs(["size"])
    with pytest.raises(ParameterError, match="invalid JSON"):
        parse_pairs(["labels=[car"])
    with pytest.raises(ParameterError, match="given twice"):
        parse_pairs(["size=1", "size=2"])
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Good(size=64, extra=1)


def test_a_trainable_spec_is_valid_and_its_train_params_are_checked():
    class TrainP(TaskParams):
        epochs_hint: int = Field(1, ge=1, description="no upper bound")

    can = frozenset({Capability.RUN, Capability.TRAIN, Capability.EVAL})
    assert validate_spec(spec(train="m:build", capabilities=can), "p") == []
    problems = validate_spec(spec(train="m:build", capabilities=can, train_params=TrainP), "p")
    assert problems == [
        "task 'p.t' (train): parameter 'epochs_hint' needs both bounds (ge/gt and le/lt)"
    ]
    assert spec(train="m:build", capabilities=can).training_params is Good


def test_train_defaults_start_a_run_and_what_the_user_gives_wins():
    from vlm_core.training.api import task_settings
    from vlm_core.training.config import TrainConfig

    gan = spec(train_defaults={"max_steps": 10_000, "lr": 2e-4, "schedule": "constant"})
    assert validate_spec(gan, "p") == []
    assert task_settings(gan, {}) == {"max_steps": 10_000, "lr": 2e-4, "schedule": "constant"}
    assert task_settings(gan, {"lr": 1e-3, "batch_size": 8}) == {
        "max_steps": 10_000, "lr": 1e-3, "schedule": "constant", "batch_size": 8,
    }  # fmt: skip
    # a length the user gives replaces the default length, in either form
    assert task_settings(gan, {"epochs": 3}) == {"epochs": 3, "lr": 2e-4, "schedule": "constant"}
    # a TrainConfig counts only the fields it was built with as given
    given = TrainConfig(lr=5e-4, max_steps=7)
    assert task_settings(gan, given) == {"max_steps": 7, "lr": 5e-4, "schedule": "constant"}
    assert hash(gan)  # a mapping field does not make specs unhashable
