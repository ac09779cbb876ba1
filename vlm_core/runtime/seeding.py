"""Seeding, seeds derived from keys, private random streams and an opt-in deterministic mode.

Importing this module does not import numpy or torch; each function imports what it needs.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: numpy's legacy global generator and MONAI's ``set_random_state`` take seeds below 2**32.
SEED_LIMIT_32 = 2**32


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (numpy and torch only when already imported; torch's CPU
    generator and every CUDA device's)."""
    random.seed(seed)
    if "numpy" in sys.modules:
        import numpy as np

        np.random.seed(seed % SEED_LIMIT_32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def derive_seed(*keys: int) -> int:
    """A seed in [0, 2**63) mixed from ``keys`` (non-negative integers) by numpy's
    ``SeedSequence``: neighbouring keys such as ``(seed, step)`` and ``(seed, step + 1)`` give
    unrelated streams, and the same keys always give the same seed, in any process."""
    import numpy as np

    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def _seed_private(seed: int, cuda: int | None) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % SEED_LIMIT_32)
    torch.default_generator.manual_seed(seed)
    if cuda is not None:
        with torch.cuda.device(cuda):
            torch.cuda.manual_seed(seed)


@contextlib.contextmanager
def forked_rng(seed: int | None = None, *, device: torch.device | None = None) -> Iterator[None]:
    """Run the block on private random streams: Python's, numpy's and torch's CPU generator
    (and ``device``'s, a CUDA device) are saved, seeded with ``seed`` when it is given, and put
    back afterwards, so that what the block draws neither depends on nor changes the streams
    of the code around it. Other CUDA devices are left alone."""
    import numpy as np
    import torch

    cuda = None
    if device is not None and device.type == "cuda":
        cuda = device.index if device.index is not None else torch.cuda.current_device()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[cuda] if cuda is not None else []):
        try:
            if seed is not None:
                _seed_private(seed, cuda)
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def set_deterministic(enabled: bool = True) -> None:
    """Make torch pick deterministic kernels (raising where none exists) and fix cuBLAS's
    workspace; slower, for reproducing results bit for bit."""
    import torch

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
