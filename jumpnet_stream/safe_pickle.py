"""Restricted unpickling of numpy object arrays, streamed item by item in bounded memory.

Recorder files keep their events in a pickled numpy object array. ``pickle.load`` would run whatever
a crafted file names. :class:`StreamingUnpickler` is this project's own small opcode interpreter for
pickle protocols 2-5: globals resolve only through an allowlist (numpy array reconstruction, scalars
and dtypes; str/bytes, numbers, lists and tuples are built in), every array and dtype state is checked
before numpy sees it (numpy trusts them: a forged one crashes the process), and no other objects can
be made. It hands each item of the array's element list to the caller as soon as it is complete,
instead of building the list, so a multi-GB keylog is read with memory flat in its length.
"""

from __future__ import annotations

import math
import pickle
import weakref
from collections import OrderedDict
from typing import BinaryIO, Callable, Iterator

import numpy as np

from .image_refs import ImageRef
from .pickle_allowlist import _FORBIDDEN, _NDARRAY, NeedsWholeLoad, UnsafePickleError, _Stop, _what, find_allowed
from .pickle_bounds import (MAX_DEPTH, MAX_ITEM_OBJECTS, MAX_LIVE_BYTES, MAX_MEMO_ENTRIES, MAX_NAME, MAX_OBJECT_BYTES,
                            MAX_PINNED, MAX_STACK_ITEMS, MEMO_BUDGET, MEMO_ENTRY, plain_arrays, weight_of)
from .pickle_opcodes import opcode_table, resolved


class StreamingUnpickler:
    """Unpickles a numpy object array's pickle, yielding the items of its element list one by one.

    ``lag`` items wait on the stack before they are handed out, so an item still under construction
    (an array awaiting its state) is never handed out early; ``memo_budget`` bytes of memoized large
    objects are kept for later back-references, least recently used first out. A back-reference to an
    object already dropped raises :class:`NeedsWholeLoad`. With ``whole=True`` nothing is dropped and
    items are handed out batch by batch: memory as for loading the whole array.

    Whatever a file declares, memory stays bounded: one object at most ``max_object`` bytes, at most
    ``max_live`` bytes built and not yet handed out (waiting items are handed out early, down to the
    last one, before that is refused), MARKs at most :data:`MAX_DEPTH` deep and :data:`MAX_STACK_ITEMS`
    values on the stack. ``expected``, the element count the caller knows from the file's header, stops
    a file that hands out more as soon as it does.

    A numpy array or dtype made by REDUCE may be completed by BUILD only while it still sits where
    REDUCE put it, never fetched from the memo, duplicated or handed out before: an object that has been
    used is never changed afterwards. Arrays are built with numpy's own dtype for the pickle's type
    string, and every array in a handed-out item is checked against the bytes it was built from.

    With ``skip_images`` (``stream`` a buffered file whose position is the file offset: a stored member)
    an image array's pixels are stepped over once its state is checked, and the item holds an
    :class:`image_refs.ImageRef` in its place (see :func:`pickle_opcodes.skip_image_data`).
    """

    def __init__(self, stream: BinaryIO, size: int, *, lag: int = 8, memo_budget: int = MEMO_BUDGET,
                 whole: bool = False, max_object: int = MAX_OBJECT_BYTES, max_live: int | None = None,
                 expected: int | None = None, skip_images: bool = False):
        if whole:
            lag, memo_budget = 1 << 62, 1 << 62
        self._read = stream.read
        self._readline = stream.readline
        # Images left in the file: ``stream`` is then a buffered file whose position is the file offset.
        self._seekable = stream if skip_images and not whole else None
        self._refs: dict[int, tuple[weakref.ref, ImageRef]] = {}  # id of an image array -> its reference
        self._last_skipped: int | None = None  # where the last image's data left in the file starts
        self._remaining = size
        self._lag = lag
        self._budget = memo_budget
        self._memo: OrderedDict[int, tuple[object, int]] = OrderedDict()
        self._pinned: OrderedDict[int, object] = OrderedDict()  # see _pinnable
        self._max_object = max_object
        # A whole load holds everything it builds, memo included: about what the file holds, never a
        # multiple of it.
        self._whole = whole
        self._max_live = max_live if max_live is not None else 3 * size + (32 << 20) if whole else MAX_LIVE_BYTES
        self._expected = expected
        self._memo_weight = 0
        self._memo_next = 0
        self._unweighed: list[int] = []
        self._awaiting_build: dict[int, object] = {}  # id -> object (held, so its id stays its own)
        self._allocated: dict[int, tuple[weakref.ref, int]] = {}  # arrays built here: id -> (ref, bytes)
        self._fresh = 0    # bytes built since the held bytes were last weighed (see _relieve)
        self._handed = 0   # bytes of the items a whole load handed out (its caller keeps them all)
        self._buried = 0   # values on the metastack's levels (the stack below the current MARK)
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self._target: list | None = None  # the element list of the top-level array
        self._target_count: int | None = None  # its length, from the array's state
        self._level: int | None = None    # metastack depth of the MARK that batches its items
        self._level_start = 0             # items handed out when that MARK was met
        self._out: list[object] = []
        self.items_out = 0

    # -- reading --------------------------------------------------------------------------------
    def _take(self, n: int) -> bytes:
        if n > self._remaining:
            raise pickle.UnpicklingError("pickle data truncated")
        data = self._read(n)
        if len(data) != n:
            raise pickle.UnpicklingError("pickle data truncated")
        self._remaining -= n
        return data

    def _line(self) -> str:
        """A GLOBAL's module or name: at most 256 bytes, then a newline (read in one call, not byte by byte)."""
        line = self._readline(min(MAX_NAME + 1, self._remaining))
        self._remaining -= len(line)
        if line.endswith(b"\n"):
            return line[:-1].decode("utf-8")
        if len(line) > MAX_NAME:
            raise pickle.UnpicklingError("pickle GLOBAL name too long")
        raise pickle.UnpicklingError("pickle data truncated")

    # -- stack ----------------------------------------------------------------------------------
    # A structure this interpreter does not expect goes to the standard unpickler (allowlisted
    # too), which either loads it or names the real problem.
    def _pop(self) -> object:
        if not self.stack:
            raise NeedsWholeLoad("pickle stack underflow")
        return self.stack.pop()

    def _push_mark(self) -> None:
        if len(self.metastack) >= MAX_DEPTH:
            raise UnsafePickleError(f"pickle nests MARKs more than {MAX_DEPTH} deep (a memory bomb?)")
        self.metastack.append(self.stack)
        self._buried += len(self.stack)
        self.stack = []

    def _pop_mark(self, appends_to_target: bool = False) -> list[object]:
        if not self.metastack:
            raise NeedsWholeLoad("pickle MARK missing")
        if self._level is not None and len(self.metastack) == self._level:
            # The MARK taken as the element list's batch: items may have been handed out from it already.
            if not appends_to_target and self.items_out > self._level_start:
                raise NeedsWholeLoad("a MARK after the element list that does not batch its items")
            self._level = None
        items = self.stack
        self.stack = self.metastack.pop()
        self._buried -= len(self.stack)
        return items

    def _push_global(self, module: object, name: object) -> None:
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnsafePickleError("pickle global name is not a string")
        self.stack.append(find_allowed(module, name))

    def _usable(self, obj: object) -> object:
        """``obj`` may be fetched again (memo, DUP) only once it is complete."""
        if id(obj) in self._awaiting_build:
            raise UnsafePickleError(f"pickle uses a numpy {_what(obj)} before its state is set")
        return obj

    # -- memo -----------------------------------------------------------------------------------
    def _put(self, index: int) -> None:
        if not self.stack:
            raise pickle.UnpicklingError("pickle memo of an empty stack")
        old = self._memo.pop(index, None)
        if old is not None:
            self._memo_weight -= old[1]
        self._memo_next = max(self._memo_next, index + 1)
        self._fresh += MEMO_ENTRY
        obj = self.stack[-1]
        if _pinnable(obj):
            self._pinned[index] = obj
            if len(self._pinned) > MAX_PINNED:
                self._pinned.popitem(last=False)
            return
        self._pinned.pop(index, None)
        self._memo[index] = (obj, 0)
        self._unweighed.append(index)
        if len(self._memo) > MAX_MEMO_ENTRIES and not self._whole:
            _, (_, weight) = self._memo.popitem(last=False)
            self._memo_weight -= weight

    def _get(self, index: int) -> None:
        if index in self._pinned:
            self._pinned.move_to_end(index)
            self.stack.append(self._usable(self._pinned[index]))
            return
        try:
            obj, _ = self._memo[index]
        except KeyError:
            if index >= self._memo_next or self._whole:  # never PUT (a whole load drops nothing)
                raise pickle.UnpicklingError(f"back-reference to memo entry {index}, which the pickle never "
                                             "defined") from None
            raise NeedsWholeLoad(f"back-reference to memo entry {index} dropped to bound memory") from None
        self._memo.move_to_end(index)
        obj = self._usable(obj)
        self.stack.append(obj if self._seekable is None else resolved(self, obj))

    def _weigh_memo(self) -> None:
        # An object still being built (an array awaiting its state, a list still on the stack) is
        # weighed later, once complete.
        building = {id(x) for level in (*self.metastack, self.stack) for x in level if isinstance(x, list)}
        building |= self._awaiting_build.keys()
        pending = []
        seen: set[int] = set()  # an object shared by several new entries is counted once
        for index in self._unweighed:
            entry = self._memo.get(index)
            if entry is None:
                continue
            if id(entry[0]) in building:
                pending.append(index)
                continue
            weight = weight_of(entry[0], seen) + MEMO_ENTRY
            self._memo[index] = (entry[0], weight)
            self._memo_weight += weight
        self._unweighed = pending
        while self._memo_weight > self._budget and self._memo:
            _, (_, weight) = self._memo.popitem(last=False)
            self._memo_weight -= weight

    # -- bounded memory -------------------------------------------------------------------------
    def _relieve(self, coming: int = 0) -> None:
        """More than ``max_live`` bytes built since the last weighing (or about to be, ``coming``): weigh
        what is really held (the stack; a whole load's memo too; garbage is gone), hand waiting items out
        early, down to the last one, and refuse if it is still too much."""
        self._weigh_memo()
        seen: set[int] = set()
        batch = self._batch_stack()
        held = sum(weight_of(x, seen) for level in (*self.metastack, self.stack) if level is not batch for x in level)
        held += coming + (self._memo_weight + self._handed if self._whole else 0)
        if batch is not None:
            weights = [weight_of(x, seen) for x in batch]
            # Under pressure the lag shrinks to one item (even while the next one is being built, deeper):
            # only a crafted file makes anything but the top one part of a later item, and then its element
            # count comes out wrong and it is refused.
            while len(batch) > 1 and held + sum(weights) > self._max_live // 2 and self._finished(batch[0]):
                self._emit(batch.pop(0))
                weights.pop(0)
                if batch is not self.stack:
                    self._buried -= 1
            held += sum(weights)
        self._fresh = held - coming
        if held > self._max_live:
            raise UnsafePickleError(f"pickle holds more than {self._max_live >> 20} MB at once before handing "
                                    "out an element (a memory bomb?)")

    def _batch_stack(self) -> list | None:
        """The stack level of the element list's batch (its waiting items), if one is open; a whole load
        keeps all its items anyway."""
        if self._level is None or self._whole:
            return None
        return self.stack if len(self.metastack) == self._level else self.metastack[self._level]

    def _note_array(self, array: np.ndarray) -> None:
        """Remember the bytes an array was built over, for :meth:`_check_item`."""
        key, allocated = id(array), self._allocated
        allocated[key] = (weakref.ref(array, lambda _, key=key: allocated.pop(key, None)), array.nbytes)
        self._fresh += array.nbytes

    def _check_item(self, item: object) -> int:
        """Everything an item about to be handed out holds: no object awaiting its state, every plain
        array within the buffer it was built over. Returns the bytes it holds."""
        seen: set[int] = set()
        weight = weight_of(item, seen)
        if not seen.isdisjoint(self._awaiting_build):
            obj = self._awaiting_build[next(iter(seen.intersection(self._awaiting_build)))]
            raise UnsafePickleError(f"pickle hands out a numpy {_what(obj)} before its state is set")
        for array in plain_arrays(item):
            self._check_buffer(array)
        return weight

    def _check_buffer(self, array: np.ndarray) -> None:
        root = array
        while isinstance(root.base, np.ndarray):
            root = root.base
        base = root.base
        if base is None:
            ref, size = self._allocated.get(id(root), (None, -1))
            if ref is None or ref() is not root:
                raise UnsafePickleError("pickle hands out an array this reader did not build")
        elif isinstance(base, (bytes, bytearray)):
            size = len(base)
        elif isinstance(base, memoryview):
            size = base.nbytes
        else:
            raise UnsafePickleError(f"pickle hands out an array over a {type(base).__name__}")
        if root.nbytes > size or array.nbytes > root.nbytes:
            raise UnsafePickleError(f"numpy array of {array.dtype} and shape {array.shape} claims "
                                    f"{array.nbytes} bytes over a {size}-byte buffer")

    # -- handing items out ----------------------------------------------------------------------
    def _emit(self, item: object) -> None:
        weight = self._check_item(item)
        if self._whole:  # the caller keeps every item: still held
            self._handed += weight
        else:
            self._fresh = max(0, self._fresh - weight)
        self._out.append(item)
        self.items_out += 1
        if self._expected is not None and self.items_out > self._expected:
            raise pickle.UnpicklingError(f"the pickle holds more than the {self._expected} elements its header "
                                         "declares")

    def _finished(self, obj: object) -> bool:
        return id(obj) not in self._awaiting_build and not callable(obj) and obj is not _NDARRAY

    def _drain_level(self) -> None:
        stack = self.stack
        while len(stack) > self._lag and self._finished(stack[0]):
            self._emit(stack.pop(0))

    def _maybe_target(self, lst: list) -> None:
        # The element list is the last field of the top-level array's state: (ver, shape, dtype, fortran, [..])
        if self._target is None and len(self.metastack) == 1 and len(self.stack) == 4 \
                and isinstance(self.stack[2], np.dtype) and self.stack[2].hasobject \
                and len(self.metastack[0]) == 1 and isinstance(self.metastack[0][0], np.ndarray):
            self._target = lst
            shape = self.stack[1]
            if isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape):
                self._target_count = math.prod(shape)

    def _batches_target(self) -> bool:
        """Whether a MARK met now opens a batch of the element list's items (MARK ... APPENDS). Python's
        picklers write a list's last lone item as ``item APPEND`` (the C pickler does so for a list of
        one), so a MARK with one item left may be that item's own (a tuple's): not a batch."""
        if self._target is None or self._level is not None or not self.stack or self.stack[-1] is not self._target:
            return False
        return self._target_count is None or self._target_count - self.items_out >= 2

    # -- the interpreter ------------------------------------------------------------------------
    def items(self) -> Iterator[object]:
        """Run to STOP, yielding the array's elements in order."""
        dispatch = self._dispatch()
        take = self._take
        try:
            while True:
                op = take(1)
                handler = dispatch.get(op)
                if handler is None:
                    if op in _FORBIDDEN:
                        raise UnsafePickleError(f"refusing pickle opcode {_FORBIDDEN[op]}")
                    raise pickle.UnpicklingError(f"pickle opcode {op!r}, which numpy arrays do not use")
                handler()
                if len(self.stack) + self._buried > MAX_STACK_ITEMS:
                    raise UnsafePickleError(f"pickle puts more than {MAX_STACK_ITEMS} values on its stack "
                                            "(a memory bomb?)")
                if self._level is not None and len(self.metastack) == self._level:
                    self._drain_level()
                if self._fresh > self._max_live:
                    self._relieve()
                if self._out:
                    self._weigh_memo()
                    out, self._out = self._out, []
                    yield from out
                    del out
        except _Stop:
            return

    def _dispatch(self) -> dict[bytes, Callable[[], None]]:
        return opcode_table(self)

    @staticmethod
    def _check_length(lst: list) -> None:
        if len(lst) > MAX_ITEM_OBJECTS:
            raise UnsafePickleError(f"pickle makes an object of more than {MAX_ITEM_OBJECTS} elements")

    def _top_list(self) -> list:
        target = self.stack[-1] if self.stack else None
        if not isinstance(target, list):
            raise NeedsWholeLoad("pickle APPEND to something that is not a list")
        return target

    def _is_top_array(self, obj: object) -> bool:
        return self._target is not None and not self.metastack and len(self.stack) == 1 and self.stack[0] is obj


def _pinnable(obj: object) -> bool:
    """Small objects that a pickle shares across far-apart entries (dtypes, globals, literals such as
    'release'): kept while in use, up to MAX_PINNED of them, least recently used first out."""
    return isinstance(obj, (np.dtype, str)) and (not isinstance(obj, str) or len(obj) <= 64) \
        or callable(obj) or obj is _NDARRAY
