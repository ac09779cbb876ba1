"""Printing helpers shared by the commands: JSON for scripts, rich tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_lines=False, header_style="bold")
    for i, column in enumerate(columns):  # the last column (a reason, an error) wraps
        last = i == len(columns) - 1
        t.add_column(column, overflow="fold", no_wrap=not last, min_width=16 if last else None)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    # piped output keeps whole rows (grep-able); a terminal gets its own width
    Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200).print(t)


STATUS_STYLE = {
    "healthy": "[green]healthy[/]",
    "failed": "[red]failed[/]",
    "disabled": "[yellow]disabled[/]",
}
