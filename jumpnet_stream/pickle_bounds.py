"""What the restricted unpickler (:mod:`safe_pickle`) may hold, whatever a file declares: its memory
bounds, and how the bytes an unpickled object holds are weighed and its plain arrays found, so that each is
checked before it is handed out."""

from __future__ import annotations

import sys
from typing import Iterator

import numpy as np

from .image_refs import SkippedBytes
from .pickle_allowlist import _POINTER, UnsafePickleError

# What a small (compressed) file may make the interpreter hold, whatever it declares.
#: One str/bytes object or array, in memory: an image's pixels. 24 MiB holds a 3840x2160 RGB frame as
#: uint8 or a 1920x1080 one as float32 (23.7 MiB each; the recorder's 227x227x3 float32 capture is
#: 0.6 MB); a 4096x4096 RGB image (48 MiB as uint8) is over it. Refused when declared, before anything
#: is allocated.
MAX_IMAGE_BYTES = 24 << 20
MAX_OBJECT_BYTES = MAX_IMAGE_BYTES
#: Bytes built and not yet handed out (the entries waiting on the stack, what is being built, garbage),
#: beside the memo's own budget: a pickle that holds more at once is refused as a memory bomb.
MAX_LIVE_BYTES = 96 << 20
MEMO_BUDGET = 32 << 20      # memoized objects kept for back-references (streaming), least recently used out
MAX_MEMO_ENTRIES = 1 << 17  # and at most this many of them
MAX_DEPTH = 64              # nested MARKs (numpy's pickles of nested object arrays use a few)
MAX_STACK_ITEMS = 1 << 18   # values on the stack, all levels together (numpy's batches hold 1000)
MAX_ITEM_OBJECTS = 1 << 20  # objects in one handed-out element (a recorder entry holds about ten)
MAX_PINNED = 1 << 16
MAX_NAME = 256              # bytes of a GLOBAL's module or name
MEMO_ENTRY = 256            # bytes the memo's bookkeeping takes per entry (measured: ~250), counted in its budget


def plain_arrays(item: object) -> Iterator[np.ndarray]:
    """The non-object arrays an item holds, at any depth (each once)."""
    seen: set[int] = set()
    todo = [item]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                todo.extend(obj.flat)
            else:
                yield obj
        elif isinstance(obj, (tuple, list)):
            todo.extend(obj)
        elif isinstance(obj, SkippedBytes):  # only ever an image's data on its way to BUILD
            raise UnsafePickleError("pickle hands out an array's data apart from its array")


def weight_of(obj: object, seen: set[int] | None = None) -> int:
    """Bytes an object holds, all it refers to included (each object once, in ``seen``); more than
    :data:`MAX_ITEM_OBJECTS` references in all is refused."""
    seen = set() if seen is None else seen
    todo, total, visits = [obj], 0, 0
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        children: object = ()
        if isinstance(obj, np.ndarray):
            total += 64 + obj.nbytes
            if obj.dtype.hasobject:
                children = obj.flat
                visits += obj.size
        elif isinstance(obj, (tuple, list)):
            total += 56 + _POINTER * len(obj)
            children = obj
            visits += len(obj)
        else:
            total += sys.getsizeof(obj) if isinstance(obj, (bytes, bytearray, str)) else 64
        if visits + len(seen) > MAX_ITEM_OBJECTS:
            raise UnsafePickleError(f"pickle makes an object of more than {MAX_ITEM_OBJECTS} elements")
        todo.extend(children)
    return total
