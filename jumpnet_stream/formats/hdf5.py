"""HDF5 datasets (h5py): the store's fields as chunked, compressed datasets; keys and provenance as
attributes. h5py is imported on first use (a command that never meets an .h5 does not load it)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..chunk import DEFAULT_ROWS, Chunk, images_to_float, images_to_uint8
from ..errors import JumpnetError
from ..npz import provenance_records
from ..schema import SCHEMA, complete, empty
from .base import DatasetReader, DatasetSpec, Format, register
from .checks import check_columns, check_keys, chunk_rows, missing_fields

MAX_ATTRIBUTE_BYTES = 16 << 20  # 'keys' and 'provenance' (a JSON record of the stages)


def _h5py() -> Any:
    import h5py

    return h5py


def known_filters() -> dict[int, str]:
    """HDF5 filters that only compress or check data; any other (a plugin, scale-offset, n-bit) is refused."""
    h5z = _h5py().h5z
    return {h5z.FILTER_DEFLATE: "gzip", h5z.FILTER_SHUFFLE: "shuffle", h5z.FILTER_FLETCHER32: "fletcher32",
            h5z.FILTER_SZIP: "szip", h5z.FILTER_LZF: "lzf"}


@dataclass(frozen=True)
class H5Options:
    """``dtype``: the images as stored, uint8 or float32 in [0, 1]."""

    dtype: str = "uint8"

    def __post_init__(self) -> None:
        if self.dtype not in ("uint8", "float32"):
            raise JumpnetError(None, f"dtype must be float32 or uint8, not {self.dtype}")


def _check_field(path: str, file: Any, name: str) -> Any:
    """A field's dataset, refused unless its data is this file's own: a hard link to a dataset, neither
    virtual nor in external files, with no filter but known compressions."""
    h5py = _h5py()
    link = file.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        kind = {h5py.SoftLink: "a soft link", h5py.ExternalLink: "an external link"}.get(type(link), "a link")
        raise JumpnetError(path, f"'{name}' is {kind}: a dataset's fields must be its own")
    dataset = file[name]
    if not isinstance(dataset, h5py.Dataset):
        raise JumpnetError(path, f"'{name}' is a group, expected a dataset")
    if dataset.is_virtual:
        raise JumpnetError(path, f"'{name}' is a virtual dataset (its data would come from other files)")
    if dataset.external:
        raise JumpnetError(path, f"'{name}' keeps its data in external files ({dataset.external[0][0]!r}, ...)")
    plist = dataset.id.get_create_plist()
    known = known_filters()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in known:
            raise JumpnetError(path, f"'{name}' uses HDF5 filter {code}, not one of the known compressions "
                                     f"({', '.join(sorted(known.values()))})")
    return dataset


def _attribute(path: str, file: Any, name: str, default: object) -> object:
    if name not in file.attrs:
        return default
    attribute = file.attrs.get_id(name)
    if attribute.get_storage_size() > MAX_ATTRIBUTE_BYTES:
        raise JumpnetError(path, f"attribute '{name}' is implausibly large ({attribute.get_storage_size()} bytes)")
    return file.attrs[name]


def _check_rows_on_disk(path: str, rows: int, image: Any) -> None:
    """N rows of images are stored in this file: every chunk written, or contiguous data of N rows."""
    row_bytes = image.dtype.itemsize * math.prod(image.shape[1:])
    if image.chunks is not None:
        needed = -(-rows // image.chunks[0])
        stored = image.id.get_num_chunks() if needed else 0
        ok = stored >= needed
    else:
        stored = image.id.get_storage_size()
        ok = stored >= rows * row_bytes
    if not ok:
        unit = "chunks" if image.chunks is not None else "bytes"
        raise JumpnetError(path, f"claims {rows} samples, but its 'image' holds only {stored} {unit} (damaged, or "
                                 "not what it claims)")


class H5DatasetWriter:
    """Appends chunks to a new HDF5 file; images chunked 64 frames at a time (fewer for large images),
    lzf-compressed (fast)."""

    def __init__(self, path: str | os.PathLike, keys: list[str], image_dtype: object = np.uint8,
                 image_shape: tuple[int, ...] = (227, 227, 3)):
        self.path = os.fspath(path)
        self.keys = list(keys)
        self.image_dtype = np.dtype(image_dtype)
        self.image_shape = tuple(image_shape)
        self._file = _h5py().File(self.path, "w")
        self.rows = 0

    def _create(self, chunk: Chunk) -> None:
        string = _h5py().string_dtype("utf-8")
        for field in SCHEMA:
            column = chunk[field.name]
            dtype = self.image_dtype if field.name == "image" else string if field.text else column.dtype
            rows = chunk_rows(DEFAULT_ROWS, self.image_dtype.itemsize * math.prod(column.shape[1:])) \
                if field.name == "image" else 4096
            self._file.create_dataset(field.name, shape=(0, *column.shape[1:]), maxshape=(None, *column.shape[1:]),
                                      dtype=dtype, chunks=(rows, *column.shape[1:]), compression="lzf")

    def write(self, chunk: Chunk) -> None:
        chunk = complete(chunk.columns, len(self.keys))  # a field the caller's chunk lacks: its default
        if not len(chunk):
            return
        if "image" not in self._file:
            self._create(chunk)
        start, stop = self.rows, self.rows + len(chunk)
        for field in SCHEMA:
            data = self._file[field.name]
            data.resize(stop, axis=0)
            column = chunk[field.name]
            if field.name == "image" and self.image_dtype == np.float32:
                column = images_to_float(column)
            data[start:stop] = column.astype(object) if column.dtype.kind == "U" else column
        self.rows = stop

    def finish(self, provenance: list[dict[str, Any]]) -> None:
        if "image" not in self._file:  # an empty dataset still has every field
            self._create(empty(len(self.keys), self.image_shape))
        self._file.attrs["keys"] = self.keys
        self._file.attrs["provenance"] = json.dumps(provenance)
        self._file.close()

    def abort(self) -> None:
        self._file.close()


class H5Dataset(DatasetReader):
    """An HDF5 dataset opened for streaming reads (float images are converted back to uint8); the file is
    opened on first read, per process."""

    def _open(self, keys: list[str] | None) -> None:
        if not os.path.exists(self.path):
            raise JumpnetError(self.path, "no such file")
        file = self._file()
        try:
            missing_fields(self.path, set(file))
            fields = {f.name: _check_field(self.path, file, f.name) for f in SCHEMA if f.name in file}
            stored = _attribute(self.path, file, "keys", [])
            if isinstance(stored, np.ndarray) and stored.ndim == 1:
                stored = [k.decode("utf-8", "replace") if isinstance(k, bytes) else k for k in stored.tolist()]
            self.keys = check_keys(self.path, stored)
            self.provenance = provenance_records(_attribute(self.path, file, "provenance", "[]"))
            self._rows = check_columns(self.path, self.keys, {n: (d.shape, d.dtype) for n, d in fields.items()},
                                       image_dtypes=("uint8", "float32"), chunks={n: d.chunks for n, d in fields.items()})
            _check_rows_on_disk(self.path, self._rows, fields["image"])
            self.image_shape = tuple(fields["image"].shape[1:])
            self.stored_dtype = str(fields["image"].dtype)
            self.block = fields["image"].chunks[0] if fields["image"].chunks else DEFAULT_ROWS
        finally:
            self.close()

    def _file(self) -> Any:
        if self.__dict__.get("_handle") is None:
            try:
                self._handle = _h5py().File(self.path, "r")
            except OSError as exc:
                raise JumpnetError(self.path, f"not an HDF5 file ({exc})") from None
        return self._handle

    def close(self) -> None:
        handle = self.__dict__.get("_handle")
        if handle is not None:
            handle.close()
        self._handle = None

    def _read(self, start: int, stop: int) -> Chunk:
        file = self._file()
        return complete({f.name: self._column(file, f.name, start, stop) for f in SCHEMA if f.name in file},
                        len(self.keys))

    @staticmethod
    def _column(file: Any, name: str, start: int, stop: int) -> np.ndarray:
        column = file[name][start:stop]
        if name == "image":
            return images_to_uint8(column)
        if column.dtype.kind in "OS":
            return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in column], dtype=str)
        return column

    def column(self, name: str) -> np.ndarray:
        file = self._file()
        if name not in file:
            return super().column(name)
        return self._column(file, name, 0, len(self))


@register
class HDF5(Format):
    name = "h5"
    title = ".h5"
    extension = ".h5"
    reader = H5Dataset
    Options = H5Options

    @classmethod
    def create(cls, path: str, spec: DatasetSpec, options: H5Options, name: str) -> H5DatasetWriter:
        return H5DatasetWriter(path, list(spec.keys), options.dtype, spec.image_shape)
