"""Is a map faithful? Deletion and insertion curves (Petsiuk et al. 2018, RISE) against random.

The input's pixels (voxels) are ranked by the map, highest first. **Deletion** replaces the top
k% with the baseline for k = 0, 100/S, …, 100 and records the explained number each time;
**insertion** starts from the baseline and puts the top k% of the input back. The areas under
the curves (trapezoids over the fraction removed, so an area is the curve's mean value) are
compared with the same curves for random orders of the pixels: a faithful map's deletion area
is lower than random (its top pixels are the ones the number depends on) and its insertion
area higher. Ties in a map (superpixel methods, flat regions) are broken at random.

All curves go through ``target.forward`` ``target.batch`` inputs at a time, without gradients:
(S + 1) x 2 x (1 + R) forward passes for S steps and R random orders.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from vlm_core.explain.target import ExplainTarget

__all__ = ["RANDOM_ORDERS", "STEPS", "curves", "faithfulness"]

STEPS = 20
RANDOM_ORDERS = 3


def _scores(target: ExplainTarget, batch: Tensor) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, batch.shape[0], max(1, target.batch)):
            out.append(target.forward(batch[i : i + max(1, target.batch)]).detach().double().cpu())
    return torch.cat(out).numpy()


def curves(target: ExplainTarget, order: np.ndarray, steps: int = STEPS) -> tuple[np.ndarray, ...]:
    """The deletion and insertion curves (``steps`` + 1 values each) for ``order``, a
    permutation of the flattened grid's positions (most important first)."""
    x = target.inputs.detach()
    base = (
        target.baseline.to(x).expand_as(x)
        if isinstance(target.baseline, Tensor)
        else torch.full_like(x, float(target.baseline))
    )
    positions = int(np.prod(x.shape[2:]))
    rank = torch.empty(positions, dtype=torch.long)
    rank[torch.from_numpy(order)] = torch.arange(positions)
    rank = rank.reshape(x.shape[2:]).to(x.device)
    counts = torch.tensor([round(k * positions / steps) for k in range(steps + 1)], device=x.device)
    removed = (rank[None] < counts.reshape(-1, *([1] * rank.dim())))[:, None]  # (S+1, 1, *grid)
    deletion = torch.where(removed, base, x)
    insertion = torch.where(removed, x, base)
    return _scores(target, deletion), _scores(target, insertion)


def _area(curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


def faithfulness(
    target: ExplainTarget,
    values: Tensor | np.ndarray,
    *,
    steps: int = STEPS,
    random_orders: int = RANDOM_ORDERS,
    seed: int = 0,
) -> dict[str, Any]:
    """Deletion and insertion areas of the map ``values`` (on the input's grid) and the mean
    areas of ``random_orders`` random orders, with the curves themselves."""
    rng = np.random.default_rng(seed)
    flat = np.asarray(torch.as_tensor(values).detach().double().cpu()).reshape(-1)
    if flat.size != int(np.prod(target.inputs.shape[2:])):
        raise ValueError(f"the map has {flat.size} values, the input grid "
                         f"{tuple(target.inputs.shape[2:])}")  # fmt: skip
    # highest first, ties in random order: sort by (-value, random key)
    order = np.lexsort((rng.random(flat.size), -flat))
    deletion, insertion = curves(target, order, steps)
    random_del, random_ins = [], []
    for _ in range(random_orders):
        d, i = curves(target, rng.permutation(flat.size), steps)
        random_del.append(_area(d))
        random_ins.append(_area(i))
    deletion_auc, insertion_auc = _area(deletion), _area(insertion)
    deletion_random, insertion_random = float(np.mean(random_del)), float(np.mean(random_ins))
    out: dict[str, Any] = {
        "deletion_auc": deletion_auc,
        "deletion_auc_random": deletion_random,
        "insertion_auc": insertion_auc,
        "insertion_auc_random": insertion_random,
        "deletion_better_than_random": deletion_auc < deletion_random,
        "insertion_better_than_random": insertion_auc > insertion_random,
        "steps": steps,
        "random_orders": random_orders,
        "deletion_curve": [round(float(v), 6) for v in deletion],
        "insertion_curve": [round(float(v), 6) for v in insertion],
    }
    return out
