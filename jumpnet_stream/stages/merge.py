"""Stages 2 and 6, merge: concatenate datasets of any format, optionally shuffled.

The key list becomes the sorted union of the inputs' keys (as the seed's ``np.unique``) and every
``keys_raw`` / ``hold_duration`` vector is remapped to it (the seed kept each vector in its own
file's order: a bug). ``shuffle`` is a seeded permutation of the whole result, out of core: rows are
spooled to a temporary file (images LZ4-compressed one by one, the small fields beside them), then
written in permuted order, each row read back on its own.
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from dataclasses import dataclass, field
from typing import IO, Callable, Iterable, Iterator

import numpy as np
from numcodecs import LZ4

from ..chunk import DEFAULT_ROWS, Chunk
from ..errors import JumpnetError
from ..formats import DatasetReader, check_output, jump_key, open_dataset
from ..progress import progress_bar
from ..runner import described, run_stage
from ..schema import SCHEMA


@dataclass
class MergeReport:
    keys: list[str] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)
    written: int = 0
    excluded: int = 0  # samples a marks file (``exclude``) left out
    total: int = 0     # samples to merge (the inputs' less those left out)


def union_keys(key_lists: list[list[str]]) -> list[str]:
    """The sorted union of several key lists."""
    return sorted(set().union(*key_lists))


def remap_keys(chunk: Chunk, keys: list[str], union: list[str]) -> Chunk:
    """The per-key vectors (``keys_raw``, ``hold_duration``, ...) moved from ``keys`` order to ``union``
    order (zeros elsewhere)."""
    if keys == union:
        return chunk
    where = [union.index(k) for k in keys]
    columns = dict(chunk.columns)
    for vector in (f.name for f in SCHEMA if f.shape == "keys"):
        remapped = np.zeros((len(chunk), len(union)), chunk[vector].dtype)
        remapped[:, where] = chunk[vector]
        columns[vector] = remapped
    return Chunk(columns)


def merged_chunks(datasets: list[DatasetReader], union: list[str]) -> Iterator[Chunk]:
    """The inputs' chunks one after another, remapped to ``union``."""
    for dataset in datasets:
        for chunk in dataset.chunks():
            yield remap_keys(chunk, dataset.keys, union)


def _record(keys: int) -> np.dtype:
    """A spooled row's small fields as one record (text as codes)."""
    return np.dtype([(f.name, "<u4" if f.text else f.numpy_dtype(), f.per_sample(keys, ())) for f in SCHEMA[1:]])


class RowSpool:
    """Rows appended once and read back in any order, in temporary files beside the output: per row, its
    small fields as one fixed-size record (text as codes into a table of the distinct values, a handful:
    phases and recording names) followed by its image, LZ4-compressed (read back once, soon: measured on
    game frames, 3x faster to write and 5x to read than zstd-1, for a file 1.2x larger); each row's offset
    in a file of its own. Memory: a chunk's rows, whatever the images' or the rows' number.

    With ``path``, the files are a directory of that name instead, which :meth:`seal` completes and
    :meth:`load` opens in any process (the build's range tasks read one spool on several workers)."""

    def __init__(self, folder: str, keys: int, path: str | None = None):
        if path is None:
            files = tempfile.TemporaryFile(dir=folder), tempfile.TemporaryFile(dir=folder)
        else:
            os.makedirs(path)
            files = open(os.path.join(path, "rows"), "w+b"), open(os.path.join(path, "index"), "w+b")
        self._setup(path, keys, files, {f.name: {} for f in SCHEMA if f.text}, None, sealed=False)

    def _setup(self, path: str | None, keys: int, files: tuple[IO[bytes], IO[bytes]], codes: dict[str, dict[str, int]],
               image_shape: tuple[int, ...] | None, *, sealed: bool) -> None:
        """The state a new spool and a loaded one share: the rows' and offsets' files, the text tables."""
        self.path, self.keys = path, keys
        self._file, self._index = files
        self._codec = LZ4()
        self._end = 0
        self._sealed = sealed
        self._record = _record(keys)
        self._codes = codes
        self.image_shape = image_shape

    def seal(self) -> None:
        """No more rows: the end's offset written (and, for a spool at a path, what :meth:`load` needs)."""
        if self._sealed:
            return
        self._index.write(array("q", [self._end]).tobytes())
        self._file.flush()
        self._index.flush()
        self._sealed = True
        if self.path is not None:
            with open(os.path.join(self.path, "spool.json"), "w") as f:
                json.dump({"keys": self.keys, "image_shape": self.image_shape,
                           "codes": {name: list(table) for name, table in self._codes.items()}}, f)

    @classmethod
    def load(cls, path: str) -> "RowSpool":
        """A sealed spool at ``path``, opened for reading."""
        with open(os.path.join(path, "spool.json")) as f:
            meta = json.load(f)
        spool = cls.__new__(cls)
        files = open(os.path.join(path, "rows"), "rb"), open(os.path.join(path, "index"), "rb")
        spool._setup(path, meta["keys"], files,
                    {name: {value: i for i, value in enumerate(table)} for name, table in meta["codes"].items()},
                    tuple(meta["image_shape"]) if meta["image_shape"] else None, sealed=True)
        return spool

    def append(self, chunk: Chunk) -> None:
        self.image_shape = self.image_shape or chunk["image"].shape[1:]
        records = np.zeros(len(chunk), self._record)
        for name in self._record.names:
            column = chunk[name]
            if name in self._codes:
                table = self._codes[name]
                column = np.array([table.setdefault(str(v), len(table)) for v in column], np.uint32)
            records[name] = column
        offsets = array("q")
        for record, image in zip(records, chunk["image"]):
            data = record.tobytes() + self._codec.encode(np.ascontiguousarray(image))
            self._file.write(data)
            offsets.append(self._end)
            self._end += len(data)
        self._index.write(offsets.tobytes())

    def rows(self, order: np.ndarray, rows: int = DEFAULT_ROWS) -> Iterator[Chunk]:
        """The rows in ``order``, ``rows`` at a time (each read back on its own)."""
        self.seal()
        descriptor, index, size = self._file.fileno(), self._index.fileno(), self._record.itemsize
        texts = {name: np.array(list(table), dtype=str) for name, table in self._codes.items()}
        for start in range(0, len(order), rows):
            picked = order[start:start + rows]
            images = np.empty((len(picked), *self.image_shape), np.uint8)
            records = np.empty(len(picked), self._record)
            for i, row in enumerate(picked.tolist()):
                begin, end = np.frombuffer(os.pread(index, 16, 8 * row), "<i8").tolist()
                data = os.pread(descriptor, end - begin, begin)
                records[i] = np.frombuffer(data[:size], self._record)[0]
                images[i] = np.frombuffer(self._codec.decode(data[size:]), np.uint8).reshape(self.image_shape)
            columns = {name: texts[name][records[name]] if name in texts else records[name].copy()
                       for name in self._record.names}
            yield Chunk({"image": images, **columns})

    def close(self) -> None:
        self._file.close()
        self._index.close()


def permutation(total: int, seed: int) -> np.ndarray:
    """``default_rng(seed).permutation(total)``, drawn in 4-byte integers where they suffice (the same
    order: a shuffle's draws do not depend on the dtype), half the memory of numpy's 8-byte one."""
    order = np.arange(total, dtype=np.int32 if total < 2 ** 31 else np.int64)
    np.random.default_rng(seed).shuffle(order)
    return order


def shuffled(chunks: Iterable[Chunk], total: int, seed: int, folder: str, keys: int,
             spooled: Callable[[int], None] = lambda n: None) -> Iterator[Chunk]:
    """``chunks`` (``total`` rows) in the order of ``default_rng(seed).permutation(total)``, out of core
    (:class:`RowSpool`); ``spooled(n)`` is told as rows are spooled, before the first row comes out."""
    spool = RowSpool(folder, keys)
    try:
        for chunk in chunks:
            spool.append(chunk)
            spooled(len(chunk))
        if total:
            yield from spool.rows(permutation(total, seed))
    finally:
        spool.close()


def open_inputs(inputs: list[str | os.PathLike], keys: list[str] | None = None,
                exclude: str | os.PathLike | None = None
                ) -> tuple[list[DatasetReader], MergeReport, Iterator[Chunk], tuple[int, ...] | None]:
    """A merge's inputs opened (``keys``: see :func:`merge`): the datasets, a report of their keys' union,
    the samples left out and the rows to merge, those rows' chunks (keys remapped to the union, the samples a
    marks file ``exclude`` names left out) and their image shape (None if they hold no sample)."""
    if not inputs:
        raise JumpnetError(None, "merge needs at least one input")
    datasets = [open_dataset(path, keys=keys) for path in inputs]
    union = union_keys([d.keys for d in datasets])
    shapes = {tuple(d.image_shape) for d in datasets if len(d)}
    if len(shapes) > 1:
        raise JumpnetError(None, f"the inputs' images differ in size ({', '.join(map(str, sorted(shapes)))}): "
                                 "resize them to one size first")
    report = MergeReport(keys=union, inputs=[described(p, samples=len(d), keys=d.keys)
                                             for p, d in zip(inputs, datasets)])
    chunks = merged_chunks(datasets, union)
    if exclude is not None:
        from ..viewer.marks import count_marked, drop_marked, load_marks

        marks = load_marks(exclude)
        report.excluded = sum(count_marked(d, marks)[1] for d in datasets)
        chunks = drop_marked(chunks, marks, [0])
    report.total = sum(len(d) for d in datasets) - report.excluded
    return datasets, report, chunks, shapes.pop() if shapes else None


def merge_record(report: MergeReport, provenances: list[list[dict]], shuffle: bool, seed: int,
                 exclude: str | os.PathLike | None) -> tuple[dict, list[dict]]:
    """A merge's parameters and inputs (with each input's ``provenances``), as its provenance record names
    them."""
    parameters = {"shuffle": shuffle, "seed": seed if shuffle else None,
                  **({"exclude": described(os.fspath(exclude))} if exclude is not None else {})}
    return parameters, [{**entry, "provenance": p} for entry, p in zip(report.inputs, provenances)]


def merge_counts(report: MergeReport, exclude: str | os.PathLike | None) -> dict:
    """A merge's counts, as its provenance record gives them."""
    return {"samples": report.written, "keys": report.keys,
            **({"excluded_marked": report.excluded} if exclude else {})}


def merge(inputs: list[str | os.PathLike], output: str | os.PathLike, *, shuffle: bool = False, seed: int = 42,
          keys: list[str] | None = None, overwrite: bool = False, quiet: bool = True,
          transform: Callable[[Chunk], Chunk] | None = None,
          exclude: str | os.PathLike | None = None) -> MergeReport:
    """Concatenate ``inputs`` into ``output`` with keys remapped to their union; shuffled if asked.
    ``keys`` names the keys of inputs that hold none (the original scripts' .npz files); ``transform`` is
    applied to every chunk before it is written (``build.execute.weigh`` sets each sample's weight, as the
    build's range tasks do); the samples a marks file ``exclude`` names are left out (before the shuffle: the
    rest keep their order)."""
    output = os.fspath(output)
    check_output(output, overwrite, inputs=inputs)
    datasets, report, chunks, image_shape = open_inputs(inputs, keys, exclude)
    union, total = report.keys, report.total
    bar = progress_bar(total, f"merge -> {os.path.basename(output)}", unit="sample", quiet=quiet)
    if shuffle:
        def spooled(n: int) -> None:
            bar.set_description(f"merge (spooling) -> {os.path.basename(output)}", refresh=False)
            bar.update(n)
            if bar.n >= total:
                bar.reset(total)
                bar.set_description(f"merge (shuffled) -> {os.path.basename(output)}")
        chunks = shuffled(chunks, total, seed, os.path.dirname(os.path.abspath(output)), len(union), spooled)

    if transform is not None:
        chunks = map(transform, chunks)

    def counts(rows: int) -> dict:
        report.written = rows
        return merge_counts(report, exclude)

    parameters, history_inputs = merge_record(report, [d.provenance for d in datasets], shuffle, seed, exclude)
    run_stage(chunks, output, keys=union, stage="merge", parameters=parameters, inputs=history_inputs,
              counts=counts, bar=bar, image_shape=image_shape,
              jump_key=jump_key([{"inputs": history_inputs}]), overwrite=overwrite)
    return report
