"""``.npz`` containers holding a pickled object array, read and written one row at a time.

The recorder and the seed both write ``np.savez(path, data=<object array>, keys=...)``. Reading goes
through :mod:`safe_pickle` (never ``allow_pickle=True``); writing spools the pickled rows to a
temporary file and assembles the zip member at the end, when the row count is known, so neither
direction holds more than a few rows in memory.
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
import shutil
import tempfile
import tokenize
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np
from numpy.lib import format as npy_format

from .errors import JumpnetError, UnsafeInputError
from .safe_pickle import MEMO_BUDGET, NeedsWholeLoad, StreamingUnpickler, UnsafePickleError, check_text

_APPENDS_BATCH = 1000  # rows per APPENDS opcode, as pickle itself batches
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


def _open_zip(path: str) -> zipfile.ZipFile:
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


def _open_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, name: str) -> BinaryIO:
    """The member open for reading; a garbled entry (compression method, encryption flag) is one line."""
    try:
        return zf.open(info)
    except _READ_ERRORS as exc:
        raise JumpnetError(path, f"'{name}' cannot be read from the zip archive: {exc}") from None


def _member_name(zf: zipfile.ZipFile, path: str, name: str) -> str:
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
    with _open_zip(path) as zf:
        info = zf.getinfo(_member_name(zf, path, name))
        if limit is not None and info.file_size > limit:
            raise JumpnetError(path, f"'{name}' is implausibly large ({info.file_size} bytes)")
        with _read_errors(path, name), _open_member(zf, info, path, name) as f:
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
            items = StreamingUnpickler(_pickle_stream(f), info.file_size - f.tell(), whole=True,
                                       expected=count).items()
            return _object_array(list(items), shape, fortran)


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


def _object_array(items: list, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array.reshape(shape, order="F" if fortran else "C")


@contextlib.contextmanager
def _read_errors(path: str, name: str, streaming: bool = False) -> Iterator[None]:
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


def _pickle_stream(raw: BinaryIO) -> io.BufferedReader:
    """``raw`` (a zip member) buffered for the unpickler, large reads in 1 MiB pieces (see _Counting)."""
    return io.BufferedReader(_Counting(raw), 1 << 16)


class _Counting(io.RawIOBase):
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


@dataclass
class ObjectArrayReader:
    """The rows of an npz member that holds a pickled object array of shape (N,) or (N, W)."""

    path: str
    name: str = "data"
    memo_budget: int = MEMO_BUDGET

    def __post_init__(self) -> None:
        self.path = os.fspath(self.path)
        with _open_zip(self.path) as zf:
            info = zf.getinfo(_member_name(zf, self.path, self.name))
            self.member, self.nbytes, self.stored_bytes = info.filename, info.file_size, info.compress_size
            with _read_errors(self.path, self.name), _open_member(zf, info, self.path, self.name) as f:
                self.shape, self.fortran, dtype = read_header(f, self.path, self.name)
        if not dtype.hasobject:
            raise JumpnetError(self.path, f"'{self.name}' is a {dtype} array, expected an object array "
                                          "of entries")
        if len(self.shape) not in (1, 2) or (len(self.shape) == 2 and self.shape[1] == 0 and self.shape[0]):
            raise JumpnetError(self.path, f"'{self.name}' has shape {self.shape}, expected (N,) or (N, 6)")
        if math.prod(self.shape) > self.nbytes:  # every element takes at least a byte of pickle
            raise JumpnetError(self.path, f"'{self.name}' header promises {math.prod(self.shape)} elements, "
                                          f"more than its {self.nbytes} bytes can hold")
        self.bytes_read = 0
        self.whole_loaded: str | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self) -> Iterator[object]:
        """The entries in order: a 2-D array's rows as tuples, a 1-D array's elements as they are."""
        done = 0
        try:
            if self.fortran and len(self.shape) == 2 and self.shape[1] > 1:
                raise NeedsWholeLoad("Fortran-ordered 2-D array")
            for row in self._stream():
                yield row
                done += 1
        except NeedsWholeLoad as why:
            self.whole_loaded = str(why)
            if self.nbytes > available_memory() // 2:
                raise JumpnetError(self.path, f"'{self.name}' cannot be streamed ({why}) and is too large "
                                              f"to load whole ({self.nbytes >> 20} MB)") from None
            if self.nbytes > (64 << 20) and self.nbytes > WHOLE_LOAD_RATIO * self.stored_bytes:
                raise JumpnetError(self.path, f"'{self.name}' cannot be streamed ({why}), and loading it whole "
                                              f"would expand {self.stored_bytes >> 20} MB on disk to "
                                              f"{self.nbytes >> 20} MB (a decompression bomb?)") from None
            yield from self._whole(skip=done, why=str(why))

    def _entries(self, items: Iterator[object]) -> Iterator[object]:
        width = self.shape[1] if len(self.shape) == 2 else 0
        if not width:
            yield from items
            return
        row: list = []
        for item in items:
            row.append(item)
            if len(row) == width:
                yield tuple(row)
                row = []

    def _unpickler(self, raw: BinaryIO, **options) -> tuple[StreamingUnpickler, _Counting]:
        read_header(raw, self.path, self.name)
        counting = _Counting(raw)
        counting.count = raw.tell()
        vm = StreamingUnpickler(io.BufferedReader(counting, 1 << 16), self.nbytes - raw.tell(),
                                expected=math.prod(self.shape), **options)
        return vm, counting

    def _stream(self) -> Iterator[object]:
        with _open_zip(self.path) as zf, _read_errors(self.path, self.name, streaming=True), \
                _open_member(zf, zf.getinfo(self.member), self.path, self.name) as raw:
            vm, counting = self._unpickler(raw, memo_budget=self.memo_budget)
            for entry in self._entries(vm.items()):
                self.bytes_read = counting.count
                yield entry
        self.bytes_read = self.nbytes
        if vm.items_out != math.prod(self.shape):
            raise JumpnetError(self.path, f"'{self.name}' holds {vm.items_out} elements but its header "
                                          f"says shape {self.shape}")

    def _whole(self, skip: int, why: str) -> Iterator[object]:
        with _open_zip(self.path) as zf, _read_errors(self.path, self.name), \
                _open_member(zf, zf.getinfo(self.member), self.path, self.name) as raw:
            vm, _ = self._unpickler(raw, whole=True)
            items = list(vm.items())
        if len(items) != math.prod(self.shape):
            raise JumpnetError(self.path, f"'{self.name}' does not match its header shape {self.shape}")
        # Only once it worked: a damaged file that fails both ways gets one line, its error.
        warnings.warn(f"{self.path}: loading '{self.name}' whole ({why})", stacklevel=3)
        self.bytes_read = self.nbytes
        array = _object_array(items, self.shape, self.fortran)
        del items
        for i in range(skip, len(array)):
            yield tuple(array[i]) if array.ndim == 2 else array[i]


class ObjectArrayWriter:
    """Writes an npz whose ``name`` member is a pickled object array, appended one row at a time.

    Rows are pickled as they come (numpy's layout: an (N, W) array's elements in row order, or an
    (N,) array of tuples) into a spool file beside the output; :meth:`close` writes the zip. Batches
    (MARK ... APPENDS) end only between rows, so every row's pickle stands alone: :meth:`read_row`
    reads one back from the finished file without the rows before it.
    """

    def __init__(self, path: str | os.PathLike, *, name: str = "data", width: int | None = 6):
        self.path = os.fspath(path)
        self.name = name
        self.width = width
        self.rows = 0
        self._items_in_batch = 0
        self._spool = tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(self.path)) or ".")
        self._buf = io.BytesIO()
        self._pickler = pickle.Pickler(self._buf, protocol=3)
        self._pickler.fast = True  # no memo: each item's pickle stands alone, and nothing is retained
        self._spans: dict[str, tuple[int, int]] = {}  # "first"/"last" row: (start, stop) in the spool
        self._data_start = 0  # where the spool's bytes begin in the member

    def _pickled(self, obj: object) -> bytes:
        self._buf.seek(0)
        self._buf.truncate()
        self._pickler.dump(obj)
        return self._buf.getbuffer()[2:-1].tobytes()  # strip PROTO 3 and STOP

    def append(self, row: tuple) -> None:
        items = row if self.width else (tuple(row),)
        if self.width and len(row) != self.width:
            raise ValueError(f"row has {len(row)} fields, expected {self.width}")
        if self._items_in_batch == 0:
            self._spool.write(pickle.MARK)
        start = self._spool.tell()
        for item in items:
            self._spool.write(self._pickled(item))
        span = (start, self._spool.tell())
        self._spans.setdefault("first", span)
        self._spans["last"] = span
        self._items_in_batch += len(items)
        if self._items_in_batch >= _APPENDS_BATCH:
            self._spool.write(pickle.APPENDS)
            self._items_in_batch = 0
        self.rows += 1

    def close(self, arrays: dict[str, np.ndarray] | None = None) -> None:
        """Write the npz: the object array, then ``arrays`` (plain, non-object arrays) beside it."""
        if self._items_in_batch:
            self._spool.write(pickle.APPENDS)
            self._items_in_batch = 0
        shape = (self.rows, self.width) if self.width else (self.rows,)
        head, tail = _object_array_pickle_frame(shape)
        try:
            with zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                header = io.BytesIO()
                npy_format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": shape})
                self._data_start = len(header.getvalue()) + len(head)  # member bytes before the first row's
                with zf.open(f"{self.name}.npy", "w", force_zip64=True) as f:
                    f.write(header.getvalue())
                    f.write(head)
                    self._spool.seek(0)
                    shutil.copyfileobj(self._spool, f, 1 << 20)
                    f.write(tail)
                for key, value in (arrays or {}).items():
                    with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                        npy_format.write_array(f, np.asanyarray(value), allow_pickle=False)
        finally:
            self.discard()

    def read_row(self, which: str) -> object:
        """The "first" or "last" row of the closed file, read back from its bytes through the
        restricted unpickler: a (width,) object array as ``np.load`` gives it, or the (N,) array's element."""
        start, stop = self._spans[which]
        with open(self.path, "rb") as f:
            f.seek(_member_data_offset(self.path, f"{self.name}.npy") + self._data_start + start)
            row = f.read(stop - start)
        shape = (1, self.width) if self.width else (1,)
        head, tail = _object_array_pickle_frame(shape)
        stream = io.BytesIO(b"".join((head, pickle.MARK, row, pickle.APPENDS, tail)))
        items = list(StreamingUnpickler(stream, len(stream.getvalue()), whole=True).items())
        return _object_array(items, shape, False)[0]

    def discard(self) -> None:
        self._spool.close()


def _member_data_offset(path: str, member: str) -> int:
    """Where a stored (uncompressed) zip member's bytes start in the file."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_length + extra_length


class _Split:
    """Placeholder pickled where the element list goes, to cut numpy's array pickle in two."""


_SPLIT_BYTES = b"jumpnet-stream:element-list"


def _object_array_pickle_frame(shape: tuple[int, ...]) -> tuple[bytes, bytes]:
    """The pickle of an object array of ``shape`` before and after its element list (EMPTY_LIST
    ends the head; APPENDS batches go between)."""
    func, args, state = np.empty(0, dtype=object).__reduce__()
    state = (state[0], tuple(shape), state[2], False, _SPLIT_BYTES)

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj: object):
            return (func, args, state) if isinstance(obj, _Split) else NotImplemented

    buf = io.BytesIO()
    pickler = Pickler(buf, protocol=3)
    pickler.fast = True
    pickler.dump(_Split())
    marker = pickle.SHORT_BINBYTES + bytes([len(_SPLIT_BYTES)]) + _SPLIT_BYTES
    head, tail = buf.getvalue().split(marker)
    return head + pickle.EMPTY_LIST, tail
