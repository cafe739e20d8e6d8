"""A real PyTorch DataLoader (torch 2.13.0, installed by .ci/run, never a dependency of the package) over a
built set: worker processes started by fork and by spawn, samples collated by the loader or read a batch at a
time, every sample once per epoch, tensors equal to the store's arrays; and the example training script, a
few steps; and the shared ring of batch slots (SharedBatchRing): every sample once under fork and spawn, leaving an
epoch early, held batches never overwritten."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque

import numpy as np
import pytest

from jumpnet_stream import Chunk, open_dataset
from jumpnet_stream.training_set import ChunkBatchSampler, ChunkShuffleSampler, SharedBatchRing, TrainingSet

torch = pytest.importorskip("torch", reason="torch is installed by .ci/run (torch==2.13.0)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def built(history_build):
    return history_build[0] / "set"


@pytest.mark.parametrize("method, batches", [("fork", False), ("spawn", False), ("fork", True)])
def test_dataloader_workers_deliver_every_sample_once(built, method, batches):
    path = built / "dataset.zarr"
    data = TrainingSet(path, split="train", history=2)
    if batches:   # set[indices] per batch, the loader only making tensors of its arrays
        loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=2, multiprocessing_context=method,
                                             sampler=ChunkBatchSampler(data, seed=1, workers=2, batch_size=16))
    else:
        sampler = ChunkShuffleSampler(data, seed=1, workers=2, batch_size=16)
        loader = torch.utils.data.DataLoader(data, batch_size=16, sampler=sampler, num_workers=2,
                                             multiprocessing_context=method)
    stored = Chunk.concat(list(open_dataset(path).chunks()))
    seen = []
    for batch in loader:
        assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (227, 227, 3)
        assert len(batch["image"]) <= 16 and batch["label"].shape == batch["index"].shape == (len(batch["image"]),)
        assert batch["history"].shape[1:] == (2, 227, 227, 3) and batch["history_mask"].dtype == torch.bool
        rows = batch["index"].numpy()
        np.testing.assert_array_equal(batch["image"].numpy(), stored["image"][rows])
        np.testing.assert_array_equal(batch["label"].numpy(), stored["label"][rows])
        np.testing.assert_array_equal(batch["weight"].numpy(), stored["weight"][rows])
        seen.extend(rows.tolist())
    assert sorted(seen) == sorted(data.rows.tolist()) and len(seen) == len(data)


def test_the_example_training_script_runs(built):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_minimal.py"), str(built / "dataset.zarr"),
                             "--steps", "3", "--batch-size", "8", "--workers", "0"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    losses = [float(line.split("loss")[1]) for line in result.stdout.splitlines() if line.startswith("step")]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert "validation accuracy" in result.stdout


def _ring_loader(path, method, hold=1, history=0, batch_size=8, prefetch=2, persistent=False):
    """A 2-worker loader over a SharedBatchRing; ``timeout`` makes a stalled worker fail the test, not block it."""
    data = TrainingSet(path, split="train", history=history)
    ring = SharedBatchRing(data, workers=2, batch_size=batch_size, hold=hold, prefetch=prefetch)
    sampler = ChunkBatchSampler(data, seed=1, workers=2, batch_size=batch_size)
    loader = torch.utils.data.DataLoader(ring, batch_size=None, sampler=sampler, num_workers=2, timeout=60,
                                         multiprocessing_context=method, collate_fn=ring.collate,
                                         persistent_workers=persistent)
    return data, ring, sampler, loader


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_ring_delivers_every_sample_once_equal_to_the_store(built, method):
    path = built / "dataset.zarr"
    data, ring, sampler, loader = _ring_loader(path, method, history=2 if method == "fork" else 0, batch_size=16)
    stored = Chunk.concat(list(open_dataset(path).chunks()))
    expected = list(sampler)
    seen = []
    for indices, batch in zip(expected, ring.batches(loader), strict=True):
        reference = data.batch(indices)
        assert set(batch) == set(reference)
        for name, array in reference.items():
            np.testing.assert_array_equal(batch[name].numpy(), array)
        rows = batch["index"].numpy()
        np.testing.assert_array_equal(batch["image"].numpy(), stored["image"][rows])
        np.testing.assert_array_equal(batch["label"].numpy(), stored["label"][rows])
        seen.extend(rows.tolist())
    assert sorted(seen) == sorted(data.rows.tolist()) and len(seen) == len(data)


@pytest.mark.parametrize("persistent", [False, True])
def test_ring_epoch_left_early_then_whole_epochs(built, persistent):
    data, ring, sampler, loader = _ring_loader(built / "dataset.zarr", "fork", persistent=persistent)
    for _ in zip(range(2), ring.batches(loader)):   # workers race ahead and wait for slots never released
        pass
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        rows = [row for batch in ring.batches(loader) for row in batch["index"].tolist()]
        assert sorted(rows) == sorted(data.rows.tolist())


def test_ring_never_overwrites_a_held_batch(built):
    hold = 2
    # no slot beyond the held ones: each worker waits for one to be released, and writes into it at once
    data, ring, sampler, loader = _ring_loader(built / "dataset.zarr", "fork", hold=hold, prefetch=0)
    held: deque = deque(maxlen=hold)   # the batches still valid: this one and the hold - 1 before it
    for indices, batch in zip(list(sampler), ring.batches(loader), strict=True):
        held.append((batch, {name: tensor.clone() for name, tensor in batch.items()}))
        np.testing.assert_array_equal(batch["image"].numpy(), data.batch(indices)["image"])
        time.sleep(0.02)   # a slow consumer: the workers have filled every free slot meanwhile
        for kept, copy in held:
            for name, tensor in copy.items():
                assert torch.equal(kept[name], tensor), name


def test_ring_after_a_failed_read_the_next_epoch_runs(built):
    data = TrainingSet(built / "dataset.zarr")
    ring = SharedBatchRing(data, workers=1, batch_size=8, prefetch=0)   # one slot: a slot lost would stall
    make = lambda order: torch.utils.data.DataLoader(ring, batch_size=None, sampler=order, num_workers=1,
                                                     collate_fn=ring.collate, timeout=60)
    with pytest.raises(IndexError):
        list(ring.batches(make([[0, 1], [len(data)]])))
    rows = [row for batch in ring.batches(make([[0, 1], [2, 3], [4]])) for row in batch["index"].tolist()]
    assert rows == data.rows[:5].tolist()
