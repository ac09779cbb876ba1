"""A process-wide model cache shared by every caller (CLI runs, dashboard sessions, plugins).

Entries are keyed by (model, weights sha256, device, dtype). Callers hold a lease while they use
a model; the reference count keeps leased entries alive. Entries nobody holds are evicted in
least-recently-used order when the cache grows past its memory budget. Building a model happens
outside the cache's lock, once per key even when several threads ask at the same time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("vlm.cache")


@dataclass(frozen=True)
class CacheKey:
    model: str
    weights_sha256: str | None
    device: str
    dtype: str


@dataclass
class _Entry:
    value: Any
    nbytes: int
    refs: int = 0


def module_nbytes(model: Any) -> int:
    """Bytes held by a module's parameters and buffers; an object that wraps a model (a
    backbone, a task's loaded detector) gives its own size as an integer ``nbytes``; 0 else."""
    total = 0
    for attr in ("parameters", "buffers"):
        tensors = getattr(model, attr, None)
        if callable(tensors):
            total += sum(t.numel() * t.element_size() for t in tensors())
    if total == 0 and isinstance(getattr(model, "nbytes", None), int):
        return int(model.nbytes)
    return total


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    budget_bytes: int
    hits: int
    misses: int
    evictions: int
    leased: int


class ModelCache:
    """LRU cache of models under a memory budget, with reference-counted leases."""

    def __init__(self, budget_bytes: int, *, size_of: Callable[[Any], int] = module_nbytes) -> None:
        self.budget_bytes = budget_bytes
        self._size_of = size_of
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[CacheKey, threading.Event] = {}
        self.hits = self.misses = self.evictions = 0

    def acquire(self, key: CacheKey, factory: Callable[[], Any]) -> Any:
        """The cached value for ``key`` (built with ``factory`` on a miss), leased: call
        :meth:`release` when done, or use :meth:`lease`."""
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.refs += 1
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return entry.value
                waiting = self._building.get(key)
                if waiting is None:
                    self._building[key] = threading.Event()
                    self.misses += 1
                    break
            waiting.wait()  # another thread is building this key; then look again
        try:
            value = factory()
        except BaseException:
            with self._lock:
                self._building.pop(key).set()
            raise
        with self._lock:
            self._entries[key] = _Entry(value, self._size_of(value), refs=1)
            self._building.pop(key).set()
            self._evict_locked()
        return value

    def release(self, key: CacheKey) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.refs == 0:
                raise RuntimeError(f"release of {key} without a lease")
            entry.refs -= 1
            self._evict_locked()

    @contextmanager
    def lease(self, key: CacheKey, factory: Callable[[], Any]) -> Iterator[Any]:
        value = self.acquire(key, factory)
        try:
            yield value
        finally:
            self.release(key)

    def _evict_locked(self) -> None:
        total = sum(e.nbytes for e in self._entries.values())
        for key in list(self._entries):
            if total <= self.budget_bytes:
                break
            entry = self._entries[key]
            if entry.refs == 0:
                del self._entries[key]
                total -= entry.nbytes
                self.evictions += 1
                log.info("evicted %s (%.1f MB)", key, entry.nbytes / 2**20)
        if total > self.budget_bytes:
            log.info("model cache over budget by %.1f MB: all entries are leased",
                     (total - self.budget_bytes) / 2**20)  # fmt: skip

    def clear(self) -> None:
        """Drop every entry nobody holds."""
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.refs == 0]:
                del self._entries[key]

    def __contains__(self, key: CacheKey) -> bool:
        with self._lock:
            return key in self._entries

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                entries=len(self._entries),
                bytes=sum(e.nbytes for e in self._entries.values()),
                budget_bytes=self.budget_bytes,
                hits=self.hits,
                misses=self.misses,
                evictions=self.evictions,
                leased=sum(1 for e in self._entries.values() if e.refs),
            )


def default_budget_bytes() -> int:
    """``VLM_MODEL_CACHE_MB`` if set, else a quarter of the host's memory."""
    raw = os.environ.get("VLM_MODEL_CACHE_MB", "").strip()
    if raw:
        return int(float(raw) * 2**20)
    import psutil

    return int(psutil.virtual_memory().total // 4)


_global: ModelCache | None = None
_global_lock = threading.Lock()


def model_cache() -> ModelCache:
    """The process-wide cache."""
    global _global
    with _global_lock:
        if _global is None:
            _global = ModelCache(default_budget_bytes())
        return _global
