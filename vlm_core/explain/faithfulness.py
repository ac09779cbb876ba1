"""Is a map faithful? Deletion and insertion curves (Petsiuk et al. 2018, RISE) against random,
over regions (Samek et al. 2017's region perturbation).

The input's grid is cut into square (cubic) cells: 16 per side for an image, 8 per side for a
volume (at least one pixel each). Each cell is scored by the map's mean inside it, and the cells
are ranked highest first; ties, such as the equal values of a superpixel, are broken at random.
**Deletion** replaces the top k% of the cells with the baseline, for k = 0, 100/S, …, 100, and
records the explained number each time. **Insertion** starts from the baseline and puts the top
k% of the cells back.

The areas under the curves are trapezoids over the fraction removed, so each area is the
curve's mean value, in the number's own units. They are compared with the same curves for random
orders of the same cells. A faithful map's deletion area is lower than random, because its top
cells are the ones the number depends on, and its insertion area is higher.

Why cells and not single pixels. A random order of single pixels deletes a salt-and-pepper
pattern, which no map ranks and which a convnet reads as noise. That curve falls faster than any
compact region's, for reasons that have nothing to do with the map, and a pixel-level comparison
measured how scattered a map is. Ranking and randomising the same cells compares like with like,
whatever the method's granularity.

All curves go through ``target.forward``, ``target.batch`` inputs at a time, without gradients.
For S steps and R random orders that is (S + 1) x 2 x (1 + R) forward passes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from vlm_core.explain.target import ExplainTarget

__all__ = ["CELLS_PER_SIDE", "RANDOM_ORDERS", "STEPS", "cells", "curves", "faithfulness"]

STEPS = 20
RANDOM_ORDERS = 3
#: cells per side of the grid the curves delete: (images, volumes)
CELLS_PER_SIDE = (16, 8)


def _scores(target: ExplainTarget, batch: Tensor) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, batch.shape[0], max(1, target.batch)):
            out.append(target.forward(batch[i : i + max(1, target.batch)]).detach().double().cpu())
    return torch.cat(out).numpy()


def cells(grid: tuple[int, ...], per_side: int | None = None) -> np.ndarray:
    """The cell id of every position of ``grid`` (flattened, C order): a regular grid of
    ``per_side`` cells per side (default :data:`CELLS_PER_SIDE`; fewer where a side has fewer
    positions). The faithfulness curves delete these cells, and SHAP and LIME fall back to them
    where SLIC cannot split an input."""
    if per_side is None:
        per_side = CELLS_PER_SIDE[0] if len(grid) == 2 else CELLS_PER_SIDE[1]
    index = np.zeros(grid, dtype=np.int64)
    for axis, size in enumerate(grid):
        count = min(per_side, size)
        along = np.minimum(np.arange(size) * count // size, count - 1)
        shape = [1] * len(grid)
        shape[axis] = size
        index = index * count + along.reshape(shape)
    return index.reshape(-1)


def curves(
    target: ExplainTarget, cell_rank: np.ndarray, cell_of: np.ndarray, steps: int = STEPS
) -> tuple[np.ndarray, np.ndarray]:
    """The deletion and insertion curves (``steps`` + 1 values each) when cell ``c`` goes at
    place ``cell_rank[c]`` (0 first); ``cell_of`` is each position's cell (:func:`cells`)."""
    x = target.inputs.detach()
    base = (
        target.baseline.to(x).expand_as(x)
        if isinstance(target.baseline, Tensor)
        else torch.full_like(x, float(target.baseline))
    )
    count = len(cell_rank)
    rank = torch.from_numpy(cell_rank[cell_of]).reshape(x.shape[2:]).to(x.device)
    counts = torch.tensor([round(k * count / steps) for k in range(steps + 1)], device=x.device)
    removed = (rank[None] < counts.reshape(-1, *([1] * rank.dim())))[:, None]  # (S+1, 1, *grid)
    return _scores(target, torch.where(removed, base, x)), _scores(
        target, torch.where(removed, x, base)
    )


def _area(curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


def _ranks(order: np.ndarray) -> np.ndarray:
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def faithfulness(
    target: ExplainTarget,
    values: Tensor | np.ndarray,
    *,
    steps: int = STEPS,
    random_orders: int = RANDOM_ORDERS,
    seed: int = 0,
) -> dict[str, Any]:
    """Deletion and insertion areas of the map ``values`` (on the input's grid) and the mean
    areas of ``random_orders`` random orders of the same cells, with the curves themselves."""
    rng = np.random.default_rng(seed)
    grid = tuple(int(n) for n in target.inputs.shape[2:])
    flat = np.asarray(torch.as_tensor(values).detach().double().cpu()).reshape(-1)
    if flat.size != int(np.prod(grid)):
        raise ValueError(f"the map has {flat.size} values, the input grid {grid}")
    cell_of = cells(grid)
    n_cells = int(cell_of.max()) + 1
    mean = np.bincount(cell_of, weights=flat, minlength=n_cells) / np.bincount(
        cell_of, minlength=n_cells
    )
    # highest first, ties in random order: sort by (-mean, random key)
    order = np.lexsort((rng.random(n_cells), -mean))
    deletion, insertion = curves(target, _ranks(order), cell_of, steps)
    random_del, random_ins = [], []
    for _ in range(random_orders):
        d, i = curves(target, _ranks(rng.permutation(n_cells)), cell_of, steps)
        random_del.append(_area(d))
        random_ins.append(_area(i))
    deletion_auc, insertion_auc = _area(deletion), _area(insertion)
    deletion_random, insertion_random = float(np.mean(random_del)), float(np.mean(random_ins))
    return {
        "deletion_auc": deletion_auc,
        "deletion_auc_random": deletion_random,
        "insertion_auc": insertion_auc,
        "insertion_auc_random": insertion_random,
        "deletion_better_than_random": deletion_auc < deletion_random,
        "insertion_better_than_random": insertion_auc > insertion_random,
        "steps": steps,
        "random_orders": random_orders,
        "cells": n_cells,
        "deletion_curve": [round(float(v), 6) for v in deletion],
        "insertion_curve": [round(float(v), 6) for v in insertion],
    }
