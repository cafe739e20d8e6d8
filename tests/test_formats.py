"""Every dataset format passes one contract (zarr-python's ``StoreTests`` is the model): what goes in comes
back out, field by field and in order; empty, one-row and chunk-boundary datasets; atomic failure; random
access; close and reopen; a reader handed to other processes that read while this one does. Each format's
tests subclass :class:`FormatContract`; a new format adds a subclass."""

from __future__ import annotations

import multiprocessing
import pickle

import numcodecs
import numpy as np
import pytest
import zarr

from jumpnet_stream import Chunk, JumpnetError, create_dataset, open_dataset
from jumpnet_stream.formats import FORMATS, extensions, format_of
from jumpnet_stream.formats.hdf5 import H5Options
from jumpnet_stream.formats.legacy_npz import LegacyOptions
from jumpnet_stream.formats.zarr_store import ZarrDatasetWriter, ZarrOptions
from jumpnet_stream.schema import BY_NAME, FIELDS

pytestmark = pytest.mark.filterwarnings("ignore:.*the seed's hold vector suits:UserWarning")
SHAPE = (11, 13, 3)


def sample_chunk(n: int, start: int, k: int = 2, seed: int = 0) -> Chunk:
    rng = np.random.default_rng(seed + start)
    hold = rng.random((n, k), dtype=np.float32)
    hold[:1, 0] = np.nan  # NaN holds (never-released presses) must survive every format
    return Chunk({
        "image": rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8),
        "label": rng.integers(0, 2, n).astype(np.float32),
        "keys_raw": rng.integers(0, 2, (n, k)).astype(np.float32),
        "hold_duration": hold,
        "phase": np.array(["press", "release"] * n)[:n],
        "frame_index": np.arange(start, start + n, dtype=np.int64),
        "source": np.array([f"rec{start % 3}"] * n),
        "release_index": np.arange(start, start + n, dtype=np.int64) + 3,
        "split": np.array(["train", "val", "train"] * n)[:n],
        "weight": rng.random(n, dtype=np.float32) + 0.5,
        "augmented": np.arange(n) % 3 > 0,
        "copy": (np.arange(n) % 3).astype(np.int32),
    })


def _read_rows_elsewhere(reader, start: int, stop: int) -> list[int]:
    """In another process: the frame indices of rows [start, stop) through a pickled reader."""
    return reader.read(start, stop)["frame_index"].tolist()


class FormatContract:
    ext: str = ""
    layout: str | None = None
    options: object = None       # write options under which every field round-trips
    keeps_source: bool = True    # the legacy format names the file as every sample's source
    fields: tuple[str, ...] = FIELDS  # the fields the format keeps

    def path(self, tmp_path, name: str = "d"):
        return tmp_path / f"{name}{self.ext}"

    def write(self, path, chunks: list[Chunk], keys=("w", "a")) -> None:
        rows = sum(len(c) for c in chunks)
        with create_dataset(path, list(keys), image_shape=SHAPE, rows=rows, options=self.options,
                            layout=self.layout) as writer:
            for chunk in chunks:
                writer.write(chunk)
            writer.provenance = [{"stage": "test", "counts": {"rows": writer.rows}}]

    def check_equal(self, got: Chunk, want: Chunk, path) -> None:
        for name in FIELDS:
            if name == "source" and not self.keeps_source:
                assert set(got[name]) <= {path.stem}, "the legacy format names no source: its file does"
                continue
            if name not in self.fields:  # a format that keeps fewer fields reads the rest as their defaults
                np.testing.assert_array_equal(got[name], BY_NAME[name].filled(len(got), 2), err_msg=name)
                continue
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
            assert got[name].dtype.kind == want[name].dtype.kind, name

    def test_registered_and_recognised(self, tmp_path):
        path = self.path(tmp_path)
        self.write(path, [sample_chunk(3, 0)])
        fmt = format_of(str(path))
        assert fmt in FORMATS and fmt.extension == self.ext and (self.layout is None or fmt.layout == self.layout)
        assert self.ext in extensions()

    def test_round_trip_of_every_field(self, tmp_path):
        chunks = [sample_chunk(n, 1000 * i) for i, n in enumerate([5, 64, 1, 130, 70])]
        path = self.path(tmp_path)
        self.write(path, chunks)
        dataset = open_dataset(path)
        assert len(dataset) == 270 and dataset.keys == ["w", "a"] and dataset.image_shape == SHAPE
        assert dataset.provenance[0] == {"stage": "test", "counts": {"rows": 270}}
        self.check_equal(Chunk.concat(list(dataset.chunks(rows=50))), Chunk.concat(chunks), path)

    @pytest.mark.parametrize("rows", [0, 1, 63, 64, 65, 128])
    def test_sizes_at_the_chunk_boundary(self, tmp_path, rows):
        path = self.path(tmp_path)
        chunks = [sample_chunk(rows, 0)] if rows else []
        self.write(path, chunks)
        dataset = open_dataset(path)
        assert len(dataset) == rows and dataset.image_shape == SHAPE
        got = list(dataset.chunks())
        assert sum(len(c) for c in got) == rows
        if rows:
            self.check_equal(Chunk.concat(got), chunks[0], path)
            self.check_equal(dataset.read(rows - 1, rows + 5), chunks[0].take(slice(rows - 1, rows)), path)

    def test_failure_leaves_nothing(self, tmp_path):
        with pytest.raises(RuntimeError):
            with create_dataset(self.path(tmp_path), ["w"], image_shape=SHAPE, rows=100, options=self.options,
                                layout=self.layout) as writer:
                writer.write(sample_chunk(50, 0, k=1))
                raise RuntimeError("stage failed half-way")
        assert list(tmp_path.iterdir()) == []

    def test_existing_output_refused_before_work(self, tmp_path):
        path = self.path(tmp_path)
        self.write(path, [sample_chunk(3, 0)])
        with pytest.raises(JumpnetError, match="output exists"):
            self.write(path, [sample_chunk(5, 0)])
        assert len(open_dataset(path)) == 3

    def test_random_access(self, tmp_path):
        chunks = [sample_chunk(n, 100 * i) for i, n in enumerate([64, 100, 37])]
        path = self.path(tmp_path)
        self.write(path, chunks)
        every = Chunk.concat(chunks)
        dataset = open_dataset(path)
        for start, stop in [(0, 1), (63, 65), (100, 201), (200, 300)]:
            self.check_equal(dataset.read(start, stop), every.take(slice(start, min(stop, 201))), path)
        positions = np.array([0, 5, 63, 64, 130, 200])
        self.check_equal(Chunk.concat(list(dataset.take(positions))), every.take(positions), path)

    def test_close_and_reopen(self, tmp_path):
        path = self.path(tmp_path)
        chunks = [sample_chunk(70, 0)]
        self.write(path, chunks)
        with open_dataset(path) as dataset:
            first = dataset.read(0, 70)
        dataset.close()
        self.check_equal(dataset.read(0, 70), first, path)  # reopened on demand
        copy = pickle.loads(pickle.dumps(dataset))
        self.check_equal(copy.read(10, 20), chunks[0].take(slice(10, 20)), path)

    def test_reading_while_other_processes_read(self, tmp_path):
        path = self.path(tmp_path)
        chunks = [sample_chunk(64, 64 * i) for i in range(3)]
        self.write(path, chunks)
        dataset = open_dataset(path)
        dataset.read(0, 1)  # this process holds the file open
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            pending = [pool.apply_async(_read_rows_elsewhere, (dataset, s, s + 40)) for s in (0, 60, 150)]
            mine = dataset.read(100, 190)["frame_index"].tolist()
            theirs = [p.get(timeout=120) for p in pending]
        assert theirs == [list(range(s, min(s + 40, 192))) for s in (0, 60, 150)]
        assert mine == list(range(100, 190))

    def test_writer_keeps_no_reference_to_written_arrays(self, tmp_path):
        """Callers reuse chunk buffers (negatives recycles its image arrays) as soon as write() returns."""
        chunks = [sample_chunk(n, 100 * i) for i, n in enumerate([64, 10, 100, 3])]
        originals = [Chunk({k: v.copy() for k, v in c.columns.items()}) for c in chunks]
        path = self.path(tmp_path)
        with create_dataset(path, ["w", "a"], image_shape=SHAPE, rows=177, options=self.options,
                            layout=self.layout) as writer:
            for chunk in chunks:
                writer.write(chunk)
                for column in chunk.columns.values():
                    column[...] = "reused" if column.dtype.kind == "U" else 0  # the caller reuses the buffers
        self.check_equal(Chunk.concat(list(open_dataset(path).chunks())), Chunk.concat(originals), path)


class TestZarrStore(FormatContract):
    ext = ".zarr"
    options = ZarrOptions(rechunk=64)


    def test_images_read_from_chunk_files_are_zarrs(self, tmp_path):
        """The reader's own chunk-file path gives what zarr reads, for reads across and within chunks."""
        path = self.path(tmp_path)
        self.write(path, [sample_chunk(150, 0, seed=3)])
        reader, stored = open_dataset(path), zarr.open_array(str(path / "image"), mode="r")
        assert reader._direct
        for start, stop in [(0, 64), (10, 140), (63, 65), (128, 150), (0, 150), (149, 150)]:
            np.testing.assert_array_equal(reader.read(start, stop)["image"], stored[start:stop])

    @pytest.mark.parametrize("damage", ["another size", "not zstd"])
    def test_a_damaged_image_chunk_is_named(self, tmp_path, damage):
        path = self.path(tmp_path)
        self.write(path, [sample_chunk(150, 0)])
        frame = numcodecs.Zstd(1).encode(np.zeros(100, np.uint8)) if damage == "another size" else b"x" * 4000
        (path / "image" / "c.1.0.0.0").write_bytes(frame)
        reader = open_dataset(path)
        assert len(reader.read(0, 64)) == 64
        with pytest.raises(JumpnetError, match="image chunk 1 is damaged"):
            reader.read(60, 70)


class TestZarrStoreLZ4(TestZarrStore):
    """Images stored with blosc lz4 (``export --codec lz4``): the same contract and the same direct reads."""
    options = ZarrOptions(rechunk=64, codec="lz4")
    # what does not depend on the image codec is TestZarrStore's alone (the suite's time is near its limit)
    test_registered_and_recognised = test_existing_output_refused_before_work = None
    test_reading_while_other_processes_read = test_close_and_reopen = None

    def test_the_codec_is_named_in_the_store(self, tmp_path):
        path = self.path(tmp_path)
        self.write(path, [sample_chunk(70, 0)])
        assert open_dataset(path)._direct == "blosc"
        assert [c.to_dict()["name"] for c in zarr.open_array(str(path / "image"), mode="r").metadata.codecs] \
            == ["bytes", "blosc"]
        with pytest.raises(JumpnetError, match="codec must be one of zstd, lz4, not gzip"):
            ZarrOptions(codec="gzip")


class TestHDF5(FormatContract):
    ext = ".h5"
    options = H5Options()


class TestHDF5Float(FormatContract):
    ext = ".h5"
    options = H5Options(dtype="float32")


class TestLegacyNpz(FormatContract):
    """The seed's format: arbitrary hold vectors round-trip in its vector layout (the default keeps only the
    jump key's hold, which the export tests check)."""
    ext = ".npz"
    layout = "legacy"
    options = LegacyOptions(hold="vector")
    keeps_source = False
    fields = FIELDS[:6]


class TestColumnarNpz(FormatContract):
    ext = ".npz"
    layout = "columnar"


def test_unknown_extension(tmp_path):
    with pytest.raises(JumpnetError, match=r"unknown dataset format '\.parquet': use one of "):
        with create_dataset(tmp_path / "d.parquet", ["w"]):
            pass


def deflate_npz(path) -> None:
    """Rewrite a columnar .npz as ``np.savez_compressed`` would have: every member deflated."""
    with np.load(path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    path.unlink()
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


class TestColumnarNpzDeflated(FormatContract):
    """A columnar .npz another tool compressed (``np.savez_compressed``): every row can still be read, but
    only by decompressing the image member from its start, so the reader says it is not random access."""
    ext = ".npz"
    layout = "columnar"

    def write(self, path, chunks: list[Chunk], keys=("w", "a")) -> None:
        super().write(path, chunks, keys)
        deflate_npz(path)

    def test_take_reads_the_member_once(self, tmp_path):
        """Rows from ten blocks: one pass through the deflated image member, not one from its start per block
        (this process's bytes read, from /proc/self/io, stay within the file's size and a margin)."""
        chunks = [sample_chunk(64, 64 * i) for i in range(20)]
        path = self.path(tmp_path)
        self.write(path, chunks)
        dataset = open_dataset(path)
        assert not dataset.random_access
        positions = np.arange(10) * 128 + 7

        def bytes_read() -> int:
            with open("/proc/self/io") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))

        before = bytes_read()
        got = Chunk.concat(list(dataset.take(positions)))
        spent = bytes_read() - before
        self.check_equal(got, Chunk.concat(chunks).take(positions), path)
        assert spent < 1.5 * path.stat().st_size, f"{spent} bytes read for a file of {path.stat().st_size}"


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_writers_of_disjoint_ranges_write_the_one_writers_bytes(tmp_path, codec):
    """A store sized first (allocate) and filled by one writer per range of whole chunks of every field, in
    any order, holds the files one writer appending every row writes (the build's range tasks)."""
    total = 9000
    images = np.random.default_rng(0).integers(0, 256, (total, 8, 8, 3), dtype=np.uint8)

    def chunks(start: int, stop: int):
        for at in range(start, stop, 300):  # pieces that straddle the chunks' edges
            rows = np.arange(at, min(stop, at + 300))
            yield Chunk({"image": images[rows], "label": (rows % 3 == 0).astype(np.float32), "frame_index": rows})

    one = ZarrDatasetWriter(tmp_path / "one", ["w"], (8, 8, 3), codec=codec)
    for chunk in chunks(0, total):
        one.write(chunk)
    one.finish([])
    sized = ZarrDatasetWriter(tmp_path / "ranges", ["w"], (8, 8, 3), codec=codec)
    sized.allocate(total)
    starts = list(range(0, total, sized.whole_rows))
    assert sized.whole_rows == 4096 and len(starts) == 3
    for start in reversed(starts):
        writer = ZarrDatasetWriter(sized.path, ["w"], start=start)
        for chunk in chunks(start, min(total, start + sized.whole_rows)):
            writer.write(chunk)
        writer.finish_range()
    sized.finish([])
    files = [{str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}
             for store in (tmp_path / "one", tmp_path / "ranges")]
    assert len(files[0]) > 150 and files[0] == files[1]
    with pytest.raises(ValueError, match="multiple of 4096"):
        ZarrDatasetWriter(sized.path, ["w"], start=64)
