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


def test_rechunk_beyond_the_chunk_cap_is_refused(tmp_path):
    """The store's writer refuses what every reader would refuse: image chunks over 64 MB."""
    store = hostile._store(tmp_path, "small.zarr")
    out = tmp_path / "big_chunks.zarr"
    result = run_capped("export", store, "-o", out, "--rechunk", 2_000_000)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"{hostile.ERROR}--rechunk 2000000: chunks of 2000000 images of 4x4 take "
                                          "91 MB, over the 64 MB a chunk may take"]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
