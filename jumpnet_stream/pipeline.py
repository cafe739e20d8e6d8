"""Running a stage chain on another core (a background thread feeding a bounded queue), and memory."""

from __future__ import annotations

import collections
import ctypes
import gc
import queue
import threading
from typing import Iterator, TypeVar

import numpy as np

T = TypeVar("T")
_DONE = object()


class threaded(Iterator[T]):
    """Yield what ``items`` yields, computed in a background thread, started at once, at most ``depth`` items
    ahead.

    Decoding, resizing (numba, GIL released) and zstd compression all release the GIL, so a source
    chain here and a writer in the caller's thread use both cores. An exception in the thread is
    re-raised in the caller; :meth:`close` (also called when the caller's generator is closed around a
    ``yield from`` of this, or this is collected) tells the thread to stop.
    """

    def __init__(self, items: Iterator[T], depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        # the thread holds the queue, the event and the items, never this object (which may then be collected)
        self._worker = threading.Thread(target=_feed, args=(items, self._queue, self._stop), name="jumpnet-source",
                                        daemon=True)
        self._worker.start()

    def __iter__(self) -> "threaded[T]":
        return self

    def __next__(self) -> T:
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def stop(self) -> None:
        """Tell the thread to stop, without waiting for it (:meth:`close` waits)."""
        self._stop.set()

    def close(self) -> None:
        self.stop()
        self._worker.join()

    def __del__(self) -> None:
        self.stop()


def _feed(items: Iterator[T], q: queue.Queue, stop: threading.Event) -> None:
    """:class:`threaded`'s thread: ``items`` into ``q`` (then the end, or the exception) until ``stop``."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in items:
            if not put(item):
                return
        put(_DONE)
    except BaseException as exc:  # handed to the caller, raised there
        put(exc)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


class BufferPool:
    """Equal arrays handed out and given back, so a steady stream allocates nothing.

    Freshly allocating a 10 MB chunk per 64 frames costs page faults (about 10% of ``negatives``'
    speed when glibc returns the memory to the OS) or heap fragmentation (peak RSS creeping up with
    video length when it does not). ``take`` never blocks: with nothing free, it allocates.
    """

    def __init__(self, shape: tuple[int, ...], dtype: object, keep: int = 4):
        self.shape, self.dtype = shape, np.dtype(dtype)
        self._free: collections.deque = collections.deque(maxlen=keep)

    def take(self) -> np.ndarray:
        try:
            return self._free.pop()
        except IndexError:
            return np.empty(self.shape, self.dtype)

    def give(self, array: np.ndarray) -> None:
        """Return an array from :meth:`take` (or a view of one) once nothing uses it any more."""
        root = array if array.base is None else array.base
        if isinstance(root, np.ndarray) and root.shape == self.shape and root.dtype == self.dtype:
            self._free.append(root)


def return_large_buffers_to_os(threshold: int = 1 << 20) -> bool:
    """Serve allocations of ``threshold`` bytes and more by mmap, so freed chunk buffers go back to the OS.

    glibc raises its mmap threshold as large blocks are freed; after that, the compressor's 10 MB
    output buffers (allocated per chunk, then shrunk) fragment the heap, and peak RSS of ``negatives``
    crept from 245 MB (5 minutes of video) to 279 MB (60 minutes). With this: 233 and 234 MB.
    The command line sets it; library users may. Returns whether it applied (glibc only).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def trim_heap(collect: bool = True) -> bool:
    """Give the heap's free pages back to the OS (glibc's ``malloc_trim``), ``collect``: after collecting
    cycles, so what one task freed stays out of the next one's peak in a long-lived process. A Dask worker
    collects and trims after each task: without both, its resting size grew by about 12 MB over the tasks of a
    build of 4 recordings (the two were not measured apart there). A build in one process trims between its
    stages without collecting: the 10-minute mp4v build's peak RSS 259 -> 248 MB with the trim, no lower with
    the collection, which cost 0.06-0.08 s a stage (0.4-0.9 s of a 9 s build). Returns whether it applied
    (glibc only)."""
    if collect:
        gc.collect()
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


_M_MMAP_THRESHOLD = -3
