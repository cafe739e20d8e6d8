"""Stages 2 and 6: merging with keys remapped to their union, and the out-of-core shuffle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from jumpnet_stream import Chunk, JumpnetError, open_dataset, preprocess
from jumpnet_stream.stages.merge import merge


@pytest.fixture(scope="module")
def two_sets(recordings, tmp_path_factory):
    """A ['w'] positives set and an ['a','s','d','f'] one, in different formats."""
    folder = tmp_path_factory.mktemp("merge")
    preprocess(recordings["single_rows"].npz, folder / "w.zarr", key="w")
    preprocess(recordings["multi_rows_wrinkled"].npz, folder / "asdf.npz", key="s")
    return folder / "w.zarr", folder / "asdf.npz"


def read_all(path) -> Chunk:
    return Chunk.concat(list(open_dataset(path).chunks()))


def test_keys_remapped_to_the_union(two_sets, tmp_path):
    w_path, asdf_path = two_sets
    report = merge([w_path, asdf_path], tmp_path / "m.zarr")
    union = ["a", "d", "f", "s", "w"]
    assert report.keys == union == open_dataset(tmp_path / "m.zarr").keys
    w, asdf, merged = read_all(w_path), read_all(asdf_path), read_all(tmp_path / "m.zarr")
    assert len(merged) == len(w) + len(asdf) == report.written
    head, tail = merged.take(slice(0, len(w))), merged.take(slice(len(w), None))
    np.testing.assert_array_equal(head["keys_raw"][:, 4], w["keys_raw"][:, 0])
    assert not head["keys_raw"][:, :4].any() and not head["hold_duration"][:, :4].any()
    for old, key in enumerate(["a", "s", "d", "f"]):
        np.testing.assert_array_equal(tail["keys_raw"][:, union.index(key)], asdf["keys_raw"][:, old])
        np.testing.assert_array_equal(tail["hold_duration"][:, union.index(key)], asdf["hold_duration"][:, old])
    assert not tail["keys_raw"][:, 4].any()
    np.testing.assert_array_equal(head["image"], w["image"])
    np.testing.assert_array_equal(tail["image"], asdf["image"])
    assert set(merged["source"]) == {"single_rows", "asdf"}


def test_shuffle_is_a_seeded_permutation(two_sets, tmp_path):
    w_path, asdf_path = two_sets
    merge([w_path, asdf_path], tmp_path / "plain.zarr")
    merge([w_path, asdf_path], tmp_path / "s1.zarr", shuffle=True, seed=3)
    merge([w_path, asdf_path], tmp_path / "s1again.h5", shuffle=True, seed=3)
    merge([w_path, asdf_path], tmp_path / "s2.zarr", shuffle=True, seed=4)
    plain, s1, again, s2 = (read_all(tmp_path / n) for n in ("plain.zarr", "s1.zarr", "s1again.h5", "s2.zarr"))
    order = np.random.default_rng(3).permutation(len(plain))
    for name in plain.fields:
        np.testing.assert_array_equal(s1[name], plain[name][order])
        np.testing.assert_array_equal(again[name], s1[name])
    assert not np.array_equal(s2["frame_index"], s1["frame_index"])
    assert sorted(s2["frame_index"].tolist()) == sorted(plain["frame_index"].tolist())


def test_cli_and_errors(two_sets, tmp_path):
    w_path, asdf_path = two_sets
    result = run_cli("merge", str(w_path), str(asdf_path), "-o", str(tmp_path / "m.npz"), "--shuffle")
    assert result.returncode == 1 and "which of this dataset's keys (a, d, f, s, w) jumps is not known" in result.stderr
    assert not (tmp_path / "m.npz").exists()  # positives of two jump keys: the trainer's one hold is ambiguous
    result = run_cli("merge", str(w_path), str(w_path), "-o", str(tmp_path / "m.npz"), "--shuffle", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["keys"] == ["w"]
    assert summary["written"] == sum(entry["samples"] for entry in summary["inputs"])
    with np.load(tmp_path / "m.npz", allow_pickle=True) as z:  # our own output: the trainer's loader
        assert z["data"].shape == (summary["written"], 6) and z["keys"].tolist() == summary["keys"]
        assert all(float(entry[3]) == entry[3].flatten()[0] for entry in z["data"])
    result = run_cli("merge", str(w_path), str(tmp_path / "missing.zarr"), "-o", str(tmp_path / "x.zarr"))
    assert result.returncode == 1 and "missing.zarr: no such zarr store" in result.stderr
    assert not (tmp_path / "x.zarr").exists()
    with pytest.raises(JumpnetError, match="needs at least one input"):
        merge([], tmp_path / "y.zarr")


def test_empty_input_and_mismatched_sizes(two_sets, tmp_path):
    from jumpnet_stream import create_dataset
    w_path, asdf_path = two_sets
    with create_dataset(tmp_path / "empty.zarr", ["q"]):
        pass
    report = merge([w_path, tmp_path / "empty.zarr"], tmp_path / "m.zarr", shuffle=True)
    assert report.keys == ["q", "w"] and report.written == len(open_dataset(w_path))
    small = Chunk.concat(list(open_dataset(w_path).chunks())).take(slice(0, 2))
    with create_dataset(tmp_path / "small.zarr", ["w"]) as writer:
        writer.write(Chunk({**small.columns, "image": small["image"][:, :50, :50]}))
    with pytest.raises(JumpnetError, match="the inputs' images differ in size"):
        merge([w_path, tmp_path / "small.zarr"], tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists()
