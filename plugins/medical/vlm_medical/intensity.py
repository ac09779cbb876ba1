"""Intensity presets: CT windows (level/width in HU) and MR percentile scaling, to [0, 1]."""

from __future__ import annotations

from typing import Any

import numpy as np

#: CT windows as (level, width) in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "ct-abdomen": (40.0, 400.0),
    "ct-lung": (-600.0, 1500.0),
    "ct-bone": (400.0, 1800.0),
    "ct-brain": (40.0, 80.0),
    "ct-liver": (60.0, 160.0),
}
PRESETS = ("auto", "mr", *CT_WINDOWS, "none")


def normalize(array: np.ndarray, preset: str) -> np.ndarray:
    """``array`` scaled to about [0, 1] with ``preset``.

    ``auto`` and ``mr`` scale the 0.5th..99.5th percentiles to 0..1 (clipped), as the default
    weights were trained; a CT window maps level ± width/2 to 0..1; ``none`` leaves the values.
    """
    data = np.asarray(array, dtype=np.float32)
    if preset == "none":
        return data
    if preset in CT_WINDOWS:
        level, width = CT_WINDOWS[preset]
        low, high = level - width / 2, level + width / 2
    else:
        low, high = (float(v) for v in np.percentile(data, (0.5, 99.5)))
    if high <= low:
        return np.zeros_like(data)
    return np.clip((data - low) / (high - low), 0.0, 1.0)


def _percentile(flat: Any, q: float) -> Any:
    """``np.percentile(flat, q)`` (linear interpolation) on a torch tensor, on its device.

    The two order statistics it interpolates come from one sorted ``topk`` of the nearer tail
    (for q = 0.5 or 99.5, half a percent of the values): faster than two ``kthvalue``
    selections over the whole volume (on one CPU thread 3.7 times at 32³, 4.5 at 64³, 1.7 at
    2**24 voxels), and exact (``torch.quantile`` refuses tensors of more than 2**24
    elements)."""
    import torch

    n = flat.numel()
    position = q / 100.0 * (n - 1)
    low, high = int(position // 1), int(-(-position // 1))
    if q <= 50:  # the smallest high + 1 values, ascending
        tail = torch.topk(flat, high + 1, largest=False).values
        a, b = tail[low], tail[high]
    else:  # the largest n - low values, descending: ascending index i is n - 1 - i
        tail = torch.topk(flat, n - low).values
        a, b = tail[n - 1 - low], tail[n - 1 - high]
    return a + (b - a) * (position - low)


def normalize_tensor(data: Any, preset: str) -> Any:
    """:func:`normalize` for a float tensor, computed on the tensor's device (the GPU's, in
    inference), giving the same values as the numpy version used in training."""
    import torch

    if preset == "none":
        return data
    if preset in CT_WINDOWS:
        level, width = CT_WINDOWS[preset]
        low, high = torch.tensor(level - width / 2), torch.tensor(level + width / 2)
    else:
        flat = data.reshape(-1).float()
        low, high = _percentile(flat, 0.5), _percentile(flat, 99.5)
    if float(high) <= float(low):
        return torch.zeros_like(data)
    return ((data - low) / (high - low)).clamp_(0.0, 1.0)
