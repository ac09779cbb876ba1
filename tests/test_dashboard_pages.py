"""The dashboard's pages driven through Streamlit's AppTest: run, history, plugins, system.

The fixture plugins are on sys.path (one healthy, ``good.invert``; four broken ones). Tests
that need parameters the widgets cannot bound add an in-process plugin, ``demo``.
"""

from __future__ import annotations

import gc
import io
import json
import sys
import threading
import time
import types
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from conftest import REPO
from PIL import Image
from pydantic import Field
from streamlit.testing.v1 import AppTest

from vlm_core import hookimpl
from vlm_core.config import read_user_config
from vlm_core.errors import UnknownTaskError
from vlm_core.kinds import Kind
from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest
from vlm_core.runstore import RunRecord, RunStore
from vlm_core.tasks import TaskParams, TaskSpec

APP = str(REPO / "dashboard" / "app.py")
PAGES = [
    "pages/home.py",
    "pages/run.py",
    "pages/history.py",
    "pages/train.py",
    "pages/plugins.py",
    "pages/system.py",
]
SQUARE = REPO / "tests/fixtures/plugins/vlm-fixture-good/vlm_fixture_good/square.png"


@pytest.fixture(autouse=True)
def fresh_streamlit_caches(monkeypatch):
    """Each test is a fresh 'server'. VLM_DEBUG=1 turns an unexpected error into at.exception."""
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    monkeypatch.setenv("VLM_DEBUG", "1")
    # AppTest executes the app as sys.modules["__main__"] and leaves it there, which breaks
    # later tests that start processes with the "spawn" method (they re-import __main__)
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    yield
    st.cache_resource.clear()


@pytest.fixture
def with_fixture_plugins(monkeypatch, fixture_site, vlm_home):
    monkeypatch.syspath_prepend(str(fixture_site))
    return vlm_home


# An in-process plugin whose parameters can be wrong in ways a bounded widget cannot prevent:
# an exclusive bound and a JSON list.


class EchoParams(TaskParams):
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Strictly between 0 and 1.")
    sizes: list[int] = Field([1, 2], max_length=4, description="Up to four sizes.")
    label: str = Field("hello", max_length=8, description="A short label.")
    loud: bool = Field(False, description="Shout the label.")
    mode: Literal["a", "b"] = Field("a", description="A choice.")


def _echo(inputs, params, ctx):
    from vlm_core.types import Text

    label = params.label.upper() if params.loud else params.label
    return [{"echo": Text(f"{label} {params.threshold} {params.sizes} {params.mode}")}]


demo = types.ModuleType("vlm_demo_plugin")


@hookimpl
def _register_tasks(register):
    register(
        TaskSpec(
            id="demo.echo",
            title="Echo",
            description="Echoes its parameters.",
            domain="test",
            run=_echo,
            params=EchoParams,
            inputs=(),
            outputs=(Kind.TEXT,),
        )
    )


demo.register_tasks = _register_tasks  # type: ignore[attr-defined]


@pytest.fixture
def with_demo_plugin(with_fixture_plugins, monkeypatch):
    from vlm_dashboard import serving

    monkeypatch.setattr(serving, "load_registry", lambda: load_registry(extra={"demo": demo}))


# ---------------------------------------------------------------------------------------------
# Helpers


def healthy(at: AppTest) -> AppTest:
    """The script raised nothing and showed no generic error box."""
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "Unexpected error" in e.value]
    return at


def errors(at: AppTest) -> str:
    return " | ".join(e.value for e in at.error)


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    return healthy(at.switch_page(page).run())


def run_page(task: str) -> AppTest:
    at = open_page("pages/run.py")
    return healthy(at.selectbox(key="run.task").set_value(task).run())


def widget(at: AppTest, kind: str, name: str):
    """The form widget of parameter ``name`` (form keys end with the parameter name)."""
    (found,) = [w for w in getattr(at, kind) if (w.key or "").endswith(f".{name}")]
    return found


def click_run(at: AppTest) -> AppTest:
    (button,) = [b for b in at.button if b.label == "Run"]
    return button.click().run()


def noise_png(size: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_named_png() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inside.txt", "not an image")
    return buffer.getvalue()


def runs(status: str | None = None) -> list[RunRecord]:
    return [r for r in RunStore.default().list(limit=50) if status in (None, r.status)]


# ---------------------------------------------------------------------------------------------
# Every page renders


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_fixture_plugins(with_fixture_plugins, page):
    at = open_page(page)
    assert (
        at.title[0].value
        == {
            "pages/home.py": "vlm",
            "pages/run.py": "Run a task",
            "pages/history.py": "History",
            "pages/train.py": "Train",
            "pages/plugins.py": "Plugins",
            "pages/system.py": "System",
        }[page]
    )


def test_every_page_renders_with_zero_plugins(vlm_home, monkeypatch):
    monkeypatch.setenv("VLM_PLUGINS", "")
    at = AppTest.from_file(APP, default_timeout=60).run()
    shown = {}
    for page in PAGES:
        healthy(at.switch_page(page).run())
        shown[page] = " ".join(i.value for i in at.info)
    assert "No task is available" in shown["pages/run.py"]
    assert "No runs yet" in shown["pages/history.py"]
    assert "No plugins are installed" in shown["pages/plugins.py"]
    assert "No installed task can train" in shown["pages/train.py"]


def test_system_page_reports_devices_memory_cache_and_versions(with_fixture_plugins):
    at = open_page("pages/system.py")
    labels = {m.label: m.value for m in at.metric}
    assert labels["Default device"] in ("cpu", "cuda", "mps")
    from vlm_core.runtime.cache import model_cache

    assert labels["Cached models"] == str(model_cache().stats().entries)  # the process-wide one
    assert labels["Queued runs"] == "0"
    versions = next(t.value for t in at.dataframe if "package" in t.value.columns)
    assert {"python", "vlm-core", "torch", "streamlit", "timm"} <= set(versions["package"])


# ---------------------------------------------------------------------------------------------
# Run


def test_fixture_task_runs_from_its_bundled_sample_and_renders(with_fixture_plugins):
    at = run_page("good.invert")
    assert at.radio(key="run.source.good.invert").value == "sample"
    widget(at, "number_input", "gain").set_value(2.0)
    at = healthy(click_run(at))
    assert "of good.invert: 1 result(s)" in at.success[0].value
    assert len(at.image) >= 2  # the sample's preview and the rendered output
    downloads = [d.label for d in at.get("download_button")]
    assert "Download all outputs (.zip)" in downloads and "square/inverted.png" in downloads
    (record,) = runs("ok")
    assert record.task == "good.invert" and record.params["gain"] == 2.0
    session = Path(at.session_state["vlm.session_dir"].name)
    assert Path(record.out_dir).parent == session / "runs"
    assert (Path(record.out_dir) / "square" / "inverted.png").is_file()


def test_a_result_is_not_shown_under_another_task(with_fixture_plugins):
    """Found in the browser: after a run, switching task kept showing the old task's result."""
    at = healthy(click_run(run_page("good.invert")))
    assert "of good.invert" in at.success[0].value
    at = healthy(at.selectbox(key="run.task").set_value("exits.boom").run())
    assert not at.success
    at = healthy(at.selectbox(key="run.task").set_value("good.invert").run())
    assert "of good.invert" in at.success[0].value  # and it comes back with its task


def test_bad_upload_shows_an_error_and_the_next_run_works(with_fixture_plugins):
    at = run_page("good.invert")
    at = at.radio(key="run.source.good.invert").set_value("upload").run()
    at.file_uploader[0].set_value(("photo.png", zip_named_png(), "image/png"))
    at = healthy(click_run(at))
    assert "photo.png: content is a ZIP file" in errors(at)
    uploads = Path(at.session_state["vlm.session_dir"].name) / "uploads"
    assert not [p for p in uploads.rglob("*") if p.is_file()]  # the refused batch is gone
    assert not runs()

    at.file_uploader[0].set_value(("../../my photo.png", SQUARE.read_bytes(), "image/png"))
    at = healthy(click_run(at))
    assert not at.error and "1 result(s)" in at.success[0].value
    (saved,) = [p for p in uploads.rglob("*") if p.is_file()]
    assert saved.name == "my_photo.png"
    (record,) = runs("ok")
    assert record.inputs == [str(saved)]

    folder = uploads.parent
    del at
    gc.collect()
    assert not folder.exists(), "the session's temporary folder outlived its session"


def test_upload_over_the_size_limit_is_refused(with_fixture_plugins, monkeypatch):
    monkeypatch.setenv("VLM_MAX_INPUT_BYTES", "2000")
    at = run_page("good.invert")
    at = at.radio(key="run.source.good.invert").set_value("upload").run()
    at.file_uploader[0].set_value(("big.png", noise_png(64), "image/png"))
    at = healthy(click_run(at))
    assert "big.png" in errors(at) and "over the upload limit of 2,000 bytes" in errors(at)
    assert not runs()


def test_bad_parameters_show_errors_and_the_next_run_works(with_demo_plugin):
    at = run_page("demo.echo")
    widget(at, "number_input", "threshold").set_value(0.0)
    at = healthy(click_run(at))
    assert "bad value 0.0 for parameter 'threshold' of task 'demo.echo'" in errors(at)

    widget(at, "number_input", "threshold").set_value(0.25)
    widget(at, "text_input", "sizes").set_value("[1, 2")
    at = healthy(click_run(at))
    assert "parameter 'sizes'" in errors(at) and "not valid JSON" in errors(at)

    widget(at, "text_input", "sizes").set_value('["big"]')
    at = healthy(click_run(at))
    assert "parameter 'sizes.0'" in errors(at)
    assert not runs()  # refused in the form: nothing was queued

    widget(at, "text_input", "sizes").set_value("[3]")
    widget(at, "checkbox", "loud").check()
    widget(at, "selectbox", "mode").set_value("b")
    at = healthy(click_run(at))
    assert not at.error
    (record,) = runs("ok")
    assert record.params == {
        "threshold": 0.25,
        "sizes": [3],
        "label": "hello",
        "loud": True,
        "mode": "b",
    }
    assert any("HELLO 0.25 [3] b" in str(getattr(e, "value", "")) for e in at.main)


def test_form_widgets_follow_the_parameter_model(with_demo_plugin):
    at = run_page("demo.echo")
    threshold = widget(at, "number_input", "threshold")
    assert (threshold.min, threshold.max, threshold.value) == (0.0, 1.0, 0.5)
    assert widget(at, "text_input", "label").max_chars == 8
    assert widget(at, "text_input", "sizes").value == "[1, 2]"
    assert widget(at, "checkbox", "loud").value is False
    assert widget(at, "selectbox", "mode").options == ["a", "b"]
    at = run_page("good.invert")
    steps = widget(at, "number_input", "steps")
    assert (steps.min, steps.max, steps.step) == (1, 10, 1)


def test_crashing_plugin_shows_an_error_naming_it_and_the_app_stays_usable(
    with_fixture_plugins,
):
    at = run_page("exits.boom")
    at = healthy(click_run(at))
    assert "Plugin 'exits' failed in task 'exits.boom': SystemExit(3)" in errors(at)
    assert "disabled for every user" in errors(at)  # its own sample exits too
    record = read_user_config().quarantined["exits"]
    assert record.by == "dashboard" and record.run_id and record.at

    at = healthy(at.selectbox(key="run.task").set_value("good.invert").run())
    assert "exits.boom" not in at.selectbox(key="run.task").options  # quarantined: gone
    at = healthy(click_run(at))
    assert "1 result(s)" in at.success[0].value

    at = healthy(at.switch_page("pages/plugins.py").run())
    assert "Plugin 'exits' failed at run" in errors(at)
    # who quarantined it, when, and that it is off for everyone until enabled
    (note,) = [w.value for w in at.warning if "Quarantined" in w.value]
    assert f"by a dashboard run {record.run_id[:8]}" in note and record.at[:10] in note
    assert "off for every user" in note and "vlm plugins enable exits" in note
    at = healthy(at.button(key="plugins.enable.exits").click().run())
    assert "Enabled plugin 'exits'" in at.success[0].value
    assert "exits" not in read_user_config().quarantined
    assert "Plugin 'exits'" not in errors(at)


def test_unexpected_errors_show_no_traceback_unless_debugging(with_fixture_plugins, monkeypatch):
    from vlm_dashboard import serving

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail of the server")

    monkeypatch.setattr(serving, "run_task", broken)
    monkeypatch.delenv("VLM_DEBUG")
    at = click_run(run_page("good.invert"))
    assert not at.exception
    assert "Unexpected error while running good.invert (RuntimeError)" in errors(at)
    assert "secret detail" not in errors(at)

    monkeypatch.setenv("VLM_DEBUG", "1")
    at = click_run(at)
    assert "secret detail of the server" in at.exception[0].value


# ---------------------------------------------------------------------------------------------
# Familiarity: the warning on a result whose input looks unlike the training data, strict mode
#
# The task is a test double (tests/fixtures/familiarity): it records the verdict its 'verdict'
# parameter names, as a task whose weights carry a familiarity model records the one its model
# computes; the engine itself is tested in the core and the plugins.

UNFAMILIAR = REPO / "tests/fixtures/familiarity/vlm-fixture-unfamiliar"
CAT = "chelsea.png"  # the double's bundled sample, scikit-image's photograph of a cat
FLAGGED = (
    "chelsea.png looks unlike unfamiliar.describe's training data (score 9 > 1): "
    "treat this answer with caution"
)


@pytest.fixture
def with_unfamiliar_plugin(vlm_home, monkeypatch):
    import importlib

    from vlm_dashboard import serving

    monkeypatch.syspath_prepend(str(UNFAMILIAR))
    double = importlib.import_module("vlm_fixture_unfamiliar.plugin")
    monkeypatch.setattr(
        serving,
        "load_registry",
        lambda: load_registry(extra={"unfamiliar": double}, use_entry_points=False),
    )


def flattened(node) -> list:
    """The elements under ``node`` in the order the page draws them."""
    found = [node]
    for child in getattr(node, "children", {}).values():
        found += flattened(child)
    return found


def strict_switch(at: AppTest):
    (switch,) = [t for t in at.toggle if t.label == "Refuse inputs unlike the training data"]
    return switch


def test_a_flagged_result_shows_its_warning_before_its_outputs(with_unfamiliar_plugin):
    at = healthy(click_run(run_page("unfamiliar.describe")))
    assert "1 result(s)" in at.success[0].value and not at.error
    (warning,) = [w for w in at.warning if "looks unlike" in w.value]
    assert FLAGGED in warning.value
    drawn = flattened(at.main)
    (answer,) = [e for e in drawn if "mean brightness" in str(getattr(e, "value", ""))]
    assert drawn.index(warning) < drawn.index(answer), "the warning comes after the answer"
    (record,) = runs("ok")
    assert record.provenance["ood"][0]["ood"] == {"flagged": True, "score": 9.0, "threshold": 1.0}

    at = healthy(at.switch_page("pages/history.py").run())
    shown = " | ".join(w.value for w in at.warning)
    assert "1 of 1 answered input(s) look unlike unfamiliar.describe's training data" in shown
    assert f"({CAT})" in shown
    assert FLAGGED in shown  # on the stored result too


@pytest.mark.parametrize(
    ("verdict", "note"),
    [
        ("familiar", "Familiar input: score 0.5 ≤ threshold 1 of the training data."),
        ("unchecked", "Not checked for familiarity: these weights carry no familiarity model"),
    ],
)
def test_a_familiar_or_unchecked_result_has_a_small_neutral_note(
    with_unfamiliar_plugin, verdict, note
):
    at = run_page("unfamiliar.describe")
    widget(at, "selectbox", "verdict").set_value(verdict)
    at = healthy(click_run(at))
    assert "1 result(s)" in at.success[0].value
    assert not [w for w in at.warning if "looks unlike" in w.value]
    assert any(c.value.startswith(note) for c in at.caption), [c.value for c in at.caption]


def test_a_task_without_inputs_has_no_familiarity_note_and_no_strict_switch(with_demo_plugin):
    at = run_page("demo.echo")
    assert not [t for t in at.toggle if "training data" in t.label]
    at = healthy(click_run(at))
    assert not [c for c in at.caption if "familiar" in c.value.lower()]


def test_the_strict_switch_refuses_flagged_inputs_and_answers_the_others(with_unfamiliar_plugin):
    from skimage import data

    at = run_page("unfamiliar.describe")
    assert strict_switch(at).value is False
    strict_switch(at).set_value(True)
    at = healthy(click_run(at))
    refused = (
        "looks unlike unfamiliar.describe's training data (score 9 > 1): refused in strict mode"
    )
    assert refused in errors(at) and not at.success  # the only input refused: no result
    assert [r.status for r in runs()] == ["rejected"]
    assert strict_switch(at).value is True  # it stays on for the next run

    # two uploads, one flagged (colour) and one not (grey): the grey one is answered
    at = at.radio(key="run.source.unfamiliar.describe").set_value("upload").run()
    widget(at, "selectbox", "verdict").set_value("colour")
    cat, camera = io.BytesIO(), io.BytesIO()
    Image.fromarray(data.chelsea()).save(cat, format="PNG")
    Image.fromarray(data.camera()).save(camera, format="PNG")
    at.file_uploader[0].set_value(
        [("cat.png", cat.getvalue(), "image/png"), ("camera.png", camera.getvalue(), "image/png")]
    )
    at = healthy(click_run(at))
    assert "1 result(s)" in at.success[0].value and "1 input(s) refused" in at.success[0].value
    assert [e.value for e in at.error] == [
        "cat.png looks unlike unfamiliar.describe's training data (score 9 > 1): "
        "refused in strict mode"
    ]
    assert not [w for w in at.warning if "looks unlike" in w.value]  # camera.png is familiar
    assert any(m.value == "**camera**" for m in at.markdown)  # answered
    partial = runs("partial")[0]
    assert [Path(r["input"]).name for r in partial.provenance["refused"]] == ["cat.png"]

    strict_switch(at).set_value(False)
    at = healthy(click_run(at))
    assert "2 result(s)" in at.success[0].value and not at.error
    (warning,) = [w for w in at.warning if "looks unlike" in w.value]
    assert "cat.png looks unlike" in warning.value and "camera.png" not in warning.value


# ---------------------------------------------------------------------------------------------
# History


def test_history_opens_a_past_run_and_runs_it_again(with_fixture_plugins):
    at = run_page("good.invert")
    widget(at, "number_input", "gain").set_value(2.0)
    widget(at, "number_input", "steps").set_value(3)
    healthy(click_run(at))

    at = healthy(at.switch_page("pages/history.py").run())
    table = at.dataframe[0].value
    assert list(table["task"]) == ["good.invert"] and list(table["status"]) == ["ok"]
    assert json.loads(at.json[0].value) == {"gain": 2.0, "steps": 3, "mode": "rgb"}
    assert at.image, "the exported image is shown from disk"
    assert any("stats" in m.value for m in at.markdown)

    (rerun,) = [b for b in at.button if b.label.startswith("Run again")]
    at = healthy(rerun.click().run())
    assert at.title[0].value == "Run a task"
    assert at.radio(key="run.source.good.invert").value == "earlier"
    assert widget(at, "number_input", "gain").value == 2.0
    assert widget(at, "number_input", "steps").value == 3
    # AppTest keeps requesting the page of its last switch_page(); follow the app's own switch
    at = healthy(click_run(at.switch_page("pages/run.py")))
    assert "1 result(s)" in at.success[0].value
    first, second = runs("ok")
    assert first.params == second.params and first.inputs == second.inputs


# ---------------------------------------------------------------------------------------------
# Plugins


def test_plugins_page_shows_failures_validates_and_switches_plugins(with_fixture_plugins):
    at = open_page("pages/plugins.py")
    text = errors(at)
    for name in ("broken_hook", "broken_import", "misspelled"):
        assert f"Plugin '{name}' failed" in text
    assert "frobnicate" in text

    at = healthy(at.button(key="plugins.validate.good").click().run())
    assert any("Plugin 'good' passes all" in s.value for s in at.success)
    at = healthy(at.button(key="plugins.validate.broken_hook").click().run())
    assert "Plugin 'broken_hook' fails 1 check(s)" in errors(at)

    at = healthy(at.button(key="plugins.disable.good").click().run())
    assert "good" in read_user_config().disabled
    assert any("Plugin 'good' is disabled" in w.value for w in at.warning)
    at = healthy(at.switch_page("pages/run.py").run())
    assert "good.invert" not in at.selectbox(key="run.task").options

    at = healthy(at.switch_page("pages/plugins.py").run())
    at = healthy(at.button(key="plugins.enable.good").click().run())
    assert "good" not in read_user_config().disabled
    assert not any("'good'" in w.value for w in at.warning)


# ---------------------------------------------------------------------------------------------
# Serving: one device queue for every session


def test_device_queue_runs_one_job_at_a_time_in_order():
    from vlm_dashboard.serving import DeviceQueue

    queue = DeviceQueue()
    lock = threading.Lock()
    state = {"active": 0, "peak": 0}
    order: list[int] = []
    gate = threading.Event()

    def work(i: int):
        def run(progress):
            if i == 0:
                gate.wait(5)
            with lock:
                state["active"] += 1
                state["peak"] = max(state["peak"], state["active"])
            progress(0.5, f"job {i}")
            time.sleep(0.01)
            with lock:
                state["active"] -= 1
                order.append(i)
            return i * 10

        return run

    jobs = [queue.submit(work(i), f"job {i}") for i in range(5)]
    assert [queue.ahead_of(job) for job in jobs] == [0, 1, 2, 3, 4]
    assert queue.pending() == 5
    gate.set()
    assert [job.future.result(10) for job in jobs] == [0, 10, 20, 30, 40]
    assert state["peak"] == 1 and order == [0, 1, 2, 3, 4]
    assert queue.pending() == 0 and queue.completed == 5
    assert jobs[-1].progress() == (0.5, "job 4")
    queue.shutdown()


def test_device_queue_run_raises_the_runs_error(vlm_home):
    from vlm_dashboard.serving import DeviceQueue

    queue = DeviceQueue()
    with pytest.raises(UnknownTaskError, match=r"unknown task 'nope\.task'"):
        queue.run(RunRequest("nope.task"), load_registry(), timeout=30)
    queue.shutdown()


# ---------------------------------------------------------------------------------------------
# Train


@pytest.fixture
def shapes_folder(tmp_path, fixture_site):
    sys.path.insert(0, str(fixture_site))
    from vlm_fixture_good.shapes import make_shapes

    return make_shapes(tmp_path / "shapes", per_class=20, seed=3)


def start_training(at: AppTest, data: Path | str, out: Path, epochs: int) -> AppTest:
    at = healthy(at.selectbox(key="train.task").set_value("good.shapes").run())
    (folder,) = [t for t in at.text_input if t.label == "data folder"]
    folder.set_value(str(data))
    (epochs_input,) = [n for n in at.number_input if n.label == "epochs"]
    epochs_input.set_value(epochs)
    (batch,) = [n for n in at.number_input if n.label == "batch size"]
    batch.set_value(8)
    (target,) = [t for t in at.text_input if t.label == "output folder"]
    target.set_value(str(out))
    (start,) = [b for b in at.button if b.label == "Start training"]
    return start.click().run()


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_train_page_trains_in_the_background_and_the_checkpoint_runs(
    with_fixture_plugins, shapes_folder, tmp_path
):
    from vlm_dashboard.training_jobs import training_jobs

    at = start_training(open_page("pages/train.py"), shapes_folder, tmp_path / "out", epochs=4)
    healthy(at)
    (job,) = training_jobs().jobs()
    wait_for(lambda: not job.running)
    at = healthy(at.run())
    assert job.status == "completed", job.error
    assert "completed: " in at.success[0].value and "best at step" in at.success[0].value
    assert len(at.image) == 1  # the report's curves.png (the page shows no other image)
    assert "vlm eval good.shapes" in at.code[-1].value
    (use,) = [b for b in at.button if b.label == "Use these weights on the Run page"]
    at = healthy(use.click().run())
    at = healthy(at.switch_page("pages/run.py").run())
    assert at.selectbox(key="run.task").value == "good.shapes"
    assert widget(at, "text_area", "weights").value == str(tmp_path / "out")
    at = healthy(click_run(at))
    assert "of good.shapes: 1 result(s)" in at.success[0].value


def test_train_page_stops_a_job_and_refuses_a_second_and_bad_data(
    with_fixture_plugins, shapes_folder, tmp_path
):
    from vlm_dashboard.training_jobs import training_jobs

    at = start_training(open_page("pages/train.py"), tmp_path / "missing", tmp_path / "x", 2)
    assert "no such file or folder" in errors(healthy(at))
    assert training_jobs().jobs() == []

    at = start_training(at, shapes_folder, tmp_path / "long", epochs=10_000)
    (job,) = training_jobs().jobs()
    wait_for(lambda: job.snapshot()["step"] > 0)
    again = start_training(at, shapes_folder, tmp_path / "other", epochs=1)
    assert "already running" in errors(healthy(again))
    at = healthy(again.run())
    (stop,) = [b for b in at.button if b.label == "Stop"]
    stop.click().run()
    wait_for(lambda: not job.running)
    assert job.status == "stopped"
    from vlm_core.training import find_checkpoint

    saved = find_checkpoint(tmp_path / "long")
    assert saved is not None and saved.step == job.snapshot()["step"]


def test_train_page_shows_the_sample_grids_of_a_gan_run(tmp_path):
    from vlm_art.styles import write_dataset
    from vlm_dashboard.training_jobs import training_jobs

    data = write_dataset(tmp_path / "data", 4, size=16, seed=3, styles=("circles", "stripes"))
    at = open_page("pages/train.py")
    at = healthy(at.selectbox(key="train.task").set_value("art.generate").run())
    (folder,) = [t for t in at.text_input if t.label == "data folder"]
    folder.set_value(str(data))
    for name, value in (("image_size", 16), ("width", 8), ("classifier_steps", 2)):
        widget(at, "number_input", name).set_value(value)
    (steps,) = [n for n in at.number_input if n.label == "steps"]  # the task trains in steps
    steps.set_value(4)
    (batch,) = [n for n in at.number_input if n.label == "batch size"]
    batch.set_value(2)
    (target,) = [t for t in at.text_input if t.label == "output folder"]
    target.set_value(str(tmp_path / "gan"))
    (start,) = [b for b in at.button if b.label == "Start training"]
    at = healthy(start.click().run())
    (job,) = training_jobs().jobs()
    wait_for(lambda: not job.running)
    at = healthy(at.run())
    assert job.status == "completed", job.error
    grids = sorted((tmp_path / "gan" / "samples").glob("step-*.png"))
    assert grids, "the GAN's SampleGrid callback wrote no grid"
    shown = [im for im in at.image if "samples at step" in str(im.proto)]
    assert shown and f"samples at step {int(grids[-1].stem[5:])}" in str(shown[0].proto)


def _builtin_tasks() -> list[str]:
    """Tasks of the built-in plugins under plugins/ (installed by the set-up)."""
    from conftest import builtin_plugins

    registry = load_registry()
    names = builtin_plugins()
    return sorted(t for t, spec in registry.tasks.items() if spec.plugin in names)


@pytest.mark.parametrize("task", _builtin_tasks())
def test_every_builtin_task_runs_from_its_bundled_sample_and_renders(vlm_home, task):
    at = run_page(task)
    assert at.radio(key=f"run.source.{task}").value == "sample"
    at = healthy(click_run(at))
    assert f"of {task}: " in at.success[0].value, errors(at)
    assert not at.error, errors(at)
    spec = load_registry().tasks[task]
    if spec.notice:
        assert spec.notice in " ".join(w.value for w in at.warning)


def test_a_dicom_series_uploaded_as_files_runs_as_one_volume(vlm_home, tmp_path):
    """Several DICOM files uploaded together are one input: the series folder, one volume;
    its DICOM SEG (a File output) is offered as a download."""
    import copy

    import pydicom
    from conftest import builtin_plugins
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    if "medical" not in builtin_plugins():
        pytest.fail("the medical plugin (plugins/medical) is not installed: run scripts/setup.sh")
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    uid, z = generate_uid(), float(source.ImagePositionPatient[2])
    files = []
    for k in range(4):
        ds = copy.deepcopy(source)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [*source.ImagePositionPatient[:2], z + 2.0 * k]
        buffer = io.BytesIO()
        ds.save_as(buffer)
        files.append((f"IM{k:04d}", buffer.getvalue(), "application/dicom"))
    at = run_page("medical.segment")
    at = at.radio(key="run.source.medical.segment").set_value("upload").run()
    at.file_uploader[0].set_value(files)
    widget(at, "checkbox", "dicom_seg").set_value(True)
    at = healthy(click_run(at))
    assert "of medical.segment: 1 result(s)" in at.success[0].value, errors(at)
    labels = [str(b.proto.label) for b in at.get("download_button")]
    assert "Download dicom_seg.seg.dcm" in labels, labels
    (record,) = runs("ok")
    (folder,) = record.inputs
    assert Path(folder).name == "dicom-files"
    assert sorted(p.name for p in Path(folder).iterdir()) == [f"IM{k:04d}" for k in range(4)]


def test_the_driving_video_sample_runs_and_shows_its_tracks(vlm_home):
    """A video sample: the tracks render as metrics, a frame slider over the input video's
    frames with the boxes drawn, and the table of tracks."""
    from conftest import builtin_plugins

    if "driving" not in builtin_plugins():
        pytest.fail("the driving plugin (plugins/driving) is not installed: run scripts/setup.sh")
    at = run_page("driving.detect")
    at = at.selectbox(key="run.sample.driving.detect").set_value("generated drive (2 s)").run()
    at = healthy(click_run(at))
    assert "of driving.detect: 1 result(s)" in at.success[0].value, errors(at)
    assert not at.error, errors(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Frames"] == "25" and int(metrics["Tracks"]) > 0
    (slider,) = [s for s in at.slider if s.label == "Frame"]
    at = healthy(slider.set_value(12).run())
    shown = [im for im in at.image if "frame 13 / 25" in str(im.proto)]
    assert shown and "no input video" not in str(shown[0].proto)
    assert at.dataframe, "the table of tracks"


def test_a_kitti_folder_uploaded_as_a_zip_shows_distances_points_and_a_top_view(vlm_home):
    """issue 29: a camera + LiDAR scene folder in KITTI's layout, uploaded as a ZIP (the form a
    browser uploads a folder in), runs each frame and renders the boxes labelled with their
    distances, the points on the image and the bird's-eye view, with the table of objects."""
    import zipfile

    from conftest import builtin_plugins

    if "driving" not in builtin_plugins():
        pytest.fail("the driving plugin (plugins/driving) is not installed: run scripts/setup.sh")
    sample = REPO / "plugins" / "driving" / "vlm_driving" / "samples" / "kitti"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for folder, suffix in (("velodyne", ".bin"), ("image_2", ".png"), ("calib", ".txt")):
            for frame in ("000000", "000001"):
                path = sample / folder / f"{frame}{suffix}"
                archive.write(path, f"scene/{folder}/{frame}{suffix}")
    at = run_page("driving.fuse")
    at = at.radio(key="run.source.driving.fuse").set_value("upload").run()
    at.file_uploader[0].set_value([("scene.zip", buffer.getvalue(), "application/zip")])
    at = healthy(click_run(at))
    assert "of driving.fuse: 2 result(s)" in at.success[0].value, errors(at)
    assert not at.error and not at.warning, errors(at)
    captions = [str(im.proto) for im in at.image]
    assert any("objects and distances" in c for c in captions)
    assert any("eye view" in c for c in captions)  # bird's-eye, its quote escaped
    assert any("LiDAR points on the image" in c for c in captions)
    tables = [frame.value for frame in at.dataframe if "distance_m" in frame.value]
    assert tables, "the table of objects"
    distances = tables[0]["distance_m"].dropna()
    assert len(distances) >= 3 and ((distances > 2) & (distances < 80)).all()
    (record,) = runs("ok")
    assert [Path(p).relative_to(Path(p).parents[3]).as_posix() for p in record.inputs] == [
        "scene-files/scene/velodyne/000000.bin",
        "scene-files/scene/velodyne/000001.bin",
    ]
