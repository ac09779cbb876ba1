"""Confidences that mean something: temperature scaling and expected calibration error.

Temperature scaling (Guo et al. 2017) divides a network's logits by one scalar ``T`` fitted on
held-out in-domain data to minimise the negative log-likelihood: the ranking (and so the
accuracy) is unchanged, and a score of 0.8 comes to mean right about 80% of the time.
Expected calibration error (ECE) is measured with torchmetrics' ``CalibrationError`` (15 equal
bins, L1), before and after. A classifier's logits are ``(N, C)`` with integer labels; a
detector's per-box logits are ``(N,)`` with 1 for a box that matches an object, 0 for one that
does not (binary).

A task records the fitted ``temperature`` in its weights' card and divides by it in its run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Bins of the expected calibration error.
ECE_BINS = 15


@dataclass(frozen=True)
class CalibrationReport:
    """A fitted temperature with the calibration error before and after, on ``samples``."""

    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _as_tensors(logits: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    x = torch.as_tensor(logits).detach().float().cpu()
    y = torch.as_tensor(labels).detach().long().cpu()
    if x.ndim not in (1, 2) or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"logits must be (N,) or (N, C) with N labels, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    return x, y


def _nll(x: torch.Tensor, y: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    import torch.nn.functional as F

    if x.ndim == 1:
        return F.binary_cross_entropy_with_logits(x / temperature, y.float())
    return F.cross_entropy(x / temperature, y)


def expected_calibration_error(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """ECE of ``softmax(logits / T)`` (``sigmoid`` for (N,) binary logits) against
    ``labels``."""
    from torchmetrics.functional.classification import (
        binary_calibration_error,
        multiclass_calibration_error,
    )

    x, y = _as_tensors(logits, labels)
    if x.ndim == 1:
        return float(binary_calibration_error((x / temperature).sigmoid(), y, n_bins=ECE_BINS))
    probs = (x / temperature).softmax(-1)
    return float(multiclass_calibration_error(probs, y, num_classes=x.shape[1], n_bins=ECE_BINS))


def fit_temperature(logits: Any, labels: Any) -> float:
    """The temperature minimising the negative log-likelihood of ``labels`` under
    ``logits / T`` (LBFGS on ``log T``; within [0.05, 20])."""
    import torch

    x, y = _as_tensors(logits, labels)
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _nll(x, y, log_t.exp())
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def calibrate(logits: Any, labels: Any) -> CalibrationReport:
    """Fit a temperature on held-out in-domain ``logits`` and ``labels`` and measure ECE and
    NLL before (T = 1) and after."""
    x, y = _as_tensors(logits, labels)
    t = fit_temperature(x, y)
    return CalibrationReport(
        temperature=t,
        ece_before=expected_calibration_error(x, y),
        ece_after=expected_calibration_error(x, y, t),
        nll_before=float(_nll(x, y, 1.0)),
        nll_after=float(_nll(x, y, t)),
        samples=len(y),
    )
