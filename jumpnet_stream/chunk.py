"""Columnar chunks: a batch of samples held as one numpy array per field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

#: Rows per chunk that sources emit by default: 64 images of 227x227x3 uint8 are about 10 MB.
DEFAULT_ROWS = 64
#: At most this many bytes of images in one chunk: 64 captures of 1920x1080 would be 398 MB.
CHUNK_BYTES = 16 << 20


def rows_within(image_shape: tuple[int, ...], rows: int = DEFAULT_ROWS, itemsize: int = 1) -> int:
    """``rows``, or fewer for large images: a chunk's images stay within :data:`CHUNK_BYTES`."""
    per_row = max(1, int(np.prod(image_shape)) * itemsize)
    return max(1, min(rows, CHUNK_BYTES // per_row))


@dataclass(frozen=True)
class Chunk:
    """Equal-length numpy columns for a batch of samples (or events)."""

    columns: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        lengths = {name: len(col) for name, col in self.columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"chunk columns differ in length: {lengths}")

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def take(self, index) -> "Chunk":
        """The rows selected by a slice, an index array or a boolean mask."""
        return Chunk({name: col[index] for name, col in self.columns.items()})

    @staticmethod
    def concat(chunks: Iterable["Chunk"]) -> "Chunk":
        chunks = [c for c in chunks if len(c)]
        if not chunks:
            raise ValueError("nothing to concatenate")
        if len(chunks) == 1:
            return chunks[0]
        names = chunks[0].fields
        return Chunk({n: np.concatenate([c[n] for c in chunks]) for n in names})


def rows_to_chunk(rows: list[tuple], fields: tuple[str, ...], dtypes: Mapping[str, object]) -> Chunk:
    """Build a chunk from row tuples (one value per field); ``dtypes`` fixes each column's dtype."""
    columns = {}
    for i, name in enumerate(fields):
        values = [row[i] for row in rows]
        dtype = dtypes[name]
        columns[name] = np.stack(values).astype(dtype, copy=False) if values and isinstance(values[0], np.ndarray) \
            else np.asarray(values, dtype=dtype)
    return Chunk(columns)


def select_rows(chunks: Iterable[Chunk], positions: np.ndarray) -> Iterator[Chunk]:
    """The rows at sorted global ``positions`` of a chunk stream, in order."""
    positions = np.asarray(positions, np.int64)
    offset = 0
    for chunk in chunks:
        lo, hi = np.searchsorted(positions, [offset, offset + len(chunk)])
        if hi > lo:
            yield chunk.take(positions[lo:hi] - offset)
        offset += len(chunk)
        if hi == len(positions):
            return


def keep_rows(chunks: Iterable[Chunk], keep: Callable[[Chunk], np.ndarray],
              dropped: list[int] | None = None) -> Iterator[Chunk]:
    """The rows of ``chunks`` where ``keep(chunk)`` is true (a chunk kept whole passes as it is); the number
    of rows left out is added to ``dropped[0]``."""
    for chunk in chunks:
        kept = keep(chunk)
        if dropped is not None:
            dropped[0] += int(len(chunk) - np.count_nonzero(kept))
        if kept.all():
            yield chunk
        elif kept.any():
            yield chunk.take(kept)


def images_to_float(images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] (the seed's and the trainer's representation), into ``out`` if
    given (one pass, no temporary; the same values: uint8 is exact in float32, then one rounded division)."""
    return np.divide(images, np.float32(255), out=out, dtype=np.float32)


def images_to_uint8(images: np.ndarray) -> np.ndarray:
    """Images as stored: float in [0, 1] scaled and rounded to nearest; uint8 as is."""
    if images.dtype == np.uint8:
        return images
    return np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)
