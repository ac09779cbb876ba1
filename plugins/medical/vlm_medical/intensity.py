"""Intensity presets: CT windows (level/width in HU) and MR percentile scaling, to [0, 1]."""

from __future__ import annotations

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
