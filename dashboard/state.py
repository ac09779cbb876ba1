"""Data the dashboard pages show, computed without Streamlit so it can be tested directly."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from vlm_core.plugins import Registry
from vlm_core.runstore import RunRecord

STATUS_ICON = {"healthy": "🟢", "failed": "🔴", "disabled": "⚪"}

#: Session-state key through which the History page hands a run to the Run page:
#: ``{"task": id, "params": {...}, "inputs": [paths], "run": run id}``.
PREFILL_KEY = "vlm.prefill"


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


# ---------------------------------------------------------------------------------------------
# History

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def run_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One table row per run, newest first as the store lists them."""
    rows = []
    for r in records:
        started = datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M:%S")
        rows.append(
            {
                "run": r.id[:8],
                "task": r.task,
                "status": r.status,
                "started": started,
                "seconds": None if r.duration_ms is None else round(r.duration_ms / 1000, 2),
                "inputs": len(r.inputs),
                "error": r.error or "",
            }
        )
    return rows


@dataclass(frozen=True)
class StoredResult:
    """One exported result found on disk: its folder, its ``result.json`` and its images."""

    item: str
    folder: Path
    summary: dict[str, Any]
    images: list[Path]


def stored_results(out_dir: str | Path | None) -> list[StoredResult]:
    """The results a run exported under ``out_dir`` (empty when the folder is gone)."""
    if not out_dir:
        return []
    root = Path(out_dir)
    if not root.is_dir():
        return []
    found = []
    for summary_path in sorted(root.glob("*/result.json")):
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        folder = summary_path.parent
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        found.append(StoredResult(folder.name, folder, summary, images))
    return found


def rerun_inputs(record: RunRecord) -> list[str]:
    """The input files of ``record`` if every one still exists, else an empty list."""
    paths = [str(p) for p in record.inputs]
    return paths if paths and all(Path(p).is_file() for p in paths) else []


# ---------------------------------------------------------------------------------------------
# System

VERSIONED = ("vlm-core", "torch", "torchvision", "timm", "open_clip_torch", "monai", "streamlit")


def versions() -> dict[str, str]:
    """Versions of Python and of the packages the framework builds on."""
    from importlib.metadata import PackageNotFoundError, version

    from vlm_core import __version__

    out = {"python": platform.python_version()}
    for name in VERSIONED:
        if name == "vlm-core":
            out[name] = __version__
            continue
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def host_memory() -> dict[str, float]:
    """Host memory in GiB: total, available, and what this server process holds."""
    import psutil

    vm = psutil.virtual_memory()
    rss = psutil.Process().memory_info().rss
    gib = 2**30
    return {
        "total_gb": round(vm.total / gib, 1),
        "available_gb": round(vm.available / gib, 1),
        "used_percent": float(vm.percent),
        "process_gb": round(rss / gib, 2),
    }


def cuda_memory() -> list[dict[str, Any]]:
    """Per CUDA device: memory this server holds and, on devices it has used, what is free.

    Creates no CUDA context: free memory is asked only of devices this process already uses.
    """
    import torch

    rows = []
    for index in range(torch.cuda.device_count()):
        row: dict[str, Any] = {
            "device": f"cuda:{index}",
            "allocated_gb": round(torch.cuda.memory_allocated(index) / 2**30, 2),
            "reserved_gb": round(torch.cuda.memory_reserved(index) / 2**30, 2),
        }
        if torch.cuda.is_initialized() and torch.cuda.memory_reserved(index) > 0:
            free, total = torch.cuda.mem_get_info(index)
            row["free_gb"] = round(free / 2**30, 1)
            row["total_gb"] = round(total / 2**30, 1)
        rows.append(row)
    return rows
