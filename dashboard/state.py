"""Data the dashboard pages show, computed without Streamlit so it can be tested directly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_core.plugins import Registry

STATUS_ICON = {"healthy": "🟢", "failed": "🔴", "disabled": "⚪"}


@dataclass(frozen=True)
class PluginCard:
    name: str
    version: str
    status: str
    error: str | None
    tasks: list[dict[str, Any]]


def plugin_cards(registry: Registry) -> list[PluginCard]:
    cards = []
    for record in sorted(registry.plugins.values(), key=lambda r: r.name):
        tasks = []
        for task_id in record.tasks:
            spec = registry.tasks.get(task_id)
            if spec is None:
                continue
            tasks.append(
                {
                    "task": spec.id,
                    "title": spec.title,
                    "domain": spec.domain,
                    "inputs": ", ".join(map(str, spec.inputs)) or "none",
                    "outputs": ", ".join(map(str, spec.outputs)),
                    "can": ", ".join(sorted(map(str, spec.capabilities))),
                    "samples": len(spec.samples),
                }
            )
        error = f"{record.stage}: {record.error}" if record.stage else record.error
        cards.append(
            PluginCard(record.name, record.version or "in-process", record.status, error, tasks)
        )
    return cards
