"""Pickled object arrays in an npz (the recorder's ``data``, the seed's datasets), read and written one row at
a time: the reader streams the member through the restricted unpickler, the writer pickles rows as they come
(straight into the zip when the count is known) and records each row's span for reading rows back."""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import shutil
import tempfile
import warnings
import zipfile
from array import array
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

import numpy as np
from numpy.lib import format as npy_format

from .errors import JumpnetError
from .image_refs import SkipFallback
from .npz import (WHOLE_LOAD_RATIO, Counting, available_memory, member_data_offset, member_name, object_array,
                  open_member, open_zip, read_errors, read_header, stored_member_offset)
from .pickle_allowlist import NeedsWholeLoad
from .pickle_bounds import MEMO_BUDGET
from .safe_pickle import StreamingUnpickler


_APPENDS_BATCH = 1000  # rows per APPENDS opcode, as pickle itself batches
_DIRECT_BYTES = 1 << 16  # arrays this large are written from their own memory (ObjectArrayWriter._put_item)
_SPAN_BATCH = 1 << 16  # span entries (two a row) gathered before they go to their file
SKIP_BUFFER = 4 << 10  # the read buffer when images are stepped over: a recorder event's other fields are ~400 bytes


@dataclass
class ObjectArrayReader:
    """The rows of an npz member that holds a pickled object array of shape (N,) or (N, W)."""

    path: str
    name: str = "data"
    memo_budget: int = MEMO_BUDGET

    def __post_init__(self) -> None:
        self.path = os.fspath(self.path)
        with open_zip(self.path) as zf:
            info = zf.getinfo(member_name(zf, self.path, self.name))
            self.member, self.nbytes, self.stored_bytes = info.filename, info.file_size, info.compress_size
            #: Where the member's bytes start in the file when they are stored as they are (None: compressed).
            self.stored_at = stored_member_offset(self.path, info)
            with read_errors(self.path, self.name), open_member(zf, info, self.path, self.name) as f:
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

    def rows(self, skip_images: bool = False) -> Iterator[object]:
        """The entries in order: a 2-D array's rows as tuples, a 1-D array's elements as they are.

        With ``skip_images`` and a stored member (``stored_at``), images' pixels are left in the file: an
        :class:`image_refs.ImageRef` stands for each. An array that cannot be streamed so raises
        :class:`image_refs.SkipFallback` (it would be loaded whole, pixels and all: read it without skipping)."""
        done = 0
        skip_images = skip_images and self.stored_at is not None
        try:
            if self.fortran and len(self.shape) == 2 and self.shape[1] > 1:
                raise NeedsWholeLoad("Fortran-ordered 2-D array")
            for row in self._stream(skip_images):
                yield row
                done += 1
        except NeedsWholeLoad as why:
            if skip_images:
                raise SkipFallback(self.path, f"'{self.name}' cannot be streamed ({why})") from None
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

    def _unpickler(self, raw: BinaryIO, **options) -> tuple[StreamingUnpickler, Callable[[], int]]:
        """The unpickler over the member open as ``raw`` (the zip member; with ``skip_images``, the file at
        the member's start), and the bytes of the member read so far."""
        read_header(raw, self.path, self.name)
        if options.get("skip_images"):
            start = self.stored_at
            vm = StreamingUnpickler(raw, self.nbytes - (raw.tell() - start), expected=math.prod(self.shape), **options)
            return vm, lambda: raw.tell() - start
        counting = Counting(raw)
        counting.count = raw.tell()
        vm = StreamingUnpickler(io.BufferedReader(counting, 1 << 16), self.nbytes - raw.tell(),
                                expected=math.prod(self.shape), **options)
        return vm, lambda: counting.count

    def _open(self, context: contextlib.ExitStack, skip_images: bool) -> BinaryIO:
        """The member's bytes: the zip member, or (to seek over images) the file itself at the member's start,
        through a small buffer (what is read between two images is a few hundred bytes, and the kernel's
        read-ahead does not read the images stepped over: measured, a 10-minute keylog's scan reads 43 MB of
        its 2.2 GB from disk, read-ahead of the next event's fields included)."""
        if skip_images:
            raw = context.enter_context(open(self.path, "rb", buffering=SKIP_BUFFER))
            raw.seek(self.stored_at)
            return raw
        zf = context.enter_context(open_zip(self.path))
        return context.enter_context(open_member(zf, zf.getinfo(self.member), self.path, self.name))

    def _stream(self, skip_images: bool = False) -> Iterator[object]:
        with contextlib.ExitStack() as context:
            context.enter_context(read_errors(self.path, self.name, streaming=True))
            raw = self._open(context, skip_images)
            vm, position = self._unpickler(raw, memo_budget=self.memo_budget, skip_images=skip_images)
            for entry in self._entries(vm.items()):
                self.bytes_read = position()
                yield entry
        self.bytes_read = self.nbytes
        if vm.items_out != math.prod(self.shape):
            raise JumpnetError(self.path, f"'{self.name}' holds {vm.items_out} elements but its header "
                                          f"says shape {self.shape}")

    def _whole(self, skip: int, why: str) -> Iterator[object]:
        with open_zip(self.path) as zf, read_errors(self.path, self.name), \
                open_member(zf, zf.getinfo(self.member), self.path, self.name) as raw:
            vm, _ = self._unpickler(raw, whole=True)
            items = list(vm.items())
        if len(items) != math.prod(self.shape):
            raise JumpnetError(self.path, f"'{self.name}' does not match its header shape {self.shape}")
        # Only once it worked: a damaged file that fails both ways gets one line, its error.
        warnings.warn(f"{self.path}: loading '{self.name}' whole ({why})", stacklevel=3)
        self.bytes_read = self.nbytes
        array = object_array(items, self.shape, self.fortran)
        del items
        for i in range(skip, len(array)):
            yield tuple(array[i]) if array.ndim == 2 else array[i]


class WriteBehind:
    """A large output's bytes sent to the disk as they are written, and dropped from the page cache once
    there: each ``block`` is handed to writeback as soon as it is complete, and the one before it (clean by
    then) is dropped. The page cache it fills stays a few blocks however large the file, and no fresh memory
    is taken per byte: measured here, 0.8 GB written in 1.0 s against 2.9-3.9 s through the page cache
    (on this virtual machine, memory the kernel has not touched lately costs ~4 ms a MB to touch)."""

    def __init__(self, file: BinaryIO, block: int = 32 << 20):
        self.file, self.block = file, block
        self._marks = [file.tell()]  # where each block handed to writeback starts

    def advance(self) -> None:
        """Called as the file grows: at every ``block`` more, hand the new bytes over, drop the block before."""
        end = self.file.tell()
        if end - self._marks[-1] < self.block or not hasattr(os, "posix_fadvise"):
            return
        self.file.flush()
        fd = self.file.fileno()
        os.posix_fadvise(fd, self._marks[-1], end - self._marks[-1], os.POSIX_FADV_DONTNEED)  # starts writeback
        if len(self._marks) > 1:  # written back by now (or being): its pages are dropped, or left if still dirty
            os.posix_fadvise(fd, self._marks[-2], self._marks[-1] - self._marks[-2], os.POSIX_FADV_DONTNEED)
        self._marks.append(end)


class ObjectArrayWriter:
    """Writes an npz whose ``name`` member is a pickled object array, appended one row at a time.

    Rows are pickled as they come (numpy's layout: an (N, W) array's elements in row order, or an
    (N,) array of tuples). With ``rows`` known up front they go straight into the zip member; otherwise
    into a spool file beside the output, copied into the zip by :meth:`close` once the count is known.
    Batches (MARK ... APPENDS) end only between rows, so every row's pickle stands alone; with ``spans``,
    the byte span of every row is written beside the array (``<name>_rows``: loaders ignore it) for reading
    rows back at random (:func:`read_object_rows`).
    """

    def __init__(self, path: str | os.PathLike, *, name: str = "data", width: int | None = 6,
                 rows: int | None = None, spans: bool = False):
        self.path = os.fspath(path)
        self.name = name
        self.width = width
        self.expected = rows
        self.spans = spans
        self.rows = 0
        self._items_in_batch = 0
        self._buf = io.BytesIO()
        self._pickler = pickle.Pickler(self._buf, protocol=3)
        self._pickler.fast = True  # no memo: each item's pickle stands alone, and nothing is retained
        # each row's start and stop from the first row's byte (16 bytes a row), gathered a batch at a time
        # into a file beside the output; the first and last rows' kept for reading them back
        self._spans = array("q")
        self._span_file: BinaryIO | None = tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(self.path))) \
            if spans else None
        self._ends: dict[str, tuple[int, int]] = {}
        self._frames: dict[tuple, tuple[bytes, bytes] | None] = {}  # (shape, dtype) -> an array pickle's head, tail
        self._written = 0
        self._zip: zipfile.ZipFile | None = None
        if rows is None:
            self._spool: BinaryIO | None = tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(self.path)))
            self._sink = self._spool
            self._file, self._behind = None, None
        else:
            self._spool = None
            self._file: BinaryIO | None = open(self.path, "w+b")
            self._zip = zipfile.ZipFile(self._file, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
            self._sink = self._zip.open(f"{self.name}.npy", "w", force_zip64=True)
            self._data_start = self._begin(self._sink, rows)
            self._behind: WriteBehind | None = WriteBehind(self._file)

    def _shape(self, rows: int) -> tuple[int, ...]:
        return (rows, self.width) if self.width else (rows,)

    def _begin(self, member: BinaryIO, rows: int) -> int:
        """The .npy header and the pickle up to the element list; returns their length."""
        header = io.BytesIO()
        npy_format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": self._shape(rows)})
        head, _ = object_array_pickle_frame(self._shape(rows))
        member.write(header.getvalue())
        member.write(head)
        return len(header.getvalue()) + len(head)

    def _pickled(self, obj: object) -> bytes:
        self._buf.seek(0)
        self._buf.truncate()
        self._pickler.dump(obj)
        return self._buf.getbuffer()[2:-1].tobytes()  # strip PROTO 3 and STOP

    def _put(self, data: bytes | memoryview) -> None:
        self._sink.write(data)
        self._written += len(data)

    def _put_item(self, item: object) -> None:
        """An item's pickle; a large C-ordered array's as the pickler writes it (its reduction, its bytes as
        BINBYTES, then BUILD), the bytes straight from the array (no copies of the pixels on the way)."""
        if not (isinstance(item, np.ndarray) and type(item) is np.ndarray and item.nbytes >= _DIRECT_BYTES
                and item.flags.c_contiguous and item.dtype.isnative and not item.dtype.hasobject
                and item.nbytes < 1 << 32):
            self._put(self._pickled(item))
            return
        key = (item.shape, item.dtype.str)
        if key not in self._frames:  # the pickle of an array of this shape and dtype, around its bytes
            probe = np.zeros(item.shape, item.dtype)
            whole = self._pickled(probe)
            head = whole.find(pickle.BINBYTES + probe.nbytes.to_bytes(4, "little") + bytes(min(probe.nbytes, 64))) + 5
            frame = (whole[:head], whole[head + probe.nbytes:])
            self._frames[key] = frame if head > 4 and frame[0] + probe.tobytes() + frame[1] == whole else None
        if self._frames[key] is None:  # not laid out so (another numpy): pickled as any item
            self._put(self._pickled(item))
            return
        head, tail = self._frames[key]
        self._put(head)
        self._put(memoryview(item.reshape(-1).view(np.uint8)))
        self._put(tail)

    def append(self, row: tuple) -> None:
        items = row if self.width else (tuple(row),)
        if self.width and len(row) != self.width:
            raise ValueError(f"row has {len(row)} fields, expected {self.width}")
        if self.expected is not None and self.rows == self.expected:
            raise ValueError(f"more rows than the {self.expected} announced")
        if self._items_in_batch == 0:
            self._put(pickle.MARK)
        start = self._written
        for item in items:
            self._put_item(item)
        if self.spans:
            self._ends.setdefault("first", (start, self._written))
            self._ends["last"] = (start, self._written)
            self._spans.extend((start, self._written))
            if len(self._spans) >= _SPAN_BATCH:
                self._span_file.write(self._spans.tobytes())
                del self._spans[:]
        if self._behind is not None:
            self._behind.advance()
        self._items_in_batch += len(items)
        if self._items_in_batch >= _APPENDS_BATCH:
            self._put(pickle.APPENDS)
            self._items_in_batch = 0
        self.rows += 1

    def close(self, arrays: dict[str, np.ndarray] | None = None) -> None:
        """Write the npz: the object array, its rows' spans, then ``arrays`` (plain arrays) beside it."""
        if self._items_in_batch:
            self._put(pickle.APPENDS)
            self._items_in_batch = 0
        _, tail = object_array_pickle_frame(self._shape(self.rows))
        try:
            if self._spool is not None:
                self._zip = zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
                with self._zip.open(f"{self.name}.npy", "w", force_zip64=True) as member:
                    self._data_start = self._begin(member, self.rows)
                    self._spool.seek(0)
                    shutil.copyfileobj(self._spool, member, 1 << 20)
                    member.write(tail)
            else:
                if self.rows != self.expected:
                    raise ValueError(f"{self.rows} rows written, {self.expected} announced")
                self._sink.write(tail)
                self._sink.close()
            if self.spans:
                self._write_spans()
            for key, value in (arrays or {}).items():
                with self._zip.open(f"{key}.npy", "w", force_zip64=True) as f:
                    npy_format.write_array(f, np.asanyarray(value), allow_pickle=False)
            self._zip.close()
            if self._file is not None:
                self._file.close()
        finally:
            self.discard()

    def _write_spans(self) -> None:
        """The rows' spans as the member ``<name>_rows``, (N, 2) int64 offsets into the data member, copied
        from their file a batch at a time."""
        self._span_file.write(self._spans.tobytes())
        self._span_file.seek(0)
        with self._zip.open(f"{self.name}_rows.npy", "w", force_zip64=True) as member:
            npy_format.write_array_header_1_0(member, {"descr": "<i8", "fortran_order": False, "shape": (self.rows, 2)})
            while batch := self._span_file.read(_SPAN_BATCH * 8):
                member.write((np.frombuffer(batch, "<i8") + self._data_start).tobytes())

    def read_row(self, which: str) -> object:
        """The "first" or "last" row of the closed file, read back from its bytes through the restricted
        unpickler: a (width,) object array as ``np.load`` gives it, or the (N,) array's element."""
        start, stop = self._ends[which]
        offset = member_data_offset(self.path, f"{self.name}.npy") + self._data_start
        return read_object_rows(self.path, offset + start, offset + stop, 1, self.width)[0]

    def discard(self) -> None:
        if self._span_file is not None:
            self._span_file.close()
        if self._spool is not None:
            self._spool.close()
        elif self._zip is not None and self._zip.fp is not None:
            try:
                self._sink.close()
                self._zip.close()
            except (OSError, ValueError):
                pass
        if self._file is not None:
            self._file.close()


def read_object_rows(path: str, start: int, stop: int, rows: int, width: int | None) -> np.ndarray:
    """``rows`` consecutive rows of an object array this tool wrote, from their bytes ``[start, stop)`` in
    the file, through the restricted unpickler: an (rows, width) object array (or (rows,))."""
    with open(path, "rb") as f:
        data = os.pread(f.fileno(), stop - start, start)
    if len(data) != stop - start:
        raise JumpnetError(path, "the rows' bytes are cut short (a truncated file)")
    shape = (rows, width) if width else (rows,)
    head, tail = object_array_pickle_frame(shape)
    stream = io.BytesIO(b"".join((head, pickle.MARK, data, pickle.APPENDS, tail)))
    with read_errors(path, "data"):
        items = list(StreamingUnpickler(stream, len(stream.getvalue()), whole=True).items())
        if len(items) != math.prod(shape):
            raise JumpnetError(path, f"'data' rows {start}..{stop} do not hold {rows} entries")
    return object_array(items, shape, False)


class _Split:
    """Placeholder pickled where the element list goes, to cut numpy's array pickle in two."""


_SPLIT_BYTES = b"jumpnet-stream:element-list"


def object_array_pickle_frame(shape: tuple[int, ...]) -> tuple[bytes, bytes]:
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
