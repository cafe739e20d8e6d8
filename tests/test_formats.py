"""Every dataset writer passes one contract: what goes in comes back out, in order, and lands atomically."""

from __future__ import annotations

import numpy as np
import pytest

from jumpnet_stream import Chunk, JumpnetError, create_dataset, open_dataset
from jumpnet_stream.chunk import SAMPLE_FIELDS
from jumpnet_stream.formats import WriteOptions

FORMATS = [".zarr", ".npz"]
# Arbitrary hold vectors round-trip through the legacy .npz in the seed's vector layout (the default keeps
# only the jump key's hold); on numpy >= 2.4 that layout warns that the original trainer cannot read it.
WHOLE_VECTORS = WriteOptions(hold="vector")
pytestmark = pytest.mark.filterwarnings("ignore:.*the seed's hold vector suits:UserWarning")


def _chunk(n, start, k=2, seed=0):
    rng = np.random.default_rng(seed + start)
    hold = rng.random((n, k), dtype=np.float32)
    hold[:1, 0] = np.nan  # NaN holds (never-released presses) must survive every format
    return Chunk({
        "image": rng.integers(0, 256, (n, 11, 13, 3), dtype=np.uint8),
        "label": rng.integers(0, 2, n).astype(np.float32),
        "keys_raw": rng.integers(0, 2, (n, k)).astype(np.float32),
        "hold_duration": hold,
        "phase": np.array(["press", "release"] * n)[:n],
        "frame_index": np.arange(start, start + n, dtype=np.int64),
        "source": np.array([f"rec{start % 3}"] * n),
    })


def _write(path, chunks, keys=("w", "a")):
    options = WHOLE_VECTORS if str(path).endswith(".npz") else WriteOptions()
    with create_dataset(path, list(keys), options=options) as writer:
        for chunk in chunks:
            writer.write(chunk)
        writer.provenance = [{"stage": "test", "counts": {"rows": writer.rows}}]


@pytest.mark.parametrize("ext", FORMATS)
def test_round_trip(tmp_path, ext):
    chunks = [_chunk(n, 1000 * i) for i, n in enumerate([5, 64, 1, 130, 70])]
    _write(tmp_path / f"d{ext}", chunks)
    dataset = open_dataset(tmp_path / f"d{ext}")
    assert len(dataset) == 270 and dataset.keys == ["w", "a"]
    layout = [{"stage": "legacy npz", "parameters": {"hold": "vector", "hold_key": None, "image_dtype": "float32"}}]
    assert dataset.provenance == [{"stage": "test", "counts": {"rows": 270}}, *(layout if ext == ".npz" else [])]
    got = Chunk.concat(list(dataset.chunks(rows=50)))
    want = Chunk.concat(chunks)
    for name in SAMPLE_FIELDS:
        if name == "source" and ext == ".npz":
            assert set(got[name]) == {"d"}  # the legacy format has no source: the file names it
            continue
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        assert got[name].dtype.kind == want[name].dtype.kind


@pytest.mark.parametrize("ext", FORMATS)
def test_empty_dataset(tmp_path, ext):
    _write(tmp_path / f"d{ext}", [])
    dataset = open_dataset(tmp_path / f"d{ext}")
    assert len(dataset) == 0 and list(dataset.chunks()) == []


@pytest.mark.parametrize("ext", FORMATS)
def test_failure_leaves_nothing(tmp_path, ext):
    with pytest.raises(RuntimeError):
        with create_dataset(tmp_path / f"d{ext}", ["w"]) as writer:
            writer.write(_chunk(100, 0, k=1))
            raise RuntimeError("stage failed half-way")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ext", FORMATS)
def test_existing_output_refused_before_work(tmp_path, ext):
    _write(tmp_path / f"d{ext}", [_chunk(3, 0)])
    with pytest.raises(JumpnetError, match="output exists"):
        _write(tmp_path / f"d{ext}", [_chunk(5, 0)])
    assert len(open_dataset(tmp_path / f"d{ext}")) == 3


def test_unknown_extension(tmp_path):
    with pytest.raises(JumpnetError, match=r"unknown dataset format '\.parquet': use one of \.zarr, \.npz"):
        _write(tmp_path / "d.parquet", [])


@pytest.mark.parametrize("ext", FORMATS)
def test_writer_keeps_no_reference_to_written_arrays(tmp_path, ext):
    """Callers reuse chunk buffers (negatives recycles its image arrays) as soon as write() returns."""
    chunks = [_chunk(n, 100 * i) for i, n in enumerate([64, 10, 100, 3])]
    originals = [Chunk({k: v.copy() for k, v in c.columns.items()}) for c in chunks]
    with create_dataset(tmp_path / f"d{ext}", ["w", "a"], options=WHOLE_VECTORS if ext == ".npz" else WriteOptions()) \
            as writer:
        for chunk in chunks:
            writer.write(chunk)
            for column in chunk.columns.values():
                column[...] = "reused" if column.dtype.kind == "U" else 0  # the caller reuses the buffers
    got = Chunk.concat(list(open_dataset(tmp_path / f"d{ext}").chunks()))
    want = Chunk.concat(originals)
    stored = ("image", "label", "keys_raw", "hold_duration", "phase", "frame_index") + \
        (("source",) if ext == ".zarr" else ())  # the legacy format keeps no source
    for name in stored:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
