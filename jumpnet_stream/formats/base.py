"""What every dataset format provides: a :class:`Format` that says what it is and what it supports, a
:class:`DatasetReader` with one reading interface, and a writer. Formats register themselves here."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Iterator, Protocol

import numpy as np

from ..chunk import DEFAULT_ROWS, Chunk, rows_within, select_rows
from ..errors import JumpnetError
from ..schema import BY_NAME

#: Rows of small fields read at a time by what goes over a whole set (a few MB of columns).
COLUMN_BLOCK = 1 << 16


@dataclass(frozen=True)
class DatasetSpec:
    """What a writer is told up front: the key list, the images' shape (an empty dataset's too) and, for
    formats that need it, how many rows will come."""

    keys: tuple[str, ...]
    image_shape: tuple[int, int, int] = (227, 227, 3)
    rows: int | None = None


class DatasetWriter(Protocol):
    """Appends chunks; keeps no reference to a chunk's arrays once ``write`` returns (callers reuse them)."""

    rows: int

    def write(self, chunk: Chunk) -> None: ...

    def finish(self, provenance: list[dict[str, Any]]) -> None: ...

    def abort(self) -> None: ...


class DatasetReader:
    """One dataset opened for reading. Opening checks the dataset against the sample schema and keeps no
    file open: handles are made on the first read and dropped by :meth:`close` and by pickling, so a reader
    can be handed to another process (a DataLoader worker, a cluster task).

    A format implements ``_open`` (check, then set ``keys``, ``provenance``, ``image_shape``, ``_rows``)
    and ``_read(start, stop)``; ``block`` is the rows it reads together (a stored chunk), which ``take``
    reads a block at a time."""

    block: int = DEFAULT_ROWS
    column_block: int = DEFAULT_ROWS  # rows of the small fields :meth:`column_rows` reads together
    cheap_columns: bool = True   # a small field is read without the images (all but the legacy .npz)
    stored_dtype: str | None = "uint8"  # the images' dtype as stored (readers hand out uint8)

    def __init__(self, path: str | os.PathLike, keys: list[str] | None = None):
        self.path = os.fspath(path)
        self.keys: list[str] = []
        self.provenance: list[dict[str, Any]] = []
        self.image_shape: tuple[int, ...] = (227, 227, 3)
        self._rows = 0
        self._open(keys)

    def _open(self, keys: list[str] | None) -> None:
        raise NotImplementedError

    def _read(self, start: int, stop: int) -> Chunk:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._rows

    def read(self, start: int, stop: int) -> Chunk:
        """Rows ``start`` to ``stop`` (clipped to the dataset)."""
        start, stop = max(0, int(start)), min(len(self), int(stop))
        return self._read(start, max(start, stop))

    def chunks(self, rows: int = DEFAULT_ROWS) -> Iterator[Chunk]:
        """Every row in order, ``rows`` at a time (fewer for large images: :func:`chunk.rows_within`)."""
        rows = rows_within(self.image_shape, rows)
        for start in range(0, len(self), rows):
            yield self.read(start, start + rows)

    def take(self, positions: np.ndarray) -> Iterator[Chunk]:
        """The rows at sorted ``positions``, in order, reading only the blocks that hold them."""
        positions = np.asarray(positions, np.int64)
        if not self.random_access:
            yield from select_rows(self.chunks(), positions)
            return
        windows = positions // self.block
        for window in np.unique(windows):
            start = int(window) * self.block
            yield self.read(start, start + self.block).take(positions[windows == window] - start)

    def column(self, name: str) -> np.ndarray:
        """One small field (not ``image``) whole: a few bytes per sample."""
        return self.columns([name])[name]

    def column_rows(self, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """Small fields ``names`` of rows ``start`` to ``stop``, read with their images a chunk at a time
        (a format that stores the fields apart reads them alone)."""
        parts = {name: [BY_NAME[name].filled(0, len(self.keys))] for name in names}
        rows = rows_within(self.image_shape, DEFAULT_ROWS)
        for at in range(max(0, start), min(len(self), stop), rows):
            chunk = self.read(at, min(stop, at + rows))
            for name in names:
                parts[name].append(chunk[name])
        return {name: np.concatenate(p) for name, p in parts.items()}

    def column_blocks(self, names: list[str], rows: int = COLUMN_BLOCK) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Small fields ``names`` ``rows`` rows at a time, each block with its first row's position: what
        goes over a whole set's columns in memory that does not grow with the set."""
        if not self.cheap_columns:  # read with the images: in one pass, a chunk at a time
            start = 0
            for chunk in self.chunks():
                yield start, {name: chunk[name] for name in names}
                start += len(chunk)
            return
        for start in range(0, len(self), rows):
            yield start, self.column_rows(names, start, start + rows)

    def columns(self, names: list[str]) -> dict[str, np.ndarray]:
        """Several small fields whole: each read on its own where the format stores them apart
        (``cheap_columns``), else in one pass over the rows for all of them."""
        if any(name not in BY_NAME or name == "image" for name in names):
            raise ValueError(f"not small fields: {names}")
        if self.cheap_columns:
            return {name: self.column(name) for name in names}
        return self.column_rows(names, 0, len(self))

    @property
    def random_access(self) -> bool:
        return FORMATS_BY_READER[type(self)].random_access

    def close(self) -> None:
        """Drop open handles (the next read opens them again)."""

    def __enter__(self) -> "DatasetReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    #: attributes holding open files or caches: never pickled (the copy opens its own)
    transient: tuple[str, ...] = ("_handle", "_handles", "_cache")

    def __getstate__(self) -> dict[str, Any]:
        return {k: (None if k in self.transient else v) for k, v in self.__dict__.items()}


class Format:
    """A dataset format: its name and file extension, how to recognise, open and create one, its own
    write options (a frozen dataclass), and what it supports."""

    name: ClassVar[str]
    title: ClassVar[str]                   # how messages name it: ".zarr", "legacy .npz"
    extension: ClassVar[str]
    layout: ClassVar[str | None] = None    # .npz: "legacy" or "columnar"
    preferred: ClassVar[bool] = False      # the one written for its extension when no layout is named
    reader: ClassVar[type[DatasetReader]]
    Options: ClassVar[type]
    random_access: ClassVar[bool] = True   # read(start, stop) without reading what comes before
    needs_row_count: ClassVar[bool] = False  # the writer must be told how many rows will come
    appendable: ClassVar[bool] = True      # rows are appended chunk by chunk without knowing the total

    @classmethod
    def recognises(cls, path: str) -> bool:
        """Whether an existing file or store at ``path`` (with this format's extension) is of this format."""
        return True

    @classmethod
    def open(cls, path: str, keys: list[str] | None = None) -> DatasetReader:
        return cls.reader(path, keys)

    @classmethod
    def create(cls, path: str, spec: DatasetSpec, options: Any, name: str) -> DatasetWriter:
        """A writer at ``path`` (a temporary path); ``name`` is the output as the user named it."""
        raise NotImplementedError

    @classmethod
    def check(cls, path: str, spec: DatasetSpec, options: Any) -> None:
        """Refuse, before any work, options this output cannot honour."""


FORMATS: list[type[Format]] = []
FORMATS_BY_READER: dict[type[DatasetReader], type[Format]] = {}


def register(fmt: type[Format]) -> type[Format]:
    """Add a format (a class decorator): the registry is how every command finds it."""
    FORMATS.append(fmt)
    FORMATS_BY_READER[fmt.reader] = fmt
    return fmt


def extensions() -> tuple[str, ...]:
    """The dataset extensions the registered formats use, each once, in registration order."""
    return tuple(dict.fromkeys(fmt.extension for fmt in FORMATS))


def options_for(fmt: type[Format], path: str, **given: Any) -> Any:
    """``fmt``'s options from the values a caller gave (None: not given). A value this format has no
    option for is refused, naming the output: an option that would be silently ignored is a mistake."""
    names = {f.name for f in fields(fmt.Options)}
    ignored = [name for name, value in given.items() if value is not None and name not in names]
    if ignored:
        users = sorted(f.title for f in FORMATS if ignored[0] in {x.name for x in fields(f.Options)})
        raise JumpnetError(path, f"{ignored[0]} applies to {', '.join(users) or 'no'} outputs only, not {fmt.title}")
    return fmt.Options(**{name: value for name, value in given.items() if value is not None and name in names})


def _extension(path: str) -> str:
    return os.path.splitext(path.rstrip("/" + os.sep))[1].lower()


def format_of(path: str) -> type[Format]:
    """The format of an existing dataset at ``path``: by extension, then what the file holds."""
    ext = _extension(path)
    candidates = [fmt for fmt in FORMATS if fmt.extension == ext]
    if not candidates:
        raise JumpnetError(path, f"unknown dataset format '{ext or '(none)'}': use one of {', '.join(extensions())}")
    return next((fmt for fmt in candidates if fmt.recognises(path)), candidates[0])


def format_for(path: str, layout: str | None = None) -> type[Format]:
    """The format an output at ``path`` is written in: its extension, and for .npz the layout."""
    ext = _extension(path)
    candidates = [fmt for fmt in FORMATS if fmt.extension == ext]
    if not candidates:
        raise JumpnetError(path, f"unknown dataset format '{ext or '(none)'}': use one of {', '.join(extensions())}")
    layouts = [fmt.layout for fmt in candidates if fmt.layout]
    if layout is not None and layout not in layouts:
        raise JumpnetError(path, "layout applies to .npz outputs only" if not layouts else
                           f"layout must be one of {', '.join(layouts)}, not {layout}")
    if layout is None:
        return next((fmt for fmt in candidates if fmt.preferred), candidates[0])
    return next(fmt for fmt in candidates if fmt.layout == layout)
