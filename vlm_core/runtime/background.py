"""Two pipeline stages in background threads, so a run's device never waits for its files:
:func:`prefetch` reads ahead of the consumer (inputs decoded while the task runs the batch
before), and :class:`BackgroundSink` consumes behind the producer (results exported while the
task runs the next batch).

Both are bounded (memory does not grow with the number of inputs), keep order, hand an error
raised in the thread to the caller, and stop their thread when the caller stops early. Threads,
not processes: decoding (PIL, nibabel, zlib) and encoding release the GIL for their heavy part,
the CPU time stays in the process (where benchmarks and ``resource`` see it), and nothing is
pickled.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _put(box: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first (then False)."""
    while not stop.is_set():
        try:
            box.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def prefetch(
    source: Iterable[T], depth: int = 1, *, name: str = "vlm-prefetch"
) -> Generator[T, None, None]:
    """Iterate ``source`` in a thread, up to ``depth`` items ahead of the caller; its items in
    order, then whatever it raised. Closing the generator early stops the thread (after the
    item it is producing)."""
    box: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                if not _put(box, item, stop):
                    return
        except BaseException as exc:  # handed to the caller, raised there
            _put(box, _Failed(exc), stop)
            return
        _put(box, _END, stop)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


class BackgroundSink(Generic[T, R]):
    """``consume(items)`` in a thread over the items :meth:`put` here, at most ``depth``
    waiting; :meth:`finish` returns what it returned.

    An error ``consume`` raises is raised by the next :meth:`put` or by :meth:`finish`;
    :meth:`abort` stops it (after the item it is on) and waits for the thread, so that nothing
    writes after the caller cleans up.
    """

    def __init__(
        self, consume: Callable[[Iterator[T]], R], depth: int = 2, *, name: str = "vlm-sink"
    ) -> None:
        self._box: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._result: list[R] = []
        self._error: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(consume,), name=name, daemon=True)
        self._thread.start()

    def _items(self) -> Iterator[T]:
        while not self._stop.is_set():
            try:
                item = self._box.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is _END:
                return
            yield item  # type: ignore[misc]

    def _run(self, consume: Callable[[Iterator[T]], R]) -> None:
        try:
            self._result.append(consume(self._items()))
        except BaseException as exc:
            self._error.append(exc)
        finally:
            self._stop.set()  # a consumer that stopped early takes nothing more

    def _raise(self) -> None:
        if self._error:
            raise self._error[0]

    def put(self, item: T) -> None:
        """Queue ``item`` (waiting while ``depth`` items wait)."""
        self._raise()
        if not _put(self._box, item, self._stop):
            self._raise()
            raise RuntimeError("the background consumer stopped before taking every item")

    def finish(self) -> R:
        """Wait until every item is consumed; what ``consume`` returned (or its error)."""
        self._raise()
        _put(self._box, _END, self._stop)
        self._thread.join()
        self._raise()
        if not self._result:
            raise RuntimeError("the background consumer stopped before taking every item")
        return self._result[0]

    def abort(self) -> None:
        """Stop the consumer and wait for its thread."""
        self._stop.set()
        self._thread.join()
