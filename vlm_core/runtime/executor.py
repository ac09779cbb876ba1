"""A streaming batch executor: any number of inputs in, results out, bounded memory.

A feeder thread reads the inputs lazily (any iterable, generators included) and queues batch
``c`` for worker ``c % W`` of a persistent DataLoader worker pool, started once per executor;
workers read, check and decode their batches and the DataLoader collects them round-robin, so
results come back in input order. Batches travel packed in pinned memory and are copied to the
device without blocking; the queues and the DataLoader's prefetch bound the batches in flight,
so host and device memory do not grow with the number of inputs.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vlm_core.errors import InputError
from vlm_core.runtime.oom import map_with_oom_backoff
from vlm_core.runtime.pipeline import ImagePipeline, Payload
from vlm_core.runtime.policy import RuntimePolicy, run_context, to_input

log = logging.getLogger("vlm.executor")


@dataclass(frozen=True)
class ItemResult:
    """The output for one input, or why it could not be processed."""

    item: Any
    output: Any = None
    error: str | None = None


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _read_chunk(
    chunk: list[Any], read: Callable[[Any], Payload]
) -> tuple[list[Any], dict[str, Any], list[tuple[Any, str]]]:
    """Read one batch of inputs: (usable items, their packed payloads, (item, error) pairs)."""
    good, payloads, errors = [], [], []
    for item in chunk:
        try:
            payloads.append(read(item))
            good.append(item)
        except InputError as exc:
            errors.append((item, str(exc)))
    return good, ImagePipeline.pack(payloads), errors


class _QueueSource(IterableDataset):
    """Worker ``w`` reads the batches queued for it until ``None`` ends one ``map`` call.

    The main process queues batch ``c`` for worker ``c % W``; the DataLoader collects from the
    workers in the same round-robin order, so batches come back in input order.
    """

    def __init__(self, queues: list[Any], read: Callable[[Any], Payload]) -> None:
        self.queues = queues
        self.read = read

    def __iter__(self) -> Iterator[tuple[list[Any], dict[str, Any], list[tuple[Any, str]]]]:
        info = get_worker_info()
        inbox = self.queues[info.id if info is not None else 0]
        while (chunk := inbox.get()) is not None:
            yield _read_chunk(chunk, self.read)


def _split(output: Any, n: int) -> list[Any]:
    """Per-item pieces of a batch output (a tensor, or a tuple/list/dict of tensors)."""
    if isinstance(output, torch.Tensor):
        return list(output.unbind(0))
    if isinstance(output, dict):
        parts = {k: _split(v, n) for k, v in output.items()}
        return [{k: v[i] for k, v in parts.items()} for i in range(n)]
    if isinstance(output, (list, tuple)):
        if len(output) == n and not isinstance(output[0], torch.Tensor | dict | list | tuple):
            return list(output)
        columns = [_split(o, n) for o in output]
        return [type(output)(c[i] for c in columns) for i in range(n)]
    raise TypeError(f"cannot split a model output of type {type(output).__name__} per item")


def _to_host(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.detach().to("cpu", non_blocking=False)
    if isinstance(output, dict):
        return {k: _to_host(v) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return type(output)(_to_host(o) for o in output)
    return output


def _identity(batch: Any) -> Any:
    return batch


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class StreamingExecutor:
    """Run ``model`` over image files with bounded memory.

    Args:
        model: a prepared module (see :func:`~vlm_core.runtime.prepare_model`) or any callable
            taking a (B, 3, H, W) float batch on the policy's device.
        pipeline: how files become input tensors (see :class:`ImagePipeline`).
        policy: device, dtype and memory format.
        batch_size: inputs per model call (halved on out-of-memory, see ``oom_backoff``).
        num_workers: DataLoader worker processes for reading and decoding (0: in this process).
        prefetch: batches each worker prepares ahead.
        oom_backoff: retry a batch at half the size when the device runs out of memory.
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor], Any],
        pipeline: ImagePipeline,
        policy: RuntimePolicy,
        *,
        batch_size: int = 64,
        num_workers: int | None = None,
        prefetch: int = 2,
        oom_backoff: bool = True,
    ) -> None:
        self.model = model
        self.pipeline = pipeline
        self.policy = policy
        self.batch_size = batch_size
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.prefetch = prefetch
        self.oom_backoff = oom_backoff
        self.backoffs: list[tuple[int, int]] = []
        self._pool: tuple[DataLoader, list[Any]] | None = None

    def _workers(self) -> tuple[DataLoader, list[Any]]:
        """The persistent worker pool (started on first use, reused by every ``map``)."""
        if self._pool is None:
            import multiprocessing

            context = multiprocessing.get_context("fork" if "fork" in _contexts() else None)
            queues = [context.Queue(maxsize=self.prefetch + 1) for _ in range(self.num_workers)]
            loader = DataLoader(
                _QueueSource(queues, self.pipeline.read),
                batch_size=None,
                num_workers=self.num_workers,
                pin_memory=self.policy.device.type == "cuda",
                prefetch_factor=self.prefetch,
                persistent_workers=True,
                collate_fn=_identity,
                multiprocessing_context=context,
            )
            self._pool = (loader, queues)
        return self._pool

    def _batches(self, items: Iterable[Any]) -> Iterator[Any]:
        """(items, packed payloads, errors) per batch, in input order."""
        if self.num_workers == 0:
            for chunk in _batches(items, self.batch_size):
                yield _read_chunk(chunk, self.pipeline.read)
            return
        loader, queues = self._workers()
        stop = threading.Event()

        def put(inbox: Any, value: Any) -> bool:
            while not stop.is_set():
                try:
                    inbox.put(value, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def feed() -> None:  # reads the (possibly endless) input lazily, a few batches ahead
            try:
                for index, chunk in enumerate(_batches(items, self.batch_size)):
                    if not put(queues[index % len(queues)], chunk):
                        return
            finally:
                for inbox in queues:
                    put(inbox, None)

        feeder = threading.Thread(target=feed, name="vlm-executor-feed", daemon=True)
        feeder.start()
        finished = False
        try:
            yield from loader
            finished = True
        finally:
            stop.set()
            feeder.join()
            if not finished:  # workers may still hold this call's batches: start afresh
                self.close()

    def close(self) -> None:
        """Stop the worker processes (they start again on the next ``map``)."""
        self._pool = None  # the DataLoader's iterator shuts its workers down when collected

    def __enter__(self) -> StreamingExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prepare(self, payloads: Sequence[Payload]) -> torch.Tensor:
        batch = self.pipeline.to_device(list(payloads), self.policy.device)
        return to_input(batch, self.policy)

    def _forward(self, batch: torch.Tensor) -> list[Any]:
        with run_context(self.policy):
            output = self.model(batch)
        return _split(_to_host(output), batch.shape[0])

    def _run_batch(self, payloads: Sequence[Payload]) -> list[Any]:
        return self._forward(self._prepare(payloads))

    def _outputs(self, payloads: list[Payload], ready: Any) -> list[Any]:
        """The model's outputs for a batch; ``ready`` is the prepared input and the CUDA event
        marking it done on the side stream, or None to prepare it now."""
        if ready is not None:
            batch, event = ready
            stream = torch.cuda.current_stream(self.policy.device)
            stream.wait_event(event)
            batch.record_stream(stream)
            try:
                return self._forward(batch)
            except BaseException as exc:
                from vlm_core.runtime.oom import is_oom

                if not (self.oom_backoff and is_oom(exc)):
                    raise
                del exc, batch  # fall through to the back-off path below
        if self.oom_backoff:
            return list(map_with_oom_backoff(
                self._run_batch, payloads, len(payloads),
                on_backoff=lambda old, new: self.backoffs.append((old, new)),
            ))  # fmt: skip
        return self._run_batch(payloads)

    def map(self, items: Iterable[str | Path]) -> Iterator[ItemResult]:
        """Yield one :class:`ItemResult` per input, in input order (unusable files carry their
        error instead of an output; they do not stop the run).

        On CUDA, batch k+1 is decoded and preprocessed on a side stream while the model runs
        batch k on the default stream.
        """
        overlap = self.policy.device.type == "cuda"
        side = torch.cuda.Stream(self.policy.device) if overlap else None
        pending: tuple[list[Any], list[Payload], Any] | None = None
        for good, packed, errors in self._batches(items):
            for item, error in errors:
                yield ItemResult(item, error=error)
            payloads = ImagePipeline.unpack(packed)
            if not payloads:
                continue
            ready = None
            if side is not None:
                with torch.cuda.stream(side):
                    batch = self._prepare(payloads)
                    event = torch.cuda.Event()
                    event.record(side)
                ready = (batch, event)
            if pending is not None:
                yield from self._emit(*pending)
            pending = (good, payloads, ready)
        if pending is not None:
            yield from self._emit(*pending)

    def _emit(self, good: list[Any], payloads: list[Payload], ready: Any) -> Iterator[ItemResult]:
        for item, output in zip(good, self._outputs(payloads, ready), strict=True):
            yield ItemResult(item, output)


def _contexts() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()
