"""The seed's dataset format: ``data`` an (N, 6) object array of
``(image float32 [0,1], label, keys_raw, hold_duration, phase, frame_index)`` and ``keys`` beside it.

This is what the original trainer loads (``np.load(p, allow_pickle=True)["data"]``). Both directions
stream: rows are read through the restricted unpickler and written one chunk at a time.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import numpy as np

from .chunk import DEFAULT_ROWS, SAMPLE_FIELDS, Chunk, images_to_float, select_rows
from .errors import JumpnetError
from .npz import ObjectArrayReader, ObjectArrayWriter, read_provenance, read_small_array
from .recording import Malformed, as_float, as_int, as_phase, as_vector, batch_entries, normalize_keys

SAMPLE_DTYPES = {"image": np.uint8, "label": np.float32, "keys_raw": np.float32, "hold_duration": np.float32,
                 "phase": str, "frame_index": np.int64, "source": str}


class LegacyNpzDataset:
    """A seed-format ``.npz`` dataset opened for streaming reads."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.keys = normalize_keys(read_small_array(self.path, "keys"), self.path)
        self._entries = ObjectArrayReader(self.path, "data")
        self.provenance: list[dict[str, Any]] = read_provenance(self.path)
        self.source = os.path.splitext(os.path.basename(self.path))[0]

    def __len__(self) -> int:
        return len(self._entries)

    def chunks(self, rows: int = DEFAULT_ROWS) -> Iterator[Chunk]:
        k = len(self.keys)

        def parse(fields: tuple) -> tuple[object, tuple]:
            image, label, keys_raw, hold, phase, frame = fields
            return image, (as_float(label, "label"), as_vector(keys_raw, k, "keys_raw"),
                           as_vector(hold, k, "hold_duration"), as_phase(phase), as_int(frame, "frame_index"),
                           self.source)

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

    ``scalar_hold`` stores each hold as a 0-d float32 array (single-key sets only), which both
    ``float(x)`` and ``x.flatten()[0]`` accept on every numpy; the default 1-element vector is the
    seed's exact format, which ``float()`` rejects on numpy >= 2.4.
    """

    def __init__(self, path: str | os.PathLike, keys: list[str], *, scalar_hold: bool = False,
                 image_dtype: object = np.float32):
        self.path = os.fspath(path)
        self.keys = list(keys)
        self.scalar_hold = scalar_hold
        self.image_dtype = np.dtype(image_dtype)
        self._writer = ObjectArrayWriter(self.path, name="data", width=6)

    @property
    def rows(self) -> int:
        return self._writer.rows

    def write(self, chunk: Chunk) -> None:
        images = images_to_float(chunk["image"]) if self.image_dtype == np.float32 else chunk["image"]
        holds = chunk["hold_duration"]
        for i in range(len(chunk)):
            hold = holds[i].reshape(()) if self.scalar_hold else holds[i]
            self._writer.append((images[i], float(chunk["label"][i]), chunk["keys_raw"][i], hold,
                                 str(chunk["phase"][i]), int(chunk["frame_index"][i])))

    def finish(self, provenance: list[dict[str, Any]]) -> None:
        self._writer.close({"keys": np.array(self.keys), "provenance": np.array(json.dumps(provenance))})

    def abort(self) -> None:
        self._writer.discard()
