"""HDF5 datasets (h5py): the store's fields as chunked, compressed datasets; keys and provenance as attributes."""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import h5py
import numpy as np

from .chunk import DEFAULT_ROWS, SAMPLE_FIELDS, Chunk, empty_samples, images_to_float, images_to_uint8, select_rows
from .errors import JumpnetError
from .npz import provenance_records

_STRING = h5py.string_dtype("utf-8")


class H5DatasetWriter:
    """Appends chunks to a new HDF5 file; images chunked 64 frames at a time, lzf-compressed (fast)."""

    def __init__(self, path: str | os.PathLike, keys: list[str], image_dtype: object = np.uint8,
                 image_shape: tuple[int, ...] = (227, 227, 3)):
        self.path = os.fspath(path)
        self.keys = list(keys)
        self.image_dtype = np.dtype(image_dtype)
        self.image_shape = tuple(image_shape)
        self._file = h5py.File(self.path, "w")
        self.rows = 0

    def _create(self, chunk: Chunk) -> None:
        for name in SAMPLE_FIELDS:
            column = chunk[name]
            dtype = self.image_dtype if name == "image" else _STRING if column.dtype.kind == "U" else column.dtype
            rows = DEFAULT_ROWS if name == "image" else 4096
            self._file.create_dataset(name, shape=(0, *column.shape[1:]), maxshape=(None, *column.shape[1:]),
                                      dtype=dtype, chunks=(rows, *column.shape[1:]), compression="lzf")

    def write(self, chunk: Chunk) -> None:
        if not len(chunk):
            return
        if "image" not in self._file:
            self._create(chunk)
        start, stop = self.rows, self.rows + len(chunk)
        for name in SAMPLE_FIELDS:
            data = self._file[name]
            data.resize(stop, axis=0)
            column = chunk[name]
            if name == "image" and self.image_dtype == np.float32:
                column = images_to_float(column)
            data[start:stop] = column.astype(object) if column.dtype.kind == "U" else column
        self.rows = stop

    def finish(self, provenance: list[dict[str, Any]]) -> None:
        if "image" not in self._file:  # an empty dataset still has every field
            self._create(empty_samples(len(self.keys), self.image_shape))
        self._file.attrs["keys"] = self.keys
        self._file.attrs["provenance"] = json.dumps(provenance)
        self._file.close()

    def abort(self) -> None:
        self._file.close()


class H5Dataset:
    """An HDF5 dataset opened for streaming reads (float images are converted back to uint8)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise JumpnetError(self.path, "no such file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise JumpnetError(self.path, f"not an HDF5 file ({exc})") from None
        missing = [name for name in SAMPLE_FIELDS if name not in self._file]
        if missing:
            raise JumpnetError(self.path, f"is not a jumpnet-stream dataset (no {', '.join(missing)})")
        self.keys = [k.decode() if isinstance(k, bytes) else str(k) for k in self._file.attrs.get("keys", [])]
        self.provenance = provenance_records(self._file.attrs.get("provenance", "[]"))
        self.image_shape = tuple(self._file["image"].shape[1:])

    def __len__(self) -> int:
        return self._file["label"].shape[0]

    def read(self, start: int, stop: int) -> Chunk:
        columns = {}
        for name in SAMPLE_FIELDS:
            columns[name] = self._column(name, start, stop)
        return Chunk(columns)

    def _column(self, name: str, start: int, stop: int) -> np.ndarray:
        column = self._file[name][start:stop]
        if name == "image":
            return images_to_uint8(column)
        if column.dtype.kind in "OS":
            return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in column], dtype=str)
        return column

    def chunks(self, rows: int = DEFAULT_ROWS) -> Iterator[Chunk]:
        for start in range(0, len(self), rows):
            yield self.read(start, min(start + rows, len(self)))

    def take(self, positions: np.ndarray) -> Iterator[Chunk]:
        return select_rows(self.chunks(), positions)

    def column(self, name: str) -> np.ndarray:
        """One small field whole."""
        return self._column(name, 0, len(self))
