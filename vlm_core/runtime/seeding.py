"""Seeding and an opt-in deterministic mode."""

from __future__ import annotations

import os
import random
import sys


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (numpy and torch only when already imported)."""
    random.seed(seed)
    if "numpy" in sys.modules:
        import numpy as np

        np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Make torch pick deterministic kernels (raising where none exists) and fix cuBLAS's
    workspace; slower, for reproducing results bit for bit."""
    import torch

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
