"""Where a run's batches run: the engines `vlm run --engine` names, and the options of Ray's.

``local`` is the run's own batch loop (:func:`vlm_core.runner.run_task`); ``ray`` is a pool of
Ray actors (:mod:`vlm_core.runtime.ray_engine`). The runner finds an engine's results function
in :data:`ENGINES` by its ``"module:function"`` name, imported only when the engine is used,
so a run without Ray imports nothing of it (and the engine's module may build on the runner).
This module is light: the standard library only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vlm_core.errors import UsageError

#: the install line a run on Ray without Ray is refused with
RAY_EXTRA = "pip install 'vlm-core[ray]'"

#: engine → the "module:function" that yields a run's results (None: the runner's own loop);
#: called as ``function(spec, probes, request, base, state)``
ENGINES: dict[str, str | None] = {
    "local": None,
    "ray": "vlm_core.runtime.ray_engine:run_results",
}


@dataclass(frozen=True)
class RayOptions:
    """How a run uses Ray: the cluster to join (None: start a local one with this machine's
    cores), the number of actors and the GPUs each one takes (fractions share a GPU)."""

    address: str | None = None
    workers: int = 2
    gpus_per_worker: float = 0.0
    #: torch threads of each actor; None: the driver's, so that on machines like the driver's
    #: the numbers are a local run's to the last digit (the order of a convolution's sums
    #: depends on the thread count; Ray alone would give each actor one thread)
    threads: int | None = None

    def check(self) -> None:
        if self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads-per-worker must be at least 1, got {self.threads}")


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or a :class:`UsageError` naming the extra."""
    try:
        import ray
        import ray.data  # Ray Data is a separate install: ray[data]
    except ImportError:
        raise UsageError(f"--engine ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


def check_engine(name: str, ray: RayOptions) -> None:
    """Refuse an unknown engine, bad Ray options, or Ray missing, before anything runs."""
    if name not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")
    if name == "ray":
        ray.check()
        require_ray()


def engine_results(name: str) -> Callable[..., Any] | None:
    """The results function of engine ``name`` (None for the runner's own loop)."""
    target = ENGINES[name]
    if target is None:
        return None
    module, _, function = target.partition(":")
    found: Callable[..., Any] = getattr(importlib.import_module(module), function)
    return found
