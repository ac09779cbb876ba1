"""The dashboard's Explain control on the Run page and the attribution renderer.

An in-process plugin, ``tiny``, has two tasks over a small image: ``tiny.bright`` (explainable:
a two-layer conv net with positive weights whose explained number is its mean response, so the
bright square is the evidence) and ``tiny.plain`` (the same answer, no explainers). The
renderer is also driven alone, on a volume background.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO
from PIL import Image as PILImage
from streamlit.testing.v1 import AppTest

from vlm_core import hookimpl
from vlm_core.kinds import Kind
from vlm_core.plugins import load_registry
from vlm_core.runstore import RunStore
from vlm_core.tasks import Sample, TaskSpec
from vlm_core.types import Attribution, Image, Volume

APP = str(REPO / "dashboard" / "app.py")
SIZE = 24
WHAT = "mean response of the tiny net"


@pytest.fixture(autouse=True)
def fresh_streamlit_caches(monkeypatch):
    """Each test is a fresh 'server'; VLM_DEBUG=1 turns an unexpected error into at.exception."""
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    monkeypatch.setenv("VLM_DEBUG", "1")
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    yield
    st.cache_resource.clear()


# ---------------------------------------------------------------------------------------------
# The in-process plugin

_NET: list[Any] = []


def _net() -> Any:
    """Two 3x3 convolutions with positive weights and no bias, then the mean: the answer grows
    with every bright pixel, most with the bright square."""
    if not _NET:
        import torch
        from torch import nn

        generator = torch.Generator().manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 2, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        with torch.no_grad():
            for conv in (net[0], net[2]):
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=generator))
                conv.bias.zero_()
        _NET.append(net.eval())
    return _NET[0]


def _tensor(item: Image) -> Any:
    import torch

    pixels = item.to_rgb_uint8().astype(np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


def _run(inputs, params, ctx):
    import torch

    from vlm_core.types import Text

    with torch.no_grad():
        return [{"brightness": Text(f"{float(_net()(_tensor(i))[0, 0]):.4f}")} for i in inputs]


def _explain(item, outputs, params, ctx):
    from vlm_core.explain.target import ExplainTarget

    net = _net()
    return ExplainTarget(
        forward=lambda batch: net(batch)[:, 0],
        inputs=_tensor(item),
        what=WHAT,
        background=item,
        layer=net[2],
    )


def _plugin(sample: Path) -> types.ModuleType:
    module = types.ModuleType("vlm_tiny_explain_plugin")

    @hookimpl
    def register_tasks(register):
        common: dict[str, Any] = {
            "description": "Mean response of a tiny conv net.",
            "domain": "test",
            "run": _run,
            "inputs": (Kind.IMAGE,),
            "outputs": (Kind.TEXT,),
            "samples": (Sample("square", (sample,)),),
        }
        register(
            TaskSpec(
                id="tiny.bright",
                title="Bright",
                explain=_explain,
                explainers=("gradcam", "integrated_gradients", "occlusion"),
                **common,
            )
        )
        register(TaskSpec(id="tiny.plain", title="Plain", **common))

    module.register_tasks = register_tasks  # type: ignore[attr-defined]
    return module


@pytest.fixture
def with_tiny_plugin(vlm_home, tmp_path, monkeypatch):
    from vlm_dashboard import serving

    pixels = np.random.default_rng(0).integers(0, 30, (SIZE, SIZE, 3), dtype=np.uint8)
    pixels[4:10, 12:20] = 255  # the evidence: a bright square
    sample = tmp_path / "square.png"
    PILImage.fromarray(pixels).save(sample)
    plugin = _plugin(sample)
    monkeypatch.setattr(
        serving,
        "load_registry",
        lambda: load_registry(extra={"tiny": plugin}, use_entry_points=False),
    )


# ---------------------------------------------------------------------------------------------
# Helpers


def healthy(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "Unexpected error" in e.value]
    return at


def run_page(task: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at = healthy(at.switch_page("pages/run.py").run())
    return healthy(at.selectbox(key="run.task").set_value(task).run())


def keyed(elements, prefix: str) -> list:
    return [e for e in elements if (e.key or "").startswith(prefix)]


def texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


# ---------------------------------------------------------------------------------------------
# The Explain control


def test_the_explain_control_is_shown_only_for_a_task_with_explainers(with_tiny_plugin):
    at = run_page("tiny.bright")
    method = at.selectbox(key="run.explainer.tiny.bright")
    assert method.label == "Explain with" and method.value == "none"
    assert list(method.options) == ["none", "Grad-CAM", "Integrated Gradients", "Occlusion"]
    score = at.checkbox(key="run.explain_score.tiny.bright")
    assert score.label == "Score faithfulness (deletion/insertion vs random)" and score.disabled
    assert not keyed(at.number_input, "run.n_samples")  # no method, no samples

    at = healthy(method.set_value("integrated_gradients").run())
    samples = at.number_input(key="run.n_samples.tiny.bright")
    assert (samples.label, samples.min, samples.max, samples.value) == ("Samples", 8, 4096, None)
    assert not at.checkbox(key="run.explain_score.tiny.bright").disabled
    at = healthy(at.selectbox(key="run.explainer.tiny.bright").set_value("occlusion").run())
    assert not keyed(at.number_input, "run.n_samples")  # occlusion's cost is its window

    at = healthy(at.selectbox(key="run.task").set_value("tiny.plain").run())
    assert not keyed(at.selectbox, "run.explainer") and not keyed(at.checkbox, "run.explain")


def test_a_scored_explanation_runs_and_shows_its_faithfulness(with_tiny_plugin):
    at = run_page("tiny.bright")
    at = healthy(
        at.selectbox(key="run.explainer.tiny.bright").set_value("integrated_gradients").run()
    )
    at.number_input(key="run.n_samples.tiny.bright").set_value(16)
    at.checkbox(key="run.explain_score.tiny.bright").check()
    (button,) = [b for b in at.button if b.label == "Run"]
    at = healthy(button.click().run())
    assert not at.error, texts(at.error)
    assert "of tiny.bright: 1 result(s)" in at.success[0].value

    assert [s.value for s in at.subheader] == ["brightness", "attribution"]
    captions = texts(at.caption)
    assert f"Integrated Gradients of {WHAT} · score" in captions
    (deletion, insertion) = at.metric
    assert deletion.label == "Deletion AUC (lower is better)" and "vs random" in deletion.delta
    assert insertion.label == "Insertion AUC (higher is better)" and "vs random" in insertion.delta
    # the bright square is the whole answer: removing it first beats a random order
    assert "The map ranks pixels better than a random order." in texts(at.success)
    assert any(b.label.startswith("Download attribution.npy") for b in at.get("download_button"))

    (record,) = RunStore.default().list(limit=5)
    assert record.status == "ok"
    assert record.params["explainer"] == "integrated_gradients"
    assert record.params["explain_score"] is True and record.params["n_samples"] == 16

    # History's "Run again" brings the explain options back to the control
    at = healthy(at.switch_page("pages/history.py").run())
    (rerun,) = [b for b in at.button if b.label.startswith("Run again")]
    at = healthy(rerun.click().run())
    assert at.selectbox(key="run.explainer.tiny.bright").value == "integrated_gradients"
    assert at.checkbox(key="run.explain_score.tiny.bright").value is True
    assert at.number_input(key="run.n_samples.tiny.bright").value == 16


def test_no_method_chosen_runs_without_an_attribution(with_tiny_plugin):
    at = run_page("tiny.bright")
    (button,) = [b for b in at.button if b.label == "Run"]
    at = healthy(button.click().run())
    assert [s.value for s in at.subheader] == ["brightness"]
    (record,) = RunStore.default().list(limit=5)
    assert "explainer" not in record.params


# ---------------------------------------------------------------------------------------------
# The renderer alone


def _show(outputs: dict, source: object = None) -> None:
    """The script under test (runs in AppTest's own namespace)."""
    from vlm_dashboard.renderers import render_output

    for name, output in outputs.items():
        render_output(name, output, source, key="page")


def _scores(better: bool) -> dict[str, Any]:
    curve = [1.0, 0.5, 0.2, 0.1, 0.0]
    return {
        "deletion_auc": 0.2 if better else 0.6,
        "deletion_auc_random": 0.5,
        "insertion_auc": 0.7 if better else 0.3,
        "insertion_auc_random": 0.5,
        "deletion_better_than_random": better,
        "insertion_better_than_random": better,
        "steps": 4,
        "random_orders": 3,
        "deletion_curve": curve,
        "insertion_curve": curve[::-1],
    }


def test_a_volume_attribution_opens_on_its_most_salient_slice():
    rng = np.random.default_rng(3)
    volume = Volume(array=rng.normal(0, 1, (6, 7, 9)).astype(np.float32))
    heat = np.zeros((6, 7, 9), np.float32)
    heat[2:4, 3:5, 6] = 1.0
    heat[1, 1, 2] = 0.5
    attribution = Attribution(
        heat=heat,
        values=heat.copy(),
        background=volume,
        method="occlusion",
        target="logit of class 'lesion'",
        score=2.5,
        faithfulness=_scores(better=False),
        details={"forward_passes": 40},
    )
    at = AppTest.from_function(_show, args=({"attribution": attribution},), default_timeout=30)
    at = healthy(at.run())
    (k,) = [s for s in at.slider if s.label == "Slice (k)"]
    assert (k.value, k.max) == (6, 8)
    assert "Occlusion of logit of class 'lesion' · score 2.5" in texts(at.caption)
    assert "The map ranks pixels not better than a random order." in texts(at.warning)
    assert [m.label for m in at.metric] == [
        "Deletion AUC (lower is better)",
        "Insertion AUC (higher is better)",
    ]
    assert at.metric[0].value == "0.6" and at.metric[0].delta == "+0.1 vs random 0.5"
    at = healthy(k.set_value(2).run())
    (image,) = at.image
    assert "k = 2 of 0…8 · most heat at k = 6" in str(image.proto)
    assert any(b.label == "Download attribution.npy (raw values, 6 x 7 x 9)"
               for b in at.get("download_button"))  # fmt: skip


def test_an_unscored_image_attribution_shows_the_overlay_alone():
    pixels = np.zeros((8, 10, 3), np.uint8)
    heat = np.linspace(0, 1, 80, dtype=np.float32).reshape(8, 10)
    attribution = Attribution(
        heat=heat,
        values=heat[None].repeat(2, 0)[0],
        background=Image(pixels=pixels),
        method="gradcam",
        target="logit of class 'cat'",
        score=-1.0,
    )
    at = healthy(AppTest.from_function(_show, args=({"map": attribution},)).run())
    assert not at.metric and not at.success and not at.warning
    assert "Grad-CAM of logit of class 'cat' · score -1" in texts(at.caption)
    (image,) = at.image
    assert "Grad-CAM over the input" in str(image.proto)


def test_faithfulness_verdicts_in_plain_words():
    from vlm_dashboard.render_helpers import faithfulness_curves, faithfulness_verdict

    assert faithfulness_verdict(_scores(True)) == (
        True,
        "the map ranks pixels better than a random order",
    )
    assert faithfulness_verdict(_scores(False))[1] == (
        "the map ranks pixels not better than a random order"
    )
    mixed = {**_scores(True), "insertion_better_than_random": False}
    assert faithfulness_verdict(mixed) == (
        False,
        "mixed: the map ranks pixels better than a random order on deletion but not on insertion",
    )
    curves = faithfulness_curves(_scores(True))
    assert curves["percent of pixels"] == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert faithfulness_curves({"deletion_auc": 0.1}) == {}
