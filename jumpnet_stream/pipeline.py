"""Running a stage chain on another core (a background thread feeding a bounded queue), and memory."""

from __future__ import annotations

import ctypes
import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def threaded(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield what ``items`` yields, computed in a background thread at most ``depth`` items ahead.

    Decoding, resizing (numba, GIL released) and zstd compression all release the GIL, so a source
    chain here and a writer in the caller's thread use both cores. An exception in the thread is
    re-raised in the caller; if the caller stops early, the thread is told to stop.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
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

    worker = threading.Thread(target=run, name="jumpnet-source", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def return_large_buffers_to_os(threshold: int = 1 << 20) -> bool:
    """Serve allocations of ``threshold`` bytes and more by mmap, so freed chunk buffers go back to the OS.

    glibc raises its mmap threshold as large blocks are freed, after which 10 MB chunk buffers come
    from the heap and stay resident: peak RSS of ``negatives`` went from 205 MB to 261 MB that way.
    Returns whether it applied (glibc only).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


_M_MMAP_THRESHOLD = -3
