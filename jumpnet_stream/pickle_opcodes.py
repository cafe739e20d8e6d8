"""The restricted unpickler's opcodes: one handler per opcode of pickle protocols 2-5 that numpy arrays use,
each bound to the interpreter it runs in (:class:`safe_pickle.StreamingUnpickler`): what it reads, what it
pushes or pops, and the limits it checks. Reading a stored member with ``skip_images``, the bytes opcodes step
over an image's pixels instead of reading them (:func:`skip_image_data`; see :mod:`image_refs`)."""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
import weakref
from typing import TYPE_CHECKING, Callable

import numpy as np

from .image_refs import ImageRef, SkippedBytes, is_image_state
from .pickle_allowlist import (_BUILDS, _POINTER, NeedsWholeLoad, UnsafePickleError, _build_array, _build_dtype,
                               _check_text_size, _fresh_dtype, _skipped_image, _Stop)

if TYPE_CHECKING:
    from .safe_pickle import StreamingUnpickler


def opcode_table(vm: StreamingUnpickler) -> dict[bytes, Callable[[], None]]:
    """Each opcode's handler, bound to the interpreter ``vm`` (its stack, memo and limits)."""
    take, st = vm._take, vm
    unpack = struct.unpack

    def push_(value: object) -> Callable[[], None]:
        return lambda: st.stack.append(value)

    def proto() -> None:
        if take(1)[0] > 5:
            raise pickle.UnpicklingError("unsupported pickle protocol")

    def mark() -> None:
        batch = st._batches_target()
        st._push_mark()
        if batch:
            st._level, st._level_start = len(st.metastack), st.items_out

    def stop() -> None:
        raise _Stop

    def binint() -> None:
        st.stack.append(unpack("<i", take(4))[0])

    def binint1() -> None:
        st.stack.append(take(1)[0])

    def binint2() -> None:
        st.stack.append(unpack("<H", take(2))[0])

    def long1() -> None:
        st.stack.append(int.from_bytes(take(take(1)[0]), "little", signed=True))

    def long4() -> None:
        n = unpack("<i", take(4))[0]
        if n < 0 or n > 1024:
            raise pickle.UnpicklingError("pickle LONG4 too long")
        st.stack.append(int.from_bytes(take(n), "little", signed=True))

    def binfloat() -> None:
        st.stack.append(unpack(">d", take(8))[0])

    def sized(fmt: str, size: int, make: Callable[[bytes], object], text: bool = False,
              skippable: bool = False) -> Callable[[], None]:
        def op() -> None:
            n = unpack(fmt, take(size))[0] if fmt else take(1)[0]
            if n > st._max_object:
                raise UnsafePickleError(f"a {n}-byte object is over the {st._max_object}-byte limit")
            if skippable and st._seekable is not None and skip_image_data(st, n):
                return
            if st._fresh + n > st._max_live:
                st._relieve(coming=n)  # before allocating it
            data = take(n)
            if text and n > 4096 and not data.isascii():
                _check_text_size(data, st._max_object)
            st._fresh += n
            st.stack.append(make(data))
        return op

    def utf8(b: bytes) -> str:
        return b.decode("utf-8", "surrogatepass")

    def tuple_n(n: int) -> Callable[[], None]:
        def op() -> None:
            if len(st.stack) < n:
                raise NeedsWholeLoad("pickle stack underflow")
            items = tuple(st.stack[len(st.stack) - n:])
            del st.stack[len(st.stack) - n:]
            st.stack.append(items)
        return op

    def tuple_mark() -> None:
        items = st._pop_mark()
        st._fresh += _POINTER * len(items)
        st.stack.append(tuple(items))

    def empty_list() -> None:
        lst: list = []
        st._maybe_target(lst)
        st.stack.append(lst)

    def list_mark() -> None:
        items = st._pop_mark()
        st.stack.append(items)

    def append() -> None:
        value = st._pop()
        target = st._top_list()
        if target is st._target:
            st._emit(value)
        else:
            st._fresh += _POINTER
            target.append(value)
            st._check_length(target)

    def appends() -> None:
        below = st.metastack[-1] if st.metastack else None
        items = st._pop_mark(appends_to_target=bool(below) and below[-1] is st._target)
        target = st._top_list()
        if target is st._target:
            for item in items:
                st._emit(item)
        else:
            st._fresh += _POINTER * len(items)
            target.extend(items)
            st._check_length(target)

    def pop() -> None:
        if st.stack:
            st.stack.pop()
        else:
            st._pop_mark()

    def pop_mark() -> None:
        st._pop_mark()

    def dup() -> None:
        st.stack.append(st._usable(st._pop()))
        st.stack.append(st.stack[-1])

    def global_() -> None:
        module = st._line()
        st._push_global(module, st._line())

    def stack_global() -> None:
        name = st._pop()
        st._push_global(st._pop(), name)

    def reduce() -> None:
        args = st._pop()
        func = st._pop()
        if not callable(func) or not isinstance(args, tuple):
            raise UnsafePickleError("pickle REDUCE of something not allowed")
        value = func(*args)
        if func in _BUILDS:
            st._awaiting_build[id(value)] = value
        if isinstance(value, np.ndarray):
            st._note_array(value)
        st.stack.append(value)

    def build() -> None:
        state = st._pop()
        inst = st.stack[-1] if st.stack else st._pop()
        if st._awaiting_build.pop(id(inst), None) is not inst:
            raise UnsafePickleError(f"pickle BUILD of a {type(inst).__name__}")
        if st._is_top_array(inst):
            return  # the top-level array: its elements went to the caller instead of its list
        if isinstance(inst, np.dtype):
            _build_dtype(inst, state)
        elif isinstance(state, tuple) and len(state) == 5 and isinstance(state[4], SkippedBytes):
            left_in_file(st, inst, _skipped_image(state))
        else:
            _build_array(inst, state)
            st._note_array(inst)

    def binput() -> None:
        st._put(take(1)[0])

    def long_binput() -> None:
        st._put(unpack("<I", take(4))[0])

    def memoize() -> None:
        st._put(st._memo_next)

    def binget() -> None:
        st._get(take(1)[0])

    def long_binget() -> None:
        st._get(unpack("<I", take(4))[0])

    def frame() -> None:
        take(8)

    return {
        b"\x80": proto, b"\x95": frame, b".": stop, b"(": mark, b"0": pop, b"1": pop_mark, b"2": dup,
        b"N": push_(None), b"\x88": push_(True), b"\x89": push_(False),
        b"J": binint, b"K": binint1, b"M": binint2, b"\x8a": long1, b"\x8b": long4, b"G": binfloat,
        b"X": sized("<I", 4, utf8, text=True), b"\x8c": sized("", 1, utf8),
        b"\x8d": sized("<Q", 8, utf8, text=True),
        b"B": sized("<I", 4, bytes, skippable=True), b"C": sized("", 1, bytes, skippable=True),
        b"\x8e": sized("<Q", 8, bytes, skippable=True),
        b"\x96": sized("<Q", 8, bytearray),
        b"T": sized("<I", 4, lambda b: b.decode("latin1")), b"U": sized("", 1, lambda b: b.decode("latin1")),
        b")": push_(()), b"\x85": tuple_n(1), b"\x86": tuple_n(2), b"\x87": tuple_n(3), b"t": tuple_mark,
        b"]": empty_list, b"l": list_mark, b"a": append, b"e": appends,
        b"c": global_, b"\x93": stack_global, b"R": reduce, b"b": build,
        b"q": binput, b"r": long_binput, b"\x94": memoize, b"h": binget, b"j": long_binget,
    }


# -- images left in the file (a stored member: see image_refs) ------------------------------------------
_LOOKAHEAD = 48  # bytes read past an image's data to see that its TUPLE and BUILD come next
_BETWEEN = {b"q": 1, b"r": 4, b"\x94": 0, b"\x95": 8}  # BINPUT, LONG_BINPUT, MEMOIZE, FRAME: their operand bytes
#: Read-ahead of the next event's other fields, one image-to-image stride on (the kernel's own read-ahead does
#: not see this pattern): measured on a 10-minute keylog, the scan waited 0.05 s on the disk instead of 0.3 s.
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)
_PREFETCH = 8 << 10


def skip_image_data(st: StreamingUnpickler, n: int) -> bool:
    """Step over the ``n`` bytes of data about to be read if they are an image's pixels: the data of the
    state of an array awaiting its BUILD, whose version, shape, dtype and order are already on the stack
    and are an image's, and whose TUPLE and BUILD come next (memo puts and frames between). They are left in
    the file (a :class:`SkippedBytes` stands for them) and BUILD makes an :class:`ImageRef` of the array.
    Returns False, having read nothing, for anything else: that is read as ever."""
    stack, below = st.stack, st.metastack[-1] if st.metastack else None
    if len(stack) != 4 or not below or n > st._remaining:
        return False
    array, (version, shape, dtype, fortran) = below[-1], stack
    if not isinstance(array, np.ndarray) or st._awaiting_build.get(id(array)) is not array \
            or type(version) is not int or version != 1 or type(fortran) is not bool or not isinstance(dtype, np.dtype):
        return False
    try:
        dtype = _fresh_dtype(dtype)
    except (UnsafePickleError, TypeError, ValueError):
        return False  # refused when it is read, as ever
    if not is_image_state(shape, dtype) or math.prod(shape) * dtype.itemsize != n:
        return False
    stream = st._seekable
    start = stream.tell()
    stream.seek(n, io.SEEK_CUR)
    after = stream.read(_LOOKAHEAD)
    stream.seek(-len(after), io.SEEK_CUR)
    if not _tuple_then_build(after[:st._remaining - n]):
        stream.seek(start)
        return False
    st._remaining -= n
    stack.append(SkippedBytes(start, n))
    last, st._last_skipped = st._last_skipped, start
    if last is not None and start > last and _WILLNEED is not None:  # the next image's end, and what follows it
        os.posix_fadvise(stream.fileno(), start + (start - last) + n, _PREFETCH, _WILLNEED)
    return True


def _tuple_then_build(after: bytes) -> bool:
    """Whether the pickle ``after`` an array's data goes on with TUPLE, then BUILD, with at most a few memo
    puts and frames before each."""
    at = 0
    for wanted in (b"t", b"b"):
        for _ in range(3):
            op = after[at:at + 1]
            if op not in _BETWEEN:
                break
            at += 1 + _BETWEEN[op]
        if after[at:at + 1] != wanted:
            return False
        at += 1
    return True


def left_in_file(st: StreamingUnpickler, array: np.ndarray, ref: ImageRef) -> None:
    """BUILD of an image array whose data was left in the file: the reference takes the array's place, on
    the stack and, for later memo fetches, in :func:`resolved`."""
    st.stack[-1] = ref
    key, refs = id(array), st._refs
    refs[key] = (weakref.ref(array, lambda _, key=key: refs.pop(key, None)), ref)


def resolved(st: StreamingUnpickler, obj: object) -> object:
    """A memo entry as it stands for what was left in the file: an image array's reference; data stepped
    over (or an array state holding it) read now, exactly as it would have been read."""
    if isinstance(obj, np.ndarray):
        entry = st._refs.get(id(obj))
        return entry[1] if entry is not None and entry[0]() is obj else obj
    if isinstance(obj, SkippedBytes):
        return _read_skipped(st, obj)
    if isinstance(obj, tuple) and obj and isinstance(obj[-1], SkippedBytes):
        return (*obj[:-1], _read_skipped(st, obj[-1]))
    return obj


def _read_skipped(st: StreamingUnpickler, skipped: SkippedBytes) -> bytes:
    if st._fresh + skipped.size > st._max_live:
        st._relieve(coming=skipped.size)
    data = os.pread(st._seekable.fileno(), skipped.size, skipped.offset)
    if len(data) != skipped.size:
        raise pickle.UnpicklingError("pickle data truncated")
    st._fresh += skipped.size
    return data
