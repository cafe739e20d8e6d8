"""The dataset store: one zarr v3 group per dataset, appended chunk by chunk and read chunk by chunk.

Layout (N samples, K keys, HxW images)::

    image          (N, H, W, 3) uint8    chunks (64, H, W, 3)  zstd level 1
    label          (N,)         float32  chunks (4096,)        zstd
    keys_raw       (N, K)       float32  chunks (4096, K)      zstd
    hold_duration  (N, K)       float32  chunks (4096, K)      zstd
    phase          (N,)         string   chunks (4096,)        zstd
    frame_index    (N,)         int64    chunks (4096,)        zstd
    source         (N,)         string   chunks (4096,)        zstd
    attrs: keys (list of str), provenance (list of stage records, oldest first)

64 frames (10 MB raw) per image chunk keeps a chunk in cache while it is written and read back. zstd
level 1 compresses frames decoded from game video about 6x at 560 MB/s here, 18% faster than level 3
for 11% more bytes: negatives, most of every dataset, must be written as fast as video decodes
(``benchmarks/bench_store.py`` compares codecs on captures and on decoded video).
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import zarr
from numcodecs import Zstd
from zarr.codecs import ZstdCodec

from .chunk import DEFAULT_ROWS, SAMPLE_FIELDS, Chunk
from .errors import JumpnetError
from .npz import listing
from .recording import MAX_KEYS
from .safe_pickle import MAX_IMAGE_BYTES

IMAGE_ROWS = 64
SCALAR_ROWS = 4096

# -- what a dataset may declare, checked on open (every format) --------------------------------------
#: One stored chunk of any field, uncompressed: reading a row reads (and decompresses) its whole chunk.
#: 64 frames of 227x227x3 uint8 are 9.9 MB; a chunk claiming 64 frames of 8000x8000 would be 12 GB.
MAX_CHUNK_BYTES = 64 << 20
#: The small fields (all but ``image``) that a columnar .npz keeps in memory, together: 128 MiB is a
#: million samples or so (an hour of video at 30 fps is 108,000 frames).
MAX_SMALL_BYTES = 128 << 20
_TEXT_ITEM = 16  # bytes per string counted for a chunk of text (a pointer and a short string)
_FIELD_KINDS = {"label": "f", "keys_raw": "f", "hold_duration": "f", "frame_index": "iu", "phase": "UOST",
                "source": "UOST"}  # numpy kinds: floats, integers, text of any store's flavour


def check_keys(path: str, keys: object) -> list[str]:
    """A dataset's stored key list: a list of distinct, non-empty strings."""
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
        kind = type(keys).__name__ if not isinstance(keys, (list, tuple)) else \
            f"list holding a {next(type(k).__name__ for k in keys if not isinstance(k, str))}"
        raise JumpnetError(path, f"'keys' is a {kind}, expected a list of key names")
    if not keys or len(keys) > MAX_KEYS:
        raise JumpnetError(path, f"'keys' holds {len(keys)} names, expected 1 to {MAX_KEYS}")
    if any(not k.strip() for k in keys):
        raise JumpnetError(path, "'keys' holds an empty name")
    for key in keys:
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, which no output format can write
            raise JumpnetError(path, f"'keys' holds {key!r}, which is not valid text") from None
    repeated = sorted({k for k in keys if list(keys).count(k) > 1})
    if repeated:
        raise JumpnetError(path, f"'keys' repeats {listing(repeated)}")
    return list(keys)


def check_columns(path: str, keys: list[str], columns: Mapping[str, tuple[tuple[int, ...], np.dtype]],
                  image_dtypes: tuple[str, ...] = ("uint8",),
                  chunks: Mapping[str, tuple[int, ...] | None] | None = None) -> int:
    """Validate a dataset's fields against the sample schema before anything is read: images (N, H, W, 3)
    within :data:`MAX_IMAGE_BYTES` each, the vectors (N, K) with K the number of keys, every field N
    long and of its kind, every stored chunk within :data:`MAX_CHUNK_BYTES`. Returns N."""
    shape, dtype = columns["image"]
    if len(shape) != 4 or shape[3] != 3 or min(shape[1:3]) < 1:
        raise JumpnetError(path, f"'image' has shape {tuple(shape)}, expected (N, height, width, 3)")
    if str(dtype) not in image_dtypes:
        raise JumpnetError(path, f"'image' is {dtype}, expected {' or '.join(image_dtypes)}")
    image_bytes = math.prod(shape[1:]) * dtype.itemsize
    if image_bytes > MAX_IMAGE_BYTES:
        raise JumpnetError(path, f"its images are {shape[1]}x{shape[2]} ({image_bytes >> 20} MB each), over the "
                                 f"{MAX_IMAGE_BYTES >> 20} MB an image may take")
    rows = shape[0]
    for name in SAMPLE_FIELDS[1:]:
        shape, dtype = columns[name]
        want = (rows, len(keys)) if name in ("keys_raw", "hold_duration") else (rows,)
        if tuple(shape) != want:
            if len(shape) == 2 and name in ("keys_raw", "hold_duration") and shape[0] == rows:
                raise JumpnetError(path, f"'{name}' has {shape[1]} columns, but 'keys' names {len(keys)} keys")
            raise JumpnetError(path, f"'{name}' has shape {tuple(shape)}, but 'image' has {rows} rows: "
                                     f"expected {want}")
        if dtype.kind not in _FIELD_KINDS[name] or (dtype.kind in "fiu" and dtype.itemsize > 8):
            raise JumpnetError(path, f"'{name}' is {dtype}, not a {_KIND_NAMES[_FIELD_KINDS[name]]} field")
    for name, chunk in (chunks or {}).items():
        if chunk is None:
            continue
        dtype = columns[name][1]
        size = math.prod(chunk) * (_TEXT_ITEM if dtype.kind in "OST" else dtype.itemsize)
        if len(chunk) != len(columns[name][0]) or min(chunk, default=1) < 1 or size > MAX_CHUNK_BYTES:
            raise JumpnetError(path, f"'{name}' is stored in chunks of {tuple(chunk)} ({size >> 20} MB each "
                                     f"uncompressed), over the {MAX_CHUNK_BYTES >> 20} MB a chunk may take")
    return rows


def chunk_rows(rows: int, row_bytes: int) -> int:
    """Rows per stored chunk: ``rows``, or fewer if that many would take more than MAX_CHUNK_BYTES (what
    every reader refuses); at least one."""
    return max(1, min(rows, MAX_CHUNK_BYTES // max(1, row_bytes)))


_KIND_NAMES = {"f": "float", "iu": "integer", "UOST": "text"}
_ZARR_CODECS = {"bytes", "zstd", "gzip", "blosc", "crc32c", "transpose", "vlen-utf8", "vlen-bytes"}


def _check_zarr_array(path: str, name: str, array: Any) -> None:
    """A stored field: a plain zarr v3 array of known codecs (no sharding, no codec that runs code)."""
    metadata = array.metadata
    if getattr(metadata, "zarr_format", None) != 3:
        raise JumpnetError(path, f"'{name}' is not a zarr v3 array (this tool writes v3 stores)")
    codecs = [codec.to_dict().get("name") for codec in metadata.codecs]
    unknown = [str(c) for c in codecs if c not in _ZARR_CODECS]
    if unknown:
        raise JumpnetError(path, f"'{name}' uses the codec {unknown[0]}, which this tool does not read")


def _check_rows_on_disk(path: str, rows: int, image: Any) -> None:
    """A store claiming N rows holds every image chunk (the writer stores even empty ones): a claim of
    10**9 rows over a few chunk files is refused before anything is sized from it. The chunk files are
    counted on disk (zarr's own count tries every chunk the shape allows)."""
    needed = -(-rows // image.chunks[0])
    stored = 0
    for folder, _, files in os.walk(os.path.join(path, "image")):
        stored += sum(1 for name in files if name != "zarr.json")
        if stored >= needed:
            return
    if stored < needed:
        raise JumpnetError(path, f"claims {rows} samples, but holds {stored} of the {needed} image chunks they "
                                 "need (damaged, or not what it claims)")
_ARRAY_CONFIG = {"write_empty_chunks": True}  # skip zarr's per-chunk "is it empty?" scan
_KEY_ENCODING = {"name": "default", "separator": "."}  # chunk files side by side, no directory each


def _column_spec(name: str, k: int, image_shape: tuple[int, int, int], image_rows: int) -> tuple[tuple, object, tuple]:
    """(per-sample shape, dtype, chunk shape) of each stored field."""
    return {
        "image": (image_shape, np.uint8, (image_rows, *image_shape)),
        "label": ((), np.float32, (SCALAR_ROWS,)),
        "keys_raw": ((k,), np.float32, (SCALAR_ROWS, k)),
        "hold_duration": ((k,), np.float32, (SCALAR_ROWS, k)),
        "phase": ((), str, (SCALAR_ROWS,)),
        "frame_index": ((), np.int64, (SCALAR_ROWS,)),
        "source": ((), str, (SCALAR_ROWS,)),
    }[name]


class ZarrDatasetWriter:
    """Appends sample chunks to a new zarr group at ``path``; :meth:`finish` writes the attributes.

    ``image_rows`` images go in each image chunk, or as many as fit in MAX_CHUNK_BYTES (which every
    reader refuses beyond): 434 of 227x227, 10 of 1920x1080."""

    def __init__(self, path: str | os.PathLike, keys: list[str], image_shape: tuple[int, int, int] | None = None,
                 *, level: int = 1, image_rows: int = IMAGE_ROWS):
        if image_rows < 1:
            raise JumpnetError(path, f"image chunks must hold 1 or more rows, not {image_rows}")
        self.image_rows = image_rows
        self.path = os.fspath(path)
        self.keys = list(keys)
        self._image_shape = image_shape
        self._level = level
        self._group = zarr.open_group(self.path, mode="w-", zarr_format=3)
        self._arrays: dict[str, zarr.Array] = {}
        self._pending: list[Chunk] = []
        self._pending_rows = 0
        self._capacity = 0
        self._flushed = 0
        self._small: list[Chunk] = []  # flushed rows' small columns, awaiting a whole 4096-row chunk
        self._small_rows = 0
        self._zstd = Zstd(level=level)

    def _create(self, image_shape: tuple[int, int, int]) -> None:
        self.image_rows = chunk_rows(self.image_rows, math.prod(image_shape))
        k = len(self.keys)
        for name in SAMPLE_FIELDS:
            shape, dtype, chunks = _column_spec(name, k, image_shape, self.image_rows)
            codec = ZstdCodec(level=self._level if name == "image" else 3)
            self._arrays[name] = self._group.create_array(
                name, shape=(0, *shape), dtype=dtype, chunks=chunks, compressors=codec,
                config=_ARRAY_CONFIG, chunk_key_encoding=_KEY_ENCODING,
                fill_value="" if dtype is str else 0)

    @property
    def rows(self) -> int:
        """Rows written so far, including those still buffered."""
        return self._flushed + self._pending_rows

    def write(self, chunk: Chunk) -> None:
        if not len(chunk):
            return
        if not self._arrays:
            self._create(tuple(chunk["image"].shape[1:]))
        self._pending.append(chunk)
        self._pending_rows += len(chunk)
        if self._pending_rows >= self.image_rows:
            self._flush(whole_chunks_only=True)
        else:  # held back: keep a copy, never the caller's arrays
            self._pending[-1] = Chunk({k: v.copy() for k, v in chunk.columns.items()})

    def _flush(self, whole_chunks_only: bool) -> None:
        """Write pending images in whole 64-row chunks (all of them at the end); the small columns
        wait for a whole 4096-row chunk, since every zarr write of a partial chunk rewrites it."""
        if self._pending_rows:
            merged = Chunk.concat(self._pending)
            n = len(merged) - len(merged) % self.image_rows if whole_chunks_only else len(merged)
            start, stop = self._flushed, self._flushed + n
            if stop > self._capacity:  # grow geometrically: resizing rewrites metadata, so do it rarely
                self._resize(max(stop, 2 * self._capacity, SCALAR_ROWS, self.image_rows))
            if n:
                if start % self.image_rows == 0 and n % self.image_rows == 0:
                    self._write_image_chunks(start, merged["image"][:n])
                else:
                    self._arrays["image"][start:stop] = merged["image"][:n]
                self._small.append(Chunk({k: v[:n].copy() for k, v in merged.columns.items() if k != "image"}))
                self._small_rows += n
            self._flushed = stop
            rest = Chunk({k: v[n:].copy() for k, v in merged.columns.items()})
            self._pending, self._pending_rows = ([rest] if len(rest) else []), len(rest)
        if self._small_rows >= SCALAR_ROWS or (not whole_chunks_only and self._small_rows):
            small = Chunk.concat(self._small)
            start = self._flushed - self._small_rows
            n = len(small) - len(small) % SCALAR_ROWS if whole_chunks_only else len(small)
            for name, column in small.columns.items():
                column = column[:n]
                self._arrays[name][start:start + n] = column.astype(object) if column.dtype.kind == "U" else column
            rest = small.take(slice(n, len(small)))
            self._small, self._small_rows = ([rest] if len(rest) else []), len(rest)

    def _write_image_chunks(self, start: int, images: np.ndarray) -> None:
        """Whole image chunks, compressed here and written as chunk files: byte for byte what zarr
        writes for codecs [bytes, zstd] (a zstd frame of the chunk's C-order bytes), at half the CPU
        of zarr's own write path, which copies each 10 MB chunk several times."""
        folder = os.path.join(self.path, "image")
        for offset in range(0, len(images), self.image_rows):
            block = np.ascontiguousarray(images[offset:offset + self.image_rows])
            index = (start + offset) // self.image_rows
            with open(os.path.join(folder, f"c.{index}.0.0.0"), "wb") as f:
                f.write(self._zstd.encode(block))

    def _resize(self, rows: int) -> None:
        for array in self._arrays.values():
            array.resize((rows, *array.shape[1:]))
        self._capacity = rows

    def finish(self, provenance: list[dict[str, Any]]) -> None:
        self._flush(whole_chunks_only=False)
        if not self._arrays:
            self._create(self._image_shape or (227, 227, 3))
        self._resize(self._flushed)
        self._group.attrs.update({"keys": self.keys, "provenance": provenance})

    def abort(self) -> None:
        self._pending = []


class ZarrDataset:
    """A dataset store opened for reading: length, keys, provenance, and chunks in order."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise JumpnetError(self.path, "no such zarr store" if not os.path.exists(self.path)
                               else "is not a zarr store (not a directory)")
        try:
            self._group = zarr.open_group(self.path, mode="r")
            self._arrays = {name: self._group[name] for name in SAMPLE_FIELDS}
            attrs = self._group.attrs.asdict()
        except (KeyError, FileNotFoundError, ValueError, TypeError, zarr.errors.BaseZarrError) as exc:
            raise JumpnetError(self.path, f"is not a jumpnet-stream dataset store ({exc})") from None
        not_arrays = [name for name, array in self._arrays.items() if not isinstance(array, zarr.Array)]
        if not_arrays:
            raise JumpnetError(self.path, f"'{not_arrays[0]}' is a group, expected an array")
        for name, array in self._arrays.items():
            _check_zarr_array(self.path, name, array)
        self.keys: list[str] = check_keys(self.path, attrs.get("keys"))
        provenance = attrs.get("provenance", [])
        self.provenance: list[dict[str, Any]] = provenance if isinstance(provenance, list) else []
        rows = check_columns(self.path, self.keys, {n: (a.shape, a.dtype) for n, a in self._arrays.items()},
                             chunks={n: a.chunks for n, a in self._arrays.items()})
        _check_rows_on_disk(self.path, rows, self._arrays["image"])
        self.image_shape = tuple(self._arrays["image"].shape[1:])

    def __len__(self) -> int:
        return self._arrays["label"].shape[0]

    def read(self, start: int, stop: int) -> Chunk:
        return Chunk({name: self.read_column(name, start, stop) for name in self._arrays})

    def chunks(self, rows: int = DEFAULT_ROWS) -> Iterator[Chunk]:
        for start in range(0, len(self), rows):
            yield self.read(start, min(start + rows, len(self)))

    def column(self, name: str) -> np.ndarray:
        """One small field (not ``image``) whole: a few bytes per sample."""
        return self.read_column(name, 0, len(self))

    def read_column(self, name: str, start: int, stop: int) -> np.ndarray:
        column = self._arrays[name][start:stop]
        return np.asarray(column.tolist(), dtype=str) if column.dtype.kind == "T" else column

    def take(self, positions: np.ndarray) -> Iterator[Chunk]:
        """The rows at sorted ``positions``, reading only the image chunks that hold them."""
        positions = np.asarray(positions, np.int64)
        rows = self._arrays["image"].chunks[0]
        windows = positions // rows
        for window in np.unique(windows):
            start = int(window) * rows
            block = self.read(start, min(start + rows, len(self)))
            yield block.take(positions[windows == window] - start)
