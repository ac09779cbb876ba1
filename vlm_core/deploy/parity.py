"""The parity check: the same held-out inputs through two networks (the torch one and its
export, or the original and its compressed form), output by output, and the task metric of
both."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vlm_core.deploy.spec import ParityCases

#: the largest absolute difference an export may show against its torch network, by format
#: (float32 throughout)
TOLERANCE = {"onnx": 1e-4, "pt2": 1e-5}
#: the largest relative change of the task metric an export may show
METRIC_TOLERANCE = 0.005


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for value in out.values() for t in _tensors(value)]
    return [t for value in out for t in _tensors(value)]


def output_differences(
    reference: Callable[..., Any], candidate: Callable[..., Any], cases: ParityCases
) -> dict[str, Any]:
    """Max-abs and mean-abs difference of every output over the cases' inputs."""
    largest, total, count = 0.0, 0.0, 0
    with torch.no_grad():
        for args in cases.inputs:
            ours = _tensors(reference(*args))
            theirs = _tensors(candidate(*args))
            if len(ours) != len(theirs):
                raise RuntimeError(f"{len(theirs)} outputs instead of {len(ours)}")
            for a, b in zip(ours, theirs, strict=True):
                if a.shape != b.shape:
                    raise RuntimeError(f"an output of shape {tuple(b.shape)}, not {tuple(a.shape)}")
                diff = (a.detach().float().cpu() - b.detach().float().cpu()).abs()
                largest = max(largest, float(diff.max()) if diff.numel() else 0.0)
                total += float(diff.sum())
                count += diff.numel()
    return {
        "inputs": len(cases.inputs),
        "max_abs": largest,
        "mean_abs": total / max(count, 1),
    }


def metric_change(
    reference: Callable[..., Any],
    candidate: Callable[..., Any],
    cases: ParityCases,
    *,
    may_fail: bool = False,
) -> dict[str, Any] | None:
    """The task metric of both networks (None when the task gives none). With ``may_fail``
    (a graph with axes the user made static, which the task's own held-out inputs may not
    fit), a candidate that cannot compute it is reported, not raised."""
    if cases.metric is None:
        return None
    with torch.no_grad():
        before = float(cases.metric(reference))
        try:
            after = float(cases.metric(candidate))
        except Exception as exc:
            if not may_fail:
                raise
            line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            return {
                "name": cases.metric_name,
                "examples": cases.metric_count,
                "reference": before,
                "candidate": None,
                "not_measured": f"the static graph cannot take the task's held-out inputs "
                f"({type(exc).__name__}: {line})",
                "higher_is_better": cases.higher_is_better,
            }
    change = (after - before) / abs(before) if before else after - before
    return {
        "name": cases.metric_name,
        "examples": cases.metric_count,
        "reference": before,
        "candidate": after,
        "relative_change": change,
        "higher_is_better": cases.higher_is_better,
    }


def check_parity(
    reference: nn.Module,
    candidate: Callable[..., Any],
    cases: ParityCases,
    *,
    tolerance: float,
    metric_tolerance: float = METRIC_TOLERANCE,
    metric_may_fail: bool = False,
) -> dict[str, Any]:
    """The parity report of an export: output differences, the metric of both, and whether
    both are within tolerance (``passed``)."""
    report = output_differences(reference, candidate, cases)
    report["tolerance"] = tolerance
    metric = metric_change(reference, candidate, cases, may_fail=metric_may_fail)
    report["metric"] = metric
    ok = report["max_abs"] <= tolerance
    if metric is not None and metric["candidate"] is not None:
        ok = ok and abs(metric["relative_change"]) <= metric_tolerance
    report["metric_tolerance"] = metric_tolerance
    report["passed"] = ok
    return report


def describe(report: dict[str, Any]) -> str:
    """One line: the differences and the metric of a parity report."""
    line = (
        f"max-abs {report['max_abs']:.2e}, mean-abs {report['mean_abs']:.2e} over "
        f"{report['inputs']} held-out inputs (tolerance {report['tolerance']:.0e})"
    )
    metric = report.get("metric")
    if metric and metric["candidate"] is None:
        line += f"; {metric['name']} not measured: {metric['not_measured']}"
    elif metric:
        line += (
            f"; {metric['name']} {metric['reference']:.4f} (torch) vs "
            f"{metric['candidate']:.4f} (export) on {metric['examples']} examples"
        )
    return line
