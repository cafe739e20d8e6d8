"""The restricted unpickler's opcodes: one handler per opcode of pickle protocols 2-5 that numpy arrays use,
each bound to the interpreter it runs in (:class:`safe_pickle.StreamingUnpickler`): what it reads, what it
pushes or pops, and the limits it checks."""

from __future__ import annotations

import pickle
import struct
from typing import TYPE_CHECKING, Callable

import numpy as np

from .pickle_allowlist import (_BUILDS, _POINTER, NeedsWholeLoad, UnsafePickleError, _build_array, _build_dtype,
                               _check_text_size, _Stop)

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

    def sized(fmt: str, size: int, make: Callable[[bytes], object], text: bool = False) -> Callable[[], None]:
        def op() -> None:
            n = unpack(fmt, take(size))[0] if fmt else take(1)[0]
            if n > st._max_object:
                raise UnsafePickleError(f"a {n}-byte object is over the {st._max_object}-byte limit")
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
        b"B": sized("<I", 4, bytes), b"C": sized("", 1, bytes), b"\x8e": sized("<Q", 8, bytes),
        b"\x96": sized("<Q", 8, bytearray),
        b"T": sized("<I", 4, lambda b: b.decode("latin1")), b"U": sized("", 1, lambda b: b.decode("latin1")),
        b")": push_(()), b"\x85": tuple_n(1), b"\x86": tuple_n(2), b"\x87": tuple_n(3), b"t": tuple_mark,
        b"]": empty_list, b"l": list_mark, b"a": append, b"e": appends,
        b"c": global_, b"\x93": stack_global, b"R": reduce, b"b": build,
        b"q": binput, b"r": long_binput, b"\x94": memoize, b"h": binget, b"j": long_binget,
    }
