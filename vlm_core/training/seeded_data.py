"""Augmentation that does not depend on when, where or in which process a sample is drawn.

The trainer hands the DataLoader a :class:`SeededSamples` view of the task's dataset: sample
``i`` of epoch ``e`` is made with Python's, numpy's and torch's CPU generators seeded from
``(seed, stream, e, i)`` (and put back afterwards), and with every *randomizable* object the
dataset holds re-seeded from the same key first. Randomizable means MONAI's protocol, a
``set_random_state(seed=...)`` method: MONAI's random transforms keep their own
``numpy.random.RandomState``, which no global seed reaches (MONAI's ``DataLoader`` re-seeds them
per worker the same way, by walking the dataset).

So a sample gets the same augmentation in an uninterrupted run and in one resumed mid-epoch,
in the main process and in any of N DataLoader workers, in one process and under torchrun;
torchvision's transforms (torch's generator), numpy- and ``random``-based code and MONAI's
transforms alike. Randomness a dataset keeps in a generator of its own that has no
``set_random_state`` (a ``numpy.random.Generator`` attribute) is not reached: draw from the
global generators instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePath
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vlm_core.runtime.seeding import derive_seed, forked_rng

#: Key streams: what each derived seed is for (kept apart so that no two uses share a seed).
STEP_STREAM = 1  # the main process's generators at each optimizer step: (seed, 1, rank, step)
TRAIN_STREAM = 2  # a training sample: (seed, 2, epoch, index)
VAL_STREAM = 3  # a validation sample: (seed, 3, 0, index)
VALIDATE_STREAM = 4  # the main process's generators during validation: (seed, 4)
FAMILIARITY_STREAM = 5  # a sample run to fit a familiarity model: (seed, 5, 0, index)

_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), PurePath)
#: How far below the dataset the walk looks (dataset -> transform -> list -> item -> ...).
_MAX_DEPTH = 5


def is_randomizable(obj: Any) -> bool:
    """Whether ``obj`` follows MONAI's ``Randomizable`` protocol (``set_random_state``)."""
    return not isinstance(obj, type) and callable(getattr(type(obj), "set_random_state", None))


def find_randomizable(root: Any) -> list[Any]:
    """The randomizable objects ``root`` holds, outermost first (a MONAI ``Compose`` is found,
    not the transforms inside it: it re-seeds them itself). Looks through attributes, lists,
    tuples and dict values, as MONAI's ``set_rnd`` does, to a fixed depth; tensors and arrays
    are not entered."""
    found: list[Any] = []
    seen: set[int] = set()

    def children(obj: Any) -> Iterator[Any]:
        if isinstance(obj, (list, tuple, set, frozenset)):
            yield from obj
        elif isinstance(obj, dict):
            yield from obj.values()
        else:
            yield from getattr(obj, "__dict__", {}).values()

    def walk(obj: Any, depth: int) -> None:
        if isinstance(obj, (*_LEAVES, torch.Tensor, np.ndarray)):
            return
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if is_randomizable(obj):
            found.append(obj)
            return
        if depth < _MAX_DEPTH:
            for child in children(obj):
                walk(child, depth + 1)

    walk(root, 0)
    return found


class SeededSamples(Dataset[Any]):
    """``dataset`` with each sample made under generators seeded from its key (see the module
    docstring).

    Args:
        dataset: a map-style dataset.
        seed: the run's seed.
        stream: :data:`TRAIN_STREAM` or :data:`VAL_STREAM`.
        epoch: the epoch (a sample's augmentation changes from epoch to epoch).
    """

    def __init__(self, dataset: Dataset[Any], *, seed: int, stream: int, epoch: int = 0) -> None:
        self.dataset, self.seed, self.stream, self.epoch = dataset, seed, stream, epoch
        self.randomizable = find_randomizable(dataset)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        key = derive_seed(self.seed, self.stream, self.epoch, index)
        with forked_rng(key):
            if self.randomizable:
                seeds = np.random.SeedSequence(key).generate_state(len(self.randomizable))
                for obj, seed in zip(self.randomizable, seeds, strict=True):
                    obj.set_random_state(seed=int(seed))
            return self.dataset[index]


__all__ = [
    "STEP_STREAM",
    "TRAIN_STREAM",
    "VALIDATE_STREAM",
    "VAL_STREAM",
    "SeededSamples",
    "find_randomizable",
    "is_randomizable",
]
