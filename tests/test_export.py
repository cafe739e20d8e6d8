"""Exports: every format loads in its own library with identical content; legacy size guard; bounded memory."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import h5py
import numpy as np
import pytest
import zarr

from conftest import run_cli
from jumpnet_stream import Chunk, create_dataset, open_dataset, preprocess
from jumpnet_stream.schema import FIELDS as SAMPLE_FIELDS
from jumpnet_stream.formats.zarr_store import ZarrOptions
from jumpnet_stream.stages.export import export
from tools.measure import run_peak_rss


@pytest.fixture(scope="module")
def source(recordings, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "pos.zarr"
    preprocess(recordings["multi_rows_wrinkled"].npz, path, key="a")
    return path, Chunk.concat(list(open_dataset(path).chunks()))


@pytest.mark.parametrize("target,args", [
    ("legacy.npz", []), ("legacy_u8.npz", ["--dtype", "uint8"]), ("columnar.npz", ["--layout", "columnar"]),
    ("columnar_f32.npz", ["--layout", "columnar", "--dtype", "float32"]), ("copy.zarr", ["--rechunk", "8"]),
    ("data.h5", []), ("data_f32.h5", ["--dtype", "float32"]),
])
def test_export_round_trips_and_loads_in_its_own_library(source, tmp_path, target, args):
    path, original = source
    out = tmp_path / target
    result = run_cli("export", str(path), "-o", str(out), *args, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["samples"] == len(original)
    back = Chunk.concat(list(open_dataset(out).chunks(rows=13)))
    for name in SAMPLE_FIELDS:
        if name not in SAMPLE_FIELDS[:6] and target.startswith("legacy"):
            continue  # the seed's format keeps its six fields (the source, the split... are not in it)
        np.testing.assert_array_equal(back[name], original[name], err_msg=name)
    float_images = "float32" in args or (target.startswith("legacy") and "uint8" not in args)
    want_images = original["image"].astype(np.float32) / np.float32(255) if float_images else original["image"]
    if target.endswith(".npz"):
        with np.load(out, allow_pickle=target.startswith("legacy")) as z:  # our own output
            if target.startswith("legacy"):
                data = z["data"]
                np.testing.assert_array_equal(np.stack([e[0] for e in data]), want_images)
                assert [float(e[1]) for e in data] == original["label"].tolist()
            else:
                np.testing.assert_array_equal(z["image"], want_images)
                np.testing.assert_array_equal(z["keys_raw"], original["keys_raw"])
            assert z["keys"].tolist() == ["a", "s", "d", "f"]
    elif target.endswith(".zarr"):
        group = zarr.open_group(str(out), mode="r")
        assert group["image"].chunks[0] == 8
        np.testing.assert_array_equal(group["image"][:], want_images)
    else:
        with h5py.File(out, "r") as f:
            np.testing.assert_array_equal(f["image"][:], want_images)
            np.testing.assert_array_equal(f["frame_index"][:], original["frame_index"])
            assert list(f.attrs["keys"]) == ["a", "s", "d", "f"]


def _big_dataset(path, samples):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 227, 227, 3), dtype=np.uint8)
    with create_dataset(path, ["w"]) as writer:
        for start in range(0, samples, 64):
            n = min(64, samples - start)
            writer.write(Chunk({"image": base[:n], "label": np.zeros(n, np.float32),
                                "keys_raw": np.zeros((n, 1), np.float32), "hold_duration": np.zeros((n, 1), np.float32),
                                "phase": np.full(n, "press"), "frame_index": np.arange(start, start + n),
                                "source": np.full(n, "big")}))


def test_legacy_export_refused_when_the_trainer_could_not_load_it(tmp_path):
    _big_dataset(tmp_path / "big.zarr", 2600)  # a legacy load: 2600 x 619 KB = 1.6 GB
    limit = 1200 << 20

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = subprocess.run([sys.executable, "-m", "jumpnet_stream", "export", str(tmp_path / "big.zarr"), "-o",
                             str(tmp_path / "big.npz")], capture_output=True, text=True, preexec_fn=cap, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "the legacy format is loaded whole by the trainer" in result.stderr and "the columnar layout" in result.stderr
    assert not (tmp_path / "big.npz").exists()


def test_columnar_export_larger_than_memory_cap(tmp_path):
    _big_dataset(tmp_path / "big.zarr", 2600)  # 400 MB of uint8 images
    code, peak, _, err = run_peak_rss([sys.executable, "-m", "jumpnet_stream", "export", str(tmp_path / "big.zarr"),
                                       "-o", str(tmp_path / "big.npz"), "--layout", "columnar", "--quiet"])
    assert code == 0, err
    assert peak < 200, f"peak RSS {peak:.0f} MB for a 400 MB dataset"
    with np.load(tmp_path / "big.npz", mmap_mode=None) as z:
        assert z["image"].shape == (2600, 227, 227, 3) and z["frame_index"][-1] == 2599


@pytest.mark.parametrize("target,args", [("e.zarr", []), ("e.h5", []), ("e.npz", ["--hold-key", "a"]),
                                         ("c.npz", ["--layout", "columnar"])])
def test_empty_dataset_exports_and_reads_back(tmp_path, target, args):
    with create_dataset(tmp_path / "empty.zarr", ["w", "a"]):
        pass
    result = run_cli("export", str(tmp_path / "empty.zarr"), "-o", str(tmp_path / target), *args)
    assert result.returncode == 0, result.stderr
    dataset = open_dataset(tmp_path / target)
    assert len(dataset) == 0 and list(dataset.chunks()) == [] and dataset.keys == ["w", "a"]
    if target == "c.npz":
        with np.load(tmp_path / target) as z:
            assert z["keys_raw"].shape == (0, 2) and z["keys_raw"].dtype == np.float32
            assert z["frame_index"].dtype == np.int64


@pytest.mark.parametrize("target,args,message", [
    ("x.zarr", ["--dtype", "float32"], "dtype applies to .h5, columnar .npz, legacy .npz outputs only, not .zarr"),
    ("x.h5", ["--hold", "vector"], "hold applies to legacy .npz outputs only, not .h5"),
    ("x.npz", ["--hold-key", "q"], "hold key 'q' is not one of the dataset's keys (a, s, d, f)"),
    ("x.h5", ["--layout", "columnar"], "layout applies to .npz outputs only"),
    ("x.zarr", ["--rechunk", "0"], "rechunk must be 1 or more, not 0"),
    ("x.npz", ["--rechunk", "8"], "rechunk applies to .zarr outputs only, not legacy .npz"),
])
def test_options_that_do_not_apply_are_refused(source, tmp_path, target, args, message):
    path, _ = source
    result = run_cli("export", str(path), "-o", str(tmp_path / target), *args)
    assert result.returncode == 1 and message in result.stderr and "partial" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and not list(tmp_path.iterdir())


def test_legacy_export_of_a_multi_key_set_is_what_the_trainer_reads(source, tmp_path):
    """The default legacy export works for any number of keys: each hold is a 0-d float32 of the jump key's
    hold (here 'a', from the dataset's provenance), which float() and flatten()[0] accept on every numpy."""
    path, original = source
    result = run_cli("export", str(path), "-o", str(tmp_path / "final.npz"))
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "final.npz", allow_pickle=True) as z:  # our own output, as the trainer loads it
        data = z["data"]
    holds = [float(entry[3]) for entry in data]
    assert holds == [entry[3].flatten()[0] for entry in data]
    np.testing.assert_array_equal(holds, original["hold_duration"][:, 0])  # 'a' is the first key
    assert open_dataset(tmp_path / "final.npz").provenance[-2]["parameters"]["hold_key"] == "a"


def test_legacy_export_without_a_known_jump_key_asks_for_one(tmp_path):
    with create_dataset(tmp_path / "two.zarr", ["w", "a"]):
        pass
    result = run_cli("export", str(tmp_path / "two.zarr"), "-o", str(tmp_path / "two.npz"))
    assert result.returncode == 1 and "export it with hold_key set to the jump key" in result.stderr
    assert not (tmp_path / "two.npz").exists()


def test_large_columnar_file_reads_back(tmp_path):
    """A columnar file's small fields grow with its rows: no 'implausibly large' cap applies to them."""
    n = 80_000  # a 64-character source is 256 bytes a row: 20 MB, over the 16 MB cap of a recorder's keys
    with create_dataset(tmp_path / "tall.zarr", ["w"], options=ZarrOptions(rechunk=4096)) as writer:
        for start in range(0, n, 40_000):
            m = min(40_000, n - start)
            writer.write(Chunk({"image": np.zeros((m, 1, 1, 3), np.uint8), "label": np.zeros(m, np.float32),
                                "keys_raw": np.zeros((m, 1), np.float32), "hold_duration": np.zeros((m, 1), np.float32),
                                "phase": np.full(m, "release"), "frame_index": np.arange(start, start + m),
                                "source": np.full(m, "s" * 64)}))
    export(tmp_path / "tall.zarr", tmp_path / "tall.npz", layout="columnar")
    dataset = open_dataset(tmp_path / "tall.npz")
    assert len(dataset) == n and dataset.column("frame_index")[-1] == n - 1
