"""Train: start training a trainable task in the background, follow its curves live, stop it,
and use the checkpoint on the Run page.

Training goes through the same core trainer as `vlm train` (checkpoints, metrics log, report
in the output folder); the job runs on its own thread (:mod:`vlm_dashboard.training_jobs`), so
it keeps going when the page changes or the tab closes, and any session can follow it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from vlm_dashboard.forms import parameter_form, validated_params
from vlm_dashboard.serving import registry
from vlm_dashboard.state import PREFILL_KEY
from vlm_dashboard.training_jobs import TrainingJob, training_jobs
from vlm_dashboard.uploads import extract_dataset_zip

from vlm_core.errors import InputError, VLMError
from vlm_core.tasks import TaskSpec

JOB_KEY = "train.job"  # the id of the job this session follows
TASK_KEY = "train.task"
RUN_PAGE = "pages/run.py"
FOLDER, ZIP = "Folder on the server", "Upload a ZIP"


def _trainable() -> list[TaskSpec]:
    return sorted((s for s in registry().tasks.values() if s.train is not None), key=lambda s: s.id)


def _settings(spec: TaskSpec) -> dict[str, Any]:
    """The trainer settings an operator usually touches, starting from the task's
    ``train_defaults`` (the others keep the task's defaults, then the trainer's)."""
    d = spec.train_defaults
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("epochs", 1, 100_000, int(d.get("epochs") or 10),
                             help="Passes over the data.")  # fmt: skip
    batch = c2.number_input("batch size", 1, 65_536, int(d.get("batch_size", 32)),
                            help="Samples per optimizer step.")  # fmt: skip
    lr = c3.number_input("learning rate", 1e-7, 10.0, float(d.get("lr", 1e-3)), format="%.6f",
                         step=1e-4)  # fmt: skip
    seed = c4.number_input("seed", 0, 2**31 - 1, 0)
    c5, c6, c7, c8 = st.columns(4)
    device = c5.selectbox("device", ["auto", "cpu", "cuda", "mps"], help="auto: cuda, mps, cpu.")
    precision = c6.selectbox("precision", ["auto", "bf16", "fp16", "fp32"])
    ema = c7.number_input(
        "EMA decay", 0.0, 0.99999, 0.0, format="%.5f", help="0: no EMA of the weights."
    )
    patience = c8.number_input(
        "early-stopping patience", 0, 100_000, 0, help="Validations without improvement; 0: off."
    )
    return {
        "epochs": int(epochs),
        "batch_size": int(batch),
        "lr": float(lr),
        "seed": int(seed),
        "device": device,
        "precision": precision,
        "ema_decay": float(ema) or None,
        "patience": int(patience) or None,
    }


def _start_form(spec: TaskSpec) -> None:
    from vlm_core.training.api import TrainRequest, default_out

    source = st.radio("Training data", [FOLDER, ZIP], horizontal=True, key="train.source")
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
        config = _settings(spec)
        out = st.text_input("output folder", value=str(default_out(spec.id)))
        resume = st.checkbox("resume if the folder holds checkpoints", value=False)
        submitted = st.form_submit_button("Start training", type="primary")
    if not submitted:
        return
    params = validated_params(spec, raw, spec.training_params)
    if params is None:
        return
    try:
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
            out=Path(out).expanduser(),
            params=params,
            config=config,
            resume=resume,
            command=["dashboard"],
        )
        job = training_jobs().start(request, registry())
    except VLMError as exc:
        st.error(str(exc), icon="⚠️")
        return
    st.session_state[JOB_KEY] = job.id
    st.rerun()


def _curves(out: Path) -> None:
    from vlm_core.training.metrics_log import read_log

    records = read_log(out)
    train = [(r["step"], r["train_loss"]) for r in records if r.get("train_loss") is not None]
    val = [r for r in records if r.get("val_loss") is not None]
    if not train and not val:
        st.caption("No values logged yet.")
        return
    left, right = st.columns(2)
    loss = pd.DataFrame(train, columns=["step", "train_loss"]).set_index("step")
    if val:
        loss = loss.join(
            pd.DataFrame(
                [(r["step"], r["val_loss"]) for r in val], columns=["step", "val_loss"]
            ).set_index("step"),
            how="outer",
        )
    left.caption("loss")
    left.line_chart(loss)
    metric_keys = sorted({k for r in val for k in r if k.startswith("val_") and k != "val_loss"})
    if metric_keys:
        frame = pd.DataFrame(
            [{"step": r["step"], **{k: r.get(k) for k in metric_keys}} for r in val]
        ).set_index("step")
        right.caption("validation")
        right.line_chart(frame)


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
    st.progress(step / total if total else 0.0, text=f"step {step} of {total or '?'}")
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
    _curves(Path(snap["out"]))
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
    st.code(
        f"vlm eval {snap['task']} --data {snap['data']} --weights {snap['out']}\n"
        f"vlm run {snap['task']} INPUT... --param weights={snap['out']}",
        language="bash",
    )
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
