"""Hostile and absurd input (issue 12), through the real command line under a memory cap: every crafted
file of ``tests/hostile.py`` is refused with one line naming it, no traceback, nothing left behind, and a
peak resident memory under 300 MB. Values that are not numbers in a keylog are malformed entries."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import zarr

import hostile
from hostile import CASES, PROMISE_MB, run_capped
from test_bad_input import assert_refused, event, write_keylog


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    return tmp_path_factory.mktemp("crafted")


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_refused_in_bounded_memory(crafted, case):
    folder = crafted / case.name
    folder.mkdir()
    path = case.make(folder)
    out = case.output(folder)
    result = run_capped(*case.args(path, out))
    assert result.killed is None, f"killed by the memory watcher: {result.killed}"
    line = assert_refused(result, path, case.expect, outputs=[out])
    assert len(line) < 400, "a one-line refusal that is not short"
    assert result.peak_mb < PROMISE_MB, f"peak {result.peak_mb:.0f} MB"


def test_the_mutated_dtype_really_crashes_numpy(tmp_path):
    """The control: numpy's own loader (on this test's own file) makes the array of 400 MB over 4 bytes,
    and reading it kills the process."""
    path = hostile.dtype_mutated_after_use(tmp_path)
    code = (f"import numpy as np; e = np.load({str(path)!r}, allow_pickle=True)['data'][0]; "
            "print(e[4].dtype, e[4].nbytes, flush=True); str(e[4][()])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["<U100000000", "400000000"]
    assert result.returncode < 0  # killed by a signal (SIGSEGV)


def test_external_storage_would_disclose_another_file(tmp_path):
    """The control: read as HDF5 itself reads it, the crafted file's pixels are another file's bytes."""
    path = hostile.h5_external_storage(tmp_path)
    with h5py.File(path, "r") as f:
        assert f["image"][()].tobytes() == (hostile.SECRET * 100)[:hostile.ROWS * 48]


TIMES = {  # value in a numeric field -> the reason it is counted under
    "timedelta64 frame": ((np.timedelta64(7, "s"), "frame"), "frame_idx is not a number"),
    "generic timedelta64 frame": ((np.timedelta64(7), "frame"), "frame_idx is not a number"),
    "datetime64 frame": ((np.datetime64("2024-01-02"), "frame"), "frame_idx is not a number"),
    "0-d timedelta64 array prev": ((np.array(3, "m8[ms]"), "prev"), "prev_interval is not a number"),
    "wrapped timedelta64 prev": (([np.timedelta64(3, "s")], "prev"), "prev_interval is not a number"),
    "timedelta64 in a vector": ((np.array([np.timedelta64(1, "s"), 0.0], dtype=object), "held"),
                                "multi_hot is not numeric"),
    "timedelta64 vector": ((np.array([1, 0], "m8[s]"), "held"), "multi_hot is not numeric"),
}


def test_times_in_numeric_fields_are_malformed_entries(tmp_path):
    """numpy's timedelta64 is a signedinteger: float() of one made a TypeError traceback."""
    entries = [event(10), event(12, "release", held=(0, 0), hold=(0.2, 0))]
    for (value, field), _ in TIMES.values():
        if field == "frame":
            entries.append(event(value))
        elif field == "prev":
            entries.append(event(14, prev=value))
        else:
            entries.append((*event(15)[:2], value, *event(15)[3:]))
    path = write_keylog(tmp_path / "times.npz", entries)
    out = tmp_path / "positives.zarr"
    result = run_capped("preprocess", path, "-o", out, "--json")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    counts = json.loads(result.stdout)
    assert (counts["total"], counts["malformed"], counts["paired"]) == (len(entries), len(TIMES), 1)
    from jumpnet_stream import open_dataset

    reasons = open_dataset(out).provenance[0]["counts"]["dropped"]["malformed"]
    expected: dict[str, int] = {}
    for _, reason in TIMES.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert reasons == expected


def test_chunks_are_written_within_the_chunk_cap(tmp_path):
    """The writers keep what every reader requires: --rechunk (and .h5's 64 images a chunk) hold at most
    64 MB a chunk; a store written so opens."""
    from jumpnet_stream import open_dataset
    from jumpnet_stream.formats.checks import MAX_CHUNK_BYTES

    store = hostile._store(tmp_path, "small.zarr")
    out = tmp_path / "big_chunks.zarr"
    result = run_capped("export", store, "-o", out, "--rechunk", 2_000_000)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert zarr.open_group(str(out), mode="r")["image"].chunks[0] == MAX_CHUNK_BYTES // 48  # 4x4x3 images
    assert len(open_dataset(out)) == hostile.ROWS


def test_h5_chunks_of_large_images_stay_within_the_cap(tmp_path):
    from jumpnet_stream.chunk import Chunk
    from jumpnet_stream.formats.hdf5 import H5Dataset, H5DatasetWriter

    writer = H5DatasetWriter(tmp_path / "large.h5", ["w"], image_dtype="float32", image_shape=(1080, 1920, 3))
    columns = hostile._samples(rows=2, size=(1080, 1920))
    writer.write(Chunk(columns))
    writer.finish([])
    with h5py.File(tmp_path / "large.h5", "r") as f:
        assert f["image"].chunks == (2, 1080, 1920, 3)  # 64 of them would be 1.6 GB
    assert len(H5Dataset(tmp_path / "large.h5")) == 2


def test_large_legal_images_then_a_payload(crafted):
    folder = crafted / "legal_images_then_payload"
    folder.mkdir()
    path = hostile.legal_images_then_payload(folder)
    out = folder / "out.zarr"
    result = run_capped("preprocess", path, "-o", out)
    assert_refused(result, path, "unsafe pickle in 'data' refused: refusing to unpickle os.system", outputs=[out])
    assert result.peak_mb < PROMISE_MB, f"peak {result.peak_mb:.0f} MB"
