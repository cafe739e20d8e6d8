"""What the restricted unpickler may make, and what it checks before numpy sees it.

Globals resolve only through an allowlist of stand-ins: numpy's array reconstruction, scalars and dtypes
(and the two helpers numpy's own pickles name); dtypes are made only from the plain type strings numpy's
pickles use; an array or dtype state is checked against its shape, type string and buffer (numpy trusts
them: a forged one crashes the process) and built with numpy's own dtype for its type string.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings

import numpy as np

from .image_refs import ImageRef, SkippedBytes, is_image_state


class NeedsWholeLoad(Exception):
    """The stream uses a structure the streaming interpreter does not handle; load it whole instead."""


class _Stop(Exception):
    """STOP: the pickle is complete."""


_POINTER = 8  # bytes a list or tuple takes per element


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something outside the allowlist, or uses an opcode that could run code."""


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


def _fresh_dtype(dtype: np.dtype) -> np.dtype:
    """numpy's own dtype for ``dtype``'s type string, after checking that ``dtype`` is exactly that. Arrays
    and scalars are made with it, never with the pickle's dtype object, so nothing the pickle does to
    that object later can change an array's item size under its buffer."""
    _check_dtype(dtype)
    return np.dtype(dtype.str)


def _scalar(dtype: object, data: object = None) -> object:
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError("numpy scalar without a dtype")
    if dtype.hasobject:
        return data
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise UnsafePickleError("numpy scalar with malformed data")
    dtype = _fresh_dtype(dtype)
    check_text(data, dtype)
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _frombuffer(buf: object, dtype: object, shape: object, order: object = "C") -> np.ndarray:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(buf, (bytes, bytearray)):
        raise UnsafePickleError("numpy _frombuffer with unexpected arguments")
    dtype = _fresh_dtype(dtype)
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


def _what(obj: object) -> str:
    return "dtype" if isinstance(obj, np.dtype) else "array" if isinstance(obj, np.ndarray) else type(obj).__name__


_ASTRAL = re.compile(rb"[\xf0-\xff]")      # lead bytes of 4-byte UTF-8 sequences: a str of 4 bytes a char


_BEYOND_LATIN1 = re.compile(rb"[\xc4-\xef]")  # lead bytes of chars past U+00FF: 2 bytes a char


def _check_text_size(data: bytes, limit: int) -> None:
    """A str takes up to 4 bytes per character (all of them, if one is past U+FFFF): refuse UTF-8 text
    whose str would be over ``limit`` before decoding it."""
    width = 4 if _ASTRAL.search(data) else 2 if _BEYOND_LATIN1.search(data) else 1
    if len(data) * width > limit:
        raise UnsafePickleError(f"a {len(data)}-byte text would take up to {len(data) * width} bytes, over the "
                                f"{limit}-byte limit")


def _array_state(state: object) -> tuple[tuple[int, ...], np.dtype, bool, object, int]:
    """(shape, numpy's own dtype, fortran, data, element count) of an array state, its shape and dtype
    checked (numpy reads past a short element list, or trusts a dtype's flags: a forged state would
    crash the process)."""
    if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[1], tuple)):
        raise UnsafePickleError("numpy array state is not (version, shape, dtype, fortran, data)")
    version, shape, dtype, fortran, data = state
    if not (version == 1 and isinstance(dtype, np.dtype) and isinstance(fortran, bool)
            and all(isinstance(n, int) and 0 <= n for n in shape)):
        raise UnsafePickleError("numpy array state is malformed")
    dtype = _fresh_dtype(dtype)
    count = math.prod(shape)  # exact: numpy's int64 product wraps around for a forged shape
    if count > MAX_ELEMENTS or len(shape) > 32:
        raise UnsafePickleError(f"numpy array state of shape {shape} is implausibly large")
    return shape, dtype, fortran, data, count


def _skipped_image(state: object) -> ImageRef:
    """The reference to an image whose data the unpickler stepped over (a :class:`SkippedBytes`), its
    state checked as :func:`_build_array` checks one."""
    shape, dtype, fortran, data, count = _array_state(state)
    if not (isinstance(data, SkippedBytes) and data.size == count * dtype.itemsize and is_image_state(shape, dtype)):
        raise UnsafePickleError("numpy array data does not match its shape and dtype")
    return ImageRef(data.offset, shape, dtype.str, fortran)


def _build_array(array: np.ndarray, state: object) -> None:
    """``array.__setstate__(state)`` once the state is proven consistent (see :func:`_array_state`), with
    numpy's own dtype for the state's type string in place of the pickle's dtype object."""
    shape, dtype, fortran, data, count = _array_state(state)
    if dtype.hasobject:
        if not (isinstance(data, list) and len(data) == count):
            raise UnsafePickleError("numpy object array state does not match its shape")
    elif not (isinstance(data, (bytes, bytearray)) and len(data) == count * dtype.itemsize):
        raise UnsafePickleError("numpy array data does not match its shape and dtype")
    else:
        check_text(data, dtype)
    array.__setstate__((1, shape, dtype, fortran, data))


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


_FORBIDDEN = {b"i": "INST", b"o": "OBJ", b"\x81": "NEWOBJ", b"\x92": "NEWOBJ_EX", b"P": "PERSID",
              b"Q": "BINPERSID", b"\x82": "EXT1", b"\x83": "EXT2", b"\x84": "EXT4",
              b"\x97": "NEXT_BUFFER", b"\x98": "READONLY_BUFFER"}
