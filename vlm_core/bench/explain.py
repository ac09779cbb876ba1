"""`vlm bench --explain`: each explainable task's methods, time per input and faithfulness.

For every installed task that declares explainers (``TaskSpec.explainers``) and a pipeline
benchmark case (whose ``make_inputs`` generates in-domain inputs from a seed), N inputs are
generated and run through ``vlm run``'s own path (:func:`vlm_core.runner.run_task`) once per
method with ``explain_score=true``. A row per task and method reports:

- ``s_per_input``: the attribution's own time per input (median, min, max; the task's answer
  and the faithfulness curves are not counted), and its forward passes;
- ``deletion_better``: the share of inputs whose deletion AUC is below the random-order
  deletion AUC (:mod:`vlm_core.explain.faithfulness`), with both medians; the same for
  insertion (above random is better).

The runs go to a temporary run store, not the user's history.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlm_core.plugins import Registry

log = logging.getLogger(__name__)

__all__ = ["backbone_explain_cost", "bench_explain", "bench_explains", "explain_tasks"]


def explain_tasks(registry: Registry | None = None) -> list[str]:
    """The installed tasks with explainers and inputs the bench can generate."""
    from vlm_core.plugins import get_registry

    return [
        t
        for t, spec in (registry or get_registry()).tasks.items()
        if spec.explainers and spec.explain is not None and spec.bench is not None
    ]


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def bench_explain(
    task: str,
    *,
    methods: list[str] | None = None,
    count: int = 8,
    device: str = "cpu",
    seed: int = 4321,
    n_samples: int | None = None,
    registry: Registry | None = None,
) -> list[dict[str, Any]]:
    """One row per method of ``task`` (default: every method it declares)."""
    from vlm_core.errors import UsageError
    from vlm_core.plugins import get_registry
    from vlm_core.runner import RunRequest, run_task
    from vlm_core.runstore import RunStore

    registry = registry or get_registry()
    spec = registry.task(task)
    case = spec.resolve_bench()
    if case is None or not spec.explainers:
        return [{"task": task, "skipped": "no explainers or no input generator"}]
    chosen = methods or list(spec.explainers)
    unknown = [m for m in chosen if m not in spec.explainers]
    if unknown:
        raise UsageError(
            f"task '{task}' cannot explain with '{unknown[0]}'; its explainers: "
            + ", ".join(spec.explainers)
        )
    root = Path(tempfile.mkdtemp(prefix="vlm-bench-explain-"))
    rows: list[dict[str, Any]] = []
    try:
        folder = root / "inputs"
        folder.mkdir()
        case.make_inputs(folder, count, seed)
        store = RunStore(root / "runs.sqlite")
        for method in chosen:
            params = {**case.params, "explainer": method, "explain_score": True}
            if n_samples is not None:
                params["n_samples"] = n_samples
            t0 = time.perf_counter()
            request = RunRequest(task, [str(folder)], params, device=device, seed=0)
            try:
                outcome = run_task(request, registry=registry, store=store)
            except Exception as exc:
                log.exception("explain bench of %s with %s failed", task, method)
                rows.append({"task": task, "method": method, "error": f"{exc}"})
                continue
            maps = [r.outputs["attribution"] for r in outcome.results]
            scores = [m.faithfulness for m in maps]
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "inputs": len(maps),
                    "failed": len(outcome.failures),
                    "device": device,
                    "s_per_input": _spread([float(m.details["seconds"]) for m in maps]),
                    "forward_passes": statistics.median(
                        [int(m.details.get("forward_passes", 0)) for m in maps] or [0]
                    ),
                    "deletion_better": round(
                        sum(s["deletion_better_than_random"] for s in scores) / max(len(maps), 1),
                        4,
                    ),
                    "deletion_auc": _spread([s["deletion_auc"] for s in scores]),
                    "deletion_auc_random": _spread([s["deletion_auc_random"] for s in scores]),
                    "insertion_better": round(
                        sum(s["insertion_better_than_random"] for s in scores) / max(len(maps), 1),
                        4,
                    ),
                    "target": maps[0].target if maps else "",
                    "wall_s": round(time.perf_counter() - t0, 1),
                }
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def bench_explains(
    tasks: list[str] | None = None,
    *,
    methods: list[str] | None = None,
    count: int = 8,
    device: str = "cpu",
    n_samples: int | None = None,
    registry: Registry | None = None,
) -> list[dict[str, Any]]:
    """Rows for every task (default: :func:`explain_tasks`); a task that fails gives a row
    with its error, not a lost table. ``methods`` limits each task to those it declares."""
    from vlm_core.plugins import get_registry

    registry = registry or get_registry()
    rows: list[dict[str, Any]] = []
    for task in tasks or explain_tasks(registry):
        declared = registry.task(task).explainers
        mine = [m for m in methods if m in declared] if methods else None
        if methods and not mine:
            continue
        try:
            rows += bench_explain(task, methods=mine, count=count, device=device,
                                  n_samples=n_samples, registry=registry)  # fmt: skip
        except Exception as exc:
            log.exception("explain bench of %s failed", task)
            rows.append({"task": task, "error": f"{type(exc).__name__}: {exc}"})
    return rows


def backbone_explain_cost(
    model_name: str = "resnet50",
    *,
    device: str = "cpu",
    size: int = 224,
    methods: tuple[str, ...] = ("gradcam", "integrated_gradients", "occlusion"),
    n_samples: int | None = None,
    rounds: int = 3,
) -> dict[str, Any]:
    """Each method's time for one image on a timm classifier (random weights: the cost does
    not depend on them), median of ``rounds`` after a warm-up, next to the bare forward pass;
    a captum method is reported skipped where captum is not installed. The GPU check's
    ``explain.time`` line."""
    import importlib.util

    import timm
    import torch

    from vlm_core.explain.attribution import explain_target
    from vlm_core.explain.gradcam import find_target_layer
    from vlm_core.explain.target import ExplainTarget
    from vlm_core.types import Image

    model = timm.create_model(model_name, pretrained=False, num_classes=10).to(device).eval()
    x = torch.rand(1, 3, size, size, device=device)
    layer = dict(model.named_modules())[find_target_layer(model, x)]
    target = ExplainTarget(
        forward=lambda b: model(b)[:, 0],
        inputs=x,
        what="logit of class 0",
        background=Image(pixels=torch.rand(size, size).numpy()),
        layer=layer,
        batch=32,
    )

    def timed(fn: Any) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def median_of(fn: Any) -> float:
        fn()  # warm-up
        return statistics.median(timed(fn) for _ in range(rounds))

    with torch.no_grad():
        forward_s = median_of(lambda: model(x))
    row: dict[str, Any] = {"model": model_name, "device": device, "size": size,
                           "forward_s": round(forward_s, 5), "methods": {}}  # fmt: skip
    has_captum = importlib.util.find_spec("captum") is not None
    for method in methods:
        if method not in ("gradcam", "rollout") and not has_captum:
            row["methods"][method] = {"skipped": "captum is not installed"}
            continue
        seconds = median_of(lambda m=method: explain_target(target, m, n_samples=n_samples))
        row["methods"][method] = {
            "s": round(seconds, 4),
            "x_forward": round(seconds / forward_s, 1),
        }
    return row
