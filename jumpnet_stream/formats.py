"""Dataset readers and writers chosen by file extension, and output that appears only when complete.

``.zarr`` is the store (:mod:`store`); ``.npz`` the seed's legacy format (:mod:`legacy`). Every
writer takes a temporary sibling path and is renamed over the target on success; on failure the
temporary output is removed, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any, Iterator, Protocol

import numpy as np

from .chunk import DEFAULT_ROWS, Chunk
from .errors import JumpnetError
from .legacy import LegacyNpzDataset, LegacyNpzWriter
from .store import ZarrDataset, ZarrDatasetWriter

FORMATS = (".zarr", ".npz")


class DatasetReader(Protocol):
    path: str
    keys: list[str]
    provenance: list[dict[str, Any]]

    def __len__(self) -> int: ...

    def chunks(self, rows: int = DEFAULT_ROWS) -> Iterator[Chunk]: ...

    def take(self, positions: np.ndarray) -> Iterator[Chunk]: ...

    def column(self, name: str) -> np.ndarray: ...

    @property
    def image_shape(self) -> tuple[int, ...]: ...


class DatasetWriter(Protocol):
    """Appends chunks; keeps no reference to a chunk's arrays once ``write`` returns (callers reuse them)."""

    rows: int

    def write(self, chunk: Chunk) -> None: ...

    def finish(self, provenance: list[dict[str, Any]]) -> None: ...

    def abort(self) -> None: ...


def _extension(path: str) -> str:
    ext = os.path.splitext(path.rstrip("/" + os.sep))[1].lower()
    if ext not in FORMATS:
        raise JumpnetError(path, f"unknown dataset format '{ext or '(none)'}': use one of {', '.join(FORMATS)}")
    return ext


def open_dataset(path: str | os.PathLike) -> DatasetReader:
    """Open any dataset format for streaming reads."""
    path = os.fspath(path)
    return ZarrDataset(path) if _extension(path) == ".zarr" else LegacyNpzDataset(path)


def check_output(path: str | os.PathLike, overwrite: bool = False) -> str:
    """Validate an output path before any work starts: known format, writable folder, no clobbering."""
    path = os.fspath(path)
    _extension(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise JumpnetError(path, f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise JumpnetError(path, f"output folder {parent} is not writable")
    if os.path.lexists(path) and not overwrite:
        raise JumpnetError(path, "output exists (pass --overwrite to replace it)")
    return path


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def create_dataset(path: str | os.PathLike, keys: list[str], *, overwrite: bool = False,
                   scalar_hold: bool = False, image_size: tuple[int, int] | None = None) -> Iterator[DatasetWriter]:
    """A writer for ``path`` (format by extension) that lands only if the block completes.

    The caller sets ``writer.provenance`` (a list of stage records) before the block ends.
    ``image_size`` gives an empty dataset's image size (otherwise the first chunk's).
    """
    path = check_output(path, overwrite)
    parent, name = os.path.split(os.path.abspath(path))
    temp = os.path.join(parent, f".{name}.partial-{os.getpid()}")
    _remove(temp)
    writer: Any = ZarrDatasetWriter(temp, keys, (*image_size, 3) if image_size else None) \
        if _extension(path) == ".zarr" else LegacyNpzWriter(temp, keys, scalar_hold=scalar_hold)
    writer.provenance = []
    try:
        yield writer
        writer.finish(writer.provenance)
        _land(temp, path)
    except BaseException:
        writer.abort()
        _remove(temp)
        raise


def _land(temp: str, path: str) -> None:
    """Move the finished output into place; an old output is replaced only once the new one is there."""
    if not os.path.isdir(path) or os.path.islink(path):
        os.replace(temp, path)  # atomic for files
        return
    old = f"{temp}.old"
    os.replace(path, old)
    os.replace(temp, path)
    _remove(old)
