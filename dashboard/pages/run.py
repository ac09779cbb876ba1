"""Run: pick a task, fill the form built from its parameters, give it inputs, run, look.

Inputs come from the task's bundled samples, from uploads (saved in the session's temporary
folder and checked by content first), or from an earlier run opened on the History page. The
run itself goes through the shared device queue; its results are drawn by the renderer of each
output type and its exported files can be downloaded. A result whose input looks unlike the
task's training data carries a warning at its top; with the strict switch on, such inputs are
refused instead of answered. A task that declares explainers gets an Explain control above its
form (:mod:`vlm_dashboard.explain_control`): an attribution map of each result, optionally
scored for faithfulness.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import streamlit as st
from vlm_dashboard.downloads import offer_downloads
from vlm_dashboard.errors import show_error
from vlm_dashboard.explain_control import explain_control
from vlm_dashboard.explain_control import prefill as prefill_explain
from vlm_dashboard.familiarity_notes import (
    STRICT_HELP,
    STRICT_LABEL,
    show_familiarity,
    show_refused,
)
from vlm_dashboard.forms import parameter_form, validated_params
from vlm_dashboard.renderers import render_result
from vlm_dashboard.serving import Job, device_queue, registry
from vlm_dashboard.state import PREFILL_KEY
from vlm_dashboard.uploads import SavedUploads, save_uploads, session_dir, upload_limit_bytes

from vlm_core.errors import InputError, UsageError
from vlm_core.io import probe_input
from vlm_core.kinds import Kind
from vlm_core.progress import Pace
from vlm_core.runner import RunOutcome, RunRequest
from vlm_core.tasks import Sample, TaskSpec

INITIAL_KEY = "run.initial"  # the prefill in use, with a generation number
TASK_KEY = "run.task"
JOB_KEY = "run.job"  # the job this session is waiting for
LAST_KEY = "run.last"  # the last finished run: {"task", "outcome"} or {"task", "error"}
UPLOADS_KEY = "run.uploads"  # the last upload batch: {"task", "batch": SavedUploads}
STRICT_KEY = "run.strict"  # the strict switch as last submitted, kept across tasks and forms

SAMPLE, UPLOAD, EARLIER, OWN = "sample", "upload", "earlier", "own"
SOURCE_LABELS = {
    SAMPLE: "Bundled sample",
    UPLOAD: "Upload files",
    EARLIER: "Earlier run's inputs",
    OWN: "My own parameters",  # a task without input files
}


def _take_prefill() -> None:
    """Move a History page prefill into this page's state (once)."""
    prefill = st.session_state.pop(PREFILL_KEY, None)
    if not prefill:
        return
    generation = st.session_state.get(INITIAL_KEY, {}).get("generation", 0) + 1
    st.session_state[INITIAL_KEY] = {**prefill, "generation": generation}
    st.session_state[TASK_KEY] = prefill["task"]
    prefill_explain(registry().tasks.get(prefill["task"]), prefill.get("params") or {})
    st.session_state.pop(LAST_KEY, None)


def _describe(spec: TaskSpec) -> None:
    st.caption(spec.description)
    inputs = ", ".join(str(k) for k in spec.inputs) or "no input files"
    outputs = ", ".join(str(k) for k in spec.outputs)
    st.caption(
        f"Takes {inputs} · gives {outputs} · plugin '{spec.plugin}' · "
        f"about {spec.memory_mb} MB of device memory per item"
    )


def _preview(sample: Sample, spec: TaskSpec) -> None:
    """Thumbnails of a sample's image files (probed first, like any input)."""
    if sample.description:
        st.caption(sample.description)
    if not sample.files:
        return
    if Kind.IMAGE not in spec.inputs:
        st.caption(", ".join(Path(f).name for f in sample.files))
        return
    shown = []
    for path in sample.files[:4]:
        try:
            if probe_input(Path(path), spec.inputs).kind is Kind.IMAGE:
                shown.append(str(path))
        except InputError:
            continue
    if shown:
        st.image(shown, width=160, caption=[Path(p).name for p in shown])


def _choose_inputs(spec: TaskSpec, initial: dict[str, Any] | None) -> tuple[str, Sample | None]:
    """Where the inputs come from, and the sample when it is a bundled one."""
    sources = []
    if initial and initial.get("inputs"):
        sources.append(EARLIER)
    if spec.samples:
        sources.append(SAMPLE)  # for a task without inputs, a sample is a parameter preset
    if spec.inputs:
        sources.append(UPLOAD)
    elif sources:
        sources.append(OWN)
    if not spec.inputs:
        st.caption("This task takes no input files.")
    if not sources:
        return "", None
    source = st.radio(
        "Inputs",
        sources,
        format_func=SOURCE_LABELS.__getitem__,
        horizontal=True,
        key=f"run.source.{spec.id}",
    )
    if source == EARLIER and initial:
        st.caption(f"{len(initial['inputs'])} file(s) of run {initial['run'][:8]}")
    if source != SAMPLE:
        return source, None
    names = [s.name for s in spec.samples]
    name = st.selectbox("Sample", names, key=f"run.sample.{spec.id}")
    sample = spec.samples[names.index(name)]
    _preview(sample, spec)
    return source, sample


def _form_key(spec: TaskSpec, source: str, start: dict[str, Any], generation: int) -> str:
    """A form key that changes whenever the form must start again from other values."""
    digest = hashlib.sha1(json.dumps(start, sort_keys=True, default=str).encode()).hexdigest()
    return f"run.form.{spec.id}.{source}.{generation}.{digest[:8]}"


def _inputs(
    spec: TaskSpec,
    source: str,
    sample: Sample | None,
    uploads: list[Any] | None,
    initial: dict[str, Any] | None,
) -> list[str]:
    if source == SAMPLE and sample is not None:
        return [str(f) for f in sample.files]
    if source == UPLOAD:
        batch = save_uploads(uploads or [], spec, registry().readers)
        st.session_state[UPLOADS_KEY] = {"task": spec.id, "batch": batch}
        return [str(p) for p in batch.paths]
    if source == EARLIER and initial:
        return list(initial["inputs"])
    return []


def _submit(
    spec: TaskSpec,
    raw: dict[str, Any],
    source: str,
    sample: Sample | None,
    uploads: list[Any] | None,
    initial: dict[str, Any] | None,
    strict: bool = False,
    explain: dict[str, Any] | None = None,
) -> None:
    """Validate the form and the inputs, then queue the run (with the Explain control's
    options, which the runner checks against the task's explainers)."""
    st.session_state.pop(LAST_KEY, None)
    st.session_state.pop(UPLOADS_KEY, None)
    params = validated_params(spec, raw)
    if params is None:
        return
    params.update(explain or {})
    try:
        inputs = _inputs(spec, source, sample, uploads, initial)
    except UsageError as exc:
        show_error(exc)
        return
    if source == UPLOAD and not inputs:
        return  # every file was refused: _show_uploads says why, one line each
    out_dir = session_dir() / "runs" / uuid.uuid4().hex[:12]
    request = RunRequest(spec.id, inputs=inputs, params=params, out_dir=out_dir,
                         origin="dashboard", strict=strict)  # fmt: skip
    st.session_state[JOB_KEY] = device_queue().submit_run(request, registry())


def _show_uploads(spec: TaskSpec) -> None:
    """Every refused file of the last upload batch with its reason, and which were accepted."""
    note = st.session_state.get(UPLOADS_KEY)
    if not note or note["task"] != spec.id or not note["batch"].refused:
        return
    batch: SavedUploads = note["batch"]
    for refused in batch.refused:
        st.error(f"{refused.name}: {refused.reason}", icon="⚠️")
    total = len(batch.accepted) + len(batch.refused)
    if batch.accepted:
        st.info(
            f"Accepted {len(batch.accepted)} of {total} uploaded files "
            f"({', '.join(batch.accepted)}); the run uses only these."
        )
    elif total == 1:
        st.info("The uploaded file was not accepted; nothing ran.")
    else:
        st.info(f"None of the {total} uploaded files was accepted; nothing ran.")


def _follow(job: Job) -> None:
    """Show the job's place in the queue and its progress until it ends; keep its result."""
    queue = device_queue()
    bar = st.progress(0.0, text=f"{job.label}: waiting for the device")
    shown: tuple[float, str] | None = None
    pace: Pace | None = None  # from the moment the job has the device
    while not job.future.done():
        ahead = queue.ahead_of(job)
        fraction, message = job.progress()
        if ahead:
            now = (fraction, f"{job.label}: {ahead} run(s) ahead")
        else:
            pace = pace or Pace(1.0)
            pace.update(fraction)
            now = (fraction, f"{message}  ·  {pace.text()}")
        if now != shown:
            bar.progress(now[0], text=now[1])
            shown = now
        time.sleep(0.05)
    bar.empty()
    st.session_state.pop(JOB_KEY, None)
    if job.future.cancelled():
        error: BaseException = UsageError("the run was cancelled: the server is restarting")
        st.session_state[LAST_KEY] = {"task": job.label, "error": error}
        return
    exc = job.future.exception()
    if exc is not None:
        st.session_state[LAST_KEY] = {"task": job.label, "error": exc}
    else:
        st.session_state[LAST_KEY] = {"task": job.label, "outcome": job.future.result()}


def _result_title(result: Any, index: int) -> str:
    source = getattr(result.input, "name", None)
    if not source and result.provenance.inputs:
        source = Path(result.provenance.inputs[0].path).name
    return source or f"result {index + 1}"


def _show(outcome: RunOutcome, task: str) -> None:
    total = outcome.timings_ms.get("total_ms", 0.0)
    refused = f", {len(outcome.refused)} input(s) refused" if outcome.refused else ""
    st.success(
        f"Run {outcome.run_id[:8]} of {task}: {len(outcome.results)} result(s) in "
        f"{total / 1000:.2f} s{refused}"
    )
    for failure in outcome.failures:  # inputs the plugin crashed on; the others' results follow
        st.error(f"{Path(failure.input).name}: {failure.error}", icon="🧩")
    show_refused(outcome.refused, task)  # inputs strict mode left out
    spec = registry().tasks.get(task)
    if spec is not None and spec.notice:
        st.warning(spec.notice, icon=":material/info:")
    for index, result in enumerate(outcome.results):
        with st.container(border=True):
            title = _result_title(result, index)
            st.markdown(f"**{title}**")
            # before the outputs: an answer about an unfamiliar input is read with the warning
            records = result.provenance.inputs
            name = Path(records[0].path).name if records else title  # as the CLI names it
            show_familiarity(name, task, result.ood, has_input=bool(records))
            try:
                render_result(result, key=f"run.result.{outcome.run_id}.{index}")
            except Exception as exc:  # one broken renderer must not hide the other results
                show_error(exc, doing=f"showing a result of {task}")
    if outcome.out_dir is not None:
        offer_downloads(
            Path(outcome.out_dir),
            outcome.files,
            name=f"vlm-{task}-{outcome.run_id[:8]}",
            key=f"run.download.{outcome.run_id}",
        )


def main() -> None:
    """Draw the page."""
    st.title("Run a task")
    reg = registry()
    _take_prefill()
    if not reg.tasks:
        st.info("No task is available. See the Home and Plugins pages for installed plugins.")
        return
    task_ids = sorted(reg.tasks)
    if st.session_state.get(TASK_KEY) not in task_ids:
        st.session_state.pop(TASK_KEY, None)
    task_id = st.selectbox(
        "Task",
        task_ids,
        format_func=lambda t: f"{reg.tasks[t].title}  ({t})",
        key=TASK_KEY,
    )
    spec = reg.tasks[task_id]
    _describe(spec)

    initial = st.session_state.get(INITIAL_KEY)
    if initial and initial["task"] != spec.id:
        initial = None
    source, sample = _choose_inputs(spec, initial)
    start: dict[str, Any] = {}
    if initial:
        start = dict(initial["params"])
    elif sample is not None:
        start = dict(sample.params)
    generation = initial["generation"] if initial else 0
    form_key = _form_key(spec, source, start, generation)
    explain = explain_control(spec)  # outside the form: a method redraws its options at once
    with st.form(form_key):
        raw = parameter_form(spec, key=form_key, initial=start)
        uploads = None
        if source == UPLOAD:
            limit_mb = max(1, upload_limit_bytes() // 2**20)
            uploads = st.file_uploader(
                "Files (checked by content, not by name)",
                accept_multiple_files=spec.max_inputs != 1,
                max_upload_size=limit_mb,
                # the key holds the task id (form_key): another task gets an empty uploader,
                # and files given to one task never reach a run of another
                key=f"{form_key}.uploads",
            )
            if uploads is not None and not isinstance(uploads, list):
                uploads = [uploads]
        strict = False
        if spec.inputs:  # a task without input files has nothing to refuse
            strict = st.toggle(
                STRICT_LABEL,
                value=bool(st.session_state.get(STRICT_KEY, False)),
                help=STRICT_HELP,
                key=f"{STRICT_KEY}.{form_key}",  # not form_key.NAME: a parameter may be "strict"
            )
        submitted = st.form_submit_button("Run", type="primary")
    if submitted:
        if spec.inputs:
            st.session_state[STRICT_KEY] = strict
        _submit(spec, raw, source, sample, uploads, initial, strict, explain)
    _show_uploads(spec)

    job = st.session_state.get(JOB_KEY)
    if isinstance(job, Job):
        _follow(job)
    last = st.session_state.get(LAST_KEY)
    if last and last["task"] != spec.id:
        last = None  # the last run was of another task: do not show it under this one
    if last and "error" in last:
        show_error(last["error"], doing=f"running {last['task']}")
    elif last:
        _show(last["outcome"], last["task"])


main()
