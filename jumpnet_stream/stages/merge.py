"""Stages 2 and 6, merge: concatenate datasets of any format, optionally shuffled (SPEC 2.2, 2.6).

The key list becomes the sorted union of the inputs' keys (as the seed's ``np.unique``) and every
``keys_raw`` / ``hold_duration`` vector is remapped to it (the seed kept each vector in its own
file's order: a bug). ``shuffle`` is a seeded permutation of the whole result, out of core: rows are
spooled to a temporary file (images compressed one by one; the small fields, a few bytes per sample,
in memory), then written in permuted order, each image read back on its own.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np
from numcodecs import Zstd

from ..chunk import DEFAULT_ROWS, Chunk
from ..errors import JumpnetError
from ..formats import DatasetReader, WriteOptions, check_output, create_dataset, jump_key, open_dataset
from ..progress import progress_bar


@dataclass
class MergeReport:
    keys: list[str] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)
    written: int = 0


def union_keys(key_lists: list[list[str]]) -> list[str]:
    """The sorted union of several key lists."""
    return sorted(set().union(*key_lists))


def remap_keys(chunk: Chunk, keys: list[str], union: list[str]) -> Chunk:
    """``keys_raw`` and ``hold_duration`` moved from ``keys`` order to ``union`` order (zeros elsewhere)."""
    if keys == union:
        return chunk
    where = [union.index(k) for k in keys]
    columns = dict(chunk.columns)
    for name in ("keys_raw", "hold_duration"):
        remapped = np.zeros((len(chunk), len(union)), np.float32)
        remapped[:, where] = chunk[name]
        columns[name] = remapped
    return Chunk(columns)


def merged_chunks(datasets: list[DatasetReader], union: list[str]) -> Iterator[Chunk]:
    """The inputs' chunks one after another, remapped to ``union``."""
    for dataset in datasets:
        for chunk in dataset.chunks():
            yield remap_keys(chunk, dataset.keys, union)


class _RowSpool:
    """Rows appended once and read back in any order: images zstd-compressed in a temporary file
    beside the output, small columns in memory."""

    def __init__(self, folder: str):
        self._file = tempfile.TemporaryFile(dir=folder)
        self._codec = Zstd(level=1)
        self._offsets: list[int] = [0]
        self._small: list[Chunk] = []
        self.image_shape: tuple[int, ...] | None = None

    def append(self, chunk: Chunk) -> None:
        self.image_shape = self.image_shape or chunk["image"].shape[1:]
        for image in chunk["image"]:
            data = self._codec.encode(np.ascontiguousarray(image))
            self._file.write(data)
            self._offsets.append(self._offsets[-1] + len(data))
        self._small.append(Chunk({k: v for k, v in chunk.columns.items() if k != "image"}))

    def rows(self, order: np.ndarray, rows: int = DEFAULT_ROWS) -> Iterator[Chunk]:
        self._file.flush()
        small = Chunk.concat(self._small) if self._small else None
        offsets = np.asarray(self._offsets, np.int64)
        descriptor = self._file.fileno()
        for start in range(0, len(order), rows):
            picked = order[start:start + rows]
            images = np.empty((len(picked), *self.image_shape), np.uint8)
            for i, row in enumerate(picked):
                data = os.pread(descriptor, int(offsets[row + 1] - offsets[row]), int(offsets[row]))
                images[i] = np.frombuffer(self._codec.decode(data), np.uint8).reshape(self.image_shape)
            yield Chunk({"image": images, **small.take(picked).columns})

    def close(self) -> None:
        self._file.close()


def merge(inputs: list[str | os.PathLike], output: str | os.PathLike, *, shuffle: bool = False, seed: int = 42,
          keys: list[str] | None = None, overwrite: bool = False, quiet: bool = True) -> MergeReport:
    """Concatenate ``inputs`` into ``output`` with keys remapped to their union; shuffled if asked.
    ``keys`` names the keys of inputs that hold none (the original scripts' .npz files)."""
    if not inputs:
        raise JumpnetError(None, "merge needs at least one input")
    output = os.fspath(output)
    check_output(output, overwrite, inputs=inputs)
    datasets = [open_dataset(path, keys=keys) for path in inputs]
    union = union_keys([d.keys for d in datasets])
    shapes = {tuple(d.image_shape) for d in datasets if len(d)}
    if len(shapes) > 1:
        raise JumpnetError(None, f"the inputs' images differ in size ({', '.join(map(str, sorted(shapes)))}): "
                                 "resize them to one size first")
    total = sum(len(d) for d in datasets)
    report = MergeReport(keys=union, inputs=[{"path": os.path.abspath(os.fspath(p)), "samples": len(d),
                                              "keys": d.keys} for p, d in zip(inputs, datasets)])
    bar = progress_bar(total, f"merge -> {os.path.basename(output)}", unit="sample", quiet=quiet)
    options = WriteOptions(hold_key=jump_key([{"stage": "merge", "inputs": [{"provenance": d.provenance}
                                                                             for d in datasets]}]))
    with bar, create_dataset(output, union, overwrite=overwrite, options=options) as writer:
        if not shuffle:
            for chunk in merged_chunks(datasets, union):
                writer.write(chunk)
                bar.update(len(chunk))
        else:
            spool = _RowSpool(os.path.dirname(os.path.abspath(output)))
            try:
                bar.set_description(f"merge (spooling) -> {os.path.basename(output)}")
                for chunk in merged_chunks(datasets, union):
                    spool.append(chunk)
                    bar.update(len(chunk))
                bar.reset(total)
                bar.set_description(f"merge (shuffled) -> {os.path.basename(output)}")
                order = np.random.default_rng(seed).permutation(total)
                for chunk in spool.rows(order) if total else ():
                    writer.write(chunk)
                    bar.update(len(chunk))
            finally:
                spool.close()
        report.written = writer.rows
        writer.provenance = [{
            "stage": "merge", "parameters": {"shuffle": shuffle, "seed": seed if shuffle else None},
            "inputs": [{**entry, "provenance": d.provenance} for entry, d in zip(report.inputs, datasets)],
            "counts": {"samples": report.written, "keys": union},
        }]
    return report
