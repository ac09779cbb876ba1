"""`vlm runs ...`: the run store."""

from __future__ import annotations

import time

import click

from vlm_core.cli.output import emit_json, table


@click.group("runs")
def runs() -> None:
    """Past runs from the run store."""


@runs.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--task", default=None, help="Only runs of this task.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(limit: int, task: str | None, as_json: bool) -> None:
    """List recent runs, newest first."""
    from vlm_core.runstore import RunStore

    records = RunStore.default().list(limit=limit, task=task)
    if as_json:
        emit_json([r.to_json() for r in records])
        return
    if not records:
        click.echo("No runs yet.")
        return
    table(
        None,
        ["run", "task", "status", "started", "ms", "inputs", "error"],
        [
            (
                r.id[:12],
                r.task,
                r.status,
                time.strftime("%m-%d %H:%M:%S", time.localtime(r.started_at)),
                f"{r.duration_ms:.0f}" if r.duration_ms is not None else "-",
                len(r.inputs),
                r.error,
            )
            for r in records
        ],
    )


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(run_id: str, as_json: bool) -> None:
    """Show one run (an id prefix is enough)."""
    from vlm_core.runstore import RunStore

    record = RunStore.default().get(run_id)
    if as_json:
        emit_json(record.to_json())
        return
    for key, value in record.to_json().items():
        click.echo(f"{key}: {value}")
