"""The merge stage's generators on hand-made chunks (webdataset's filters are the model): ``remap_keys``
moves per-key vectors to the union's order, ``merged_chunks`` chains datasets' chunks remapped,
``shuffled`` is the seeded permutation of whatever chunks it is given, out of core (``permutation`` is
numpy's in 4-byte integers)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jumpnet_stream import Chunk, create_dataset, open_dataset
from jumpnet_stream.chunk import DEFAULT_ROWS
from jumpnet_stream.schema import FIELDS, complete
from jumpnet_stream.stages.merge import merged_chunks, permutation, remap_keys, shuffled

SHAPE = (5, 7, 3)


def hand_made(n: int, keys: int, start: int = 0) -> Chunk:
    """``n`` samples, every field filled with values that tell rows apart (frame_index counts from start)."""
    rng = np.random.default_rng(start)
    hold = rng.random((n, keys), dtype=np.float32)
    hold[::4, 0] = np.nan  # a press never released
    return complete({
        "image": rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8),
        "label": (np.arange(n) % 2).astype(np.float32),
        "keys_raw": rng.integers(0, 2, (n, keys)).astype(np.float32),
        "hold_duration": hold,
        "phase": np.array(["press", "release", "hold"])[np.arange(n) % 3],
        "frame_index": np.arange(start, start + n, dtype=np.int64),
        "source": np.array(["play", "spiel-é", ""])[np.arange(n) % 3],
        "weight": np.linspace(0.5, 2, n, dtype=np.float32),
        "augmented": np.arange(n) % 2 == 1,
    }, keys)


def assert_chunks_equal(got: Chunk, want: Chunk) -> None:
    assert got.fields == want.fields
    for name in FIELDS:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        assert got[name].dtype.kind == want[name].dtype.kind, name


def test_remap_keys_moves_each_vector_to_its_key_slot():
    chunk = hand_made(9, 2)
    remapped = remap_keys(chunk, ["s", "a"], ["a", "d", "s"])
    for vector in ("keys_raw", "hold_duration"):
        assert remapped[vector].shape == (9, 3) and remapped[vector].dtype == np.float32
        np.testing.assert_array_equal(remapped[vector][:, 2], chunk[vector][:, 0])  # s, NaNs kept
        np.testing.assert_array_equal(remapped[vector][:, 0], chunk[vector][:, 1])  # a
        assert not remapped[vector][:, 1].any()  # d: held by no sample of these
    for name in set(FIELDS) - {"keys_raw", "hold_duration"}:
        assert remapped[name] is chunk[name], f"{name} is not a per-key vector: passed on as it is"


def test_remap_keys_to_the_same_keys_is_the_chunk_itself():
    chunk = hand_made(3, 2)
    assert remap_keys(chunk, ["a", "w"], ["a", "w"]) is chunk


def test_remap_keys_of_an_empty_chunk():
    empty = hand_made(0, 1)
    remapped = remap_keys(empty, ["w"], ["a", "w"])
    assert len(remapped) == 0 and remapped["keys_raw"].shape == (0, 2)


def _written(path, chunks: list[Chunk], keys: list[str]):
    """Hand-made chunks as a real dataset on disk, opened for reading."""
    with create_dataset(path, keys, image_shape=SHAPE, rows=sum(len(c) for c in chunks),
                        layout="columnar" if str(path).endswith(".npz") else None) as writer:
        for chunk in chunks:
            writer.write(chunk)
        writer.provenance = []
    return open_dataset(path)


def test_merged_chunks_chains_the_inputs_in_order_remapped(tmp_path):
    first = [hand_made(DEFAULT_ROWS, 1, 0), hand_made(10, 1, 100)]
    second = [hand_made(30, 2, 1000)]
    datasets = [_written(tmp_path / "w.zarr", first, ["w"]), _written(tmp_path / "none.npz", [], ["q"]),
                _written(tmp_path / "sa.npz", second, ["s", "a"])]
    union = ["a", "q", "s", "w"]
    got = list(merged_chunks(datasets, union))
    assert [len(c) for c in got] == [DEFAULT_ROWS, 10, 30], "each input's chunks, in order; none from the empty one"
    want = [remap_keys(c, ["w"], union) for c in first] + [remap_keys(c, ["s", "a"], union) for c in second]
    for got_chunk, want_chunk in zip(got, want):
        assert_chunks_equal(got_chunk, want_chunk)


def test_shuffled_is_the_seeded_permutation_of_its_input(tmp_path):
    chunks = [hand_made(50, 3, 0), hand_made(0, 3), hand_made(1, 3, 50), hand_made(99, 3, 51)]
    events: list[str] = []
    out = []
    for chunk in shuffled(iter(chunks), 150, seed=7, folder=str(tmp_path), keys=3,
                          spooled=lambda n: events.append(f"spooled {n}")):
        events.append("out")
        out.append(chunk)
    assert events == ["spooled 50", "spooled 0", "spooled 1", "spooled 99", "out", "out", "out"], \
        "every row is spooled before the first comes out"
    assert [len(c) for c in out] == [DEFAULT_ROWS, DEFAULT_ROWS, 150 - 2 * DEFAULT_ROWS]
    order = np.random.default_rng(7).permutation(150)
    assert_chunks_equal(Chunk.concat(out), Chunk.concat(chunks).take(order))
    assert list(tmp_path.iterdir()) == [], "the spool is a temporary file: nothing is left beside the output"


def test_shuffled_same_seed_same_order_other_seed_other_order(tmp_path):
    def order(seed: int) -> list[int]:
        chunks = [hand_made(40, 1, 0), hand_made(40, 1, 40)]
        return Chunk.concat(shuffled(chunks, 80, seed, str(tmp_path), 1))["frame_index"].tolist()

    assert order(3) == order(3) != order(4)
    assert sorted(order(3)) == list(range(80))


@given(st.integers(0, 3000), st.integers(0, 2 ** 64 - 1))
def test_permutation_is_numpys_in_half_the_bytes(total, seed):
    order = permutation(total, seed)
    assert order.dtype == np.int32
    assert np.array_equal(order, np.random.default_rng(seed).permutation(total))


@pytest.mark.parametrize("chunks", [[], [hand_made(0, 2)]])
def test_shuffled_nothing_yields_nothing(tmp_path, chunks):
    assert list(shuffled(chunks, 0, 1, str(tmp_path), 2)) == []
