"""Dataset formats behind one registry and one interface.

Each format is one module here that registers a :class:`~.base.Format` (extension, how to recognise,
open and create one, its own write options, what it supports): ``.zarr`` the store, ``.npz`` the seed's
legacy layout or the columnar one, ``.h5`` HDF5. Every module of this package is imported, so a fifth
format is one new module (and its contract test subclass in ``tests/test_formats.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import os
import pkgutil
from typing import Any, Iterable, Iterator

from ..errors import JumpnetError
from ..names import printable_tree
from .base import FORMATS, DatasetReader, DatasetSpec, DatasetWriter, Format, extensions, format_for, format_of, \
    options_for
from .output import check_target, disk_size, land, overlaps, partial_path, remove_output, remove_stale_partials

# The built-in formats first, in the order messages list them; then any other module of this package.
for _module in ("zarr_store", "legacy_npz", "columnar_npz", "hdf5", *sorted(m.name for m in pkgutil.iter_modules(__path__))):
    if _module not in ("base", "checks", "output"):
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["FORMATS", "DatasetReader", "DatasetSpec", "DatasetWriter", "Format", "check_output", "check_target",
           "create_dataset", "disk_size", "extensions", "format_for", "format_of", "jump_key", "open_dataset",
           "options_for", "overlaps", "partial_path", "remove_output", "remove_stale_partials"]


def open_dataset(path: str | os.PathLike, keys: list[str] | None = None) -> DatasetReader:
    """Open any dataset format for reading. ``keys`` names the keys of a legacy .npz that holds none (the
    original scripts' outputs); a dataset that has keys keeps its own."""
    path = os.fspath(path)
    return format_of(path).open(path, keys)


def check_output(path: str | os.PathLike, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike] = ()) -> str:
    """Validate an output path before any work starts: a known format, a writable folder, no clobbering,
    and never one of ``inputs``."""
    path = os.fspath(path)
    format_for(path)
    return check_target(path, overwrite, inputs)


@contextlib.contextmanager
def create_dataset(path: str | os.PathLike, keys: list[str], *, image_shape: tuple[int, ...] | None = None,
                   rows: int | None = None, options: Any = None, layout: str | None = None,
                   jump_key: str | None = None, overwrite: bool = False,
                   inputs: Iterable[str | os.PathLike] = ()) -> Iterator[DatasetWriter]:
    """A writer for ``path`` (the format its extension, and for .npz ``layout``, names) that lands only if
    the block completes; never one of ``inputs``. ``options``: the format's own options (its defaults if
    None); ``jump_key``: the key a format that keeps one hold per sample keeps, unless its options name one.

    The caller sets ``writer.provenance`` (a list of stage records) before the block ends.
    """
    fmt = format_for(os.fspath(path), layout)
    if options is not None and layout is None and not isinstance(options, fmt.Options):  # the options name it
        fmt = next((f for f in FORMATS if f.extension == fmt.extension and isinstance(options, f.Options)), fmt)
    options = fmt.Options() if options is None else options
    if not isinstance(options, fmt.Options):
        raise TypeError(f"{fmt.name} outputs take {fmt.Options.__name__}, not {type(options).__name__}")
    if jump_key is not None and getattr(options, "hold_key", False) is None:
        options = dataclasses.replace(options, hold_key=jump_key)
    spec = DatasetSpec(tuple(keys), tuple(image_shape or (227, 227, 3)), rows)
    path = check_output(path, overwrite, inputs)
    fmt.check(path, spec, options)
    remove_stale_partials(path)
    temp = partial_path(path)
    remove_output(temp)
    writer = None
    try:  # from the first byte of the temporary output to its landing: any failure, or a signal, removes it
        try:
            writer = fmt.create(temp, spec, options, path)
        except OSError as exc:
            raise JumpnetError(path, f"cannot write the output: {exc.strerror or exc}") from None
        writer.provenance = []
        yield writer
        writer.finish(printable_tree(writer.provenance))
        land(temp, path)
    except BaseException as exc:
        try:
            if writer is not None:
                writer.abort()
        except Exception:  # a writer that failed may fail to close too: the first error is the one to report
            pass
        remove_output(temp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS):
            raise JumpnetError(path, f"cannot write the output: {os.strerror(exc.errno)} (nothing was kept)") from exc
        if isinstance(exc, OSError) and temp in (exc.filename, exc.filename2):  # name the output, not its temp
            raise JumpnetError(path, f"cannot write the output: {exc.strerror or exc}") from exc
        raise


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
