"""Out-of-memory back-off: shrink the batch and retry, then fail with a clear message."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from vlm_core.errors import VLMError

log = logging.getLogger("vlm.oom")

T = TypeVar("T")
R = TypeVar("R")


class OutOfMemoryError(VLMError):
    """Even the smallest batch does not fit on the device."""


def is_oom(exc: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA, MPS and the CPU allocator)."""
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_cached_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def map_with_oom_backoff(
    fn: Callable[[Sequence[T]], Sequence[R]],
    items: Sequence[T],
    batch_size: int,
    *,
    min_batch_size: int = 1,
    on_backoff: Callable[[int, int], None] | None = None,
) -> Iterator[R]:
    """Yield ``fn(chunk)`` results for ``items`` in chunks of ``batch_size``.

    When ``fn`` runs out of memory the same chunk is retried at half the batch size (and the
    smaller size is kept for the rest), down to ``min_batch_size``; below that an
    :class:`OutOfMemoryError` says what was tried. Any other error propagates unchanged.
    ``on_backoff(old, new)`` is called at each halving.
    """
    if batch_size < 1 or min_batch_size < 1:
        raise ValueError("batch sizes must be at least 1")
    size = batch_size
    start = 0
    while start < len(items):
        chunk = items[start : start + size]
        try:
            results = fn(chunk)
        except BaseException as exc:
            if not is_oom(exc):
                raise
            del exc  # drop the traceback's references to the failed batch before retrying
            _free_cached_memory()
            if size <= min_batch_size:
                raise OutOfMemoryError(
                    f"out of memory even at batch size {size} (started at {batch_size}); use a "
                    "smaller input size, a smaller model or another device"
                ) from None
            new = max(min_batch_size, size // 2)
            log.warning("out of memory at batch size %d; retrying at %d", size, new)
            if on_backoff is not None:
                on_backoff(size, new)
            size = new
            continue
        if len(results) != len(chunk):
            raise ValueError(
                f"batch function returned {len(results)} results for {len(chunk)} items"
            )
        yield from results
        start += len(chunk)
