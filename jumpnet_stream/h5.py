"""HDF5 datasets (h5py): the store's fields as chunked, compressed datasets; keys and provenance as attributes."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterator

import h5py
import numpy as np

from .chunk import DEFAULT_ROWS, SAMPLE_FIELDS, Chunk, empty_samples, images_to_float, images_to_uint8, select_rows
from .errors import JumpnetError
from .npz import provenance_records
from .store import check_columns, check_keys, chunk_rows

_STRING = h5py.string_dtype("utf-8")
#: HDF5 filters that only compress or check data (gzip, shuffle, fletcher32, szip, lzf); any other (a
#: plugin, scale-offset, n-bit) is refused.
KNOWN_FILTERS = {h5py.h5z.FILTER_DEFLATE: "gzip", h5py.h5z.FILTER_SHUFFLE: "shuffle",
                 h5py.h5z.FILTER_FLETCHER32: "fletcher32", h5py.h5z.FILTER_SZIP: "szip",
                 h5py.h5z.FILTER_LZF: "lzf"}
MAX_ATTRIBUTE_BYTES = 16 << 20  # 'keys' and 'provenance' (a JSON record of the stages)


def _check_field(path: str, file: h5py.File, name: str) -> h5py.Dataset:
    """A field's dataset, refused unless its data is this file's own: a hard link to a dataset, neither
    virtual nor in external files, with no filter but known compressions."""
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
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in KNOWN_FILTERS:
            raise JumpnetError(path, f"'{name}' uses HDF5 filter {code}, not one of the known compressions "
                                     f"({', '.join(sorted(KNOWN_FILTERS.values()))})")
    return dataset


def _attribute(path: str, file: h5py.File, name: str, default: object) -> object:
    if name not in file.attrs:
        return default
    attribute = file.attrs.get_id(name)
    if attribute.get_storage_size() > MAX_ATTRIBUTE_BYTES:
        raise JumpnetError(path, f"attribute '{name}' is implausibly large ({attribute.get_storage_size()} bytes)")
    return file.attrs[name]


def _check_rows_on_disk(path: str, rows: int, image: h5py.Dataset) -> None:
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
            rows = chunk_rows(DEFAULT_ROWS, self.image_dtype.itemsize * math.prod(column.shape[1:])) \
                if name == "image" else 4096
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
        try:
            self._check()
        except BaseException:
            self._file.close()
            raise
        self.image_shape = tuple(self._file["image"].shape[1:])

    def _check(self) -> None:
        """Refuse on open what does not fit (see :func:`_check_field`, :func:`store.check_columns`)."""
        missing = [name for name in SAMPLE_FIELDS if name not in self._file]
        if missing:
            raise JumpnetError(self.path, f"is not a jumpnet-stream dataset (no {', '.join(missing)})")
        fields = {name: _check_field(self.path, self._file, name) for name in SAMPLE_FIELDS}
        keys = _attribute(self.path, self._file, "keys", [])
        if isinstance(keys, np.ndarray) and keys.ndim == 1:
            keys = [k.decode("utf-8", "replace") if isinstance(k, bytes) else k for k in keys.tolist()]
        self.keys = check_keys(self.path, keys)
        self.provenance = provenance_records(_attribute(self.path, self._file, "provenance", "[]"))
        rows = check_columns(self.path, self.keys, {n: (d.shape, d.dtype) for n, d in fields.items()},
                             image_dtypes=("uint8", "float32"), chunks={n: d.chunks for n, d in fields.items()})
        _check_rows_on_disk(self.path, rows, fields["image"])

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
