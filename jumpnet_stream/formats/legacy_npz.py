"""The seed's dataset format: ``data`` an (N, 6) object array of
``(image float32 [0,1], label, keys_raw, hold_duration, phase, frame_index)`` and ``keys`` beside it.

This is what the original trainer loads (``np.load(p, allow_pickle=True)["data"]``). Both directions
stream: rows are read through the restricted unpickler and written one at a time. Files this tool wrote
also hold each row's byte span (``data_rows``), so any rows are read without the rows before them.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..chunk import DEFAULT_ROWS, Chunk, images_to_float, select_rows
from ..errors import JumpnetError
from ..names import stem
from ..npz import member_data_offset, read_provenance, read_small_array
from ..object_array import ObjectArrayReader, ObjectArrayWriter, read_object_rows
from ..entry_values import Malformed, as_float, as_int, as_phase, as_vector, unwrap
from ..recording import batch_entries, entry_fields, normalize_keys
from ..schema import DTYPES, FIELDS, complete, empty
from .base import DatasetReader, DatasetSpec, Format, register

KEYLOG_SNIFF = 64  # entries looked at to tell a keylog from a dataset
SEED_FIELDS = FIELDS[:6]  # the seed's 6-tuple; later fields (the source...) are not stored in this format
HOLDS = ("scalar", "vector")


@dataclass(frozen=True)
class LegacyOptions:
    """``dtype``: images as float32 in [0, 1] (the seed's) or uint8. ``hold``: "scalar" stores each hold as
    a 0-d float32 holding ``hold_key``'s hold (the jump key's: the only hold the trainer reads, in the only
    form its ``float(entry[3])`` accepts on every numpy, for any number of keys); "vector" the seed's
    vector (numpy < 2.4, one key)."""

    dtype: str = "float32"
    hold: str = "scalar"
    hold_key: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("uint8", "float32"):
            raise JumpnetError(None, f"dtype must be float32 or uint8, not {self.dtype}")
        if self.hold not in HOLDS:
            raise JumpnetError(None, f"hold must be one of {', '.join(HOLDS)}, not {self.hold}")


def npz_members(path: str) -> set[str]:
    """The array names in an npz (``data``, ``keys``, ...); the file opened already, so it is a zip."""
    with zipfile.ZipFile(path) as zf:
        return {name[:-4] if name.endswith(".npy") else name for name in zf.namelist()}


def is_keylog(entries: ObjectArrayReader) -> bool:
    """Whether an object array of 6-field entries is a recorder keylog rather than a dataset: a release,
    a second field that is not a 0/1 label (a keylog's prev_interval), or a hold on a 0-labelled entry (a
    keylog's auto-repeat press; a dataset's negatives hold nothing) among the first entries."""
    for index, entry in enumerate(entries.rows()):
        if index == KEYLOG_SNIFF:
            break
        try:
            _, second, _, hold, phase, _ = entry_fields(entry)
            if as_phase(phase) == "release":
                return True
            label = as_float(second, "label")
            if label not in (0.0, 1.0) or (label == 0.0 and np.any(as_vector(hold, np.asarray(unwrap(hold)).size,
                                                                              "hold") != 0)):
                return True
        except (Malformed, TypeError, ValueError):
            continue
    return False


def is_keylog_file(path: str) -> bool:
    """A legacy-layout .npz with ``keys`` but no provenance whose entries are events (:func:`is_keylog`)."""
    try:
        entries = ObjectArrayReader(path, "data")
    except JumpnetError:
        return False
    members = npz_members(path)
    return "keys" in members and "provenance" not in members and is_keylog(entries)


class LegacyNpzDataset(DatasetReader):
    """A seed-format ``.npz`` dataset opened for streaming reads.

    ``keys``: the key list of a file the original scripts wrote (they hold only ``data``; a file with
    ``keys`` keeps its own); without it such a file's keys are named ``key0``, ``key1``, ... after its
    vectors' length. A file whose hold is a scalar (this tool's default legacy layout, recorded in its
    provenance) reads back as the full vector, the hold in the jump key's slot. A recorder keylog is
    refused: it holds events, not samples.
    """

    cheap_columns = False  # the small fields are interleaved with the images in one pickle

    def _open(self, keys: list[str] | None) -> None:
        self._entries = ObjectArrayReader(self.path, "data")
        self._rows = len(self._entries)
        members = npz_members(self.path)
        self.provenance = read_provenance(self.path) if "provenance" in members else []
        stored = normalize_keys(read_small_array(self.path, "keys"), self.path) if "keys" in members else None
        if stored is not None and "provenance" not in members and is_keylog(self._entries):
            raise JumpnetError(self.path, "is a recorder keylog (events), not a dataset of samples: run "
                                          "'jumpnet-stream build' or 'preprocess' on it first")
        self.keys = stored or (normalize_keys(np.array(keys), self.path) if keys is not None else self._key_names())
        self.source = stem(self.path)
        layout = next((r.get("parameters") for r in reversed(self.provenance)
                       if isinstance(r, dict) and r.get("stage") == "legacy npz"), None)
        hold_key = layout.get("hold_key") if isinstance(layout, dict) and layout.get("hold") == "scalar" else None
        if hold_key is not None and hold_key not in self.keys:
            raise JumpnetError(self.path, f"holds the hold of key {hold_key!r} only (its provenance says), which is "
                                          f"not among its keys ({', '.join(self.keys)}): name them with the keys option")
        self._hold_slot = None if hold_key is None else self.keys.index(hold_key)
        shape = layout.get("image_shape") if isinstance(layout, dict) else None
        if isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and n > 0 for n in shape):
            self.image_shape = tuple(shape)  # an empty file's too
        self._spans = self._row_spans(members)
        self.stored_dtype: str | None = None
        first = next(self.chunks(rows=1), None)
        if first is not None:
            self.image_shape = tuple(first["image"].shape[1:])
            self.stored_dtype = str(self._image_dtype)

    def _row_spans(self, members: set[str]) -> np.ndarray | None:
        """Each row's byte span in the file, where this tool recorded them (random access); else None."""
        if "data_rows" not in members:
            return None
        spans = read_small_array(self.path, "data_rows", limit=None)
        if spans.dtype.kind not in "iu" or spans.shape != (self._rows, 2):
            return None
        with zipfile.ZipFile(self.path) as zf:
            if zf.getinfo("data.npy").compress_type != zipfile.ZIP_STORED:
                return None
        return spans.astype(np.int64) + member_data_offset(self.path, "data.npy")

    def _key_names(self) -> list[str]:
        """``key0``, ``key1``, ... for a file without ``keys``, as many as its first entry's keys_raw has."""
        first = next(self._entries.rows(), None)
        if first is None:
            raise JumpnetError(self.path, "has no 'keys' and no entries to tell them from: name them with the keys option")
        try:
            width = np.asarray(unwrap(entry_fields(first)[2])).size
        except (Malformed, TypeError, ValueError):
            raise JumpnetError(self.path, "has no 'keys', and its first entry has no readable keys_raw") from None
        if not 1 <= width <= 1024:
            raise JumpnetError(self.path, f"has no 'keys', and its first entry's keys_raw has {width} values")
        return [f"key{i}" for i in range(width)]

    def _batches(self, entries: Iterator[object], rows: int) -> Iterator[Chunk]:
        k, slot = len(self.keys), self._hold_slot

        def hold_vector(hold: object) -> np.ndarray:
            if slot is None:
                return as_vector(hold, k, "hold_duration")
            vector = np.zeros(k, np.float32)
            vector[slot] = as_vector(hold, 1, "hold_duration")[0]
            return vector

        def parse(fields: tuple) -> tuple[object, tuple]:
            image, label, keys_raw, hold, phase, frame = fields
            self._image_dtype = getattr(unwrap(image), "dtype", None)
            return image, (as_float(label, "label"), as_vector(keys_raw, k, "keys_raw"), hold_vector(hold),
                           as_phase(phase), as_int(frame, "frame_index"))

        def refuse(index: int, why: Malformed) -> None:
            raise JumpnetError(self.path, f"entry {index}: {why}")

        for chunk in batch_entries(entries, parse, SEED_FIELDS, DTYPES, malformed=refuse, rows=rows):
            yield complete({**chunk.columns, "source": np.full(len(chunk), self.source)}, k)

    def chunks(self, rows: int = DEFAULT_ROWS) -> Iterator[Chunk]:
        return self._batches(self._entries.rows(), rows)

    def _read(self, start: int, stop: int) -> Chunk:
        if stop <= start:
            return empty(len(self.keys), self.image_shape)
        if self._spans is None:
            return Chunk.concat(list(select_rows(self.chunks(), np.arange(start, stop))))
        rows = read_object_rows(self.path, int(self._spans[start, 0]), int(self._spans[stop - 1, 1]), stop - start, 6)
        return Chunk.concat(list(self._batches(iter(tuple(row) for row in rows), stop - start)))

    @property
    def random_access(self) -> bool:
        return self._spans is not None


FLOAT_BLOCK = 16  # images converted to float32 at once: 9.7 MB at 227x227


class LegacyNpzWriter:
    """Writes the seed's format; images become float32 in [0, 1] a block of FLOAT_BLOCK at a time (or stay
    uint8).

    With ``hold_index`` (the default layout), each hold is a 0-d float32 array holding the jump key's
    hold (slot ``hold_index`` of the sample's vector); ``hold_index=None`` writes the seed's exact vector,
    which ``float()`` rejects on numpy >= 2.4 (and with more than one key, on every numpy). With ``rows``
    known, the pickle goes straight into the zip.
    """

    def __init__(self, path: str | os.PathLike, keys: list[str], *, hold_index: int | None = 0,
                 image_dtype: object = np.float32, name: str | None = None, rows: int | None = None,
                 image_shape: tuple[int, ...] = (227, 227, 3)):
        self.path = os.fspath(path)
        self.name = name or self.path  # the output's name in messages (``path`` may be its temporary file)
        self.keys = list(keys)
        self.hold_index = hold_index
        self.image_dtype = np.dtype(image_dtype)
        self.image_shape = tuple(image_shape)
        self._writer = ObjectArrayWriter(self.path, name="data", width=6, rows=rows, spans=True)
        self._float: np.ndarray | None = None  # the float32 images of a block, converted in one pass

    @property
    def rows(self) -> int:
        return self._writer.rows

    def write(self, chunk: Chunk) -> None:
        if len(chunk) and not self.rows:
            self.image_shape = tuple(chunk["image"].shape[1:])  # what the file holds, not what was announced
        holds = chunk["hold_duration"] if self.hold_index is None else chunk["hold_duration"][:, self.hold_index]
        images = chunk["image"]
        to_float = self.image_dtype == np.float32
        for start in range(0, len(chunk), FLOAT_BLOCK):  # a chunk of 64 as float32 would be 39 MB: a block at a time
            block = images[start:start + FLOAT_BLOCK]
            if to_float:
                if self._float is None or self._float.shape[1:] != block.shape[1:]:
                    self._float = np.empty((FLOAT_BLOCK, *block.shape[1:]), np.float32)
                block = images_to_float(block, out=self._float[:len(block)])
            for i, image in enumerate(block, start):
                self._writer.append((image, float(chunk["label"][i]), chunk["keys_raw"][i], holds[i].copy(),
                                     str(chunk["phase"][i]), int(chunk["frame_index"][i])))

    def layout(self) -> dict[str, Any]:
        """How the file's entries are laid out: recorded in its provenance."""
        return {"hold": "vector" if self.hold_index is None else "scalar",
                "hold_key": None if self.hold_index is None else self.keys[self.hold_index],
                "image_dtype": str(self.image_dtype), "image_shape": list(self.image_shape)}

    def finish(self, provenance: list[dict[str, Any]]) -> None:
        record = {"stage": "legacy npz", "parameters": self.layout()}
        self._writer.close({"keys": np.array(self.keys), "provenance": np.array(json.dumps([*provenance, record]))})
        vector = self.hold_index is None
        for which in ("first", "last") if self.rows else ():
            problem = trainer_problem(self._writer.read_row(which))
            if problem and not vector:
                raise JumpnetError(self.name, f"the original trainer could not read its {which} entry: {problem}")
            if problem:
                warnings.warn(f"{self.name}: the original trainer on numpy {np.__version__} could not read its "
                              f"{which} entry ({problem}): the seed's hold vector suits numpy < 2.4 and one key "
                              "only", stacklevel=2)
                break

    def abort(self) -> None:
        self._writer.discard()


def trainer_problem(entry: np.ndarray) -> str | None:
    """What goes wrong when the original trainer reads an entry (read back from a written file), or None:
    ``entry[0]`` as ``(x * 255).clip(0, 255).astype(np.uint8)``, ``float(entry[1])``, ``float(entry[3])``
    and ``entry[3].flatten()[0]``."""
    try:
        image = (entry[0] * 255).clip(0, 255).astype(np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            return f"its image has shape {image.shape}"
        float(entry[1])
        float(entry[3])
        entry[3].flatten()[0]
    except (TypeError, ValueError, IndexError, AttributeError) as exc:
        return str(exc)
    return None


def _hold_index(path: str, keys: list[str], hold_key: str | None) -> int | None:
    """The slot whose hold a scalar-hold legacy file keeps: ``hold_key``'s, or the only key's."""
    if hold_key is None:
        return 0 if len(keys) == 1 else None
    if hold_key not in keys:
        raise JumpnetError(path, f"hold key {hold_key!r} is not one of the dataset's keys ({', '.join(keys)})")
    return keys.index(hold_key)


def _is_object_array_npz(path: str) -> bool:
    if not (os.path.isfile(path) and zipfile.is_zipfile(path)):
        return False
    with zipfile.ZipFile(path) as zf:
        return "data.npy" in zf.namelist() and "image.npy" not in zf.namelist()


@register
class LegacyNpz(Format):
    name = "npz legacy"
    title = "legacy .npz"
    extension = ".npz"
    layout = "legacy"
    preferred = True  # .npz means the seed's format unless --layout columnar
    reader = LegacyNpzDataset
    Options = LegacyOptions
    random_access = False  # files this tool wrote are, others only streamed (LegacyNpzDataset.random_access)

    @classmethod
    def recognises(cls, path: str) -> bool:
        return _is_object_array_npz(path)

    @classmethod
    def check(cls, path: str, spec: DatasetSpec, options: LegacyOptions) -> None:
        if options.hold == "scalar" and _hold_index(path, list(spec.keys), options.hold_key) is None:
            raise JumpnetError(path, f"the legacy .npz keeps one hold per sample, the jump key's, and which of this "
                                     f"dataset's keys ({', '.join(spec.keys)}) jumps is not known: write .zarr, then "
                                     "export it with hold_key set to the jump key")

    @classmethod
    def create(cls, path: str, spec: DatasetSpec, options: LegacyOptions, name: str) -> LegacyNpzWriter:
        hold = _hold_index(name, list(spec.keys), options.hold_key) if options.hold == "scalar" else None
        return LegacyNpzWriter(path, list(spec.keys), hold_index=hold, image_dtype=options.dtype, name=name,
                               rows=spec.rows, image_shape=spec.image_shape)
