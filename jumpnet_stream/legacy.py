"""The seed's dataset format: ``data`` an (N, 6) object array of
``(image float32 [0,1], label, keys_raw, hold_duration, phase, frame_index)`` and ``keys`` beside it.

This is what the original trainer loads (``np.load(p, allow_pickle=True)["data"]``). Both directions
stream: rows are read through the restricted unpickler and written one chunk at a time.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from typing import Any, Iterator

import numpy as np

from .chunk import DEFAULT_ROWS, SAMPLE_FIELDS, Chunk, images_to_float, select_rows
from .errors import JumpnetError
from .names import stem
from .npz import ObjectArrayReader, ObjectArrayWriter, read_provenance, read_small_array
from .recording import (Malformed, as_float, as_int, as_phase, as_vector, batch_entries, entry_fields,
                        normalize_keys, unwrap)

KEYLOG_SNIFF = 64  # entries looked at to tell a keylog from a dataset


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


SAMPLE_DTYPES = {"image": np.uint8, "label": np.float32, "keys_raw": np.float32, "hold_duration": np.float32,
                 "phase": str, "frame_index": np.int64, "source": str}


class LegacyNpzDataset:
    """A seed-format ``.npz`` dataset opened for streaming reads.

    ``keys``: the key list of a file the original scripts wrote (they hold only ``data``; a file with
    ``keys`` keeps its own); without it such a file's keys are named ``key0``, ``key1``, ... after its
    vectors' length. A file whose hold is
    a scalar (this tool's default legacy layout, recorded in its provenance) reads back as the full
    vector, the hold in the jump key's slot. A recorder keylog is refused: it holds events, not samples.
    """

    def __init__(self, path: str | os.PathLike, keys: list[str] | None = None):
        self.path = os.fspath(path)
        self._entries = ObjectArrayReader(self.path, "data")
        members = npz_members(self.path)
        self.provenance: list[dict[str, Any]] = read_provenance(self.path) if "provenance" in members else []
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
                                          f"not among its keys ({', '.join(self.keys)}): pass --keys")
        self._hold_slot = None if hold_key is None else self.keys.index(hold_key)

    def _key_names(self) -> list[str]:
        """``key0``, ``key1``, ... for a file without ``keys``, as many as its first entry's keys_raw has."""
        first = next(self._entries.rows(), None)
        if first is None:
            raise JumpnetError(self.path, "has no 'keys' and no entries to tell them from: pass --keys")
        try:
            width = np.asarray(unwrap(entry_fields(first)[2])).size
        except (Malformed, TypeError, ValueError):
            raise JumpnetError(self.path, "has no 'keys', and its first entry has no readable keys_raw") from None
        if not 1 <= width <= 1024:
            raise JumpnetError(self.path, f"has no 'keys', and its first entry's keys_raw has {width} values")
        return [f"key{i}" for i in range(width)]

    def __len__(self) -> int:
        return len(self._entries)

    def chunks(self, rows: int = DEFAULT_ROWS) -> Iterator[Chunk]:
        k, slot = len(self.keys), self._hold_slot

        def hold_vector(hold: object) -> np.ndarray:
            if slot is None:
                return as_vector(hold, k, "hold_duration")
            vector = np.zeros(k, np.float32)
            vector[slot] = as_vector(hold, 1, "hold_duration")[0]
            return vector

        def parse(fields: tuple) -> tuple[object, tuple]:
            image, label, keys_raw, hold, phase, frame = fields
            return image, (as_float(label, "label"), as_vector(keys_raw, k, "keys_raw"), hold_vector(hold),
                           as_phase(phase), as_int(frame, "frame_index"), self.source)

        def refuse(index: int, why: Malformed) -> None:
            raise JumpnetError(self.path, f"entry {index}: {why}")

        return batch_entries(self._entries.rows(), parse, SAMPLE_FIELDS, SAMPLE_DTYPES, malformed=refuse, rows=rows)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The images' shape, from the first entry (227x227x3 if there is none)."""
        first = next(self.chunks(rows=1), None)
        return tuple(first["image"].shape[1:]) if first is not None else (227, 227, 3)

    def column(self, name: str) -> np.ndarray:
        """One field whole (the file is streamed through once)."""
        columns = [chunk[name] for chunk in self.chunks()]
        return np.concatenate(columns) if columns else np.zeros(0)

    def take(self, positions: np.ndarray) -> Iterator[Chunk]:
        """The rows at sorted ``positions`` (the file is streamed through once)."""
        return select_rows(self.chunks(), positions)


class LegacyNpzWriter:
    """Writes the seed's format; images become float32 in [0, 1] one chunk at a time (or stay uint8).

    With ``hold_index`` (the default layout), each hold is a 0-d float32 array holding the jump key's
    hold (slot ``hold_index`` of the sample's vector): the only hold the original trainer reads, and
    the only form its ``float(entry[3])`` and ``entry[3].flatten()[0]`` both accept on every numpy,
    whatever the number of keys. ``hold_index=None`` writes the seed's exact vector, which ``float()``
    rejects on numpy >= 2.4 (and with more than one key, on every numpy).
    """

    def __init__(self, path: str | os.PathLike, keys: list[str], *, hold_index: int | None = 0,
                 image_dtype: object = np.float32, name: str | None = None):
        self.path = os.fspath(path)
        self.name = name or self.path  # the output's name in messages (``path`` may be its temporary file)
        self.keys = list(keys)
        self.hold_index = hold_index
        self.image_dtype = np.dtype(image_dtype)
        self._writer = ObjectArrayWriter(self.path, name="data", width=6)

    @property
    def rows(self) -> int:
        return self._writer.rows

    def write(self, chunk: Chunk) -> None:
        holds = chunk["hold_duration"] if self.hold_index is None else chunk["hold_duration"][:, self.hold_index]
        for i in range(len(chunk)):  # one float image at a time: a chunk of 64 as float32 would be 39 MB
            image = images_to_float(chunk["image"][i]) if self.image_dtype == np.float32 else chunk["image"][i]
            self._writer.append((image, float(chunk["label"][i]), chunk["keys_raw"][i], holds[i].copy(),
                                 str(chunk["phase"][i]), int(chunk["frame_index"][i])))

    def layout(self) -> dict[str, Any]:
        """How the file's entries are laid out: recorded in its provenance."""
        return {"hold": "vector" if self.hold_index is None else "scalar",
                "hold_key": None if self.hold_index is None else self.keys[self.hold_index],
                "image_dtype": str(self.image_dtype)}

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
