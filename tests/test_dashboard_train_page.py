"""The Train page through Streamlit's AppTest: the output folder the operator typed, a folder
that holds another run, the training length in the unit the task trains in, what to do with the
weights afterwards, and the live curves from the first line of ``metrics.jsonl``.

Every run here is the task's own tiny training (``TaskSpec.tiny``): a few steps on a few items.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from streamlit.testing.v1 import AppTest

from vlm_core.plugins import load_registry
from vlm_core.tasks import TaskSpec

APP = str(REPO / "dashboard" / "app.py")


@pytest.fixture(autouse=True)
def fresh_streamlit_caches(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test is a fresh 'server' (its own training jobs); VLM_DEBUG=1 turns an unexpected
    error into at.exception."""
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    monkeypatch.setenv("VLM_DEBUG", "1")
    yield
    st.cache_resource.clear()


@pytest.fixture
def with_fixture_plugins(
    monkeypatch: pytest.MonkeyPatch, fixture_site: Path, vlm_home: Path
) -> Path:
    monkeypatch.syspath_prepend(str(fixture_site))
    return vlm_home


# ---------------------------------------------------------------------------------------------
# Helpers


def healthy(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "Unexpected error" in e.value]
    return at


def errors(at: AppTest) -> str:
    return " | ".join(e.value for e in at.error)


def train_page(task: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at = healthy(at.switch_page("pages/train.py").run())
    return healthy(at.selectbox(key="train.task").set_value(task).run())


def labelled(at: AppTest, kind: str, label: str) -> Any:
    (found,) = [w for w in getattr(at, kind) if w.label == label]
    return found


def spec(task: str) -> TaskSpec:
    return load_registry().tasks[task]


def tiny_data(task: str, folder: Path) -> Path:
    """The task's tiny training data set (its ``TaskSpec.tiny`` writer)."""
    tiny = spec(task).tiny
    return tiny.resolve_train_data()(folder, **tiny.train_data_args) or folder


def fill_tiny(at: AppTest, task: str, data: Path, out: Path | None, **config: Any) -> AppTest:
    """Fill the form with the task's tiny training settings (``config`` over them): the data
    folder, the tiny task parameters, the length in steps, the batch size, the folder."""
    tiny = spec(task).tiny
    settings = {**tiny.train_config, **config}
    at = healthy(at.radio(key=f"train.unit.{task}").set_value("steps").run())
    labelled(at, "text_input", "data folder").set_value(str(data))
    for name, value in tiny.train_params.items():
        (widget,) = [
            w
            for kind in ("number_input", "selectbox", "text_input", "checkbox", "text_area")
            for w in getattr(at, kind)
            if (w.key or "") == f"train.params.{task}.{name}"
        ]
        widget.set_value(value)
    labelled(at, "number_input", "steps").set_value(settings["max_steps"])
    labelled(at, "number_input", "batch size").set_value(settings["batch_size"])
    if out is not None:
        labelled(at, "text_input", "output folder").set_value(str(out))
    return at


def start(at: AppTest) -> AppTest:
    (button,) = [b for b in at.button if b.label == "Start training"]
    return button.click().run()


def finished_job(timeout: float = 60.0) -> Any:
    from vlm_dashboard.training_jobs import training_jobs

    (job,) = training_jobs().jobs()
    deadline = time.monotonic() + timeout
    while job.running:
        assert time.monotonic() < deadline, "training did not end"
        time.sleep(0.05)
    assert job.status == "completed", job.error
    return job


def charts(at: AppTest) -> list[dict[str, Any]]:
    """The Vega-Lite specs of the page's charts."""
    return [json.loads(c.proto.spec) for c in at.get("arrow_vega_lite_chart")]


def chart_rows(chart: Any) -> Any:
    """The data of one chart as a DataFrame (step, series, value)."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    (dataset,) = chart.proto.datasets
    return convert_arrow_bytes_to_pandas_df(dataset.data.data)


# ---------------------------------------------------------------------------------------------
# Item 1: the output folder


def test_the_output_folder_typed_is_trained_into_and_an_empty_one_gets_a_new_folder(
    with_fixture_plugins, tmp_path, monkeypatch
):
    """A regression test: the field's default was a timestamp, a new one each second, so the
    folder the operator typed was dropped by the next rerun. The default changes here at every
    call, as the clock would."""
    from vlm_dashboard.training_jobs import training_jobs

    from vlm_core.training import api

    made: list[Path] = []

    def new_default(task: str) -> Path:
        made.append(with_fixture_plugins / "train" / task / f"run-{len(made)}")
        return made[-1]

    monkeypatch.setattr(api, "default_out", new_default)
    data = tiny_data("good.shapes", tmp_path / "data")
    typed = tmp_path / "my run"
    at = start(fill_tiny(train_page("good.shapes"), "good.shapes", data, typed))
    assert not errors(healthy(at))
    job = finished_job()
    assert job.out == typed and (typed / "checkpoints.json").is_file()
    report = json.loads((typed / "report.json").read_text())
    # the tiny length, given in steps (the task's own unit is epochs)
    assert report["total_steps"] == 3 and report["config"]["max_steps"] == 3
    assert report["config"]["epochs"] is None
    assert not any(p.exists() for p in made)

    labelled(at, "text_input", "output folder").set_value("")
    at = healthy(start(at))
    second = training_jobs().jobs()[0]
    assert second is not job and second.out in made  # a new folder at the start
    assert second.out.parent == with_fixture_plugins / "train" / "good.shapes"
    finished_job_of(second)
    assert (second.out / "checkpoints.json").is_file()


def finished_job_of(job: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while job.running:
        assert time.monotonic() < deadline, "training did not end"
        time.sleep(0.05)
    assert job.status == "completed", job.error
    return job


def test_a_folder_holding_another_runs_checkpoints_is_refused_unless_resumed(
    with_fixture_plugins, tmp_path
):
    from vlm_dashboard.training_jobs import training_jobs

    data = tiny_data("good.shapes", tmp_path / "data")
    out = tmp_path / "run"
    at = start(fill_tiny(train_page("good.shapes"), "good.shapes", data, out, max_steps=2))
    finished_job()

    labelled(at, "number_input", "steps").set_value(4)
    at = healthy(start(at))
    assert errors(at) == (
        f"{out} already holds checkpoints (last: step 2); tick 'resume' to continue that run "
        "or choose another output folder"
    )
    assert len(training_jobs().jobs()) == 1  # nothing started

    labelled(at, "checkbox", "resume if the folder holds checkpoints").check()
    at = healthy(start(at))
    assert not errors(at)
    resumed = finished_job_of(training_jobs().jobs()[0])
    assert resumed.snapshot()["step"] == 4
    assert "resuming from step 2 of 4" in resumed.snapshot()["messages"]
    at = healthy(at.run())
    (log,) = [c.value for c in at.code if "resuming from" in c.value]
    assert log.startswith("resuming from step 2 of 4")


def test_an_output_folder_that_is_a_file_is_refused(with_fixture_plugins, tmp_path):
    from vlm_dashboard.training_jobs import training_jobs

    data = tiny_data("good.shapes", tmp_path / "data")
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    at = healthy(start(fill_tiny(train_page("good.shapes"), "good.shapes", data, target)))
    assert errors(at) == f"output folder {target} is a file; choose a folder"
    assert training_jobs().jobs() == [] and target.read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# Item 6: the length each task trains in, and what to do with the weights


def test_the_length_field_is_in_the_unit_and_at_the_value_each_task_trains_with(vlm_home):
    """Steps for the tasks whose training defaults give steps (the art GAN, the captioner, the
    detector), epochs for the others, each at the task's default; the other settings start
    from the task's defaults too."""
    registry = load_registry()
    trainable = sorted(t for t, s in registry.tasks.items() if s.train is not None)
    assert {"art.generate", "medical.segment"} <= set(trainable)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at = healthy(at.switch_page("pages/train.py").run())
    for task in trainable:
        at = healthy(at.selectbox(key="train.task").set_value(task).run())
        defaults = registry.tasks[task].train_defaults
        steps = defaults.get("max_steps")
        unit, length = ("steps", steps) if steps else ("epochs", defaults.get("epochs", 1))
        assert at.radio(key=f"train.unit.{task}").value == unit, task
        assert labelled(at, "number_input", unit).value == length, task
        other = "epochs" if unit == "steps" else "steps"
        assert not [n for n in at.number_input if n.label == other], task
        assert labelled(at, "number_input", "learning rate").value == defaults.get("lr", 1e-3)
        assert labelled(at, "number_input", "batch size").value == defaults.get("batch_size", 32)

    at = healthy(at.selectbox(key="train.task").set_value("art.generate").run())
    at = healthy(at.radio(key="train.unit.art.generate").set_value("epochs").run())
    assert labelled(at, "number_input", "epochs").value == 1
    assert not [n for n in at.number_input if n.label == "steps"]


def test_an_emptied_length_or_a_bad_setting_is_a_one_line_error(with_fixture_plugins, tmp_path):
    from vlm_dashboard.training_jobs import training_jobs

    data = tiny_data("good.shapes", tmp_path / "data")
    at = fill_tiny(train_page("good.shapes"), "good.shapes", data, tmp_path / "o")
    labelled(at, "number_input", "steps").set_value(None)
    at = healthy(start(at))
    assert errors(at) == "give the number of steps to train for"
    labelled(at, "number_input", "steps").set_value(2)
    labelled(at, "number_input", "EMA decay").set_value(0.0)  # the bound is exclusive
    at = healthy(start(at))
    assert errors(at).startswith("bad training setting 'ema_decay' 0.0: ")
    assert training_jobs().jobs() == []


def test_a_finished_run_says_how_to_run_the_task_on_your_files_with_its_weights(
    with_fixture_plugins, tmp_path
):
    data = tiny_data("good.shapes", tmp_path / "data")
    out = tmp_path / "out"
    at = start(fill_tiny(train_page("good.shapes"), "good.shapes", data, out, max_steps=1))
    finished_job()
    at = healthy(at.run())
    assert [m.value for m in at.markdown if "weights=" in m.value] == [
        "Run good.shapes on your own image files with the trained weights (`weights=` the "
        "output folder: its best checkpoint), or re-measure:"
    ]
    assert at.code[-1].value == (
        f"vlm run good.shapes INPUT... --param weights={out}\n"
        f"vlm eval good.shapes --data {data} --weights {out}"
    )


# A trainable task that takes no input files (as art.generate): it draws one shape of each kind
# and names them with the shapes classifier trained by the fixture plugin's builder.


def _quiz(inputs: Any, params: Any, ctx: Any) -> list[dict[str, Any]]:
    import numpy as np
    import torch
    from PIL import Image, ImageDraw
    from vlm_fixture_good.shapes import CLASSES, SIZE, make_model

    from vlm_core.errors import ParameterError
    from vlm_core.types import Caption
    from vlm_core.weights.trained import load_trained

    if not params.weights:
        raise ParameterError("demo.quiz needs weights= a `vlm train` output folder")
    trained = load_trained(params.weights, plugin="demo", task="demo.quiz")
    ctx.record_weights("quiz", trained.sha256)
    model = make_model(int(trained.card.get("head_hidden", 0)))
    model.load_state_dict(trained.state_dict)
    model.eval()
    result = {}
    for label in CLASSES:
        img = Image.new("L", (SIZE, SIZE), 0)
        draw = ImageDraw.Draw(img)
        box = (8, 8, 24, 24)
        if label == "circle":
            draw.ellipse(box, fill=255)
        elif label == "square":
            draw.rectangle(box, fill=255)
        else:
            draw.polygon([(16, 8), (8, 24), (24, 24)], fill=255)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None, None]
        with torch.no_grad():
            probs = model(x).softmax(-1)[0]
        best = int(probs.argmax())
        result[label] = Caption(text=CLASSES[best], score=float(probs[best]))
    return [result]  # a task without inputs makes one result


def _quiz_plugin() -> Any:
    import types

    from pydantic import Field
    from vlm_fixture_good.plugin import ShapesTrainParams

    from vlm_core import hookimpl
    from vlm_core.kinds import Capability, Kind
    from vlm_core.tasks import TaskParams

    class QuizParams(TaskParams):
        weights: str = Field("", max_length=4096, description="A `vlm train` output folder.")

    @hookimpl
    def register_tasks(register: Any) -> None:
        register(
            TaskSpec(
                id="demo.quiz",
                title="Shape quiz",
                description="Draws a circle, a square and a triangle and names each.",
                domain="test",
                run=_quiz,
                params=QuizParams,
                inputs=(),
                outputs=(Kind.CAPTION,),
                train="vlm_fixture_good.shapes:build",
                train_params=ShapesTrainParams,
                capabilities=frozenset({Capability.RUN, Capability.TRAIN, Capability.EVAL}),
            )
        )

    module = types.ModuleType("vlm_demo_quiz")
    module.register_tasks = register_tasks  # type: ignore[attr-defined]
    return module


@pytest.fixture
def with_quiz_plugin(with_fixture_plugins: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from vlm_dashboard import serving

    plugin = _quiz_plugin()
    monkeypatch.setattr(serving, "load_registry", lambda: load_registry(extra={"demo": plugin}))
    return with_fixture_plugins


def test_a_finished_run_of_a_task_without_inputs_says_to_run_it_with_the_weights(
    with_quiz_plugin, tmp_path
):
    """A regression test: the hint said `vlm run TASK INPUT...` for a task that takes none."""
    data = tiny_data("good.shapes", tmp_path / "data")
    out = tmp_path / "quiz"
    at = train_page("demo.quiz")
    at = healthy(at.radio(key="train.unit.demo.quiz").set_value("steps").run())
    labelled(at, "text_input", "data folder").set_value(str(data))
    labelled(at, "number_input", "steps").set_value(2)
    labelled(at, "number_input", "batch size").set_value(4)
    labelled(at, "text_input", "output folder").set_value(str(out))
    at = start(at)
    finished_job()
    at = healthy(at.run())
    assert [m.value for m in at.markdown if "weights=" in m.value] == [
        "demo.quiz takes no input files: run it with the trained weights (`weights=` the output "
        "folder: its best checkpoint) to make new caption outputs, or re-measure:"
    ]
    assert at.code[-1].value == (
        f"vlm run demo.quiz --param weights={out}\nvlm eval demo.quiz --data {data} --weights {out}"
    )
    (use,) = [b for b in at.button if b.label == "Use these weights on the Run page"]
    at = healthy(use.click().run())
    at = healthy(at.switch_page("pages/run.py").run())
    assert at.selectbox(key="run.task").value == "demo.quiz"
    (weights,) = [w for w in at.text_area if (w.key or "").endswith(".weights")]
    assert weights.value == str(out)
    (run,) = [b for b in at.button if b.label == "Run"]
    at = healthy(run.click().run())
    assert "of demo.quiz: 1 result(s)" in at.success[0].value


@pytest.mark.slow
def test_a_finished_art_generate_run_says_to_generate_with_the_weights(vlm_home, tmp_path):
    """The same on the real task without inputs, with its tiny GAN (about 10 s on 2 cores)."""
    data = tiny_data("art.generate", tmp_path / "data")
    out = tmp_path / "gan"
    at = start(fill_tiny(train_page("art.generate"), "art.generate", data, out))
    finished_job(timeout=300)
    at = healthy(at.run())
    (hint,) = [m.value for m in at.markdown if "weights=" in m.value]
    assert hint.startswith("art.generate takes no input files: run it with the trained weights")
    assert "INPUT" not in at.code[-1].value
    assert at.code[-1].value.startswith(f"vlm run art.generate --param weights={out}\n")
    # the FID (hundreds) has a chart of its own, apart from the style accuracy (0-1)
    shown = [sorted(set(chart_rows(c)["series"])) for c in at.get("vega_lite_chart")]
    assert ["val_fid"] in shown and any("val_style_acc" in series for series in shown)


# ---------------------------------------------------------------------------------------------
# Item 7: the live curves


def test_the_curves_wait_for_the_first_step_then_show_it_on_the_panels_of_curves_png(
    with_fixture_plugins, tmp_path, monkeypatch
):
    """A regression test: the chart was empty until a second point was logged (a line needs
    two). Before the first step a placeholder says so; after one step every series is a point,
    the losses share a chart and the 0-1 validation values have theirs (as in curves.png)."""
    from vlm_core.training import api

    gate = threading.Event()
    real = api.train_task

    def held(*args: Any, **kwargs: Any) -> Any:  # the data and model still being prepared
        assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "train_task", held)
    data = tiny_data("good.shapes", tmp_path / "data")
    out = tmp_path / "out"
    at = fill_tiny(train_page("good.shapes"), "good.shapes", data, out, max_steps=1)
    try:
        at = healthy(start(at))
        assert [i.value for i in at.info] == [
            "Waiting for the first step… the curves start with the first line of metrics.jsonl."
        ]
        assert not at.get("vega_lite_chart")
    finally:
        gate.set()
    finished_job()
    at = healthy(at.run())
    found = at.get("vega_lite_chart")
    assert [json.loads(c.proto.spec)["mark"] for c in found] == [
        {"type": "line", "point": True}
    ] * 2
    loss, acc = (chart_rows(c) for c in found)
    assert sorted(loss["series"]) == ["train_loss", "val_loss"] and list(loss["step"]) == [1, 1]
    assert list(acc["series"]) == ["val_acc"] and list(acc["step"]) == [1]
    assert {"loss", "validation (0-1)"} <= {c.value for c in at.caption}  # curves.png's panels
    assert not [i.value for i in at.info if "Waiting" in i.value]
