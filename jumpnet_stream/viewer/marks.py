"""Samples marked bad, kept in a JSON file beside the set (never by rewriting it), and the chunk filter that
leaves them out of an ``export`` or a ``build``.

A sample is identified by what decides it, not by its position (a rebuild shuffles): its recording
(``source``), ``label``, ``frame_index``, ``release_index`` and ``copy`` (0 the original, 1.. its augmented
copies). A rebuild with the same inputs and seed makes the same samples under the same identities, so marks
made on one build leave the same samples out of the next. The marks file::

    {"jumpnet_stream_marks": 1,
     "dataset": "/abs/path/dataset.zarr",
     "identity": ["source", "label", "frame_index", "release_index", "copy"],
     "marks": [{"source": "demo", "label": 1.0, "frame_index": 20, "release_index": 24, "copy": 0,
                "position": 17}, ...]}

``position`` (where the sample was in the marked set) is for people only; ``dataset`` likewise. A set that
does not store copies (a legacy .npz: every ``copy`` reads 0) gives an original and its copies one identity,
so a mark there covers them all; and a legacy file's ``source`` is its file name, not the recording's.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Collection, Iterable, Iterator, Mapping

import numpy as np

from ..chunk import Chunk, keep_rows
from ..errors import JumpnetError
from ..formats import partial_path, remove_output

VERSION = 1
IDENTITY = ("source", "label", "frame_index", "release_index", "copy")
Identity = tuple[str, float, int, int, int]
FLOAT32_MAX = float(np.finfo(np.float32).max)


def marks_path(dataset: str | os.PathLike) -> str:
    """The marks file of a set: ``NAME.marks.json`` beside ``NAME.zarr`` (or .npz, .h5)."""
    return os.path.splitext(os.fspath(dataset).rstrip("/" + os.sep))[0] + ".marks.json"


def identities(columns: Mapping[str, np.ndarray]) -> list[Identity]:
    """Each sample's identity from its small fields (a chunk, or columns read whole)."""
    return list(zip(columns["source"].astype(str).tolist(),
                    columns["label"].astype(np.float32).astype(np.float64).tolist(),
                    columns["frame_index"].astype(np.int64).tolist(),
                    columns["release_index"].astype(np.int64).tolist(),
                    columns["copy"].astype(np.int64).tolist()))


def _identity(mark: object, path: str, number: int) -> Identity:
    """One entry of a marks file, checked: the identity it names (a label normalised as the sets store it)."""
    if not isinstance(mark, dict) or any(name not in mark for name in IDENTITY):
        raise JumpnetError(path, f"mark {number} must be an object with {', '.join(IDENTITY)}")
    source, label = mark["source"], mark["label"]
    whole = [mark[name] for name in IDENTITY[2:]]
    if not isinstance(source, str) or isinstance(label, bool) or not isinstance(label, (int, float)) \
            or not abs(label) <= FLOAT32_MAX \
            or any(isinstance(v, bool) or not isinstance(v, int) or not -limit <= v < limit
                   for v, limit in zip(whole, (2 ** 63, 2 ** 63, 2 ** 31))):  # int64, int64, int32
        raise JumpnetError(path, f"mark {number}: source must be text, label a number and frame_index, "
                                 "release_index, copy whole numbers (as a set stores them)")
    return (source, float(np.float32(label)), *whole)


def read_marks(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of a marks file, each checked (:func:`_identity`)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise JumpnetError(path, "no such marks file") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise JumpnetError(path, f"is not a marks file (not JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("jumpnet_stream_marks") != VERSION \
            or not isinstance(data.get("marks"), list):
        raise JumpnetError(path, f"is not a marks file (a JSON object with \"jumpnet_stream_marks\": {VERSION} and "
                                 "a list \"marks\")")
    for number, mark in enumerate(data["marks"]):
        _identity(mark, path, number)
    return data["marks"]


def load_marks(path: str | os.PathLike) -> np.ndarray:
    """The identities a marks file excludes, as a sorted structured array (fields :data:`IDENTITY`), each once."""
    path = os.fspath(path)
    found = sorted({_identity(mark, path, number) for number, mark in enumerate(read_marks(path))})
    width = max((len(source) for source, *_ in found), default=1)
    dtype = [("source", f"<U{width}"), ("label", "<f4"), ("frame_index", "<i8"), ("release_index", "<i8"),
             ("copy", "<i4")]
    return np.array(found, dtype=dtype)


def _marked(columns: Mapping[str, np.ndarray], excluded: Collection[Identity]) -> np.ndarray:
    """Whether each sample of ``columns`` (its :data:`IDENTITY` fields) is in ``excluded``; only the samples
    at a marked frame are compared whole."""
    found = np.zeros(len(columns["frame_index"]), bool)
    if not excluded:
        return found
    candidates = np.flatnonzero(np.isin(columns["frame_index"], [mark[2] for mark in excluded]))
    ours = identities({name: columns[name][candidates] for name in IDENTITY})
    found[candidates] = [identity in excluded for identity in ours]
    return found


def marked_rows(columns: Mapping[str, np.ndarray], marks: np.ndarray) -> np.ndarray:
    """Whether each sample of ``columns`` (its :data:`IDENTITY` fields) is one ``marks`` (from
    :func:`load_marks`) names."""
    return _marked(columns, {(str(s), float(label), int(f), int(r), int(c)) for s, label, f, r, c in marks.tolist()})


def count_marked(dataset: Any, marks: np.ndarray, split: str | None = None) -> tuple[int, int]:
    """How many samples of ``dataset`` (of one ``split``, if given) there are and how many of them ``marks``
    names; read a block of small fields at a time."""
    names = [*IDENTITY, *(["split"] if split is not None else [])]
    samples = marked = 0
    for _, block in dataset.column_blocks(names):
        within = block["split"] == split if split is not None else np.ones(len(block["label"]), bool)
        samples += int(within.sum())
        marked += int((marked_rows(block, marks) & within).sum())
    return samples, marked


def drop_marked(chunks: Iterable[Chunk], marks: np.ndarray, dropped: list[int]) -> Iterator[Chunk]:
    """``chunks`` without the samples ``marks`` (from :func:`load_marks`) names; their number is added to
    ``dropped[0]``. Chunks with nothing marked pass through as they are."""
    return keep_rows(chunks, lambda chunk: ~marked_rows(chunk.columns, marks), dropped)


class MarkBook:
    """The marks of one set as the viewer keeps them: read from its marks file on opening, written back
    (whole, atomically) on every change."""

    def __init__(self, path: str, dataset: str):
        self.path, self.dataset = path, dataset
        self._lock = threading.Lock()
        self._marks: dict[Identity, int] = {}
        if os.path.exists(path):
            self._marks = {_identity(mark, path, number): mark["position"] if type(mark.get("position")) is int else -1
                           for number, mark in enumerate(read_marks(path))}

    def __len__(self) -> int:
        return len(self._marks)

    def marked(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Whether each sample of ``columns`` (small fields: a set's, read whole) is marked; only the samples
        at a marked frame are compared whole."""
        with self._lock:
            return _marked(columns, self._marks)

    def change(self, samples: list[Identity], positions: list[int], bad: bool) -> None:
        """Mark ``samples`` (at ``positions`` of the set) bad, or clear their marks; then save."""
        with self._lock:
            for identity, position in zip(samples, positions):
                if bad:
                    self._marks[identity] = position
                else:
                    self._marks.pop(identity, None)
            entries = [{**dict(zip(IDENTITY, identity)), "position": position}
                       for identity, position in sorted(self._marks.items(), key=lambda item: item[1])]
            data = {"jumpnet_stream_marks": VERSION, "dataset": self.dataset, "identity": list(IDENTITY),
                    "marks": entries}
            temp = partial_path(self.path)
            try:
                with open(temp, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=1)
                    f.write("\n")
                os.replace(temp, self.path)
            except OSError as exc:
                remove_output(temp)
                raise JumpnetError(self.path, f"cannot save the marks: {exc.strerror or exc}") from None
