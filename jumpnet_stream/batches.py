"""Batches for a training loop, from any dataset format, in order or shuffled, never loading it whole.

Shuffling is the streaming kind: the order of the stored chunks is permuted (where the format can
read them in any order: all but a legacy .npz another tool wrote and an .npz compressed with
``np.savez_compressed``), and samples are shuffled within a window of ``window`` samples (256 images of
227x227: about 40 MB). In order, only one batch is held at a time.
For an exact permutation of the whole set, write one with ``merge --shuffle`` first.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from .chunk import DEFAULT_ROWS, Chunk, images_to_float
from .errors import JumpnetError
from .formats import open_dataset


def batches(path: str | os.PathLike, batch_size: int = 32, *, shuffle: bool = False, seed: int = 0,
            window: int = 256, float_images: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Dicts of per-field arrays, ``batch_size`` samples each (the last may be smaller).

    ``float_images`` gives images as float32 in [0, 1] instead of uint8. Same seed, same batches.
    """
    if batch_size < 1 or window < 1:
        raise JumpnetError(None, "batch_size and window must be 1 or more")
    dataset = open_dataset(path)
    rng = np.random.default_rng(seed)
    if shuffle and dataset.random_access:
        starts = rng.permutation(np.arange(0, len(dataset), DEFAULT_ROWS))
        chunks: Iterator[Chunk] = (dataset.read(int(s), int(s) + DEFAULT_ROWS) for s in starts)
    else:
        chunks = dataset.chunks()
    hold = max(window, batch_size) if shuffle else batch_size  # in order, only a batch is ever held
    pending: list[Chunk] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= hold:
            merged = Chunk.concat(pending)
            if shuffle:
                merged = merged.take(rng.permutation(len(merged)))
            cut = len(merged) - len(merged) % batch_size
            yield from _batches(merged.take(slice(0, cut)), batch_size, float_images)
            rest = Chunk({k: v[cut:].copy() for k, v in merged.columns.items()})  # not a view of the window
            pending, held = ([rest] if len(rest) else []), len(rest)
    if held:
        merged = Chunk.concat(pending)
        if shuffle:
            merged = merged.take(rng.permutation(len(merged)))
        yield from _batches(merged, batch_size, float_images)


def _batches(chunk: Chunk, batch_size: int, float_images: bool) -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, len(chunk), batch_size):
        batch = {name: column[start:start + batch_size] for name, column in chunk.columns.items()}
        if float_images:
            batch["image"] = images_to_float(batch["image"])
        yield batch
