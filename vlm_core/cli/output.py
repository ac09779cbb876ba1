"""Printing helpers shared by the commands: JSON for scripts, rich tables for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    Console(soft_wrap=False).print(t)


STATUS_STYLE = {
    "healthy": "[green]healthy[/]",
    "failed": "[red]failed[/]",
    "disabled": "[yellow]disabled[/]",
}
