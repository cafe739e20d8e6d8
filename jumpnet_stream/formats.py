"""Dataset readers and writers chosen by file extension, and output that appears only when complete.

``.zarr`` is the store (:mod:`store`); ``.npz`` the seed's legacy format (:mod:`legacy`) or, with
an ``image`` member, the columnar one (:mod:`columnar`); ``.h5`` HDF5 (:mod:`h5`). Every
writer takes a temporary sibling path and is renamed over the target on success; on failure the
temporary output is removed, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
import socket
import zipfile
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol

import numpy as np

from .chunk import DEFAULT_ROWS, Chunk
from .errors import JumpnetError
from .names import printable_tree
from .columnar import ColumnarNpzDataset, ColumnarNpzWriter
from .h5 import H5Dataset, H5DatasetWriter
from .legacy import LegacyNpzDataset, LegacyNpzWriter
from .store import IMAGE_ROWS, ZarrDataset, ZarrDatasetWriter

FORMATS = (".zarr", ".npz", ".h5")
HOLD_LAYOUTS = ("scalar", "vector")


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


def open_dataset(path: str | os.PathLike, keys: list[str] | None = None) -> DatasetReader:
    """Open any dataset format for streaming reads. ``keys`` names the keys of a legacy .npz that holds
    none (the original scripts' outputs); a dataset that has keys keeps its own."""
    path = os.fspath(path)
    ext = _extension(path)
    if ext == ".zarr":
        return ZarrDataset(path)
    if ext == ".h5":
        return H5Dataset(path)
    if _is_columnar(path):
        return ColumnarNpzDataset(path)
    return LegacyNpzDataset(path, keys=keys)


def _is_columnar(path: str) -> bool:
    if not (os.path.isfile(path) and zipfile.is_zipfile(path)):
        return False
    with zipfile.ZipFile(path) as zf:
        return "image.npy" in zf.namelist()


def check_output(path: str | os.PathLike, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike] = ()) -> str:
    """Validate an output path before any work starts: known format, writable folder, no clobbering,
    and never one of ``inputs``."""
    path = os.fspath(path)
    _extension(path)
    return check_target(path, overwrite, inputs)


def check_target(path: str, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = ()) -> str:
    """An output of any kind: its folder exists and is writable, it is not there unless ``overwrite``, and
    it is none of ``inputs`` (the same file or store, a link to one, inside one, or holding one)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise JumpnetError(path, f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise JumpnetError(path, f"output folder {parent} is not writable")
    for source in inputs:
        if overlaps(path, os.fspath(source)):
            raise JumpnetError(path, f"is an input of this command ({os.fspath(source)}): an output never replaces "
                                     "an input; choose another name")
    if os.path.lexists(path) and not overwrite:
        raise JumpnetError(path, "output exists (pass --overwrite to replace it)")
    return path


def overlaps(output: str, source: str) -> bool:
    """Whether writing ``output`` could touch ``source``: the same path once links are followed, the same
    file (a hard link), or one inside the other (a store directory)."""
    out, src = os.path.realpath(output), os.path.realpath(source)
    if out == src or out.startswith(src + os.sep) or src.startswith(out + os.sep):
        return True
    try:
        return os.path.exists(out) and os.path.exists(src) and os.path.samefile(out, src)
    except OSError:
        return False


def disk_size(path: str | os.PathLike) -> int:
    """Bytes a dataset takes on disk: a file's size, or a store directory's files added up."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(folder, f)) for folder, _, files in os.walk(path) for f in files)


def partial_path(path: str) -> str:
    """Where an output is written until it is complete: a hidden sibling, ``.NAME.partial-HOST-PID`` (two
    hosts writing to one shared folder never collide)."""
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(parent, f".{name}.partial-{_HOST}-{os.getpid()}")


_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def remove_stale_partials(path: str) -> None:
    """Remove what killed runs on this host left of ``path``'s temporary outputs (their process is gone)."""
    parent, name = os.path.split(os.path.abspath(path))
    for stale in glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.partial-{_HOST}-*")):
        pid = stale.rsplit("-", 1)[-1].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            remove_output(stale)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_output(path: str) -> None:
    """Delete a file or a store directory, if it is there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@dataclass(frozen=True)
class WriteOptions:
    """How a dataset is written, beyond its format (which the extension gives)."""

    layout: str = "legacy"            # .npz: the seed's object array, or "columnar" (needs ``rows``)
    image_dtype: str | None = None    # float32 or uint8; default float32 for legacy .npz, else uint8
    hold: str = "scalar"              # legacy .npz: "scalar" (0-d, the jump key's hold) or "vector" (the seed's)
    hold_key: str | None = None       # legacy .npz, "scalar": whose hold (default: the only key)
    image_size: tuple[int, int] | None = None  # an empty dataset's image size (else the first chunk's)
    image_rows: int = IMAGE_ROWS      # .zarr: rows per image chunk
    rows: int | None = None           # columnar .npz: the row count, known up front

    def __post_init__(self) -> None:
        if self.layout not in ("legacy", "columnar"):
            raise JumpnetError(None, f"--layout must be legacy or columnar, not {self.layout}")
        if self.image_dtype not in (None, "float32", "uint8"):
            raise JumpnetError(None, f"--dtype must be float32 or uint8, not {self.image_dtype}")
        if self.hold not in HOLD_LAYOUTS:
            raise JumpnetError(None, f"--hold must be one of {', '.join(HOLD_LAYOUTS)}, not {self.hold}")


def _check_options(path: str, ext: str, keys: list[str], options: WriteOptions) -> None:
    """Refuse options that the output's format would silently ignore."""
    legacy = ext == ".npz" and options.layout == "legacy"
    if options.hold != "scalar" and not legacy:
        raise JumpnetError(path, "--hold applies to the legacy .npz layout only")
    if legacy and options.hold == "scalar" and _hold_index(path, keys, options.hold_key) is None:
        raise JumpnetError(path, f"the legacy .npz keeps one hold per sample, the jump key's, and which of this "
                                 f"dataset's keys ({', '.join(keys)}) jumps is not known: write .zarr, then export "
                                 "it with --hold-key KEY")
    if options.layout == "columnar" and ext != ".npz":
        raise JumpnetError(path, "--layout applies to .npz outputs only")
    if options.image_dtype == "float32" and ext == ".zarr":
        raise JumpnetError(path, "the .zarr store keeps uint8 images (export to .npz or .h5 for float32)")
    if options.image_rows != IMAGE_ROWS and ext != ".zarr":
        raise JumpnetError(path, "--rechunk applies to .zarr outputs only")
    if options.image_rows < 1:
        raise JumpnetError(path, f"--rechunk must be 1 or more, not {options.image_rows}")


def _writer(path: str, ext: str, keys: list[str], options: WriteOptions, name: str) -> Any:
    """The format's writer at ``path`` (a temporary file); ``name`` is the output as the user named it."""
    shape = (*options.image_size, 3) if options.image_size else None
    if ext == ".zarr":
        return ZarrDatasetWriter(path, keys, shape, image_rows=options.image_rows)
    if ext == ".h5":
        return H5DatasetWriter(path, keys, options.image_dtype or "uint8", shape or (227, 227, 3))
    if options.layout == "columnar":
        if options.rows is None or shape is None:
            raise ValueError("a columnar .npz needs its row count and image size up front")
        return ColumnarNpzWriter(path, keys, options.rows, shape, options.image_dtype or "uint8")
    hold = _hold_index(name, keys, options.hold_key) if options.hold == "scalar" else None
    return LegacyNpzWriter(path, keys, hold_index=hold, image_dtype=options.image_dtype or "float32", name=name)


def _hold_index(path: str, keys: list[str], hold_key: str | None) -> int | None:
    """The slot whose hold a scalar-hold legacy file keeps: ``hold_key``'s, or the only key's."""
    if hold_key is None:
        return 0 if len(keys) == 1 else None
    if hold_key not in keys:
        raise JumpnetError(path, f"hold key {hold_key!r} is not one of the dataset's keys ({', '.join(keys)})")
    return keys.index(hold_key)


def jump_key(provenance: list[dict[str, Any]]) -> str | None:
    """The jump key of a dataset, from its provenance: the key every preprocess stage behind it paired
    (None if there is none, or several)."""
    found: set[str] = set()

    def walk(records: object, depth: int) -> None:
        if not isinstance(records, list) or depth > 16:
            return
        for record in records:
            if not isinstance(record, dict):
                continue
            parameters = record.get("parameters")
            if record.get("stage") == "preprocess" and isinstance(parameters, dict) \
                    and isinstance(parameters.get("key"), str):
                found.add(parameters["key"])
            for entry in record.get("inputs") or []:
                if isinstance(entry, dict):
                    walk(entry.get("provenance"), depth + 1)
    walk(provenance, 0)
    return found.pop() if len(found) == 1 else None


@contextlib.contextmanager
def create_dataset(path: str | os.PathLike, keys: list[str], *, overwrite: bool = False,
                   options: WriteOptions = WriteOptions(),
                   inputs: Iterable[str | os.PathLike] = ()) -> Iterator[DatasetWriter]:
    """A writer for ``path`` (format by extension) that lands only if the block completes; never one of
    ``inputs``.

    The caller sets ``writer.provenance`` (a list of stage records) before the block ends.
    """
    path = check_output(path, overwrite, inputs)
    _check_options(path, _extension(path), keys, options)
    remove_stale_partials(path)
    temp = partial_path(path)
    remove_output(temp)
    try:
        writer = _writer(temp, _extension(path), keys, options, name=path)
        writer.provenance = []
    except OSError as exc:
        raise JumpnetError(path, f"cannot write the output: {exc.strerror or exc}") from None
    try:
        yield writer
        writer.finish(printable_tree(writer.provenance))
        _land(temp, path)
    except BaseException as exc:
        try:
            writer.abort()
        except Exception:  # a writer that failed may fail to close too: the first error is the one to report
            pass
        remove_output(temp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS):
            raise JumpnetError(path, f"cannot write the output: {os.strerror(exc.errno)} (nothing was kept)") from exc
        if isinstance(exc, OSError) and temp in (exc.filename, exc.filename2):  # name the output, not its temp
            raise JumpnetError(path, f"cannot write the output: {exc.strerror or exc}") from exc
        raise


def _land(temp: str, path: str) -> None:
    """Move the finished output into place; an old output is replaced only once the new one is there (a
    link named as the output is replaced by the output, never its target)."""
    if os.path.islink(path) and os.path.isdir(temp):
        os.remove(path)  # a directory cannot be renamed over a link
    if not os.path.isdir(path) or os.path.islink(path):
        os.replace(temp, path)  # atomic for files
        return
    old = f"{temp}.old"
    os.replace(path, old)
    os.replace(temp, path)
    remove_output(old)
