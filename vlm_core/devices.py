"""Which devices exist and which one a run uses (torch is imported only when asked)."""

from __future__ import annotations

import importlib.util
from typing import Any

from vlm_core.errors import UsageError


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def resolve_device(requested: str = "auto") -> str:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must exist."""
    requested = requested.strip().lower() or "auto"
    if requested == "cpu":
        return "cpu"
    if not torch_available():
        if requested == "auto":
            return "cpu"
        raise UsageError(f"device '{requested}' needs torch, which is not installed")
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UsageError(
            f"unknown device '{requested}' (use auto, cpu, cuda, cuda:N or mps)"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        index = device.index or 0
        if index >= count:
            raise UsageError(f"device '{requested}' is not available ({count} CUDA devices found)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps' is not available on this machine")
    elif device.type != "cpu":
        raise UsageError(f"device type '{device.type}' is not supported (use cpu, cuda or mps)")
    return str(device)


def device_report() -> dict[str, Any]:
    """Devices and versions for `vlm doctor` and the dashboard's status."""
    if not torch_available():
        return {"torch": None, "cuda": [], "mps": False, "default": "cpu"}
    import torch

    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            cuda.append(
                {"index": i, "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)}
            )
    mps = getattr(torch.backends, "mps", None)
    return {
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cuda": cuda,
        "mps": bool(mps is not None and mps.is_available()),
        "default": resolve_device("auto"),
    }
