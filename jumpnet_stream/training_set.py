"""A map-style training set over a dataset (``len`` and ``[i]``, what ``torch.utils.data.DataLoader``
takes), and the sampler that visits it a stored chunk at a time so each chunk is decoded once per epoch.

Nothing here imports torch. Files are opened lazily in each process and dropped on pickling, so the set
works in DataLoader worker processes started by fork or spawn."""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Callable, Iterator

import numpy as np

from .chunk import Chunk
from .errors import JumpnetError
from .formats import DatasetReader, jump_key, open_dataset
from .history import HistoryFrames

#: the small fields a sample carries, read whole when the set is opened (a few bytes per sample)
_COLUMNS = ("label", "hold_duration", "keys_raw", "weight", "split", "source", "frame_index")


class TrainingSet:
    """Samples of the dataset at ``path`` (.zarr, .h5, columnar .npz, or a legacy .npz this tool wrote),
    optionally one ``split`` ("train" or "val"). ``set[i]`` is a dict of numpy arrays: ``image`` (H, W, 3)
    uint8, ``label``, ``hold`` (the jump key's hold, seconds), ``keys_raw``, ``weight``, ``index`` (the
    sample's row in the dataset) and, with ``history=K``, ``history`` (K, H, W, 3) uint8, the K frames
    before the sample, oldest first, with ``history_mask`` (K,) False where the video starts too late to
    have one (the frame is then zeros). ``transform`` is applied to that dict.

    Reading a sample decodes the stored chunk holding it and keeps the last ``cache_chunks`` chunks, so a
    :class:`ChunkShuffleSampler` reads each chunk once per epoch."""

    def __init__(self, path: str | os.PathLike, split: str | None = None, history: int = 0,
                 transform: Callable[[dict[str, np.ndarray]], Any] | None = None, cache_chunks: int = 4):
        self.path = os.fspath(path)
        self.split, self.transform = split, transform
        if split not in (None, "train", "val"):
            raise JumpnetError(self.path, f"split must be train or val, not {split}")
        if not isinstance(history, (int, np.integer)) or isinstance(history, bool) or history < 0:
            raise JumpnetError(self.path, f"history must be a whole number of frames >= 0, not {history!r}")
        if cache_chunks < 1:
            raise JumpnetError(self.path, f"cache_chunks must be at least 1, not {cache_chunks}")
        self.cache_chunks = int(cache_chunks)
        self._reader: DatasetReader = open_dataset(self.path)
        if not self._reader.random_access:
            raise JumpnetError(self.path, "has no row offsets (a legacy .npz written by the original scripts): "
                               "reading one sample would read the file up to it; convert it once with "
                               f"jumpnet-stream export {self.path} -o {os.path.splitext(self.path)[0]}.zarr")
        self.keys = list(self._reader.keys)
        self.image_shape = tuple(self._reader.image_shape)
        columns = self._reader.columns(list(_COLUMNS))
        self._all_splits = columns.pop("split")
        self._rows = np.arange(len(self._reader), dtype=np.int64) if split is None \
            else np.flatnonzero(self._all_splits == split).astype(np.int64)
        if split is not None and not len(self._rows):
            raise JumpnetError(self.path, f"has no '{split}' samples (its splits: {self.split_sizes() or 'none'})")
        key = jump_key(self._reader.provenance)
        self._hold_slot = self.keys.index(key) if key in self.keys else 0
        self._columns = {name: column[self._rows] for name, column in columns.items()}
        self.history = int(history)
        self._history = HistoryFrames(self.path, self.history, self.image_shape) if self.history else None
        self._cache: OrderedDict[int, Chunk] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def block(self) -> int:
        """Rows of the dataset stored (and decoded) together."""
        return int(self._reader.block)

    @property
    def rows(self) -> np.ndarray:
        """Each sample's row in the dataset (the samples of the split, in stored order)."""
        return self._rows

    def split_sizes(self) -> dict[str, int]:
        """Samples per split in the whole dataset."""
        names, counts = np.unique(self._all_splits, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}

    def __getitem__(self, i: int) -> Any:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"a TrainingSet is indexed by one int, not {type(i).__name__}")
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} of a set of {len(self)}")
        i = int(i) % len(self)
        row = int(self._rows[i])
        chunk = self._chunk(row // self.block)
        at = row - (row // self.block) * self.block
        columns = self._columns
        hold = columns["hold_duration"][i]
        sample = {"image": np.array(chunk["image"][at]), "label": columns["label"][i],
                  "hold": hold[self._hold_slot] if hold.ndim else hold, "keys_raw": columns["keys_raw"][i].copy(),
                  "weight": columns["weight"][i], "index": np.int64(row)}
        if self._history is not None:
            sample["history"], sample["history_mask"] = self._history.stack(str(columns["source"][i]),
                                                                            int(columns["frame_index"][i]))
        return self.transform(sample) if self.transform is not None else sample

    def _chunk(self, block: int) -> Chunk:
        if self._pid != os.getpid():   # a forked worker: never use the parent's handles
            self._forget()
        if block in self._cache:
            self._cache.move_to_end(block)
            return self._cache[block]
        chunk = self._reader.read(block * self.block, (block + 1) * self.block)
        self._cache[block] = Chunk({"image": chunk["image"]})
        while len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return self._cache[block]

    def _forget(self) -> None:
        self._reader.close()
        self._cache = OrderedDict()
        self._pid = os.getpid()

    def close(self) -> None:
        """Drop open files and cached chunks (the next read opens them again)."""
        self._forget()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()


class ChunkShuffleSampler:
    """A seeded shuffled order of a :class:`TrainingSet` that visits it a few stored chunks at a time:
    the chunks in a shuffled order, and the samples of each ``window`` consecutive chunks shuffled
    together. Every sample once per epoch; ``set_epoch`` (or ``epoch=``) gives the next epoch's order."""

    def __init__(self, dataset: TrainingSet, seed: int = 0, epoch: int = 0, window: int | None = None):
        self.seed, self.epoch = int(seed), int(epoch)
        self.window = int(window if window is not None else dataset.cache_chunks)
        if self.window < 1:
            raise ValueError(f"window must be at least 1 chunk, not {self.window}")
        blocks = dataset.rows // dataset.block
        self._starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])   # rows are sorted: runs
        self._ends = np.r_[self._starts[1:], len(blocks)]
        self._length = len(dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self._starts))
        for w in range(0, len(order), self.window):
            group = order[w:w + self.window]
            positions = np.concatenate([np.arange(self._starts[b], self._ends[b]) for b in group])
            yield from rng.permutation(positions).tolist()
