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

import os
from typing import Any, Iterator

import numpy as np
import zarr
from numcodecs import Zstd
from zarr.codecs import ZstdCodec

from .chunk import DEFAULT_ROWS, SAMPLE_FIELDS, Chunk
from .errors import JumpnetError

IMAGE_ROWS = 64
SCALAR_ROWS = 4096
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
    """Appends sample chunks to a new zarr group at ``path``; :meth:`finish` writes the attributes."""

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
        except (KeyError, FileNotFoundError, ValueError, zarr.errors.BaseZarrError) as exc:
            raise JumpnetError(self.path, f"is not a jumpnet-stream dataset store ({exc})") from None
        attrs = self._group.attrs.asdict()
        self.keys: list[str] = list(attrs.get("keys", []))
        self.provenance: list[dict[str, Any]] = list(attrs.get("provenance", []))
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
