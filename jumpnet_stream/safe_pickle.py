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
import re
import struct
import warnings
from collections import OrderedDict
from typing import BinaryIO, Callable, Iterator

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something outside the allowlist, or uses an opcode that could run code."""


class NeedsWholeLoad(Exception):
    """The stream uses a structure the streaming interpreter does not handle; load it whole instead."""


MAX_OBJECT_BYTES = 256 << 20  # one str/bytes object (an image's pixels); a 227x227x3 float32 is 0.6 MB
MAX_PINNED = 1 << 16
MAX_ELEMENTS = 1 << 31  # elements of one array: a zero-size dtype must not make an array of 2**62 of them

_NDARRAY = object()  # stands for numpy.ndarray: only ever an argument of _reconstruct, never callable


def _reconstruct(cls: object, shape: object, typecode: object) -> np.ndarray:
    if cls is not _NDARRAY or not isinstance(typecode, bytes):
        raise UnsafePickleError("numpy _reconstruct called with unexpected arguments")
    return np.ndarray((0,), dtype=np.int8)  # filled in by BUILD -> ndarray.__setstate__


_DTYPE_KINDS = "biufcSUOMm?"  # plain scalar kinds: no structured, subarray or void dtypes
# What numpy's own dtype pickles name ('f4', 'O8', 'U7', 'M8', 'b1', ...): numpy's dtype parser is
# never handed anything else (it raises SyntaxError or warns on some strings).
_DTYPE_SPEC = re.compile(r"[<>|=]?[biufcSUOMm][0-9]{1,9}")


def _dtype(spec: object, align: object = False, copy: object = True) -> np.dtype:
    if not isinstance(spec, str) or len(spec) > 16:
        raise UnsafePickleError(f"numpy dtype from {type(spec).__name__}")
    if not _DTYPE_SPEC.fullmatch(spec):
        raise UnsafePickleError(f"numpy dtype {spec!r} is not a plain scalar type")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dtype = np.dtype(spec, align=False, copy=True)  # a copy: BUILD must never touch numpy's singletons
    except (TypeError, ValueError):
        raise UnsafePickleError(f"unknown numpy dtype {spec!r}") from None
    if dtype.kind not in _DTYPE_KINDS:
        raise UnsafePickleError(f"numpy dtype {spec!r} is not a plain scalar type")
    return dtype


def _scalar(dtype: object, data: object = None) -> object:
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError("numpy scalar without a dtype")
    if dtype.hasobject:
        return data
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise UnsafePickleError("numpy scalar with malformed data")
    check_text(data, dtype)
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _frombuffer(buf: object, dtype: object, shape: object, order: object = "C") -> np.ndarray:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(buf, (bytes, bytearray)):
        raise UnsafePickleError("numpy _frombuffer with unexpected arguments")
    check_text(buf, dtype)
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if order == "F" else "C")


def check_text(data: bytes | bytearray | memoryview, dtype: np.dtype) -> None:
    """Unicode array data must hold valid code points: numpy builds a str from any 4 bytes, and one
    past U+10FFFF fails later, far from here, with a SystemError."""
    if dtype.kind != "U" or not len(data):
        return
    codes = np.frombuffer(data, dtype=np.dtype("u4").newbyteorder(dtype.byteorder), count=len(data) // 4)
    if codes.size and int(codes.max()) > 0x10FFFF:
        raise ValueError("text data holds an invalid code point")


def _encode(text: object, encoding: object = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode with unexpected arguments")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    """Protocol 2 pickles an empty bytes object (an empty array's data) as ``bytes()``."""
    if args:
        raise UnsafePickleError("bytes() with arguments")
    return b""


_ALLOWED: dict[tuple[str, str], object] = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _dtype,
                                           ("_codecs", "encode"): _encode, ("__builtin__", "bytes"): _empty_bytes,
                                           ("builtins", "bytes"): _empty_bytes}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _scalar
    _ALLOWED[(f"{_core}.multiarray", "dtype")] = _dtype
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _frombuffer
_BUILDS = (_reconstruct, _dtype)  # results that a BUILD opcode completes


def find_allowed(module: str, name: str) -> object:
    """The safe stand-in for ``module.name``, or UnsafePickleError."""
    try:
        return _ALLOWED[(module, name)]
    except KeyError:
        raise UnsafePickleError(f"refusing to unpickle {module}.{name} (only numpy arrays, scalars, "
                                "dtypes, str/bytes, numbers, lists and tuples are allowed)") from None


class _Stop(Exception):
    pass


_MARK = object()


class StreamingUnpickler:
    """Unpickles a numpy object array's pickle, yielding the items of its element list one by one.

    ``lag`` items wait on the stack before they are handed out, so an item still under construction
    (an array awaiting its state) is never handed out early; ``memo_budget`` bytes of memoized large
    objects are kept for later back-references, least recently used first out. A back-reference to an
    object already dropped raises :class:`NeedsWholeLoad`. With ``whole=True`` nothing is dropped and
    items are handed out batch by batch: memory as for loading the whole array.
    """

    def __init__(self, stream: BinaryIO, size: int, *, lag: int = 8, memo_budget: int = 64 << 20,
                 whole: bool = False, max_object: int = MAX_OBJECT_BYTES):
        if whole:
            lag, memo_budget = 1 << 62, 1 << 62
        self._read = stream.read
        self._remaining = size
        self._lag = lag
        self._budget = memo_budget
        self._memo: OrderedDict[int, tuple[object, int]] = OrderedDict()
        self._pinned: OrderedDict[int, object] = OrderedDict()  # see _pinnable
        self._max_object = max_object
        self._memo_weight = 0
        self._memo_next = 0
        self._unweighed: list[int] = []
        self._awaiting_build: dict[int, object] = {}  # id -> object (held, so its id stays its own)
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self._target: list | None = None  # the element list of the top-level array
        self._level: int | None = None    # metastack depth of the MARK that batches its items
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
        chars = bytearray()
        while True:
            c = self._take(1)
            if c == b"\n":
                return chars.decode("utf-8")
            chars += c
            if len(chars) > 256:
                raise pickle.UnpicklingError("pickle GLOBAL name too long")

    # -- stack ----------------------------------------------------------------------------------
    # A structure this interpreter does not expect goes to the standard unpickler (allowlisted
    # too), which either loads it or names the real problem.
    def _pop(self) -> object:
        if not self.stack:
            raise NeedsWholeLoad("pickle stack underflow")
        return self.stack.pop()

    def _pop_mark(self) -> list[object]:
        if not self.metastack:
            raise NeedsWholeLoad("pickle MARK missing")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _push_global(self, module: object, name: object) -> None:
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnsafePickleError("pickle global name is not a string")
        self.stack.append(find_allowed(module, name))

    # -- memo -----------------------------------------------------------------------------------
    def _put(self, index: int) -> None:
        if not self.stack:
            raise pickle.UnpicklingError("pickle memo of an empty stack")
        old = self._memo.pop(index, None)
        if old is not None:
            self._memo_weight -= old[1]
        self._memo_next = max(self._memo_next, index + 1)
        obj = self.stack[-1]
        if _pinnable(obj):
            self._pinned[index] = obj
            if len(self._pinned) > MAX_PINNED:
                self._pinned.popitem(last=False)
            return
        self._pinned.pop(index, None)
        self._memo[index] = (obj, 0)
        self._unweighed.append(index)

    def _get(self, index: int) -> None:
        if index in self._pinned:
            self._pinned.move_to_end(index)
            self.stack.append(self._pinned[index])
            return
        try:
            obj, _ = self._memo[index]
        except KeyError:
            raise NeedsWholeLoad(f"back-reference to memo entry {index} dropped to bound memory") from None
        self._memo.move_to_end(index)
        self.stack.append(obj)

    def _weigh_memo(self) -> None:
        # An object still being built (an array awaiting its state, a list still on the stack) is
        # weighed later, once complete.
        building = {id(x) for level in (*self.metastack, self.stack) for x in level if isinstance(x, list)}
        building |= self._awaiting_build.keys()
        pending = []
        for index in self._unweighed:
            entry = self._memo.get(index)
            if entry is None:
                continue
            if id(entry[0]) in building:
                pending.append(index)
                continue
            weight = _weight(entry[0])
            self._memo[index] = (entry[0], weight)
            self._memo_weight += weight
        self._unweighed = pending
        while self._memo_weight > self._budget and self._memo:
            _, (_, weight) = self._memo.popitem(last=False)
            self._memo_weight -= weight

    # -- handing items out ----------------------------------------------------------------------
    def _emit(self, item: object) -> None:
        self._out.append(item)
        self.items_out += 1

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
                if self._level is not None and len(self.metastack) == self._level:
                    self._drain_level()
                if self._out:
                    self._weigh_memo()
                    out, self._out = self._out, []
                    yield from out
                    del out
        except _Stop:
            return

    def _dispatch(self) -> dict[bytes, Callable[[], None]]:
        take, st = self._take, self
        unpack = struct.unpack

        def push_(value: object) -> Callable[[], None]:
            return lambda: st.stack.append(value)

        def proto() -> None:
            if take(1)[0] > 5:
                raise pickle.UnpicklingError("unsupported pickle protocol")

        def mark() -> None:
            st.metastack.append(st.stack)
            st.stack = []
            if st._target is not None and st._level is None and st.metastack[-1] \
                    and st.metastack[-1][-1] is st._target:
                st._level = len(st.metastack)

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

        def sized(fmt: str, size: int, make: Callable[[bytes], object]) -> Callable[[], None]:
            def op() -> None:
                n = unpack(fmt, take(size))[0] if fmt else take(1)[0]
                if n > st._max_object:
                    raise UnsafePickleError(f"a {n}-byte object is over the {st._max_object}-byte limit")
                st.stack.append(make(take(n)))
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
                target.append(value)

        def appends() -> None:
            leaving = len(st.metastack)
            items = st._pop_mark()
            target = st._top_list()
            if target is st._target:
                for item in items:
                    st._emit(item)
                if leaving == st._level:
                    st._level = None
            else:
                target.extend(items)

        def pop() -> None:
            if st.stack:
                st.stack.pop()
            else:
                st._pop_mark()

        def pop_mark() -> None:
            st._pop_mark()

        def dup() -> None:
            st.stack.append(st._pop())
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
            b"X": sized("<I", 4, utf8), b"\x8c": sized("", 1, utf8), b"\x8d": sized("<Q", 8, utf8),
            b"B": sized("<I", 4, bytes), b"C": sized("", 1, bytes), b"\x8e": sized("<Q", 8, bytes),
            b"\x96": sized("<Q", 8, bytearray),
            b"T": sized("<I", 4, lambda b: b.decode("latin1")), b"U": sized("", 1, lambda b: b.decode("latin1")),
            b")": push_(()), b"\x85": tuple_n(1), b"\x86": tuple_n(2), b"\x87": tuple_n(3), b"t": tuple_mark,
            b"]": empty_list, b"l": list_mark, b"a": append, b"e": appends,
            b"c": global_, b"\x93": stack_global, b"R": reduce, b"b": build,
            b"q": binput, b"r": long_binput, b"\x94": memoize, b"h": binget, b"j": long_binget,
        }

    def _top_list(self) -> list:
        target = self.stack[-1] if self.stack else None
        if not isinstance(target, list):
            raise NeedsWholeLoad("pickle APPEND to something that is not a list")
        return target

    def _is_top_array(self, obj: object) -> bool:
        return self._target is not None and not self.metastack and len(self.stack) == 1 and self.stack[0] is obj


def _build_array(array: np.ndarray, state: object) -> None:
    """``array.__setstate__(state)`` once the state is proven consistent (numpy reads past a short
    element list, or trusts a dtype's flags, so a forged state would crash the process)."""
    if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[1], tuple)):
        raise UnsafePickleError("numpy array state is not (version, shape, dtype, fortran, data)")
    version, shape, dtype, fortran, data = state
    if not (version == 1 and isinstance(dtype, np.dtype) and isinstance(fortran, bool)
            and all(isinstance(n, int) and 0 <= n for n in shape)):
        raise UnsafePickleError("numpy array state is malformed")
    _check_dtype(dtype)
    count = math.prod(shape)  # exact: numpy's int64 product wraps around for a forged shape
    if count > MAX_ELEMENTS or len(shape) > 32:
        raise UnsafePickleError(f"numpy array state of shape {shape} is implausibly large")
    if dtype.hasobject:
        if not (isinstance(data, list) and len(data) == count):
            raise UnsafePickleError("numpy object array state does not match its shape")
    elif not (isinstance(data, (bytes, bytearray)) and len(data) == count * dtype.itemsize):
        raise UnsafePickleError("numpy array data does not match its shape and dtype")
    else:
        check_text(data, dtype)
    array.__setstate__(state)


def _check_dtype(dtype: np.dtype) -> None:
    """A dtype must be what its own type string makes afresh: no fields, no forged flags."""
    fresh = np.dtype(dtype.str)
    if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.flags != fresh.flags or dtype.itemsize != fresh.itemsize or dtype != fresh:
        raise UnsafePickleError(f"numpy dtype {dtype!r} is not a plain scalar type")


def _build_dtype(dtype: np.dtype, state: object) -> None:
    if not (isinstance(state, tuple) and 8 <= len(state) <= 9 and state[2:5] == (None, None, None)):
        raise UnsafePickleError("numpy dtype state has fields or subarrays")
    dtype.__setstate__(state)
    _check_dtype(dtype)


def _pinnable(obj: object) -> bool:
    """Small objects that a pickle shares across far-apart entries (dtypes, globals, literals such as
    'release'): kept while in use, up to MAX_PINNED of them, least recently used first out."""
    return isinstance(obj, (np.dtype, str)) and (not isinstance(obj, str) or len(obj) <= 64) \
        or callable(obj) or obj is _NDARRAY


def _weight(obj: object, depth: int = 0) -> int:
    """Bytes an object holds, roughly: what the memo budget counts."""
    if isinstance(obj, np.ndarray):
        return 64 + obj.nbytes
    if isinstance(obj, (bytes, bytearray, str)):
        return 64 + len(obj)
    if isinstance(obj, (tuple, list)) and depth < 3:
        return 64 + sum(_weight(x, depth + 1) for x in obj)
    return 64


_FORBIDDEN = {b"i": "INST", b"o": "OBJ", b"\x81": "NEWOBJ", b"\x92": "NEWOBJ_EX", b"P": "PERSID",
              b"Q": "BINPERSID", b"\x82": "EXT1", b"\x83": "EXT2", b"\x84": "EXT4",
              b"\x97": "NEXT_BUFFER", b"\x98": "READONLY_BUFFER"}
