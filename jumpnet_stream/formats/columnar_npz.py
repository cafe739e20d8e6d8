"""Columnar ``.npz``: one plain array per field (``image``, ``label``, ...), loadable with ``np.load`` and no
pickle; written and read as streams (the image member is appended chunk by chunk). This tool writes the
image member uncompressed, so any rows are read by seeking to them; one another tool compressed
(``np.savez_compressed``) is read in one pass, like a legacy file."""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from numpy.lib import format as npy_format

from ..chunk import DEFAULT_ROWS, Chunk, images_to_float, images_to_uint8, rows_within, select_rows
from ..errors import JumpnetError
from ..npz import member_data_offset, member_name, open_zip, read_errors, read_header, read_provenance, \
    read_small_array
from ..recording import normalize_keys
from ..schema import SCHEMA, SMALL_FIELDS, complete, empty
from .base import DatasetReader, DatasetSpec, Format, register
from .checks import MAX_SMALL_BYTES, check_columns

_DEFLATE_RATIO = 1100  # deflate expands at most 1032 times: a member declaring more than that is forged


@dataclass(frozen=True)
class ColumnarOptions:
    """``dtype``: the images as stored, uint8 or float32 in [0, 1]."""

    dtype: str = "uint8"

    def __post_init__(self) -> None:
        if self.dtype not in ("uint8", "float32"):
            raise JumpnetError(None, f"dtype must be float32 or uint8, not {self.dtype}")


class ColumnarNpzWriter:
    """Writes the image member while chunks arrive (the row count is known up front); the small fields,
    a few bytes per sample, are kept and written at the end."""

    def __init__(self, path: str | os.PathLike, keys: list[str], rows: int, image_shape: tuple[int, ...],
                 image_dtype: object = np.uint8):
        self.path = os.fspath(path)
        self.keys = list(keys)
        self.expected = rows
        self.image_dtype = np.dtype(image_dtype)
        self._zip = zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._image = self._zip.open("image.npy", "w", force_zip64=True)
        npy_format.write_array_header_2_0(self._image, {"descr": npy_format.dtype_to_descr(self.image_dtype),
                                                        "fortran_order": False, "shape": (rows, *image_shape)})
        self._small = [Chunk({k: v for k, v in empty(len(keys), image_shape).columns.items() if k != "image"})]
        self.image_shape = tuple(image_shape)
        self.rows = 0

    def write(self, chunk: Chunk) -> None:
        chunk = complete(chunk.columns, len(self.keys))  # a field the caller's chunk lacks: its default
        if self.rows + len(chunk) > self.expected:
            raise ValueError("more rows than announced")
        images = chunk["image"]
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"images of {images.shape[1:]} in a file announced with {self.image_shape}")
        if self.image_dtype == np.float32:
            images = images_to_float(images)
        self._image.write(np.ascontiguousarray(images, dtype=self.image_dtype).tobytes())
        self._small.append(Chunk({k: v.copy() for k, v in chunk.columns.items() if k != "image"}))
        self.rows += len(chunk)

    def finish(self, provenance: list[dict[str, Any]]) -> None:
        if self.rows != self.expected:
            raise ValueError(f"{self.rows} rows written, {self.expected} announced")
        self._image.close()
        small = Chunk.concat(self._small) if self.rows else self._small[0]
        for name in SMALL_FIELDS:
            with self._zip.open(f"{name}.npy", "w", force_zip64=True) as f:
                npy_format.write_array(f, small[name], allow_pickle=False)
        for name, value in (("keys", np.array(self.keys)), ("provenance", np.array(json.dumps(provenance)))):
            with self._zip.open(f"{name}.npy", "w") as f:
                npy_format.write_array(f, value, allow_pickle=False)
        self._zip.close()

    def abort(self) -> None:
        self._image.close()
        self._zip.close()


class ColumnarNpzDataset(DatasetReader):
    """A columnar ``.npz`` opened for reading: the small fields (checked to fit in memory) are read once,
    images are read from the zip a chunk at a time, or by seeking when the member is stored uncompressed."""

    def _open(self, keys: list[str] | None) -> None:
        headers = self._headers()
        shape, fortran, dtype = headers["image"]
        if fortran:
            raise JumpnetError(self.path, "'image' is stored in Fortran order, expected C order")
        self._shape, self._dtype = shape, dtype
        self.stored_dtype = str(dtype)
        self.image_shape = tuple(shape[1:])
        self.keys = normalize_keys(read_small_array(self.path, "keys"), self.path)
        self._rows = check_columns(self.path, self.keys, {name: (h[0], h[2]) for name, h in headers.items()},
                                   image_dtypes=("uint8", "float32"))
        self.provenance = read_provenance(self.path)
        self._small = {name: _text(self.path, name, read_small_array(self.path, name, limit=MAX_SMALL_BYTES))
                       for name in headers if name != "image"}
        with open_zip(self.path) as zf:
            info = zf.getinfo(member_name(zf, self.path, "image"))
            stored = info.compress_type == zipfile.ZIP_STORED
        self._image_offset = member_data_offset(self.path, info.filename) + self._header_bytes if stored else None

    def _headers(self) -> dict[str, tuple[tuple[int, ...], bool, np.dtype]]:
        """Every field's .npy header, each member's size checked against what it declares: the rows
        claimed must be in the file (at most deflate's ratio over its compressed bytes), and the small
        fields, kept in memory, within :data:`MAX_SMALL_BYTES` together."""
        headers, small = {}, 0
        with open_zip(self.path) as zf:
            present = {n[:-4] if n.endswith(".npy") else n for n in zf.namelist()}
            for field in SCHEMA:
                if field.name not in present and field.name != "image":
                    continue
                info = zf.getinfo(member_name(zf, self.path, field.name))
                with read_errors(self.path, field.name), zf.open(info) as f:
                    headers[field.name] = shape, _, dtype = read_header(f, self.path, field.name)
                    if field.name == "image":
                        self._header_bytes = f.tell()
                    declared = math.prod(shape) * (1 if dtype.hasobject else dtype.itemsize)
                    if declared > info.file_size - f.tell() or declared > info.compress_size * _DEFLATE_RATIO:
                        raise JumpnetError(self.path, f"'{field.name}' declares {shape} {dtype}, more than its "
                                                      f"{info.file_size} bytes hold")
                if field.name != "image":
                    small += declared
        if small > MAX_SMALL_BYTES:
            raise JumpnetError(self.path, f"its fields other than 'image' declare {small >> 20} MB, over the "
                                          f"{MAX_SMALL_BYTES >> 20} MB kept in memory")
        return headers

    @property
    def _row_bytes(self) -> int:
        return int(np.prod(self._shape[1:])) * self._dtype.itemsize

    def _chunk(self, images: bytes | bytearray, start: int, n: int) -> Chunk:
        if len(images) != n * self._row_bytes:
            raise JumpnetError(self.path, "'image' is truncated")
        array = images_to_uint8(np.frombuffer(images, self._dtype).reshape(n, *self._shape[1:]))
        return complete({"image": array, **{k: v[start:start + n] for k, v in self._small.items()}},
                        len(self.keys))

    def _read(self, start: int, stop: int) -> Chunk:
        n = stop - start
        if self._image_offset is None:  # a compressed member: read through from its start
            parts = list(select_rows(self.chunks(), np.arange(start, stop)))
            return Chunk.concat(parts) if parts else self._chunk(bytearray(), 0, 0)
        with open(self.path, "rb") as f:
            data = os.pread(f.fileno(), n * self._row_bytes, self._image_offset + start * self._row_bytes)
        return self._chunk(bytearray(data), start, n)

    def chunks(self, rows: int = DEFAULT_ROWS) -> Iterator[Chunk]:
        rows = rows_within(self.image_shape, rows, self._dtype.itemsize)
        with open_zip(self.path) as zf, zf.open(member_name(zf, self.path, "image")) as f:
            read_header(f, self.path, "image")
            for start in range(0, len(self), rows):
                n = min(rows, len(self) - start)
                yield self._chunk(bytearray(f.read(n * self._row_bytes)), start, n)

    def column(self, name: str) -> np.ndarray:
        return self._small[name] if name in self._small else super().column(name)

    @property
    def random_access(self) -> bool:
        """Only a stored image member: a deflated one is read from its start for any row, so ``take`` and
        shuffled batches stream it once instead of decompressing it again for every block."""
        return self._image_offset is not None


def _text(path: str, name: str, column: np.ndarray) -> np.ndarray:
    """A text field as a str array (another writer may have stored an object array of str)."""
    if column.dtype.hasobject:
        if not all(isinstance(value, str) for value in column.reshape(-1)):
            raise JumpnetError(path, f"'{name}' holds values that are not text")
        return column.astype(str)
    return column


def _has_image_member(path: str) -> bool:
    if not (os.path.isfile(path) and zipfile.is_zipfile(path)):
        return False
    with zipfile.ZipFile(path) as zf:
        return "image.npy" in zf.namelist()


@register
class ColumnarNpz(Format):
    name = "npz columnar"
    title = "columnar .npz"
    extension = ".npz"
    layout = "columnar"
    reader = ColumnarNpzDataset
    Options = ColumnarOptions
    needs_row_count = True
    appendable = False
    random_access = True  # files this tool wrote are; a deflated one is not (ColumnarNpzDataset.random_access)

    @classmethod
    def recognises(cls, path: str) -> bool:
        return _has_image_member(path)

    @classmethod
    def create(cls, path: str, spec: DatasetSpec, options: ColumnarOptions, name: str) -> ColumnarNpzWriter:
        if spec.rows is None:
            raise ValueError("a columnar .npz needs its row count up front")
        return ColumnarNpzWriter(path, list(spec.keys), spec.rows, spec.image_shape, options.dtype)
