"""The background-thread runner and the buffer pool that negatives is built on."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from jumpnet_stream.pipeline import BufferPool, threaded


def test_threaded_yields_everything_in_order():
    assert list(threaded(iter(range(100)), depth=2)) == list(range(100))


def test_threaded_raises_the_sources_error_in_the_caller():
    def source():
        yield from range(3)
        raise ValueError("decoder broke at frame 3")

    got = []
    with pytest.raises(ValueError, match="decoder broke at frame 3"):
        for item in threaded(source()):
            got.append(item)
    assert got == [0, 1, 2]


def test_threaded_stops_the_source_when_the_caller_stops():
    produced = []
    closed = threading.Event()

    def source():
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    stream = threaded(source(), depth=2)
    assert next(stream) == 0
    stream.close()
    assert closed.wait(5)
    time.sleep(0.05)
    assert len(produced) <= 5  # bounded: never more than the queue depth ahead


def test_threaded_runs_the_source_elsewhere():
    seen = []

    def source():
        seen.append(threading.current_thread().name)
        yield 1

    list(threaded(source()))
    assert seen == ["jumpnet-source"]


def test_buffer_pool_recycles_and_accepts_views():
    pool = BufferPool((4, 2, 3), np.uint8, keep=2)
    a, b, c = pool.take(), pool.take(), pool.take()
    pool.give(a[:3])  # a partial last chunk is a view of a pool array
    pool.give(b)
    pool.give(c)  # beyond keep=2: the oldest given back is let go
    assert pool.take() is c and pool.take() is b
    assert pool.take() is not a  # a was let go: a fresh array
    foreign = np.empty((5, 2, 3), np.uint8)
    pool.give(foreign)  # not one of ours: ignored
    fresh = pool.take()
    assert fresh is not foreign and fresh.shape == (4, 2, 3)
