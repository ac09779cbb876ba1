"""Familiarity: whether an input looks like what a task's network was trained on.

A network trained on one world answers just as confidently on inputs from another. The core
measures how unusual an input is in the network's own feature space (pooled features the
network computes anyway, so the check costs almost nothing) against a model of its training
distribution that ``vlm train`` fits at the end of training and stores beside the weights
(``familiarity.safetensors``, its sha256 in ``model.json``). Every result of a task that takes
an input carries the verdict as ``ood`` (``{"flagged", "score", "threshold"}``; ``None`` for
weights without a familiarity file, e.g. a hub checkpoint the user brings).

- :class:`Familiarity` — the fitted model: deep k-nearest-neighbour distance on normalised
  features (Sun et al. 2022; the default) or Mahalanobis distance to a shrunk Gaussian
  (Lee et al. 2018), with the threshold calibrated on held-out in-domain data;
- :class:`FeatureTap` — the pooled output of one named layer, captured during the forward
  pass a task runs anyway;
- :func:`fit_familiarity` — fit and calibrate from feature arrays;
- :mod:`~vlm_core.familiarity.calibration` — temperature scaling and expected calibration
  error for the scores a classifier or detector reports.

Nothing here imports torch until features are captured, scored or fitted.
"""

from __future__ import annotations

from vlm_core.familiarity.model import (
    FAMILIARITY_FILE,
    Familiarity,
    FamiliarityError,
    fit_familiarity,
)
from vlm_core.familiarity.tap import FeatureTap, pool_features
from vlm_core.familiarity.verdict import Ood, ood_warning

__all__ = [
    "FAMILIARITY_FILE",
    "Familiarity",
    "FamiliarityError",
    "FeatureTap",
    "Ood",
    "fit_familiarity",
    "ood_warning",
    "pool_features",
]
