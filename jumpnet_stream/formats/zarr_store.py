"""The dataset store: one zarr v3 group per dataset, appended chunk by chunk and read chunk by chunk.

Layout (N samples, K keys, HxW images; every field of :mod:`schema`)::

    image          (N, H, W, 3) uint8    chunks (64, H, W, 3)  zstd level 1 (or blosc lz4: codec="lz4")
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

``codec="lz4"`` (``export --codec lz4``) stores images with blosc's lz4 instead (level 5, no shuffle, one
thread): about 30% more bytes, decoded about 3 times as fast, for a training loop that decodes every chunk
every epoch (``benchmarks/bench_loader.py``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import zarr
from numcodecs import Blosc, Zstd
from numcodecs import blosc as _blosc
from zarr.codecs import BloscCodec, ZstdCodec

from ..chunk import Chunk
from ..errors import JumpnetError
from ..schema import BY_NAME, SCHEMA, complete
from .base import DatasetReader, DatasetSpec, Format, register
from .checks import check_columns, check_keys, chunk_rows, missing_fields
from .output import partial_path

IMAGE_ROWS = 64
SCALAR_ROWS = 4096
_ARRAY_CONFIG = {"write_empty_chunks": True}  # skip zarr's per-chunk "is it empty?" scan
_KEY_ENCODING = {"name": "default", "separator": "."}  # chunk files side by side, no directory each
_UNZSTD = Zstd()  # decoding needs no level
IMAGE_CODECS = ("zstd", "lz4")  # what a store's images can be written with
_LZ4 = {"cname": "lz4", "clevel": 5, "blocksize": 0}  # blosc's settings for codec="lz4", bytes unshuffled
_ZARR_CODECS = {"bytes", "zstd", "gzip", "blosc", "crc32c", "transpose", "vlen-utf8", "vlen-bytes"}


@dataclass(frozen=True)
class ZarrOptions:
    """``rechunk``: images per stored chunk (clamped so a chunk stays within 64 MB); ``codec``: the images'
    compression, "zstd" (smaller) or "lz4" (blosc lz4: faster to decode, for reading in a training loop)."""

    rechunk: int = IMAGE_ROWS
    codec: str = "zstd"

    def __post_init__(self) -> None:
        if not isinstance(self.rechunk, int) or self.rechunk < 1:
            raise JumpnetError(None, f"rechunk must be 1 or more, not {self.rechunk}")
        if self.codec not in IMAGE_CODECS:
            raise JumpnetError(None, f"codec must be one of {', '.join(IMAGE_CODECS)}, not {self.codec}")


class ZarrDatasetWriter:
    """Appends sample chunks to a new zarr group at ``path``; :meth:`finish` writes the attributes.

    ``image_rows`` images go in each image chunk, or as many as fit in MAX_CHUNK_BYTES (which every
    reader refuses beyond): 434 of 227x227, 10 of 1920x1080."""

    def __init__(self, path: str | os.PathLike, keys: list[str], image_shape: tuple[int, int, int] | None = None,
                 *, level: int = 1, image_rows: int = IMAGE_ROWS, codec: str = "zstd", start: int | None = None):
        """``start``: write rows from there on into the arrays of a store that :meth:`allocate` sized (one
        of several writers of disjoint ranges of whole chunks: :attr:`whole_rows`); :meth:`finish_range`
        ends it."""
        self.image_rows = image_rows
        self.path = os.fspath(path)
        self.keys = list(keys)
        self._image_shape = image_shape
        self._level = level
        self._group = zarr.open_group(self.path, mode="w-" if start is None else "r+", zarr_format=3)
        self._arrays: dict[str, zarr.Array] = {}
        self._pending: list[Chunk] = []
        self._pending_rows = 0
        self._capacity = 0
        self._flushed = 0
        self._small: list[Chunk] = []  # flushed rows' small columns, awaiting a whole 4096-row chunk
        self._small_rows = 0
        self._codec = codec
        self._encoder = _image_encoder(codec, level)
        if start is not None:
            self._arrays = {field.name: self._group[field.name].with_config(_ARRAY_CONFIG) for field in SCHEMA}
            self.image_rows = self._arrays["image"].chunks[0]
            stored = self._arrays["image"].metadata.codecs[-1].to_dict()  # the images' codec, as allocated
            self._encoder = _image_encoder("zstd" if stored["name"] == "zstd" else "lz4",
                                           stored.get("configuration", {}).get("level", level))
            if start % self.whole_rows:
                raise ValueError(f"a range writer starts at a multiple of {self.whole_rows} rows, not at {start}")
            self._flushed, self._capacity = start, self._arrays["image"].shape[0]

    @property
    def whole_rows(self) -> int:
        """The fewest rows that are whole chunks of every field (ranges of writers that share no chunk)."""
        return math.lcm(self.image_rows, SCALAR_ROWS)

    def allocate(self, rows: int) -> None:
        """The arrays made with their final ``rows``, for writers of disjoint ranges (``start``) to fill:
        :meth:`finish` then writes only the attributes."""
        self._create(self._image_shape or (227, 227, 3))
        self._resize(rows)
        self._flushed = rows

    def finish_range(self) -> None:
        """The last rows of a range writer's range written (its last chunks, whole or at the store's end)."""
        self._flush(whole_chunks_only=False)

    def _create(self, image_shape: tuple[int, int, int]) -> None:
        self.image_rows = chunk_rows(self.image_rows, math.prod(image_shape))
        k = len(self.keys)
        for field in SCHEMA:
            rows = self.image_rows if field.name == "image" else SCALAR_ROWS
            shape = field.per_sample(k, image_shape)
            if field.name == "image" and self._codec == "lz4":
                codec = BloscCodec(**_LZ4, shuffle="noshuffle", typesize=1)
            else:
                codec = ZstdCodec(level=self._level if field.name == "image" else 3)
            self._arrays[field.name] = self._group.create_array(
                field.name, shape=(0, *shape), dtype=str if field.text else field.dtype, chunks=(rows, *shape),
                compressors=codec, config=_ARRAY_CONFIG, chunk_key_encoding=_KEY_ENCODING,
                fill_value="" if field.text else False if field.dtype == "bool" else 0)

    @property
    def rows(self) -> int:
        """Rows written so far, including those still buffered."""
        return self._flushed + self._pending_rows

    def write(self, chunk: Chunk) -> None:
        chunk = complete(chunk.columns, len(self.keys))  # a field the caller's chunk lacks: its default
        if not len(chunk):
            return
        if not self._arrays:
            self._create(tuple(chunk["image"].shape[1:]))
        while len(chunk):  # in pieces that fill the pending rows up to one image chunk, never more (memory)
            head = chunk.take(slice(0, self.image_rows - self._pending_rows))
            chunk = chunk.take(slice(len(head), len(chunk)))
            self._pending.append(head)
            self._pending_rows += len(head)
            if self._pending_rows == self.image_rows:
                self._flush(whole_chunks_only=True)
            else:  # held back: keep a copy, never the caller's arrays
                self._pending[-1] = Chunk({k: v.copy() for k, v in head.columns.items()})

    def _flush(self, whole_chunks_only: bool) -> None:
        """Write pending images in whole 64-row chunks (all of them at the end); the small columns
        wait for a whole 4096-row chunk, since every zarr write of a partial chunk rewrites it."""
        if self._pending_rows:
            merged = Chunk.concat(self._pending)
            self._pending = []  # the held copies, freed before the images are compressed
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
        writes for codecs [bytes, zstd] (a zstd frame of the chunk's C-order bytes) or [bytes, blosc],
        at half the CPU of zarr's own write path, which copies each 10 MB chunk several times."""
        folder = os.path.join(self.path, "image")
        for offset in range(0, len(images), self.image_rows):
            block = np.ascontiguousarray(images[offset:offset + self.image_rows])
            index = (start + offset) // self.image_rows
            name = os.path.join(folder, f"c.{index}.0.0.0")
            temp = partial_path(name)  # then renamed: a chunk file is whole, or absent (a task may run twice)
            with open(temp, "wb") as f:
                f.write(_encode(self._encoder, block))
            os.replace(temp, name)

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


class ZarrDataset(DatasetReader):
    """A dataset store opened for reading. The small fields are read a stored chunk (4096 rows) at a time
    and kept until a read leaves it, so reading in image-sized pieces decodes each once."""

    def _open(self, keys: list[str] | None) -> None:
        if not os.path.isdir(self.path):
            raise JumpnetError(self.path, "no such zarr store" if not os.path.exists(self.path)
                               else "is not a zarr store (not a directory)")
        arrays = self._arrays()
        attrs = self._group_attrs
        self.keys = check_keys(self.path, attrs.get("keys"))
        provenance = attrs.get("provenance", [])
        self.provenance = provenance if isinstance(provenance, list) else []
        self._rows = check_columns(self.path, self.keys, {n: (a.shape, a.dtype) for n, a in arrays.items()},
                                   chunks={n: a.chunks for n, a in arrays.items()})
        _check_rows_on_disk(self.path, self._rows, arrays["image"])
        self.image_shape = tuple(arrays["image"].shape[1:])
        self.block = arrays["image"].chunks[0]
        codecs = [codec.to_dict().get("name") for codec in arrays["image"].metadata.codecs]
        # chunk files this reader decodes itself: a zstd frame, or a blosc one (which says how it was shuffled)
        self._direct = codecs[1] if codecs in (["bytes", "zstd"], ["bytes", "blosc"]) else None
        self.column_block = min(arrays[name].chunks[0] for name in arrays if name != "image") if len(arrays) > 1 \
            else SCALAR_ROWS
        self.close()

    def _arrays(self) -> dict[str, zarr.Array]:
        """The stored fields, opened on first use (and after :meth:`close`)."""
        if self.__dict__.get("_handles") is None:
            try:
                group = zarr.open_group(self.path, mode="r")
                present = set(group.array_keys()) | set(group.group_keys())
                missing_fields(self.path, present)
                arrays = {f.name: group[f.name] for f in SCHEMA if f.name in present}
                self._group_attrs = group.attrs.asdict()
            except (KeyError, FileNotFoundError, ValueError, TypeError, zarr.errors.BaseZarrError) as exc:
                raise JumpnetError(self.path, f"is not a jumpnet-stream dataset store ({exc})") from None
            not_arrays = [name for name, array in arrays.items() if not isinstance(array, zarr.Array)]
            if not_arrays:
                raise JumpnetError(self.path, f"'{not_arrays[0]}' is a group, expected an array")
            for name, array in arrays.items():
                _check_zarr_array(self.path, name, array)
            self._handles = arrays
            self._cache: tuple[int, dict[str, np.ndarray]] | None = None
        return self._handles

    def close(self) -> None:
        self._handles = None
        self._cache = None

    def _read(self, start: int, stop: int) -> Chunk:
        arrays = self._arrays()
        columns = {"image": self._images(start, stop) if self._direct else arrays["image"][start:stop]}
        block = start // self.column_block
        if stop <= (block + 1) * self.column_block:  # within one stored chunk of the small fields: cached
            if self._cache is None or self._cache[0] != block:
                lo, hi = block * self.column_block, min(len(self), (block + 1) * self.column_block)
                self._cache = (block, {n: _text(a[lo:hi]) for n, a in arrays.items() if n != "image"})
            offset = block * self.column_block
            columns.update({n: c[start - offset:stop - offset] for n, c in self._cache[1].items()})
        else:
            columns.update({n: _text(a[start:stop]) for n, a in arrays.items() if n != "image"})
        return complete(columns, len(self.keys))

    def _images(self, start: int, stop: int) -> np.ndarray:
        """Images ``start`` to ``stop`` read straight from their chunk files (the twin of the writer's
        :meth:`ZarrDatasetWriter._write_image_chunks`): a 64-image chunk in a third less time than through
        zarr's event loop, which a DataLoader worker pays per chunk. Each chunk must decompress to exactly
        its size: a frame declaring another size is refused before anything is allocated for it."""
        rows, shape = self.block, self.image_shape
        key = self._arrays()["image"].metadata.chunk_key_encoding.encode_chunk_key
        out = np.empty((stop - start, *shape), np.uint8)
        spare: np.ndarray | None = None
        for index in range(start // rows, -(-stop // rows)):
            first, last = max(start, index * rows), min(stop, (index + 1) * rows)
            whole = first == index * rows and last == (index + 1) * rows
            if not whole and spare is None:
                spare = np.empty((rows, *shape), np.uint8)
            target = out[first - start:last - start] if whole else spare
            name = os.path.join(self.path, "image", key((index, 0, 0, 0)))
            try:
                with open(name, "rb") as f:
                    frame = f.read()
            except FileNotFoundError:   # never written: the fill value, as zarr reads it
                target[...] = 0
            else:
                size = _zstd_content_size(frame) if self._direct == "zstd" else _blosc_size(frame)
                if size != target.nbytes:
                    raise JumpnetError(self.path, f"image chunk {index} is damaged (not a {self._direct} frame of "
                                                  f"{target.nbytes} bytes)")
                try:
                    if self._direct == "zstd":
                        _UNZSTD.decode(frame, out=target.reshape(-1))
                    else:
                        _one_thread(_blosc.decompress, frame, target.reshape(-1))
                except (RuntimeError, ValueError) as exc:
                    raise JumpnetError(self.path, f"image chunk {index} is damaged ({exc})") from None
            if not whole:
                out[first - start:last - start] = spare[first - index * rows:last - index * rows]
        return out

    def column_rows(self, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        arrays = self._arrays()
        start, stop = max(0, int(start)), min(len(self), int(stop))
        return {name: _text(arrays[name][start:max(start, stop)]) if name in arrays
                else BY_NAME[name].filled(max(0, stop - start), len(self.keys)) for name in names}

    def column(self, name: str) -> np.ndarray:
        arrays = self._arrays()
        if name not in arrays:
            return super().column(name)
        return _text(arrays[name][:])


def _image_encoder(codec: str, level: int) -> Zstd | Blosc:
    """What compresses image chunks for ``codec`` ("zstd" at ``level``, or "lz4": blosc's, unshuffled)."""
    return Zstd(level=level) if codec == "zstd" else Blosc(**_LZ4, shuffle=Blosc.NOSHUFFLE)


def _encode(encoder: Zstd | Blosc, block: np.ndarray) -> bytes:
    return encoder.encode(block) if isinstance(encoder, Zstd) else _one_thread(encoder.encode, block)


def _one_thread(call: Callable[..., Any], *args: Any) -> Any:
    """A blosc call on this thread only: blosc's own threads would fight a DataLoader's worker processes for
    the cores, and a compression on several threads may lay its blocks out in another order (other bytes)."""
    saved, _blosc.use_threads = _blosc.use_threads, False
    try:
        return call(*args)
    finally:
        _blosc.use_threads = saved


def _blosc_size(frame: bytes) -> int | None:
    """The decompressed size a blosc frame's 16-byte header declares, or None if the frame is not as long as
    that header says."""
    if len(frame) < 16:
        return None
    nbytes, _, cbytes = np.frombuffer(frame[4:16], "<u4").tolist()
    return nbytes if cbytes == len(frame) else None


def _zstd_content_size(frame: bytes) -> int | None:
    """The decompressed size a zstd frame's header declares (RFC 8878, 3.1.1), or None if it has none."""
    if len(frame) < 6 or frame[:4] != b"\x28\xb5\x2f\xfd":
        return None
    descriptor = frame[4]
    size_flag, single_segment = descriptor >> 6, (descriptor >> 5) & 1
    at = 5 + (not single_segment) + (0, 1, 2, 4)[descriptor & 3]
    width = (int(single_segment), 2, 4, 8)[size_flag]
    if not width or len(frame) < at + width:
        return None
    return int.from_bytes(frame[at:at + width], "little") + (256 if width == 2 else 0)


def _text(column: np.ndarray) -> np.ndarray:
    """zarr's variable-length strings as a numpy str array, converted in numpy (a million names made into
    Python strings first took 5.6 s and 3 times the memory of the result)."""
    if column.dtype.kind != "T":
        return column
    width = int(np.strings.str_len(column).max()) if len(column) else 1
    return column.astype(f"<U{max(width, 1)}")


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
    for _, _, files in os.walk(os.path.join(path, "image")):
        stored += sum(1 for name in files if name != "zarr.json")
        if stored >= needed:
            return
    if stored < needed:
        raise JumpnetError(path, f"claims {rows} samples, but holds {stored} of the {needed} image chunks they "
                                 "need (damaged, or not what it claims)")


@register
class Zarr(Format):
    name = "zarr"
    title = ".zarr"
    extension = ".zarr"
    reader = ZarrDataset
    Options = ZarrOptions

    @classmethod
    def create(cls, path: str, spec: DatasetSpec, options: ZarrOptions, name: str) -> ZarrDatasetWriter:
        return ZarrDatasetWriter(path, list(spec.keys), spec.image_shape, image_rows=options.rechunk,
                                 codec=options.codec)
