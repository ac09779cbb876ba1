"""The Run page's Explain control: the core's explain options for a task that declares explainers.

Every explainable task takes the same three options (``-p explainer=METHOD -p explain_score=true
-p n_samples=N`` on the CLI, :class:`vlm_core.explain.target.ExplainOptions`); the task's own
parameter model never declares them, so the parameter form cannot draw them. This control sits
above the form, outside it, so that choosing a method redraws the page at once and the Samples
field appears only for the methods that use it (Integrated Gradients' steps, KernelSHAP's and
LIME's perturbed samples). Its values join the form's parameters when the run is submitted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st
from vlm_dashboard.render_helpers import method_label

from vlm_core.explain.target import N_SAMPLES_MAX, N_SAMPLES_MIN
from vlm_core.tasks import TaskSpec

NONE = "none"  # the selectbox's first choice: no attribution map
#: the methods whose cost ``n_samples`` sets (Occlusion's is set by its window)
SAMPLED = frozenset({"integrated_gradients", "kernel_shap", "lime"})

METHOD_HELP = (
    "Add an attribution map to each result: which pixels (voxels) the task's answer depends "
    "on, by the chosen method. Perturbation methods (Occlusion, KernelSHAP, LIME) run the "
    "model many times per input."
)
SCORE_LABEL = "Score faithfulness (deletion/insertion vs random)"
SCORE_HELP = (
    "Also measure whether the map is right about the model (Petsiuk et al. 2018): remove the "
    "map's top pixels first and watch the explained number fall (deletion), put them back "
    "first and watch it rise (insertion), each against a random order of the pixels. About "
    "170 more forward passes per input."
)
SAMPLES_HELP = (
    "Integrated Gradients' steps, or KernelSHAP's and LIME's perturbed samples "
    f"({N_SAMPLES_MIN} to {N_SAMPLES_MAX}); empty: the method's default. More is steadier "
    "and slower."
)


def keys(task: str) -> dict[str, str]:
    """The widget keys of the control for ``task`` (one set per task, like the page's other
    per-task widgets, so a method chosen for one task never reaches another's run)."""
    return {
        "explainer": f"run.explainer.{task}",
        "explain_score": f"run.explain_score.{task}",
        "n_samples": f"run.n_samples.{task}",
    }


def prefill(spec: TaskSpec | None, params: Mapping[str, Any]) -> None:
    """Set the control to the explain options among ``params`` (a History page prefill): the
    method the run used, or none when it used none."""
    if spec is None or not spec.explainers:
        return
    method = params.get("explainer")
    named = keys(spec.id)
    st.session_state[named["explainer"]] = method if method in spec.explainers else NONE
    st.session_state[named["explain_score"]] = bool(params.get("explain_score", False))
    samples = params.get("n_samples")
    in_bounds = isinstance(samples, int) and N_SAMPLES_MIN <= samples <= N_SAMPLES_MAX
    st.session_state[named["n_samples"]] = samples if in_bounds else None


def explain_control(spec: TaskSpec) -> dict[str, Any]:
    """Draw the control when ``spec`` declares explainers; return the explain options to add
    to the run's parameters (empty when the task has none or no method is chosen)."""
    if not spec.explainers:
        return {}
    named = keys(spec.id)
    with st.container(border=True):
        left, right = st.columns(2)
        method = left.selectbox(
            "Explain with",
            [NONE, *spec.explainers],
            format_func=lambda m: "none" if m == NONE else method_label(m),
            help=METHOD_HELP,
            key=named["explainer"],
        )
        samples = None
        if method in SAMPLED:
            samples = right.number_input(
                "Samples",
                min_value=N_SAMPLES_MIN,
                max_value=N_SAMPLES_MAX,
                value=None,
                step=8,
                placeholder="the method's default",
                help=SAMPLES_HELP,
                key=named["n_samples"],
            )
        score = st.checkbox(
            SCORE_LABEL, help=SCORE_HELP, disabled=method == NONE, key=named["explain_score"]
        )
    if method == NONE:
        return {}
    options: dict[str, Any] = {"explainer": method, "explain_score": bool(score)}
    if samples is not None:
        options["n_samples"] = int(samples)
    return options
