"""Device choice: explicit devices must exist; `auto` picks the best one present."""

from __future__ import annotations

import pytest

from vlm_core.devices import device_report, resolve_device
from vlm_core.errors import UsageError
from vlm_core.tasks import RunContext


def test_cpu_and_auto():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda", "mps")


@pytest.mark.parametrize("bad", ["tpu", "cuda:99", "gpu0"])
def test_unavailable_devices_are_usage_errors(bad):
    with pytest.raises(UsageError):
        resolve_device(bad)


def test_run_context_resolves_the_device_lazily():
    ctx = RunContext("p.t", "p")
    assert ctx.device_used == "cpu"  # never asked: no torch import, recorded as cpu
    assert ctx.device == resolve_device("auto")
    assert ctx.device_used == ctx.device


@pytest.mark.gpu
def test_cuda_is_resolved_and_reported():
    import torch

    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:0") == "cuda:0"
    report = device_report()
    assert report["default"] == "cuda" and len(report["cuda"]) == torch.cuda.device_count()
    assert report["cuda"][0]["memory_gb"] > 1
    with pytest.raises(UsageError, match="not available"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
