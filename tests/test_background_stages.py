"""The run pipeline's background stages (vlm_core.runtime.background): order, bounds, errors
handed to the caller, early stops that leave no thread behind."""

from __future__ import annotations

import threading
import time

import pytest

from vlm_core.runtime.background import BackgroundSink, prefetch


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_prefetch_keeps_order_and_reads_at_most_depth_ahead():
    produced: list[int] = []

    def source():
        for i in range(6):
            produced.append(i)
            yield i

    ahead = prefetch(source(), depth=1, name="t-order")
    assert next(ahead) == 0
    time.sleep(0.2)  # the thread runs ahead while the caller works, but only so far
    assert len(produced) <= 3  # the item handed out, one queued, one waiting to be queued
    assert list(ahead) == [1, 2, 3, 4, 5]
    assert not _threads("t-order")


def test_prefetch_raises_the_source_error_in_the_caller_after_the_good_items():
    def source():
        yield 1
        raise ValueError("bad file")

    got = []
    with pytest.raises(ValueError, match="bad file"):
        for item in prefetch(source(), name="t-error"):
            got.append(item)
    assert got == [1] and not _threads("t-error")


def test_closing_prefetch_early_stops_its_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    ahead = prefetch(endless(), depth=2, name="t-close")
    assert [next(ahead) for _ in range(3)] == [0, 1, 2]
    ahead.close()
    assert not _threads("t-close")


def test_sink_consumes_in_order_and_returns_what_the_consumer_returns():
    sink: BackgroundSink[int, list[int]] = BackgroundSink(list, depth=1, name="t-sink")
    for i in range(20):
        sink.put(i)
    assert sink.finish() == list(range(20))
    assert not _threads("t-sink")


def test_a_consumer_error_reaches_the_producer():
    def consume(items):
        for item in items:
            if item == 3:
                raise OSError(28, "No space left on device")
        return "done"

    sink: BackgroundSink[int, str] = BackgroundSink(consume, depth=1, name="t-full")
    with pytest.raises(OSError, match="No space"):
        for i in range(100):  # put raises once the consumer has failed
            sink.put(i)
        sink.finish()
    sink.abort()
    assert not _threads("t-full")


def test_abort_stops_the_consumer_before_the_items_still_queued():
    seen: list[int] = []
    busy, release = threading.Event(), threading.Event()

    def consume(items):
        for item in items:
            seen.append(item)
            busy.set()
            release.wait(5)  # busy with the first item while the caller aborts
        return seen

    sink: BackgroundSink[int, list[int]] = BackgroundSink(consume, depth=3, name="t-abort")
    for i in range(3):
        sink.put(i)
    assert busy.wait(5)
    threading.Timer(0.2, release.set).start()
    sink.abort()  # returns once the consumer has finished the item it is on
    assert seen == [0] and not _threads("t-abort")
