"""A real PyTorch DataLoader (torch 2.13.0, installed by .ci/run, never a dependency of the package) over a
built set: worker processes started by fork and by spawn, samples collated by the loader or read a batch at a
time, every sample once per epoch, tensors equal to the store's arrays; and the example training script, a
few steps."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from jumpnet_stream import Chunk, open_dataset
from jumpnet_stream.training_set import ChunkBatchSampler, ChunkShuffleSampler, TrainingSet

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
