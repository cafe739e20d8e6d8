"""Columnar ``.npz``: one plain array per field (``image``, ``label``, ...), loadable with ``np.load``
and no pickle; written and read as streams (the image member is appended chunk by chunk)."""

from __future__ import annotations

import json
import math
import os
import zipfile
from typing import Any, Iterator

import numpy as np
from numpy.lib import format as npy_format

from .chunk import DEFAULT_ROWS, SAMPLE_FIELDS, Chunk, empty_samples, images_to_float, images_to_uint8, select_rows
from .errors import JumpnetError
from .npz import _member_name, _open_zip, _read_errors, read_header, read_provenance, read_small_array
from .recording import normalize_keys
from .store import MAX_SMALL_BYTES, check_columns

_DEFLATE_RATIO = 1100  # deflate expands at most 1032 times: a member declaring more than that is forged


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
        self._small: list[Chunk] = [Chunk({k: v for k, v in empty_samples(len(keys), image_shape).columns.items()
                                           if k != "image"})]
        self.image_shape = tuple(image_shape)
        self.rows = 0

    def write(self, chunk: Chunk) -> None:
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
        for name in SAMPLE_FIELDS[1:]:
            column = small[name]
            with self._zip.open(f"{name}.npy", "w", force_zip64=True) as f:
                npy_format.write_array(f, column, allow_pickle=False)
        for name, value in (("keys", np.array(self.keys)), ("provenance", np.array(json.dumps(provenance)))):
            with self._zip.open(f"{name}.npy", "w") as f:
                npy_format.write_array(f, value, allow_pickle=False)
        self._zip.close()

    def abort(self) -> None:
        self._image.close()
        self._zip.close()


class ColumnarNpzDataset:
    """A columnar ``.npz`` opened for streaming reads: images read a chunk at a time from the zip."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        headers = self._headers()
        shape, fortran, dtype = headers["image"]
        if fortran:
            raise JumpnetError(self.path, "'image' is stored in Fortran order, expected C order")
        self._shape, self._dtype = shape, dtype
        self.image_shape = tuple(shape[1:])
        self.keys = normalize_keys(read_small_array(self.path, "keys"), self.path)
        check_columns(self.path, self.keys, {name: (h[0], h[2]) for name, h in headers.items()},
                      image_dtypes=("uint8", "float32"))
        self.provenance = read_provenance(self.path)
        self._small = {name: _text(self.path, name, read_small_array(self.path, name, limit=MAX_SMALL_BYTES))
                       for name in SAMPLE_FIELDS[1:]}

    def _headers(self) -> dict[str, tuple[tuple[int, ...], bool, np.dtype]]:
        """Every field's .npy header, each member's size checked against what it declares: the rows
        claimed must be in the file (at most deflate's ratio over its compressed bytes), and the small
        fields, kept in memory, within :data:`MAX_SMALL_BYTES` together."""
        headers, small = {}, 0
        with _open_zip(self.path) as zf:
            for name in SAMPLE_FIELDS:
                info = zf.getinfo(_member_name(zf, self.path, name))
                with _read_errors(self.path, name), zf.open(info) as f:
                    headers[name] = shape, _, dtype = read_header(f, self.path, name)
                    declared = math.prod(shape) * (1 if dtype.hasobject else dtype.itemsize)
                    if declared > info.file_size - f.tell() or declared > info.compress_size * _DEFLATE_RATIO:
                        raise JumpnetError(self.path, f"'{name}' declares {shape} {dtype}, more than its "
                                                      f"{info.file_size} bytes hold")
                if name != "image":
                    small += declared
        if small > MAX_SMALL_BYTES:
            raise JumpnetError(self.path, f"its fields other than 'image' declare {small >> 20} MB, over the "
                                          f"{MAX_SMALL_BYTES >> 20} MB kept in memory")
        return headers

    def __len__(self) -> int:
        return self._shape[0]

    def chunks(self, rows: int = DEFAULT_ROWS) -> Iterator[Chunk]:
        per_row = int(np.prod(self._shape[1:])) * self._dtype.itemsize
        with zipfile.ZipFile(self.path) as zf, zf.open("image.npy") as f:
            read_header(f, self.path, "image")
            for start in range(0, len(self), rows):
                n = min(rows, len(self) - start)
                data = f.read(n * per_row)
                if len(data) != n * per_row:
                    raise JumpnetError(self.path, "'image' is truncated")
                images = images_to_uint8(np.frombuffer(bytearray(data), self._dtype).reshape(n, *self._shape[1:]))
                yield Chunk({"image": images, **{k: v[start:start + n] for k, v in self._small.items()}})

    def take(self, positions: np.ndarray) -> Iterator[Chunk]:
        return select_rows(self.chunks(), positions)

    def column(self, name: str) -> np.ndarray:
        return self._small[name]


def _text(path: str, name: str, column: np.ndarray) -> np.ndarray:
    """A text field as a str array (another writer may have stored an object array of str)."""
    if column.dtype.hasobject:
        if not all(isinstance(value, str) for value in column.reshape(-1)):
            raise JumpnetError(path, f"'{name}' holds values that are not text")
        return column.astype(str)
    return column
