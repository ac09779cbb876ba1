"""`vlm runs ...`: the run store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from vlm_core.cli.output import emit_json, table

#: How `vlm runs` prints a time: local date and time to the second (ISO 8601 order).
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def local_time(epoch: float | None) -> str:
    """``epoch`` (seconds, as the run store keeps times) as local date-time; ``-`` for none."""
    return time.strftime(TIME_FORMAT, time.localtime(epoch)) if epoch is not None else "-"


def duration(ms: float | None) -> str:
    """A run's duration for people: ``850 ms``, ``12.3 s``, ``4 min 05 s``."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    return f"{minutes} min {seconds:02d} s"


@click.group("runs")
def runs() -> None:
    """Past runs from the run store."""


@runs.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--task", default=None, help="Only runs of this task.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(limit: int, task: str | None, as_json: bool) -> None:
    """List recent runs, newest first (times in local time; --json keeps the run store's
    seconds since the epoch)."""
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
        ["run", "task", "status", "started", "took", "inputs", "error"],
        [
            (
                r.id[:12],
                r.task,
                r.status,
                local_time(r.started_at),
                duration(r.duration_ms),
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
        if key in ("started_at", "finished_at"):
            key, value = key.removesuffix("_at"), local_time(value)
        elif key == "duration_ms":
            key, value = "duration", duration(value)
        click.echo(f"{key}: {value}")
    for line in _unfamiliar_lines(record.provenance or {}, record.task):
        click.echo(line)


def _unfamiliar_lines(provenance: dict[str, Any], task: str) -> list[str]:
    """One line per input the run's results flagged as unlike the training data, and per input
    strict mode refused (from the provenance the runner stored)."""
    from vlm_core.familiarity import ood_warning

    lines = [
        f"unfamiliar: {ood_warning(Path(e['input']).name, task, e['ood'])}"
        for e in provenance.get("ood") or []
        if e.get("input") and e.get("ood") and e["ood"].get("flagged")
    ]
    return lines + [f"refused: {r['error']}" for r in provenance.get("refused") or []]
