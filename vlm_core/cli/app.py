"""The command tree. Heavy modules are imported inside the commands that use them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from vlm_core import __version__
from vlm_core.cli.output import STATUS_STYLE, emit_json, table

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="vlm")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
def cli(debug: bool) -> None:
    """vlm: run, train and manage visual model tasks from installed plugins."""
    import logging

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@cli.command("tasks")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tasks_cmd(as_json: bool) -> None:
    """List the tasks of every healthy plugin."""
    from vlm_core.plugins import get_registry
    from vlm_core.samples import sample_keys

    specs = sorted(get_registry().tasks.values(), key=lambda s: s.id)
    if as_json:
        emit_json(
            [
                {
                    "id": s.id,
                    "title": s.title,
                    "domain": s.domain,
                    "inputs": [str(k) for k in s.inputs],
                    "outputs": [str(k) for k in s.outputs],
                    "capabilities": sorted(str(c) for c in s.capabilities),
                    "samples": sample_keys(s),
                }
                for s in specs
            ]
        )
        return
    if not specs:
        click.echo("No tasks installed. See `vlm plugins list` and `vlm plugins install`.")
        return
    table(
        None,
        ["task", "title", "inputs", "outputs", "samples (sample:NAME)"],
        [
            (
                s.id,
                s.title,
                ", ".join(map(str, s.inputs)) or "-",
                ", ".join(map(str, s.outputs)),
                ", ".join(sample_keys(s)) or "-",
            )
            for s in specs
        ],
    )


@cli.command("info")
@click.argument("task")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info_cmd(task: str, as_json: bool) -> None:
    """Show a task: description, inputs, outputs and parameters (types, bounds, defaults)."""
    from vlm_core.plugins import get_registry
    from vlm_core.samples import SCHEME, sample_key
    from vlm_core.tasks import describe_param

    spec = get_registry().task(task)
    params = [describe_param(n, f) for n, f in spec.params.model_fields.items()]
    train_params = (
        [describe_param(n, f) for n, f in spec.training_params.model_fields.items()]
        if spec.train is not None
        else []
    )
    info: dict[str, Any] = {
        "id": spec.id,
        "title": spec.title,
        "description": spec.description,
        "domain": spec.domain,
        "inputs": [str(k) for k in spec.inputs],
        "outputs": [str(k) for k in spec.outputs],
        "parameters": params,
        "train_parameters": train_params,
        "capabilities": sorted(str(c) for c in spec.capabilities),
        "notice": spec.notice,
        "weights": [w.__dict__ for w in spec.weights],
        "memory_mb": spec.memory_mb,
        "batch_size": spec.batch_size,
        "image_limits": spec.image_limits.to_json(),
        "samples": [
            {
                "name": s.name,
                "input": f"{SCHEME}{sample_key(s.name)}",
                "description": s.description,
                "files": [str(f) for f in s.files],
                "params": dict(s.params),
            }
            for s in spec.samples
        ],
    }
    if as_json:
        emit_json(info)
        return
    click.echo(f"{spec.id}: {spec.title}\n\n{spec.description}\n")
    if spec.notice:
        click.echo(f"notice: {spec.notice}\n")
    click.echo(
        f"domain: {spec.domain}   inputs: {', '.join(info['inputs']) or 'none'}   "
        f"outputs: {', '.join(info['outputs'])}   memory: ~{spec.memory_mb} MB"
    )
    click.echo(f"capabilities: {', '.join(info['capabilities'])}")
    if {"image", "video"} & set(info["inputs"]):
        click.echo(f"image sizes: {spec.image_limits.describe()}")

    def bounds(p: dict[str, Any]) -> str:
        if p["choices"]:
            return " | ".join(map(str, p["choices"]))
        return ", ".join(f"{k} {v}" for k, v in p["bounds"].items())

    for title, rows in (("parameters", params), ("training parameters", train_params)):
        if rows and (title == "parameters" or spec.train_params is not None):
            table(
                title,
                ["name", "type", "default", "bounds", "description"],
                [
                    (p["name"], p["type"], repr(p["default"]), bounds(p), p["description"])
                    for p in rows
                ],
            )
    if info["samples"]:
        click.echo(f"samples (vlm run {spec.id} {SCHEME}NAME):")
    for s in info["samples"]:
        about = s["description"] or f"'{s['name']}'"
        click.echo(f"  {s['input'][len(SCHEME) :]}: {about}")


@cli.command("run")
@click.argument("task")
@click.argument("inputs", nargs=-1)
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A task parameter; repeat for several. Lists and objects as JSON.",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for outputs, exports and provenance (nothing is written without it). A folder "
    "that holds a finished run is kept: the outputs go beside it (OUT-2, OUT-3, ...).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the finished run in --out (its whole contents) instead of writing beside it.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Inputs per task call (default: the task's own, `vlm info TASK`).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--image-format",
    type=click.Choice(["png", "jpeg"]),
    default="png",
    show_default=True,
    help="Format of exported 8-bit images (16-bit stays PNG).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse inputs that look unlike the task's training data (exit 2) instead of "
    "answering them with a warning.",
)
@click.option(
    "--preview-format",
    type=click.Choice(["jpeg", "png"]),
    default="jpeg",
    show_default=True,
    help="Format of the preview images (overlays); the data files keep --image-format.",
)
@click.option(
    "--no-preview",
    is_flag=True,
    help="Skip the preview images (overlays) and write only the results' data files.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where the task runs: this process, or a pool of Ray actors (Ray Data; the `ray` "
    "extra) that read the inputs and run the task, the outputs written here as a local run's.",
)
@click.option(
    "--address",
    default=None,
    help="With --engine ray: the Ray cluster to join (e.g. HEAD:6379, or `auto`); without it a "
    "local Ray is started with this machine's cores.",
)
@click.option(
    "--workers",
    type=int,
    default=2,
    show_default=True,
    help="With --engine ray: actors, each loading the model once.",
)
@click.option(
    "--gpus-per-worker",
    type=float,
    default=0.0,
    show_default=True,
    help="With --engine ray: GPUs each actor takes (0.5: two actors share one).",
)
@click.option(
    "--threads-per-worker",
    type=int,
    default=None,
    help="With --engine ray: torch threads of each actor (default: this process's, so the numbers "
    "are a local run's to the last digit; fewer, e.g. cores / workers, run faster on CPUs).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def run_cmd(
    task: str,
    inputs: tuple[str, ...],
    params: tuple[str, ...],
    out: Path | None,
    device: str,
    batch_size: int | None,
    seed: int,
    image_format: str,
    as_json: bool,
    overwrite: bool,
    strict: bool,
    preview_format: str,
    no_preview: bool,
    engine: str,
    address: str | None,
    workers: int,
    gpus_per_worker: float,
    threads_per_worker: int | None,
) -> None:
    """Run TASK on INPUTS (files, folders, globs, or a bundled sample as sample:NAME; `vlm info
    TASK` lists the sample names)."""
    from vlm_core.errors import UsageError
    from vlm_core.outdir import printable
    from vlm_core.params import parse_pairs
    from vlm_core.runner import RunRequest, run_task
    from vlm_core.runtime.engines import RayOptions

    if engine == "local" and (address or workers != 2 or gpus_per_worker or threads_per_worker):
        raise UsageError(
            "--address, --workers, --gpus-per-worker and --threads-per-worker go with --engine ray"
        )
    request = RunRequest(
        task=task,
        inputs=inputs,
        params=parse_pairs(params),
        out_dir=out,
        device=device,
        batch_size=batch_size,
        seed=seed,
        image_format=image_format,
        previews=not no_preview,
        preview_format=preview_format,
        overwrite=overwrite,
        origin="cli",
        strict=strict,
        engine=engine,
        ray=RayOptions(
            address=address,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            threads=threads_per_worker,
        ),
    )
    # results are exported as they come and only their summaries kept: memory stays flat
    from vlm_core.progress import ProgressDisplay

    # a bar on a terminal; in a log, a line every 10 s and 5% of the run (none in a short one)
    with ProgressDisplay(task, quiet=as_json) as display:
        outcome = run_task(
            request, progress=lambda f, m: display.update(f, info=m), keep_results=False
        )
        if display.lines:
            display.finish()
    if as_json:
        emit_json(
            {
                "run_id": outcome.run_id,
                "out_dir": str(outcome.out_dir) if outcome.out_dir else None,
                "requested_out": str(outcome.requested_out) if outcome.requested_out else None,
                "results": outcome.summaries,
                "files": [str(f) for f in outcome.files],
                "timings_ms": {k: round(v, 3) for k, v in outcome.timings_ms.items()},
                "failures": [f.to_json() for f in outcome.failures],
                "refused": [r.to_json() for r in outcome.refused],
            }
        )
        _warn_unfamiliar(outcome.summaries, task)
        _exit_on_failures(outcome.failures, outcome.refused)
        return
    from vlm_core.plugins import get_registry

    kinds = get_registry().output_kinds  # the registry the run loaded (cached)
    for summary in outcome.summaries:
        source = summary["input"] or task
        parts = [f"{name}: {kinds.line(o)}" for name, o in summary["outputs"].items()]
        click.echo(printable(f"{source}: " + "; ".join(parts)))
    spec = get_registry().tasks.get(task)
    notice = spec.notice if spec is not None else ""
    if notice:
        click.echo(f"notice: {notice}", err=True)
    where = " (no --out: nothing written)"
    if outcome.out_dir is not None:
        where = f", outputs in {printable(str(outcome.out_dir))}"
    if outcome.requested_out is not None:
        where += (
            f" (beside {printable(str(outcome.requested_out))}, which holds a finished run; "
            "--overwrite replaces it)"
        )
    failed = f", {len(outcome.failures)} input(s) failed" if outcome.failures else ""
    if outcome.refused:
        failed += f", {len(outcome.refused)} input(s) refused (--strict)"
    click.echo(
        f"run {outcome.run_id[:12]}: {len(outcome.summaries)} result(s){failed} in "
        f"{outcome.timings_ms['total_ms'] / 1000:.2f} s{where}"
    )
    _warn_unfamiliar(outcome.summaries, task)
    _exit_on_failures(outcome.failures, outcome.refused)


def _warn_unfamiliar(summaries: Sequence[dict[str, Any]], task: str) -> None:
    """One warning line on stderr per result whose input looks unlike the training data."""
    from vlm_core.familiarity import ood_warning
    from vlm_core.outdir import printable

    for summary in summaries:
        ood = summary.get("ood")
        if ood and ood.get("flagged"):
            name = Path(summary["input"]).name if summary.get("input") else task
            click.echo(printable(f"warning: {ood_warning(name, task, ood)}"), err=True)


def _exit_on_failures(failures: Sequence[Any], refused: Sequence[Any] = ()) -> None:
    """A run some inputs of which the plugin crashed on (exit 1) or that ``--strict``
    refused (exit 2): one line each on stderr (the other inputs' results are kept)."""
    from vlm_core.outdir import printable

    for failure in failures:
        click.echo(printable(f"error: {failure.input}: {failure.error}"), err=True)
    for refusal in refused:
        click.echo(printable(f"error: {refusal.error}"), err=True)
    if failures:
        raise SystemExit(1)
    if refused:
        raise SystemExit(2)


@cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor_cmd(as_json: bool) -> None:
    """Versions, devices, plugins and their health, weights present or missing, offline state."""
    from vlm_core.doctor import report

    data = report()
    if as_json:
        emit_json(data)
        return
    click.echo(f"vlm-core {data['core_version']}  python {data['python']}  ({data['platform']})")
    dev = data["devices"]
    click.echo(
        f"torch {dev['torch'] or 'not installed'}; default device {dev['default']}; "
        f"cuda devices: {len(dev['cuda'])}; mps: {dev['mps']}"
    )
    click.echo(f"home: config {data['config_dir']}, data {data['data_dir']}")
    click.echo(f"offline: {data['offline']['offline']} ({data['offline']['reason']})")
    table(
        "plugins",
        ["plugin", "version", "status", "tasks", "error"],
        [
            (p["name"], p["version"], STATUS_STYLE[p["status"]], len(p["tasks"]), p["error"])
            for p in data["plugins"]
        ],
    )
    if data["weights"]:
        table(
            "weights",
            ["task", "weights", "status", "where"],
            [
                (w["task"], w["name"], w["status"], w["path"] or w["source"])
                for w in data["weights"]
            ],
        )


@cli.command("dashboard", context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, default=8501, show_default=True)
@click.option("--host", default="localhost", show_default=True, help="Address to listen on.")
@click.option(
    "--headless/--browser", default=True, show_default=True, help="Do not open a browser window."
)
@click.option(
    "--max-upload-mb",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Largest file an operator may upload, in MB.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks in the browser (like VLM_DEBUG=1).")
@click.argument("streamlit_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def dashboard_cmd(
    ctx: click.Context,
    port: int,
    host: str,
    headless: bool,
    max_upload_mb: int,
    debug: bool,
    streamlit_args: tuple[str, ...],
) -> None:
    """Start the Streamlit dashboard (extra arguments go to `streamlit run`).

    XSRF protection stays on. Error details (tracebacks) reach the browser only with
    --debug (or `vlm --debug dashboard`, or VLM_DEBUG=1). Ctrl-C, or SIGINT / SIGTERM / SIGHUP
    to this process alone, stops the server (killed after 5 s if it does not stop).
    """
    import os
    import sys

    from vlm_core.cli.supervise import run_supervised
    from vlm_core.tasks import package_file

    env = os.environ.copy()
    env_debug = env.get("VLM_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    debug = debug or bool(ctx.find_root().params.get("debug")) or env_debug
    if debug:
        env["VLM_DEBUG"] = "1"
    app = package_file("vlm_dashboard", "app.py")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        str(headless).lower(),
        "--server.enableXsrfProtection",
        "true",
        "--server.maxUploadSize",
        str(max_upload_mb),
        "--client.showErrorDetails",
        "full" if debug else "none",
        "--browser.gatherUsageStats",
        "false",
        *streamlit_args,
    ]
    click.echo(f"vlm dashboard on http://{host}:{port}", err=True)
    raise SystemExit(run_supervised(cmd, env=env, name="the dashboard server"))


from vlm_core.cli import (  # noqa: E402
    bench_cmd,
    deploy_cmd,
    plugins_cmd,
    runs_cmd,
    train_cmd,
    weights_cmd,
)

cli.add_command(plugins_cmd.plugins)
cli.add_command(runs_cmd.runs)
cli.add_command(bench_cmd.bench)
cli.add_command(weights_cmd.weights)
cli.add_command(train_cmd.train_cmd)
cli.add_command(train_cmd.eval_cmd)
cli.add_command(deploy_cmd.export_cmd)
cli.add_command(deploy_cmd.compress_cmd)
