"""Recorder keylogs (``collected/<name>.npz``) read safely and streamed as columnar event chunks.

Every wrinkle of the recorder's files is normalised here: (N, 6) or (N,) layouts, old ``keys`` layouts, and
(by :mod:`entry_values`) values wrapped in 0-d object arrays or 1-element lists, phases as bytes, upper
case or padded.
Entries that cannot be normalised are counted by reason and skipped, never silently lost.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from .chunk import DEFAULT_ROWS, Chunk, rows_to_chunk, rows_within
from .entry_values import Malformed, as_float, as_image, as_int, as_phase, as_vector, image_to_uint8
from .errors import JumpnetError
from .image_refs import IMAGE_REF, ImageRef, SkipFallback, prefetch, read_pixels
from .names import stem
from .npz import read_small_array
from .object_array import ObjectArrayReader
from .pickle_bounds import MAX_IMAGE_BYTES

EVENT_FIELDS = ("image", "prev_interval", "multi_hot", "hold_durations", "phase", "frame_idx")
EVENT_DTYPES = {"image": np.uint8, "prev_interval": np.float64, "multi_hot": np.float32,
                "hold_durations": np.float32, "phase": "<U7", "frame_idx": np.int64}


class ImageBatcher:
    """Builds chunks row by row; each row's image goes straight into the chunk's uint8 array, so
    converting an event costs one temporary, not a chain of them (which fragments the heap). Images left in
    the file (an :class:`ImageRef`, or its :data:`IMAGE_REF` record) make a column of records instead."""

    def __init__(self, fields: tuple[str, ...], dtypes: Mapping[str, object], rows: int = DEFAULT_ROWS):
        self.fields, self.dtypes, self.rows = fields, dtypes, rows
        self.shape: tuple[int, ...] | None = None
        self._images: np.ndarray | None = None
        self._rest: list[tuple] = []

    def add(self, image: np.ndarray | ImageRef | np.void, rest: tuple) -> Chunk | None:
        """Add a row (image from :func:`as_image`, then the other fields); a chunk when one is full."""
        left_in_file = not isinstance(image, np.ndarray)
        if isinstance(image, ImageRef):
            image = np.array(image.record(), IMAGE_REF)[()]
        shape = tuple(int(n) for n in image["shape"]) if left_in_file else image.shape
        if self.shape is None:
            self.shape = shape
            self.rows = rows_within(self.shape, self.rows)
        elif shape != self.shape:
            raise Malformed("image size differs from the first image")
        if self._images is None:
            self._images = np.empty(self.rows, IMAGE_REF) if left_in_file \
                else np.empty((self.rows, *self.shape), np.uint8)
        elif left_in_file != (self._images.dtype == IMAGE_REF):
            raise ValueError("a chunk of images cannot mix pixels and images left in the file")
        if left_in_file:
            self._images[len(self._rest)] = image
        else:
            image_to_uint8(image, self._images[len(self._rest)])
        self._rest.append(rest)
        return self.flush() if len(self._rest) == self.rows else None

    def flush(self) -> Chunk | None:
        """The rows added since the last chunk, if any."""
        if not self._rest:
            return None
        rest = rows_to_chunk(self._rest, self.fields[1:], self.dtypes)
        chunk = Chunk({self.fields[0]: self._images[:len(self._rest)], **rest.columns})
        self._images, self._rest = None, []
        return chunk


def batch_entries(entries: Iterable[object], parse: Callable[[tuple], tuple[object, tuple]],
                  fields: tuple[str, ...], dtypes: Mapping[str, object], *,
                  malformed: Callable[[int, Malformed], None], rows: int = DEFAULT_ROWS,
                  image: Callable[[object], object] = as_image) -> Iterator[Chunk]:
    """Six-field entries -> chunks of ``fields``: ``parse`` maps an entry's fields to (image, other
    fields), ``image`` checks the image; an entry that does not parse goes to ``malformed(index, why)``
    (which may raise)."""
    batcher = ImageBatcher(fields, dtypes, rows)
    for index, entry in enumerate(entries):
        try:
            pixels, rest = parse(entry_fields(entry))
            chunk = batcher.add(image(pixels), rest)
        except Malformed as why:
            malformed(index, why)
            continue
        if chunk is not None:
            yield chunk
    chunk = batcher.flush()
    if chunk is not None:
        yield chunk


def entry_fields(entry: object) -> tuple:
    """The six fields of an entry given as a tuple, list or 1-D object array."""
    if isinstance(entry, np.ndarray) and entry.dtype.hasobject and entry.ndim == 1:
        entry = tuple(entry)
    if not isinstance(entry, (tuple, list)):
        raise Malformed("entry is not a tuple of fields")
    if len(entry) != 6:
        raise Malformed(f"entry has {len(entry)} fields, expected 6")
    return tuple(entry)


MAX_KEYS = 1024


def normalize_keys(raw: np.ndarray, path: str) -> list[str]:
    """The key list from a ``keys`` array of any of the recorder's layouts."""
    keys: list[str] = []

    def collect(value: object, depth: int) -> None:
        if depth > 4:
            raise JumpnetError(path, "'keys' is nested too deeply, expected key names")
        if isinstance(value, np.ndarray):
            for item in value.reshape(-1):
                collect(item.item() if isinstance(item, np.generic) else item, depth + 1)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item, depth + 1)
        elif isinstance(value, (bytes, np.bytes_)):
            try:
                keys.append(bytes(value).decode("utf-8"))
            except UnicodeDecodeError:
                raise JumpnetError(path, f"'keys' holds {bytes(value)[:20]!r}, which is not UTF-8 text") from None
        elif isinstance(value, str):
            keys.append(str(value))
        else:
            raise JumpnetError(path, f"'keys' holds a {type(value).__name__}, expected key names")
        if len(keys) > MAX_KEYS:
            raise JumpnetError(path, f"'keys' holds more than {MAX_KEYS} names")

    collect(raw, 0)
    keys = [k.strip() for k in keys]
    for key in keys:
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise JumpnetError(path, f"'keys' holds {key!r}, which is not valid text") from None
    if not keys or any(not k for k in keys):
        raise JumpnetError(path, "'keys' is empty")
    if len(set(keys)) != len(keys):
        raise JumpnetError(path, f"'keys' repeats a key: {keys}")
    return keys


@dataclass
class Recording:
    """A recorder keylog opened for streaming; its event counts grow as :meth:`events` runs."""

    path: str
    keys: list[str] = field(init=False)
    malformed: Counter = field(init=False, default_factory=Counter)

    def __post_init__(self) -> None:
        self.path = os.fspath(self.path)
        self.keys = normalize_keys(read_small_array(self.path, "keys"), self.path)
        self._entries = ObjectArrayReader(self.path, "data")
        self._opened = _stamp(os.stat(self.path))

    @property
    def skips_images(self) -> bool:
        """Whether :meth:`events` with ``lazy_images`` leaves the images in the file (its 'data' is stored
        uncompressed, as ``np.savez`` writes it) to be read by :meth:`read_images`; a compressed one is read
        whole whatever is asked."""
        return self._entries.stored_at is not None

    @property
    def name(self) -> str:
        return stem(self.path)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def progress(self) -> tuple[int, int]:
        """(bytes read, bytes in all) of the event array, for progress bars."""
        return self._entries.bytes_read, self._entries.nbytes

    def events(self, rows: int = DEFAULT_ROWS, *, lazy_images: bool = False) -> Iterator[Chunk]:
        """Well-formed events in order, as chunks of EVENT_FIELDS; malformed ones counted by reason.
        Non-finite numbers (NaN, inf) anywhere make an entry malformed. A file with entries of which
        not one is readable (the wrong kind of file, or keys that do not fit) raises JumpnetError.

        With ``lazy_images``, where :attr:`skips_images`, the images are left in the file: the "image"
        column holds :data:`IMAGE_REF` records (where each image's pixels are, their shape and dtype,
        checked), for :meth:`read_images` or :meth:`with_images` to read the few that are needed. Their
        values are checked only then: an event whose image holds NaN or values outside [0, 1] is
        malformed in a full read, a readable event here. An array that cannot be read so (it would be
        loaded whole, or holds an image in a form the unpickler does not step over) raises
        :class:`SkipFallback`: read it with ``lazy_images=False``."""
        k = len(self.keys)
        lazy = lazy_images and self.skips_images

        def parse(fields: tuple) -> tuple[object, tuple]:
            image, prev, multi_hot, holds, phase, frame = fields
            multi_hot, holds = as_vector(multi_hot, k, "multi_hot"), as_vector(holds, k, "hold_durations")
            if not (np.isfinite(multi_hot).all() and np.isfinite(holds).all()):
                raise Malformed("multi_hot or hold_durations has NaN or infinite values")
            return image, (as_float(prev, "prev_interval"), multi_hot, holds, as_phase(phase),
                           as_int(frame, "frame_idx"))

        seen: Counter = Counter()

        def count(index: int, why: Malformed) -> None:
            self.malformed[str(why)] += 1
            seen[str(why)] += 1

        def entries() -> Iterator[object]:
            for entry in self._entries.rows(skip_images=lazy):
                seen[None] += 1
                yield entry

        def left_in_file(value: object) -> ImageRef:
            image = as_image(value)
            if isinstance(image, np.ndarray):
                raise SkipFallback(self.path, "'data' holds an image that cannot be left in the file")
            return image

        yield from batch_entries(entries(), parse, EVENT_FIELDS, EVENT_DTYPES, malformed=count, rows=rows,
                                 image=left_in_file if lazy else as_image)
        total = seen.pop(None, 0)
        if total and sum(seen.values()) == total:  # not one readable event: a wrong or broken file, not data
            reasons = "; ".join(f"{n} x {why}" for why, n in seen.most_common(3))
            more = f"; and {len(seen) - 3} more" if len(seen) > 3 else ""
            raise JumpnetError(self.path, f"none of its {total} entries is a readable event ({reasons}{more})")

    def read_images(self, refs: np.ndarray) -> np.ndarray:
        """The pixels of the :data:`IMAGE_REF` records that :meth:`events` gave with ``lazy_images``, as uint8
        (n, H, W, 3), one image in memory at a time beside them. Each record is checked against the file
        (an image's dtype and shape, within 'data'), each image as :meth:`events` checks one: an image that
        would have made its event malformed (NaN, values outside [0, 1]) raises :class:`SkipFallback`, as
        the events that came without it may not be those of a full read. A file changed since the recording
        was opened raises JumpnetError."""
        refs = np.asarray(refs)
        if refs.dtype != IMAGE_REF or refs.ndim != 1:
            raise TypeError(f"expected a 1-D array of IMAGE_REF records, got {refs.dtype} of shape {refs.shape}")
        if not self.skips_images:
            raise JumpnetError(self.path, "its 'data' is compressed: no image was left in the file")
        span = (self._entries.stored_at, self._entries.stored_at + self._entries.nbytes)
        out: np.ndarray | None = None
        with open(self.path, "rb", buffering=0) as f:
            self._check_unchanged(os.fstat(f.fileno()))
            prefetch(f.fileno(), refs, MAX_IMAGE_BYTES)
            for i, record in enumerate(refs):
                try:
                    image = as_image(read_pixels(f.fileno(), self.path, record, span, MAX_IMAGE_BYTES))
                except Malformed as why:
                    raise SkipFallback(self.path, f"'data' holds an image that a full read would refuse ({why})") \
                        from None
                if out is None:
                    out = np.empty((len(refs), *image.shape), np.uint8)
                elif image.shape != out.shape[1:]:
                    raise JumpnetError(self.path, "the images asked for differ in size")
                image_to_uint8(image, out[i])
        return out if out is not None else np.empty((0, 0, 0, 3), np.uint8)

    def with_images(self, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
        """The chunks, those whose "image" column holds :data:`IMAGE_REF` records with the images' pixels in
        its place (:meth:`read_images`); chunks of pixels as they are."""
        for chunk in chunks:
            if chunk["image"].dtype == IMAGE_REF:
                chunk = Chunk({**chunk.columns, "image": self.read_images(chunk["image"])})
            yield chunk

    def _check_unchanged(self, now: os.stat_result) -> None:
        if _stamp(now) == self._opened:
            return
        if now.st_size < self._opened[0]:
            raise JumpnetError(self.path, f"'data' is corrupt or truncated: the file is {now.st_size} bytes, "
                                          f"{self._opened[0]} when it was opened")
        raise JumpnetError(self.path, "changed while it was being read: read it again")


def _stamp(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What tells a file changed: its size, modification time, inode and device."""
    return stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev
