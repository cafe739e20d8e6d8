"""What a dataset may declare, checked when it is opened (every format), before anything is read or sized
from it: the key list, every field's shape and kind against the sample schema, the chunks it is stored in."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ..errors import JumpnetError
from ..npz import listing
from ..pickle_bounds import MAX_IMAGE_BYTES
from ..recording import MAX_KEYS
from ..schema import SCHEMA, SMALL_FIELDS

#: One stored chunk of any field, uncompressed: reading a row reads (and decompresses) its whole chunk.
#: 64 frames of 227x227x3 uint8 are 9.9 MB; a chunk claiming 64 frames of 8000x8000 would be 12 GB.
MAX_CHUNK_BYTES = 64 << 20
#: The small fields (all but ``image``) that a columnar .npz keeps in memory, together: 128 MiB is a
#: million samples or so (an hour of video at 30 fps is 108,000 frames).
MAX_SMALL_BYTES = 128 << 20
_TEXT_ITEM = 16  # bytes per string counted for a chunk of text (a pointer and a short string)
_KIND_NAMES = {"f": "float", "iu": "integer", "UOST": "text", "b": "boolean"}


def check_keys(path: str, keys: object) -> list[str]:
    """A dataset's stored key list: a list of distinct, non-empty strings that are valid text."""
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
    within MAX_IMAGE_BYTES each, the per-key vectors (N, K) with K the number of keys, every field N long
    and of its kind, every stored chunk within :data:`MAX_CHUNK_BYTES`. A field the dataset predates (not
    in ``columns``) is allowed: it reads as its default. Returns N."""
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
    for field in SCHEMA[1:]:
        if field.name not in columns:
            continue
        shape, dtype = columns[field.name]
        want = (rows, len(keys)) if field.shape == "keys" else (rows,)
        if tuple(shape) != want:
            if len(shape) == 2 and field.shape == "keys" and shape[0] == rows:
                raise JumpnetError(path, f"'{field.name}' has {shape[1]} columns, but 'keys' names {len(keys)} keys")
            raise JumpnetError(path, f"'{field.name}' has shape {tuple(shape)}, but 'image' has {rows} rows: "
                                     f"expected {want}")
        if dtype.kind not in field.kinds or (dtype.kind in "fiu" and dtype.itemsize > 8):
            raise JumpnetError(path, f"'{field.name}' is {dtype}, not a {_KIND_NAMES.get(field.kinds, 'valid')} field")
    for name, chunk in (chunks or {}).items():
        if chunk is None or name not in columns:
            continue
        dtype = columns[name][1]
        size = math.prod(chunk) * (_TEXT_ITEM if dtype.kind in "OST" else dtype.itemsize)
        if len(chunk) != len(columns[name][0]) or min(chunk, default=1) < 1 or size > MAX_CHUNK_BYTES:
            raise JumpnetError(path, f"'{name}' is stored in chunks of {tuple(chunk)} ({size >> 20} MB each "
                                     f"uncompressed), over the {MAX_CHUNK_BYTES >> 20} MB a chunk may take")
    return rows


def missing_fields(path: str, present: set[str]) -> None:
    """Every dataset holds at least the image and the seed's fields; later fields may be missing."""
    required = ("image", *SMALL_FIELDS[:5])
    missing = [name for name in required if name not in present]
    if missing:
        raise JumpnetError(path, f"is not a jumpnet-stream dataset (no {', '.join(missing)})")


def chunk_rows(rows: int, row_bytes: int) -> int:
    """Rows per stored chunk: ``rows``, or fewer if that many would take more than MAX_CHUNK_BYTES (what
    every reader refuses); at least one."""
    return max(1, min(rows, MAX_CHUNK_BYTES // max(1, row_bytes)))
