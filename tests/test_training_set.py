"""TrainingSet and ChunkShuffleSampler without torch: the map-style protocol over every format, batches read
whole, splits, pickling into another process, the sampler's exactly-once property, and frame history against
frames decoded straight from the video."""

from __future__ import annotations

import multiprocessing
import pickle
import re
import zipfile

import numpy as np
import pytest
from conftest import examples, run_cli
from test_formats import deflate_npz
from hypothesis import given, settings
from hypothesis import strategies as st

from jumpnet_stream import Chunk, open_dataset
from jumpnet_stream.errors import JumpnetError
from jumpnet_stream.kernels import resize_rgb
from jumpnet_stream.recorder import mask_labels
from jumpnet_stream.training_set import ChunkBatchSampler, ChunkShuffleSampler, TrainingSet
from jumpnet_stream.video import Video

HISTORY, STRIDE = 3, 2  # conftest's history_build


@pytest.fixture
def built(history_build):
    return history_build


def test_samples_are_the_stores_rows(built):
    root, _ = built
    path = root / "set" / "dataset.zarr"
    data, reader = TrainingSet(path), open_dataset(path)
    assert len(data) == len(reader) > 100
    stored = Chunk.concat(list(reader.chunks()))
    for i in (0, 1, 63, 64, len(data) - 1, -1):
        sample, row = data[i], i % len(data)
        assert set(sample) == {"image", "label", "hold", "keys_raw", "weight", "index"}
        assert sample["index"] == row
        np.testing.assert_array_equal(sample["image"], stored["image"][row])
        assert sample["image"].dtype == np.uint8 and sample["image"].shape == (227, 227, 3)
        assert sample["label"] == stored["label"][row] and sample["weight"] == stored["weight"][row]
        np.testing.assert_array_equal(sample["keys_raw"], stored["keys_raw"][row])
        assert sample["hold"] == stored["hold_duration"][row, reader.keys.index("w")]
    with pytest.raises(IndexError):
        data[len(data)]
    with pytest.raises(TypeError):
        data[1.0]
    with pytest.raises(TypeError):
        data[np.zeros((2, 2), np.int64)]


def test_a_batch_is_its_samples_stacked(built):
    """``set[indices]`` gives every field of those samples stacked, each field one contiguous array, in the
    order asked, across stored chunks and with history; a set with a per-sample transform refuses it."""
    root, _ = built
    data = TrainingSet(root / "set" / "dataset.zarr", split="train", history=HISTORY)
    indices = [len(data) - 1, 0, 70, 3, 3, -2]
    batch, samples = data[indices], [data[i] for i in indices]
    assert set(batch) == set(samples[0])
    for name, column in batch.items():
        assert column.flags.c_contiguous and len(column) == len(indices)
        np.testing.assert_array_equal(column, np.stack([sample[name] for sample in samples]), err_msg=name)
        assert column.dtype == samples[0][name].dtype
    empty = data.batch(np.arange(0))
    assert empty["image"].shape == (0, 227, 227, 3) and empty["history"].shape == (0, HISTORY, 227, 227, 3)
    with pytest.raises(TypeError, match="a sample at a time"):
        TrainingSet(root / "set" / "dataset.zarr", transform=lambda sample: sample)[[0, 1]]


def test_splits_partition_the_set(built):
    root, _ = built
    path = root / "set" / "dataset.zarr"
    whole, train, val = TrainingSet(path), TrainingSet(path, split="train"), TrainingSet(path, split="val")
    assert len(train) and len(val) and len(train) + len(val) == len(whole)
    assert whole.split_sizes() == {"train": len(train), "val": len(val)}
    splits = open_dataset(path).column("split")
    assert {splits[val[i]["index"]] for i in range(len(val))} == {"val"}
    assert not set(train.rows) & set(val.rows)
    with pytest.raises(JumpnetError, match="split must be train or val"):
        TrainingSet(path, split="test")


@pytest.mark.parametrize("output", ["set.h5", "set.npz", "legacy.npz", "lz4.zarr"])
def test_every_format_reads_the_same(built, tmp_path, output):
    root, _ = built
    zarr_path = root / "set" / "dataset.zarr"
    args = {"legacy.npz": ["--layout", "legacy"], "set.npz": ["--layout", "columnar"],
            "lz4.zarr": ["--codec", "lz4"]}.get(output, [])
    made = run_cli("export", str(zarr_path), "-o", str(tmp_path / output), *args)
    assert made.returncode == 0, made.stderr
    ours, theirs = TrainingSet(zarr_path), TrainingSet(tmp_path / output)
    assert len(ours) == len(theirs)
    for i in (0, 5, len(ours) - 1):
        a, b = ours[i], theirs[i]
        np.testing.assert_array_equal(a["image"], b["image"])
        assert a["label"] == b["label"] and a["index"] == b["index"]
        assert a["hold"] == pytest.approx(b["hold"])
    np.testing.assert_array_equal(ours[[3, 70, 1]]["image"], theirs[[3, 70, 1]]["image"])


def test_a_legacy_file_without_row_offsets_is_refused_with_the_fix(built, tmp_path):
    """The original scripts' final.npz: our legacy export without the row offsets member."""
    root, _ = built
    path = tmp_path / "seed.npz"
    with zipfile.ZipFile(root / "set" / "final.npz") as ours, zipfile.ZipFile(path, "w") as seed:
        for member in ours.infolist():
            if member.filename != "data_rows.npy":
                seed.writestr(member, ours.read(member))
    assert len(open_dataset(path)) == len(open_dataset(root / "set" / "final.npz"))
    with pytest.raises(JumpnetError, match="export .* -o .*seed.zarr"):
        TrainingSet(path)


def test_a_deflated_columnar_file_is_refused_with_the_fix(built, tmp_path):
    """A columnar .npz another tool compressed (``np.savez_compressed``): reading one sample would
    decompress its images from their start."""
    root, _ = built
    path = tmp_path / "packed.npz"
    made = run_cli("export", str(root / "set" / "dataset.zarr"), "-o", str(path), "--layout", "columnar")
    assert made.returncode == 0, made.stderr
    deflate_npz(path)
    assert len(open_dataset(path)) == len(open_dataset(root / "set" / "dataset.zarr"))
    with pytest.raises(JumpnetError, match="export .* -o .*packed.zarr"):
        TrainingSet(path)


def _read_all(data: TrainingSet, positions: list[int]) -> list[int]:
    return [int(data[p]["index"]) for p in positions]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pickled_into_worker_processes(built, method):
    """Handles and the chunk cache stay behind: a used set pickles, and each process opens its own."""
    root, _ = built
    data = TrainingSet(root / "set" / "dataset.zarr", history=HISTORY)
    first = data[0]  # opens files and fills the cache in this process
    assert pickle.loads(pickle.dumps(data))._cache == {}
    positions = list(range(0, len(data), 7))
    with multiprocessing.get_context(method).Pool(2) as pool:
        parts = pool.starmap(_read_all, [(data, positions[0::2]), (data, positions[1::2])])
    assert sorted(parts[0] + parts[1]) == [int(data.rows[p]) for p in positions]
    np.testing.assert_array_equal(data[0]["image"], first["image"])


@settings(max_examples=examples(40), deadline=None)
@given(rows=st.integers(0, 700), block=st.integers(1, 80), window=st.integers(1, 6), seed=st.integers(0, 2 ** 32),
       epoch=st.integers(0, 5), split_every=st.integers(1, 4))
def test_sampler_visits_every_sample_once_per_epoch(rows, block, window, seed, epoch, split_every):
    data = _Shaped(np.arange(0, rows, split_every), block)
    order = list(ChunkShuffleSampler(data, seed=seed, epoch=epoch, window=window))
    assert sorted(order) == list(range(len(data))) and len(order) == len(ChunkShuffleSampler(data))
    assert order == list(ChunkShuffleSampler(data, seed=seed, epoch=epoch, window=window))
    # a window of chunks at a time: each chunk's samples all come within a stretch of one window's samples
    seen: dict[int, list[int]] = {}
    for at, position in enumerate(order):
        seen.setdefault(int(data.rows[position]) // block, []).append(at)
    assert all(at[-1] - at[0] < window * block for at in seen.values())


@settings(max_examples=examples(40), deadline=None)
@given(rows=st.integers(0, 900), block=st.integers(1, 80), window=st.integers(1, 4), seed=st.integers(0, 2 ** 32),
       workers=st.integers(2, 3), batch=st.integers(1, 100))
def test_sampler_deals_chunks_to_dataloader_workers(rows, block, window, seed, workers, batch):
    """With the loader's workers and batch size, the sampler still visits every sample once, and the
    batches a DataLoader hands each worker in turn come from that worker's own chunks, but for the tail
    where the streams end unevenly (one chunk apart at most)."""
    data = _Shaped(np.arange(rows), block)
    sampler = ChunkShuffleSampler(data, seed=seed, window=window, workers=workers, batch_size=batch)
    order = list(sampler)
    assert sorted(order) == list(range(len(data)))
    readers: dict[int, set[int]] = {}
    for k in range(0, len(order), batch):
        for position in order[k:k + batch]:
            readers.setdefault(int(data.rows[position]) // block, set()).add(k // batch % workers)
    shared = sum(1 for who in readers.values() if len(who) > 1)
    assert shared <= workers * (window + 1) * (-(-block // batch) + 1)
    if rows >= 8 * workers * block * window:   # long enough for the tail to be the lesser part
        assert shared <= len(readers) // 2
    # as batches: the same order cut where the loader would cut it, short only where a worker's stream ends
    batches = list(ChunkBatchSampler(data, seed=seed, window=window, workers=workers, batch_size=batch))
    assert sum(batches, []) == order and len(batches) == len(ChunkBatchSampler(
        data, seed=seed, window=window, workers=workers, batch_size=batch))
    assert all(0 < len(b) <= batch for b in batches) and sum(len(b) < batch for b in batches) <= workers


def test_epochs_differ_and_the_seed_decides(built):
    root, _ = built
    data = TrainingSet(root / "set" / "dataset.zarr")
    sampler = ChunkShuffleSampler(data, seed=5)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(list(sampler)) == sorted(first)
    assert list(ChunkShuffleSampler(data, seed=5, epoch=0)) == first
    assert list(ChunkShuffleSampler(data, seed=6)) != first


class _Shaped:
    """What the sampler reads of a set: its rows and block."""

    def __init__(self, rows: np.ndarray, block: int):
        self.rows, self.block, self.cache_chunks = rows.astype(np.int64), block, 4

    def __len__(self) -> int:
        return len(self.rows)


def test_history_is_the_frames_before_each_sample(built):
    """Each sample's stack against frames decoded directly from its video, resized and masked as the build
    does; padding where the video starts too late."""
    root, rec = built
    path = root / "set" / "dataset.zarr"
    data = TrainingSet(path, history=HISTORY)
    reader = open_dataset(path)
    columns = reader.columns(["frame_index", "augmented"])
    picks = sorted({*range(0, len(data), max(1, len(data) // 12)), int(np.argmin(columns["frame_index"]))})
    wanted = sorted({int(f) - STRIDE * k for p in picks for k in range(1, HISTORY + 1)
                     for f in [columns["frame_index"][p]] if f - STRIDE * k >= 0})
    decoded = {}
    for chunk in Video(rec.video).frames_at(np.array(wanted, np.int64)):
        image = np.empty((227, 227, 3), np.uint8)
        resize_rgb(chunk["frame"][0], (227, 227), out=image)
        decoded[int(chunk["frame_index"][0])] = mask_labels(image)
    padded = 0
    for p in picks:
        sample, frame = data[p], int(columns["frame_index"][p])
        assert sample["history"].shape == (HISTORY, 227, 227, 3) and sample["history"].dtype == np.uint8
        for slot, k in enumerate(range(HISTORY, 0, -1)):  # oldest first
            if frame - STRIDE * k < 0:
                assert not sample["history_mask"][slot] and not sample["history"][slot].any()
                padded += 1
            else:
                assert sample["history_mask"][slot]
                np.testing.assert_array_equal(sample["history"][slot], decoded[frame - STRIDE * k])
    assert padded, "the picks include a sample near the video's start"
    assert columns["augmented"].any()


def test_history_is_stored_once_per_frame(built):
    root, _ = built
    path = root / "set" / "dataset.zarr"
    import zarr
    group = zarr.open_group(str(path / "history"), mode="r")
    frames = group["frame_index"][:]
    assert len(np.unique(frames)) == len(frames)  # one recording: each frame once
    samples = len(open_dataset(path))
    assert len(frames) < samples * HISTORY  # shared between samples (augmented copies share their original's)
    assert group.attrs["frames"] == HISTORY and group.attrs["stride"] == STRIDE


def test_history_is_refused_where_there_is_none(built, tmp_path):
    root, _ = built
    with pytest.raises(JumpnetError, match="has no frame history: build it with history 2"):
        TrainingSet(root / "set" / "final.npz", history=2)
    with pytest.raises(JumpnetError, match=f"holds {HISTORY} history frames per sample, not {HISTORY + 1}"):
        TrainingSet(root / "set" / "dataset.zarr", history=HISTORY + 1)
    with pytest.raises(JumpnetError, match="history must be"):
        TrainingSet(root / "set" / "dataset.zarr", history=-1)


def test_inspect_names_history_and_splits(built):
    root, _ = built
    result = run_cli("inspect", str(root / "set" / "dataset.zarr"), "--no-audit")
    assert result.returncode == 0, result.stderr
    assert re.search(f"frame history +{HISTORY} frames before each sample, {STRIDE} apart", result.stdout)
    assert re.search("split train +[0-9]+ positives", result.stdout) and "split val" in result.stdout
    plain = run_cli("inspect", str(root / "set" / "final.npz"), "--no-audit")
    assert re.search("frame history +none", plain.stdout), plain.stdout
