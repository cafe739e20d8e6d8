"""The training-loop reader: every sample exactly once, in order or shuffled reproducibly, any format."""

from __future__ import annotations

import numpy as np
import pytest

from jumpnet_stream import Chunk, batches, create_dataset
from jumpnet_stream.stages.export import export


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batches")
    n = 300
    rng = np.random.default_rng(1)
    chunk = Chunk({"image": rng.integers(0, 256, (n, 9, 8, 3), dtype=np.uint8), "label": (np.arange(n) % 2).astype(np.float32),
                   "keys_raw": np.zeros((n, 1), np.float32), "hold_duration": np.zeros((n, 1), np.float32),
                   "phase": np.full(n, "press"), "frame_index": np.arange(n), "source": np.full(n, "s")})
    with create_dataset(folder / "d.zarr", ["w"]) as writer:
        writer.write(chunk)
    paths = {"zarr": folder / "d.zarr"}
    for name, target, layout in (("h5", "d.h5", None), ("legacy", "d.npz", "legacy"), ("columnar", "c.npz", "columnar")):
        export(folder / "d.zarr", folder / target, layout=layout)
        paths[name] = folder / target
    return paths, chunk


@pytest.mark.parametrize("fmt", ["zarr", "h5", "legacy", "columnar"])
def test_in_order_and_shuffled(stores, fmt):
    paths, chunk = stores
    ordered = list(batches(paths[fmt], batch_size=32))
    assert [len(b["label"]) for b in ordered] == [32] * 9 + [12]
    np.testing.assert_array_equal(np.concatenate([b["frame_index"] for b in ordered]), np.arange(300))
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in ordered]), chunk["image"])
    shuffled = list(batches(paths[fmt], batch_size=32, shuffle=True, seed=3, window=100))
    frames = np.concatenate([b["frame_index"] for b in shuffled])
    assert sorted(frames.tolist()) == list(range(300)) and frames.tolist() != list(range(300))
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in shuffled]), chunk["image"][frames])
    again = np.concatenate([b["frame_index"] for b in batches(paths[fmt], batch_size=32, shuffle=True, seed=3,
                                                             window=100)])
    np.testing.assert_array_equal(again, frames)
    other = np.concatenate([b["frame_index"] for b in batches(paths[fmt], batch_size=32, shuffle=True, seed=4,
                                                             window=100)])
    assert other.tolist() != frames.tolist()


def test_float_images(stores):
    paths, chunk = stores
    first = next(batches(paths["zarr"], batch_size=5, float_images=True))
    assert first["image"].dtype == np.float32
    np.testing.assert_allclose(first["image"], chunk["image"][:5] / 255, rtol=1e-6)
