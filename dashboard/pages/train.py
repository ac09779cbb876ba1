"""Train: start training a trainable task in the background, follow its curves live, stop it,
and use the checkpoint on the Run page.

Training goes through the same core trainer as `vlm train` (checkpoints, metrics log, report
in the output folder); the job runs on its own thread (:mod:`vlm_dashboard.training_jobs`), so
it keeps going when the page changes or the tab closes, and any session can follow it.
"""

from __future__ import annotations

import math
import shlex
import time
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from vlm_dashboard.forms import field_widget, parameter_form, validated_params
from vlm_dashboard.serving import registry
from vlm_dashboard.state import PREFILL_KEY
from vlm_dashboard.training_jobs import TrainingJob, training_jobs
from vlm_dashboard.uploads import extract_dataset_zip

from vlm_core.errors import InputError, ParameterError, VLMError
from vlm_core.tasks import TaskSpec

JOB_KEY = "train.job"  # the id of the job this session follows
TASK_KEY = "train.task"
RUN_PAGE = "pages/run.py"
FOLDER, ZIP = "Folder on the server", "Upload a ZIP"
STEPS, EPOCHS = "steps", "epochs"
RESUME = "resume if the folder holds checkpoints"
DEVICES = ("auto", "cpu", "cuda", "mps")
#: the trainer settings the form offers besides the length and the device, with the options
#: of their widgets (:func:`~vlm_dashboard.forms.field_widget`)
TRAINER_FIELDS: dict[str, dict[str, Any]] = {
    "batch_size": {"label": "batch size"},
    "lr": {"label": "learning rate", "step": 1e-4, "number_format": "%.6f"},
    "seed": {},
    "precision": {},
    "ema_decay": {
        "label": "EMA decay",
        "step": 1e-3,
        "number_format": "%.5f",
        "placeholder": "off",
    },
    "patience": {"label": "early-stopping patience", "placeholder": "off"},
}


def _trainable() -> list[TaskSpec]:
    return sorted((s for s in registry().tasks.values() if s.train is not None), key=lambda s: s.id)


def _start_values(spec: TaskSpec) -> dict[str, Any]:
    """Where the trainer settings start: the task's ``train_defaults`` over the trainer's."""
    from vlm_core.training.config import TrainConfig

    fields = TrainConfig.model_fields
    return {name: f.get_default() for name, f in fields.items()} | dict(spec.train_defaults)


def _length_unit(spec: TaskSpec) -> str:
    """Steps or epochs, starting from the unit of the task's default length (outside the form,
    so that changing it redraws the length field)."""
    start = _start_values(spec)
    unit = STEPS if start.get("max_steps") is not None else EPOCHS
    length = start["max_steps"] if unit == STEPS else start.get("epochs") or 1
    return str(
        st.radio(
            "train for",
            [STEPS, EPOCHS],
            index=[STEPS, EPOCHS].index(unit),
            horizontal=True,
            key=f"train.unit.{spec.id}",
            help=f"Optimizer steps or passes over the data (`vlm train --steps` or --epochs). "
            f"{spec.id} trains for {length} {unit} unless told otherwise.",
        )
    )


def _settings(spec: TaskSpec, unit: str) -> dict[str, Any]:
    """The trainer settings an operator usually touches, starting from the task's
    ``train_defaults`` (the others keep the task's defaults, then the trainer's).

    Returns:
        ``TrainConfig`` fields; the length (``max_steps`` or ``epochs``) is None when the
        operator emptied it.
    """
    from vlm_core.training.config import TrainConfig

    fields, start = TrainConfig.model_fields, _start_values(spec)
    length_field = "max_steps" if unit == STEPS else "epochs"
    length_start = start.get(length_field) or (1 if unit == EPOCHS else None)
    key = f"train.config.{spec.id}"
    values: dict[str, Any] = {}
    columns = iter(st.columns(4) + st.columns(4))
    with next(columns):
        values[length_field] = field_widget(
            length_field,
            fields[length_field],
            length_start,
            f"{key}.{length_field}",
            label=unit,
            placeholder="required",
        )
    for name, options in TRAINER_FIELDS.items():
        with next(columns):
            values[name] = field_widget(
                name, fields[name], start.get(name), f"{key}.{name}", **options
            )
    with next(columns):
        devices = list(dict.fromkeys([str(start["device"]), *DEVICES]))
        values["device"] = st.selectbox("device", devices, key=f"{key}.device",
                                        help="auto: cuda, mps, cpu.")  # fmt: skip
    return values


def _start_form(spec: TaskSpec) -> None:
    from vlm_core.training.api import TrainRequest, default_out, make_config, task_settings

    source = st.radio("Training data", [FOLDER, ZIP], horizontal=True, key="train.source")
    unit = _length_unit(spec)
    default_parent = default_out(spec.id).parent
    with st.form(f"train.form.{spec.id}"):
        if source == FOLDER:
            folder = st.text_input(
                "data folder", placeholder="/data/my-set", help="A path on the dashboard's machine."
            )
            upload = None
        else:
            folder = ""
            upload = st.file_uploader("dataset (.zip)", type=["zip"])
        st.markdown("**Task parameters**")
        raw = parameter_form(spec, key=f"train.params.{spec.id}", model=spec.training_params)
        st.markdown("**Trainer**")
        config = _settings(spec, unit)
        out = st.text_input(
            "output folder",
            key=f"train.out.{spec.id}",
            placeholder=f"{default_parent}/<start time>",
            help="Where the checkpoints, metrics.jsonl and the report go (empty: a new folder "
            "named after the start time). A folder holding another run's checkpoints is "
            "refused unless you resume it.",
        )
        resume = st.checkbox(RESUME, value=False, key=f"train.resume.{spec.id}")
        submitted = st.form_submit_button("Start training", type="primary")
    if not submitted:
        return
    params = validated_params(spec, raw, spec.training_params)
    if params is None:
        return
    try:
        if None in (config.get("max_steps", 0), config.get("epochs", 0)):
            raise ParameterError(f"give the number of {unit} to train for")
        trainer_config = make_config(task_settings(spec, config))
        if source == ZIP:
            if upload is None:
                raise InputError("no dataset uploaded: add a .zip, or give a folder")
            data = extract_dataset_zip(upload)
        else:
            if not folder.strip():
                raise InputError("no data folder given")
            data = Path(folder.strip()).expanduser()
            if not data.exists():
                raise InputError(f"no such file or folder: {data}")
        request = TrainRequest(
            task=spec.id,
            data=data,
            out=Path(out.strip()).expanduser() if out.strip() else default_out(spec.id),
            params=params,
            config=trainer_config,
            resume=resume,
            command=["dashboard"],
        )
        job = training_jobs().start(request, registry())
    except VLMError as exc:
        st.error(str(exc), icon="⚠️")
        return
    st.session_state[JOB_KEY] = job.id
    st.rerun()


def _series(records: list[dict[str, Any]], keys: list[str]) -> pd.DataFrame:
    """Long-form (step, series, value) rows of ``keys``, skipping missing and non-finite ones."""
    rows = [
        {"step": r["step"], "series": k, "value": float(r[k])}
        for r in records
        for k in keys
        if isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) and "step" in r
    ]
    return pd.DataFrame(rows, columns=["step", "series", "value"])


def _line_chart(frame: pd.DataFrame, *, unit_range: bool) -> Any:
    """A line with a point per logged step, so the first record shows at once."""
    import altair as alt

    scale = alt.Scale(domain=[0, 1]) if unit_range else alt.Scale(zero=False)
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("step:Q", title="step", axis=alt.Axis(format="d", tickMinStep=1)),
            y=alt.Y("value:Q", title=None, scale=scale, axis=alt.Axis(format="~g")),
            color=alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom")),
            tooltip=["series:N", "step:Q", alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(height=220)
    )


def _curves(out: Path, *, waiting: bool) -> None:
    """The run's ``metrics.jsonl`` from its first line on, on the panels of the report's
    ``curves.png`` (:func:`~vlm_core.training.report.curve_panels`: the losses, the 0-1
    validation values, and each larger metric such as an FID on its own axis)."""
    from vlm_core.training.metrics_log import read_log
    from vlm_core.training.report import curve_panels

    records = read_log(out)
    charts = [(title, _series(records, keys)) for title, keys in curve_panels(records)]
    charts = [(title, frame) for title, frame in charts if not frame.empty]
    if not charts:
        if waiting:
            st.info("Waiting for the first step… the curves start with the first line of "
                    "metrics.jsonl.", icon="⏳")  # fmt: skip
        else:
            st.caption("No values were logged.")
        return
    columns = st.columns(min(len(charts), 3))
    for i, (title, frame) in enumerate(charts):
        with columns[i % len(columns)]:
            st.caption(title)
            chart = _line_chart(frame, unit_range=title == "validation (0-1)")
            st.altair_chart(chart, width="stretch")


def _sample_grids(out: Path) -> None:
    """The sample grids a task's callbacks write (``OUT/samples/step-NNNNNN.png``, e.g. the GAN
    engine's ``SampleGrid``): the newest, and a slider back through the earlier ones."""
    grids = sorted((out / "samples").glob("step-*.png"))
    if not grids:
        return
    chosen = grids[-1]
    if len(grids) > 1:
        steps = [int(p.stem.split("-")[1]) for p in grids]
        step = st.select_slider(
            "sample grid at step", options=steps, value=steps[-1], key=f"train.grid.{out}"
        )
        chosen = grids[steps.index(step)]
    st.image(str(chosen), caption=f"samples at step {int(chosen.stem.split('-')[1])}")


def _show_job(job: TrainingJob) -> None:
    snap = job.snapshot()
    status, step, total = snap["status"], snap["step"], snap["total"]
    st.subheader(f"{snap['task']} · {status}")
    st.caption(f"data {snap['data']} · output {snap['out']} · job {snap['id']}")
    pace = f"  ·  {snap['pace']}" if snap["pace"] else ""
    st.progress(step / total if total else 0.0, text=f"step {step} of {total or '?'}{pace}")
    if snap["values"]:
        shown = {k: round(v, 6) for k, v in sorted(snap["values"].items())}
        st.dataframe(pd.DataFrame([shown]), hide_index=True)
    if job.running:
        st.button(
            "Stop",
            key=f"train.stop.{snap['id']}",
            on_click=job.stop,
            disabled=status == "stopping",
            help="Stops at the next step and saves a checkpoint.",
        )
    _curves(Path(snap["out"]), waiting=job.running)
    _sample_grids(Path(snap["out"]))
    if snap["error"]:
        st.error(f"Training {status}: {snap['error']}", icon="⚠️")
    if snap["messages"]:
        with st.expander("log"):
            st.code("\n".join(snap["messages"][-20:]), language=None)
    if not job.running and snap["result"] is not None:
        _finished(snap)


def _finished(snap: dict[str, Any]) -> None:
    result = snap["result"]
    best = result.get("best")
    text = f"{result['status']}: {result['step']}/{result['total_steps']} steps in "
    text += f"{result['seconds']:.1f} s"
    if best:
        text += f"; best at step {best['step']}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in sorted(best["metrics"].items())
        )
    (st.warning if result["status"] == "diverged" else st.success)(text)
    curves = Path(snap["out"]) / "curves.png"
    if curves.is_file():
        st.image(str(curves), caption="report curves (curves.png)")
    spec = registry().tasks.get(snap["task"])
    hint, commands = _how_to_use(spec, snap["task"], Path(snap["data"]), Path(snap["out"]))
    st.markdown(hint)
    st.code("\n".join(commands), language="bash")
    if spec is None or "weights" not in spec.params.model_fields:
        return
    if st.button("Use these weights on the Run page", key=f"train.use.{snap['id']}"):
        st.session_state[PREFILL_KEY] = {
            "task": spec.id,
            "params": {"weights": str(snap["out"])},
            "inputs": [],
            "run": "",
        }
        st.switch_page(RUN_PAGE)


def _kinds(kinds: tuple[Any, ...]) -> str:
    names = [str(k).replace("_", " ") for k in kinds]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def _how_to_use(spec: TaskSpec | None, task: str, data: Path, out: Path) -> tuple[str, list[str]]:
    """What to do with the trained weights, for this task: a sentence and the commands."""
    q = shlex.quote
    evaluate = f"vlm eval {task} --data {q(str(data))} --weights {q(str(out))}"
    if spec is None:
        return f"Task '{task}' is no longer installed; re-measure the weights with:", [evaluate]
    if "weights" not in spec.params.model_fields:
        return (
            f"{task}'s runs take no `weights` parameter; re-measure the checkpoint with:",
            [evaluate],
        )
    weights = "the trained weights (`weights=` the output folder: its best checkpoint)"
    if spec.inputs:
        text = f"Run {task} on your own {_kinds(spec.inputs)} files with {weights}, or re-measure:"
        return text, [f"vlm run {task} INPUT... --param weights={q(str(out))}", evaluate]
    made = f"new {_kinds(spec.outputs)} outputs" if spec.outputs else "new outputs"
    text = f"{task} takes no input files: run it with {weights} to make {made}, or re-measure:"
    return text, [f"vlm run {task} --param weights={q(str(out))}", evaluate]


def _job_label(job: TrainingJob) -> str:
    started = time.strftime("%H:%M:%S", time.localtime(job.started))
    return f"{job.task} · {job.status} · started {started}"


def main() -> None:
    st.title("Train")
    specs = _trainable()
    jobs = training_jobs().jobs()
    if not specs and not jobs:
        st.info("No installed task can train. Tasks declare it with a train builder.")
        return
    follow = st.session_state.get(JOB_KEY)
    if jobs:
        labels = {j.id: _job_label(j) for j in jobs}
        ids = list(labels)
        index = ids.index(follow) if follow in ids else 0
        chosen = st.selectbox("Training jobs (every session's)", ids, index=index,
                              format_func=labels.__getitem__)  # fmt: skip
        st.session_state[JOB_KEY] = chosen
        job = training_jobs().get(chosen)
        if job is not None:
            if job.running:
                st.fragment(run_every=1.0)(_live)(job.id)
            else:
                _show_job(job)
        st.divider()
    if specs:
        st.header("New training run")
        ids = [s.id for s in specs]
        task = st.selectbox("task", ids, key=TASK_KEY, format_func=lambda i: f"{i} — "
                            f"{registry().tasks[i].title}")  # fmt: skip
        spec = registry().tasks[task]
        st.caption(spec.description)
        _start_form(spec)


def _live(job_id: str) -> None:
    job = training_jobs().get(job_id)
    if job is None:
        return
    _show_job(job)
    if not job.running:
        st.rerun()  # the whole page: the finished job's report and buttons


main()
