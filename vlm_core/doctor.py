"""`vlm doctor`: what is installed, where, and whether it works."""

from __future__ import annotations

import os
import platform
from typing import Any

from vlm_core import __version__
from vlm_core.config import settings


def offline_state() -> dict[str, Any]:
    """Whether model hubs are reachable is not probed (that would hang offline machines); this
    reports the switches that make libraries stay offline."""
    flags = {
        k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLM_OFFLINE")
    }
    on = any(v in ("1", "true", "yes") for v in flags.values() if v)
    return {
        "offline": on,
        "reason": ", ".join(f"{k}={v}" for k, v in flags.items() if v) or "no offline flags set",
        "flags": flags,
    }


def weights_status(registry: Any) -> list[dict[str, Any]]:
    """Each task's weights: present on this machine (store, path or cache) or missing; never
    touches the network."""
    from vlm_core.weights import WeightsError, locate

    rows = []
    for spec in registry.tasks.values():
        for ref in spec.weights:
            try:
                path, problem = locate(ref, plugin=spec.plugin), None
            except WeightsError as exc:
                path, problem = None, str(exc)
            rows.append(
                {
                    "task": spec.id,
                    "name": ref.name,
                    "status": "present" if path else "missing",
                    "path": str(path) if path else None,
                    "source": ref.source,
                    "sha256": ref.sha256,
                    "problem": problem,
                }
            )
    return rows


def report() -> dict[str, Any]:
    from vlm_core.devices import device_report
    from vlm_core.plugins import get_registry

    s = settings()
    registry = get_registry()
    return {
        "core_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "config_dir": str(s.config_dir),
        "data_dir": str(s.data_dir),
        "strict_plugins": s.strict_plugins,
        "plugin_allow_list": sorted(s.plugin_allow_list)
        if s.plugin_allow_list is not None
        else None,
        "devices": device_report(),
        "plugins": [p.to_json() for p in registry.plugins.values()],
        "weights": weights_status(registry),
        "offline": offline_state(),
    }
