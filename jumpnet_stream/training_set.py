"""A map-style training set over a dataset (``len`` and ``[i]``, what ``torch.utils.data.DataLoader``
takes), and the sampler that visits it a stored chunk at a time so each chunk is decoded once per epoch.

Nothing here imports torch. Files are opened lazily in each process and dropped on pickling, so the set
works in DataLoader worker processes started by fork or spawn."""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from typing import Any, Callable, Iterator

import numpy as np

from .chunk import Chunk
from .errors import JumpnetError
from .formats import DatasetReader, jump_key, open_dataset
from .history import HistoryFrames

#: the small fields a sample carries, read whole when the set is opened (a few bytes per sample)
_COLUMNS = ("label", "hold_duration", "keys_raw", "weight", "split", "source", "frame_index")


def _aligned(size: int) -> int:
    """``size`` rounded up to 8 bytes, so the next packed field starts aligned for any dtype."""
    return (size + 7) // 8 * 8


class TrainingSet:
    """Samples of the dataset at ``path`` (.zarr, .h5, columnar .npz, or a legacy .npz this tool wrote),
    optionally one ``split`` ("train" or "val"). ``set[i]`` is a dict of numpy arrays: ``image`` (H, W, 3)
    uint8, ``label``, ``hold`` (the jump key's hold, seconds), ``keys_raw``, ``weight``, ``index`` (the
    sample's row in the dataset) and, with ``history=K``, ``history`` (K, H, W, 3) uint8, the K frames
    before the sample, oldest first, with ``history_mask`` (K,) False where the video starts too late to
    have one (the frame is then zeros). ``transform`` is applied to that dict.

    Reading a sample decodes the stored chunk holding it and keeps the last ``cache_chunks`` chunks, so a
    :class:`ChunkShuffleSampler` reads each chunk once per epoch.

    ``set[indices]`` (a list or 1-d array of ints) is a whole batch: the same fields stacked along a first
    axis, each one contiguous array (``image`` (B, H, W, 3)). A DataLoader given ``batch_size=None`` and a
    :class:`ChunkBatchSampler` reads it so, and makes tensors of those arrays without copying them (a set
    with a ``transform``, which applies to one sample, is read a sample at a time)."""

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
            raise JumpnetError(self.path, "cannot be read at a row without reading the file up to it (a legacy .npz "
                               "written by the original scripts, or an .npz compressed with np.savez_compressed); "
                               "convert it once with "
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

    def __getitem__(self, i: int | list[int] | np.ndarray) -> Any:
        if isinstance(i, (list, np.ndarray)):
            return self.batch(i)
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """Several samples at once (what a DataLoader asks of a set that has this, a batch at a time):
        each stored chunk they fall in is looked up once and their images taken from it together."""
        positions, rows = self._positions(indices)
        images = np.empty((len(rows), *self.image_shape), np.uint8)
        self._read_images(rows, images)
        return [self._sample(int(i), int(row), image) for i, row, image in zip(positions, rows, images)]

    def batch(self, indices: list[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Samples ``indices`` as one dict of arrays, each field stacked along a first axis."""
        return self.batch_into(indices, np.empty(self.batch_bytes(len(indices)), np.uint8))

    def batch_fields(self, n: int) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
        """The fields of a batch of ``n`` samples: name, dtype and shape, in the order they are packed."""
        columns = self._columns
        fields = [("image", np.dtype(np.uint8), (n, *self.image_shape)), ("label", columns["label"].dtype, (n,)),
                  ("hold", columns["hold_duration"].dtype, (n,)),
                  ("keys_raw", columns["keys_raw"].dtype, (n, *columns["keys_raw"].shape[1:])),
                  ("weight", columns["weight"].dtype, (n,)), ("index", np.dtype(np.int64), (n,))]
        if self._history is not None:
            fields += [("history", np.dtype(np.uint8), (n, self.history, *self.image_shape)),
                       ("history_mask", np.dtype(bool), (n, self.history))]
        return fields

    def batch_bytes(self, n: int) -> int:
        """Bytes of a batch of ``n`` samples packed by :meth:`batch_into` (each field 8-byte aligned)."""
        return sum(_aligned(int(np.prod(shape)) * dtype.itemsize) for _, dtype, shape in self.batch_fields(n))

    def batch_views(self, n: int, buffer: np.ndarray) -> dict[str, np.ndarray]:
        """The fields of a batch of ``n`` packed in the 1-d uint8 ``buffer``, as views of it (no copy)."""
        if buffer.dtype != np.uint8 or buffer.ndim != 1 or not buffer.flags.c_contiguous:
            raise TypeError(f"a batch is packed into a contiguous 1-d uint8 buffer, not {buffer.dtype} {buffer.shape}")
        if len(buffer) < self.batch_bytes(n):
            raise ValueError(f"a batch of {n} takes {self.batch_bytes(n)} bytes, the buffer has {len(buffer)}")
        views, at = {}, 0
        for name, dtype, shape in self.batch_fields(n):
            size = int(np.prod(shape)) * dtype.itemsize
            views[name] = buffer[at:at + size].view(dtype).reshape(shape)
            at += _aligned(size)
        return views

    def batch_into(self, indices: list[int] | np.ndarray, out: np.ndarray) -> dict[str, np.ndarray]:
        """Samples ``indices`` read straight into the uint8 buffer ``out`` (at least :meth:`batch_bytes` long,
        laid out as :meth:`batch_fields`), every image decoded into its place; returns the fields as views."""
        if self.transform is not None:
            raise TypeError("a TrainingSet with a transform is read a sample at a time (its transform takes one "
                            "sample), not a batch at a time")
        if isinstance(indices, np.ndarray) and indices.ndim != 1:
            raise TypeError(f"a batch of a TrainingSet is a list of ints, not an array of {indices.ndim} dimensions")
        indices = list(indices)
        batch = self.batch_views(len(indices), out)
        positions, rows = self._positions(indices)
        self._read_images(rows, batch["image"])
        columns = self._columns
        hold = columns["hold_duration"][positions]
        batch["label"][...] = columns["label"][positions]
        batch["hold"][...] = hold[:, self._hold_slot] if hold.ndim == 2 else hold
        batch["keys_raw"][...] = columns["keys_raw"][positions]
        batch["weight"][...] = columns["weight"][positions]
        batch["index"][...] = rows
        if self._history is not None:
            for n, i in enumerate(positions):
                batch["history"][n], batch["history_mask"][n] = self._history.stack(
                    str(columns["source"][i]), int(columns["frame_index"][i]))
        return batch

    def _positions(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The positions in this set of ``indices`` and their rows in the dataset."""
        positions = np.empty(len(indices), np.int64)
        for n, i in enumerate(indices):
            if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
                raise TypeError(f"a TrainingSet is indexed by one int, not {type(i).__name__}")
            if not -len(self) <= i < len(self):
                raise IndexError(f"sample {i} of a set of {len(self)}")
            positions[n] = int(i) % len(self)
        return positions, self._rows[positions]

    def _read_images(self, rows: np.ndarray, out: np.ndarray) -> None:
        """The images of dataset ``rows`` into ``out``, each stored chunk looked up once (cached ones first)."""
        blocks = rows // self.block
        for block in sorted(np.unique(blocks).tolist(), key=lambda b: b not in self._cache):
            at = blocks == block
            out[at] = self._chunk(int(block))["image"][rows[at] - block * self.block]

    def _sample(self, i: int, row: int, image: np.ndarray) -> Any:
        columns = self._columns
        hold = columns["hold_duration"][i]
        sample = {"image": image, "label": columns["label"][i],
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
    together. Every sample once per epoch; ``set_epoch`` (or ``epoch=``) gives the next epoch's order.
    The window is half the set's chunk cache by default, so a batch that spans two windows still finds
    every chunk it needs cached and each chunk is decoded once per epoch (batches of up to a window).

    A DataLoader hands its batches to its worker processes in turn, so with ``num_workers=W`` every
    worker would decode every chunk of a window. Given the loader's ``workers`` and ``batch_size``, the
    chunks are dealt into W streams and their batches interleaved, so each worker reads only its own."""

    def __init__(self, dataset: TrainingSet, seed: int = 0, epoch: int = 0, window: int | None = None,
                 workers: int = 1, batch_size: int = 1):
        self.seed, self.epoch = int(seed), int(epoch)
        self.window = int(window if window is not None else max(1, dataset.cache_chunks // 2))
        if self.window < 1:
            raise ValueError(f"window must be at least 1 chunk, not {self.window}")
        if workers < 1 or batch_size < 1:
            raise ValueError(f"workers and batch_size must be at least 1, not {workers} and {batch_size}")
        self.workers, self.batch_size = int(workers), int(batch_size)
        blocks = dataset.rows // dataset.block
        self._starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])   # rows are sorted: runs
        self._ends = np.r_[self._starts[1:], len(blocks)]
        self._length = len(dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[int]:
        for batch in self._batches():
            yield from batch.tolist()

    def _batches(self) -> Iterator[np.ndarray]:
        """This epoch's order, a batch at a time: each worker's stream cut into batches, dealt in turn."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self._starts))
        streams = [self._stream(order[w::self.workers], rng) for w in range(self.workers)]
        batches = [np.array_split(s, range(self.batch_size, len(s), self.batch_size)) for s in streams]
        for turn in range(max(len(b) for b in batches)):
            for stream in batches:
                if turn < len(stream) and len(stream[turn]):
                    yield stream[turn]

    def _stream(self, chunks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The samples of ``chunks``, shuffled ``window`` chunks at a time."""
        parts = [rng.permutation(np.concatenate([np.arange(self._starts[b], self._ends[b])
                                                 for b in chunks[w:w + self.window]]))
                 for w in range(0, len(chunks), self.window)]
        return np.concatenate(parts) if parts else np.empty(0, np.int64)


class ChunkBatchSampler(ChunkShuffleSampler):
    """The order of :class:`ChunkShuffleSampler` as batches (lists of ``batch_size`` indices, each from one
    worker's stream), for ``DataLoader(set, batch_size=None, sampler=ChunkBatchSampler(...))``: each batch is
    read with ``set[indices]`` into one array per field, which the loader turns into tensors as they are
    (no per-sample dicts, no stacking copy)."""

    def __init__(self, dataset: TrainingSet, seed: int = 0, epoch: int = 0, window: int | None = None,
                 workers: int = 1, batch_size: int = 64):
        super().__init__(dataset, seed=seed, epoch=epoch, window=window, workers=workers, batch_size=batch_size)

    def __len__(self) -> int:
        return sum(1 for _ in self._batches())

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        for batch in self._batches():
            yield batch.tolist()


class SharedBatchRing:
    """Batches of a :class:`TrainingSet` handed from DataLoader workers through a fixed ring of shared slots,
    instead of the loader's new shared-memory segment per tensor per batch (which costs more than the read)::

        ring = SharedBatchRing(data, workers=2, batch_size=64)
        loader = DataLoader(ring, batch_size=None, num_workers=2, collate_fn=ring.collate, persistent_workers=True,
                            sampler=ChunkBatchSampler(data, seed=0, workers=2, batch_size=64))
        for batch in ring.batches(loader):   # dicts of tensors, the fields of TrainingSet.batch
            ...

    Each worker owns ``hold + prefetch`` slots of one shared uint8 tensor (made at the first ``batches`` call,
    before the workers start) and reads a batch straight into its next slot (:meth:`TrainingSet.batch_into`)
    once the main process has released it; the loader carries only (worker, slot, size).

    Lifetime: a batch's tensors are views of its slot and stay valid until ``hold`` more batches are asked
    for; ``.clone()`` what must live longer. Leaving an epoch early (``break``) skips its remaining batches
    without reading them and frees every slot, so the next epoch starts clean (persistent workers or not);
    the batches of the epoch left stay valid until the next epoch asks for its first. Works with workers
    started by fork, spawn or forkserver."""

    def __init__(self, data: TrainingSet, workers: int, batch_size: int, hold: int = 1, prefetch: int = 2):
        if workers < 1 or batch_size < 1 or hold < 1 or prefetch < 0:
            raise ValueError(f"workers, batch_size and hold must be at least 1 and prefetch at least 0, not "
                             f"{workers}, {batch_size}, {hold} and {prefetch}")
        self.data, self.workers, self.batch_size, self.hold = data, int(workers), int(batch_size), int(hold)
        self.slots = self.hold + int(prefetch)   # per worker: the held batches and the loader's prefetched ones
        self._ring: tuple[Any, list[Any], Any] | None = None   # (slots tensor, a semaphore per worker, "left" event)
        self._method: str | None = None   # the start method the ring's semaphores were made for
        self._open = False   # an epoch's batches() is running
        self._written = 0   # batches this process has written (a worker's count, in its own copy)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, indices: list[int]) -> tuple[int, int, int] | None:
        """Read batch ``indices`` into this worker's next free slot: (worker, slot, size), or None when the
        epoch was left (nothing read)."""
        from torch.utils.data import get_worker_info

        if self._ring is None:
            raise RuntimeError("a SharedBatchRing is read through ring.batches(loader), not by iterating the loader")
        if len(indices) > self.batch_size:
            raise ValueError(f"a batch of {len(indices)} does not fit a ring of batches of {self.batch_size}")
        slots, semaphores, left = self._ring
        info = get_worker_info()
        worker = info.id if info is not None else 0
        while not left.is_set():
            if semaphores[worker].acquire(timeout=0.05):   # else the slot's last batch is still held
                slot = worker * self.slots + self._written % self.slots
                try:
                    self.data.batch_into(indices, slots[slot].numpy())
                except BaseException:   # nothing handed over: the slot stays this worker's next
                    semaphores[worker].release()
                    raise
                self._written += 1
                return worker, slot, len(indices)
        return None

    @staticmethod
    def collate(item: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        """The loader's ``collate_fn``: the (worker, slot, size) triple as it is."""
        return item

    def batches(self, loader: Any) -> Iterator[dict[str, Any]]:
        """One epoch of ``loader`` (a DataLoader over this ring) as dicts of tensors viewing the ring's slots."""
        import multiprocessing

        import torch

        if loader.dataset is not self or loader.batch_size is not None:
            raise ValueError("ring.batches takes DataLoader(ring, batch_size=None, sampler=ChunkBatchSampler(...), "
                             "collate_fn=ring.collate)")
        if max(loader.num_workers, 1) != self.workers:
            raise ValueError(f"the ring was made for {self.workers} workers, the loader has {loader.num_workers}")
        if self._open:
            raise RuntimeError("the previous epoch's ring.batches(...) is still open: finish it or close() it first")
        context = loader.multiprocessing_context or multiprocessing.get_context()
        if self._ring is None:
            nbytes = self.data.batch_bytes(self.batch_size)
            slots = torch.empty((self.workers * self.slots, nbytes), dtype=torch.uint8).share_memory_()
            self._ring = (slots, [context.Semaphore(self.slots) for _ in range(self.workers)], context.Event())
            self._method = context.get_start_method()
        elif context.get_start_method() != self._method:
            raise ValueError(f"the ring's semaphores were made for workers started by {self._method}, the loader "
                             f"starts them by {context.get_start_method()}: make a new SharedBatchRing")
        slots, semaphores, left = self._ring
        self._open, end = True, object()
        held: deque[int] = deque()
        iterator = iter(loader)   # starts the workers (or resumes persistent ones): they hold the ring
        try:
            while True:
                while len(held) >= self.hold:   # asking for a batch releases the one taken ``hold`` batches ago
                    semaphores[held.popleft()].release()
                item = next(iterator, end)
                if item is end:
                    break
                worker, slot, size = item
                held.append(worker)
                yield {name: torch.from_numpy(view)
                       for name, view in self.data.batch_views(size, slots[slot].numpy()).items()}
        except GeneratorExit:   # the epoch was left: its remaining batches come back unread, their slots free
            left.set()
            for rest in iterator:
                if rest is not None:
                    semaphores[rest[0]].release()
            left.clear()
            raise
        finally:
            for worker in held:
                semaphores[worker].release()
            self._open = False
