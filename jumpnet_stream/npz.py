"""``.npz`` containers: the zip and its ``.npy`` members, small arrays read whole (``keys``, a provenance
record, a columnar field), with every damage turned into one line naming the file. Pickled object arrays are
streamed by :mod:`object_array`; object arrays in small members go through :mod:`safe_pickle` too
(never ``allow_pickle=True``).
"""

from __future__ import annotations

import contextlib
import io
import json
import lzma
import math
import os
import struct
import pickle
import resource
import tokenize
import zipfile
import zlib
from typing import BinaryIO, Iterator

import numpy as np
from numpy.lib import format as npy_format

from .errors import JumpnetError, UnsafeInputError
from .pickle_allowlist import NeedsWholeLoad, UnsafePickleError, check_text
from .safe_pickle import StreamingUnpickler

# What reading a damaged file can raise, from the zip layer (bad CRC, a deflate stream cut short, a
# compression method or encryption flag garbled: NotImplementedError, RuntimeError), the .npy header
# parser, or the unpickler (numbers too large: OverflowError; MemoryError, RecursionError).
_READ_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, OSError, zipfile.BadZipFile,
                struct.error, MemoryError, OverflowError, zlib.error, lzma.LZMAError, NotImplementedError,
                RuntimeError, SyntaxError, tokenize.TokenError)  # the last two: numpy's .npy header parser


MAX_MEMBERS = 4096  # arrays in one npz (this tool's hold 3 to 9): more is refused before the zip is parsed
#: A member that cannot be streamed is loaded whole only if it expands at most this many times when
#: decompressed (or is small): real images compress a few times, a deflated bomb a thousand.
WHOLE_LOAD_RATIO = 16
LISTED = 10         # names a message lists before "and N more"


def open_zip(path: str) -> zipfile.ZipFile:
    if not os.path.exists(path):
        raise JumpnetError(path, "no such file")
    if os.path.isdir(path):
        raise JumpnetError(path, "is a directory, expected an .npz file")
    try:
        members = _declared_members(path)
        if members is not None and members > MAX_MEMBERS:
            raise JumpnetError(path, f"not an npz file of this tool's: a zip archive of {members} members "
                                     f"(more than {MAX_MEMBERS})")
        return zipfile.ZipFile(path)
    except _READ_ERRORS as exc:
        if _starts_like_a_zip(path):
            raise JumpnetError(path, f"not a readable npz file: a zip archive, but cut short or damaged "
                                     f"({exc})") from None
        raise JumpnetError(path, f"not an npz file (not a readable zip archive: {exc})") from None


def _declared_members(path: str) -> int | None:
    """The member count a zip's end record declares (None if there is none to read): Python's zipfile
    builds an object per member, a few hundred bytes each, so a small file of a million empty members
    is refused on this number alone."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        return None
    members = struct.unpack("<H", tail[at + 10:at + 12])[0]
    locator = tail.rfind(b"PK\x06\x07", 0, at)  # zip64: the count is in the zip64 end record
    if members == 0xFFFF and locator >= 0 and len(tail) >= locator + 20:
        offset = struct.unpack("<Q", tail[locator + 8:locator + 16])[0]
        with open(path, "rb") as f:
            f.seek(offset)
            record = f.read(56)
        if record[:4] == b"PK\x06\x06" and len(record) == 56:
            members = struct.unpack("<Q", record[32:40])[0]
    return members


def listing(names: list[str], shown: int = LISTED) -> str:
    """``a, b, c`` for a message: the first ``shown`` names, then how many more."""
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _starts_like_a_zip(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def open_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, name: str) -> BinaryIO:
    """The member open for reading; a garbled entry (compression method, encryption flag) is one line."""
    try:
        return zf.open(info)
    except _READ_ERRORS as exc:
        raise JumpnetError(path, f"'{name}' cannot be read from the zip archive: {exc}") from None


def member_name(zf: zipfile.ZipFile, path: str, name: str) -> str:
    names = zf.namelist()
    for candidate in (f"{name}.npy", name):
        if candidate in names:
            return candidate
    present = sorted(n[:-4] if n.endswith(".npy") else n for n in names)
    raise JumpnetError(path, f"npz has no '{name}' array (it has: {listing(present) or 'nothing'})")


def read_header(f: BinaryIO, path: str, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy member ``name`` open as ``f``, which it leaves at the data."""
    try:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            header = npy_format.read_array_header_1_0(f)
        elif version == (2, 0):
            header = npy_format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except _READ_ERRORS as exc:
        raise JumpnetError(path, f"'{name}' is not a valid .npy array: {exc}") from None
    if any(n < 0 for n in header[0]):
        raise JumpnetError(path, f"'{name}' is not a valid .npy array: negative shape {header[0]}")
    return header


SMALL_ARRAY_BYTES = 16 << 20  # 'keys' and the like: a few bytes in any real file


def read_small_array(path: str, name: str, limit: int | None = SMALL_ARRAY_BYTES) -> np.ndarray:
    """A member array (such as ``keys``) loaded whole; object arrays via the restricted unpickler.
    ``limit`` caps its size: a recorder's ``keys`` is a few bytes, a columnar field one row per sample."""
    with open_zip(path) as zf:
        info = zf.getinfo(member_name(zf, path, name))
        if limit is not None and info.file_size > limit:
            raise JumpnetError(path, f"'{name}' is implausibly large ({info.file_size} bytes)")
        with read_errors(path, name), open_member(zf, info, path, name) as f:
            shape, fortran, dtype = read_header(f, path, name)
            count = math.prod(shape)
            if not dtype.hasobject:
                if count * dtype.itemsize > info.file_size:
                    raise JumpnetError(path, f"'{name}' header promises more data than the file holds")
                f.seek(0)
                array = npy_format.read_array(f, allow_pickle=False)
                if dtype.kind == "U":
                    check_text(np.ascontiguousarray(array).tobytes(), array.dtype)
                return array
            if count > info.file_size:
                raise JumpnetError(path, f"'{name}' header promises more elements than the file holds")
            items = StreamingUnpickler(pickle_stream(f), info.file_size - f.tell(), whole=True,
                                       expected=count).items()
            return object_array(list(items), shape, fortran)


def provenance_records(text: object) -> list[dict]:
    """Stage records from a provenance JSON string; [] for anything else (files other tools wrote)."""
    try:
        records = json.loads(str(text))
    except ValueError:
        return []
    return records if isinstance(records, list) else []


def read_provenance(path: str) -> list[dict]:
    """The ``provenance`` member of an npz this tool wrote; [] if there is none or it is unreadable
    (it is only a record), but a hostile one refuses the file."""
    try:
        return provenance_records(read_small_array(path, "provenance")[()])
    except UnsafeInputError:
        raise
    except JumpnetError:
        return []


@contextlib.contextmanager
def read_errors(path: str, name: str, streaming: bool = False) -> Iterator[None]:
    """Turn a failed load into one line naming the file (a streaming pass may still fall back)."""
    try:
        yield
    except JumpnetError:
        raise
    except UnsafePickleError as exc:
        raise UnsafeInputError(path, f"unsafe pickle in '{name}' refused: {exc}") from None
    except NeedsWholeLoad as exc:
        if streaming:
            raise
        raise JumpnetError(path, f"'{name}' is corrupt or of an unsupported structure: {exc}") from None
    except _READ_ERRORS as exc:
        raise JumpnetError(path, f"'{name}' is corrupt or truncated: {exc}") from None


def available_memory() -> int:
    """Bytes this process can still use: the machine's available memory, or its address-space limit."""
    free = 1 << 62
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        pass
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return min(free, limit) if limit != resource.RLIM_INFINITY else free


def member_data_offset(path: str, member: str) -> int:
    """Where a stored (uncompressed) zip member's bytes start in the file."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_length + extra_length


def stored_member_offset(path: str, info: zipfile.ZipInfo) -> int | None:
    """Where a member's bytes start in the file, if they are the member's own bytes (stored: neither
    compressed nor encrypted) and all lie within the file, as its local header confirms; None otherwise."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1 or info.compress_size != info.file_size:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        size = os.fstat(f.fileno()).st_size
    if len(local) != 30 or local[:4] != b"PK\x03\x04" or struct.unpack("<H", local[8:10])[0] != zipfile.ZIP_STORED:
        return None
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    return start if start + info.file_size <= size else None


def object_array(items: list, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array.reshape(shape, order="F" if fortran else "C")


def pickle_stream(raw: BinaryIO) -> io.BufferedReader:
    """``raw`` (a zip member) buffered for the unpickler, large reads in 1 MiB pieces (see Counting)."""
    return io.BufferedReader(Counting(raw), 1 << 16)


class Counting(io.RawIOBase):
    """Counts the bytes read through it, for progress reports."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        # At most 1 MiB at a time: a large object is read straight into its own bytes, never through
        # a second copy of it (the zip layer's read(n) builds one, and deflate several).
        data = self._raw.read(min(len(buffer), 1 << 20))
        buffer[:len(data)] = data
        self.count += len(data)
        return len(data)
