"""Images left in the keylog: where an uncompressed (stored) ``data`` member keeps each event's pixels.

A recorder keylog is mostly pixels: every event (auto-repeated presses and every release too) carries a
227x227x3 float32 capture, 604 KB, and only the presses that start a jump are ever used. In a stored zip
member the pickle's bytes are the file's bytes, so the restricted unpickler can step over an image's pixels
(a seek) once it has checked the array state around them: it makes an :class:`ImageRef` (the file offset
of the pixels, their shape, dtype and order) instead of the array, and the pixels chosen are read later by
:func:`read_pixels`. A compressed member cannot be seeked into: it is read whole, as before.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

from .errors import JumpnetError

#: A column of image references: what :class:`ImageRef` says, one record per event.
IMAGE_REF = np.dtype([("offset", "<i8"), ("shape", "<i8", (3,)), ("dtype", "S8"), ("fortran", "?")])


@dataclass(frozen=True)
class SkippedBytes:
    """The unpickler's stand-in for an array's data it stepped over: ``size`` bytes at ``offset`` in the file."""

    offset: int
    size: int


@dataclass(frozen=True)
class ImageRef:
    """An image array whose state the unpickler checked and whose pixels it left in the file: ``shape``
    (H, W, 3) of numpy dtype ``dtype`` (its type string, such as ``<f4``), C order or ``fortran``, in the
    ``nbytes`` bytes at ``offset``."""

    offset: int
    shape: tuple[int, int, int]
    dtype: str
    fortran: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def record(self) -> tuple:
        """The :data:`IMAGE_REF` record of this reference."""
        return (self.offset, self.shape, self.dtype.encode("ascii"), self.fortran)


class SkipFallback(JumpnetError):
    """Leaving images in the file cannot give exactly what reading them all would (an image came in a form
    the unpickler could not step over, or a chosen image turns out to hold values that the full read would
    have refused, so that event would not have counted): read the keylog whole instead."""


#: The type strings of the dtypes an image may have: what ``entry_values.as_image`` accepts (uint8, or a float).
_IMAGE_DTYPE = re.compile(r"[|<>]?(u1|f[0-9]{1,2})")


def is_image_state(shape: object, dtype: np.dtype) -> bool:
    """Whether an array of ``shape`` and (numpy's own) ``dtype`` is what an event's image may be, so that its
    pixels may be left in the file: (H, W, 3), H and W at least 1, uint8 or a float."""
    return (type(shape) is tuple and len(shape) == 3 and all(type(n) is int for n in shape)
            and shape[0] >= 1 and shape[1] >= 1 and shape[2] == 3 and (dtype.kind == "f" or dtype.str == "|u1"))


def image_dtype(record: np.void) -> np.dtype | None:
    """The dtype an :data:`IMAGE_REF` record names, if it is an image's (uint8 or a float)."""
    spec = bytes(record["dtype"]).decode("ascii", "replace")
    try:
        return np.dtype(spec) if _IMAGE_DTYPE.fullmatch(spec) else None
    except TypeError:  # f3 and the like: no such float
        return None


def read_pixels(fd: int, path: str, record: np.void, span: tuple[int, int], limit: int) -> np.ndarray:
    """The image an :data:`IMAGE_REF` record names, read from the open file ``fd``: its dtype, shape and size
    must be an image's, at most ``limit`` bytes, within ``span`` (the bytes of the member it came from)."""
    offset, shape, fortran = int(record["offset"]), tuple(int(n) for n in record["shape"]), bool(record["fortran"])
    dtype = image_dtype(record)
    if dtype is None or not is_image_state(shape, dtype):
        spec = bytes(record["dtype"]).decode("ascii", "replace")
        raise JumpnetError(path, f"an image reference names {spec!r} of shape {shape}, not an image")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > limit or offset < span[0] or offset + nbytes > span[1]:
        raise JumpnetError(path, f"an image reference of {nbytes} bytes at byte {offset} is not within 'data'")
    data = os.pread(fd, nbytes, offset)
    if len(data) != nbytes:
        raise JumpnetError(path, f"'data' is corrupt or truncated: an image's {nbytes} bytes at byte {offset} "
                                 f"end past the end of the file")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def prefetch(fd: int, refs: np.ndarray, limit: int) -> None:
    """Ask the kernel to start reading the pixels of these :data:`IMAGE_REF` records, all of them at once
    (the disk works on them together while the first ones are converted: measured, it halves the wait)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for record in refs:
        dtype, dims = image_dtype(record), [int(n) for n in record["shape"]]
        if dtype is not None and record["offset"] >= 0 and min(dims) > 0:
            nbytes = min(math.prod(dims) * dtype.itemsize, limit)
            os.posix_fadvise(fd, int(record["offset"]), nbytes, os.POSIX_FADV_WILLNEED)
