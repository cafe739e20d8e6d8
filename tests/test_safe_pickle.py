"""The restricted, streaming reader of pickled object arrays: correct, safe, and holding nothing back."""

from __future__ import annotations

import gc
import io
import os
import pickle
import weakref
import zipfile

import numpy as np
import pytest

from jumpnet_stream import JumpnetError
from jumpnet_stream.object_array import ObjectArrayReader, ObjectArrayWriter
from jumpnet_stream.recording import Recording


def _entries(n, seed=0, size=(12, 10, 3)):
    rng = np.random.default_rng(seed)
    return [(rng.random(size, dtype=np.float32), float(i) / 3, np.array([i % 2, 1], np.float32),
             np.array([0.25 * i, 0], np.float32), ("press", "release")[i % 2], i) for i in range(n)]


def _write_npz(path, array, protocol=None, keys=("w", "a")):
    """An npz as np.savez writes it, or with the object array pickled at another protocol."""
    if protocol is None:
        np.savez(path, data=array, keys=np.array(keys))
        return
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": array.shape})
    buf.write(pickle.dumps(array, protocol=protocol))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data.npy", buf.getvalue())
        keys_buf = io.BytesIO()
        np.save(keys_buf, np.array(keys))
        zf.writestr("keys.npy", keys_buf.getvalue())


def _as_1d(entries):
    array = np.empty(len(entries), dtype=object)
    for i, entry in enumerate(entries):
        array[i] = entry
    return array


def _assert_rows_equal(rows, entries):
    assert len(rows) == len(entries)
    for row, entry in zip(rows, entries):
        assert len(row) == 6
        for got, want in zip(row, entry):
            if isinstance(want, np.ndarray):
                np.testing.assert_array_equal(got, want)
                assert got.dtype == want.dtype
            else:
                assert got == want and type(got) is type(want)


@pytest.mark.parametrize("layout", ["rows", "tuples"])
@pytest.mark.parametrize("protocol", [None, 2, 3, 4, 5])
def test_streams_what_numpy_and_pickle_write(tmp_path, layout, protocol):
    entries = _entries(2345)  # more than one APPENDS batch of 1000
    array = np.array(entries, dtype=object) if layout == "rows" else _as_1d(entries)
    _write_npz(tmp_path / "r.npz", array, protocol)
    reader = ObjectArrayReader(tmp_path / "r.npz")
    assert reader.shape == array.shape
    _assert_rows_equal(list(reader.rows()), entries)
    assert reader.whole_loaded is None


@pytest.mark.parametrize("width", [6, None])
def test_our_writer_round_trips_through_numpy(tmp_path, width):
    entries = _entries(1001)
    writer = ObjectArrayWriter(tmp_path / "w.npz", width=width)
    for entry in entries:
        writer.append(entry)
    writer.close({"keys": np.array(["w"])})
    with np.load(tmp_path / "w.npz", allow_pickle=True) as z:  # our own file: numpy's loader as oracle
        data = z["data"]
        assert z["keys"].tolist() == ["w"]
    assert data.shape == ((1001, 6) if width else (1001,))
    _assert_rows_equal([tuple(r) for r in data], entries)
    _assert_rows_equal(list(ObjectArrayReader(tmp_path / "w.npz").rows()), entries)


def test_written_behind_into_the_zip_the_same_bytes_as_through_a_spool(tmp_path):
    """Rows known up front go straight into the zip, handed to the disk and dropped from the page cache a
    32 MiB block at a time (WriteBehind): the file is byte for byte the spooled one (rows not announced)."""
    image = np.linspace(0, 1, 227 * 227 * 3, dtype=np.float32).reshape(227, 227, 3)  # 604 KiB a row
    entries = [(image + i / 1e4, 1.0, np.ones(1, np.float32), np.float32(i), "press", i) for i in range(130)]
    for name, rows in (("direct.npz", len(entries)), ("spooled.npz", None)):
        writer = ObjectArrayWriter(tmp_path / name, rows=rows, spans=True)
        for entry in entries:
            writer.append(entry)
        writer.close({"keys": np.array(["w"])})
    direct = (tmp_path / "direct.npz").read_bytes()
    assert len(direct) > 2 * (32 << 20) and direct == (tmp_path / "spooled.npz").read_bytes()
    with np.load(tmp_path / "direct.npz", allow_pickle=True) as z:  # our own file: numpy's loader as oracle
        _assert_rows_equal([tuple(row) for row in z["data"]], entries)


@pytest.mark.parametrize("array", [np.arange(3 * 227 * 227, dtype=np.uint8).reshape(227, 227, 3),
                                   np.linspace(0, 1, 3 * 227 * 227, dtype=np.float32).reshape(227, 227, 3),
                                   np.linspace(0, 1, 40000, dtype=np.float64), np.arange(40000, dtype=">i4"),
                                   np.asfortranarray(np.ones((300, 300), np.float32))],
                         ids=["uint8", "float32", "float64", "big-endian", "fortran"])
def test_a_large_array_is_written_as_the_pickler_writes_it(tmp_path, array):
    writer = ObjectArrayWriter(tmp_path / "x.npz", width=None)
    writer._sink = io.BytesIO()
    writer._put_item(array)
    writer._put_item(array + 1)  # the second from the head and tail found for the first
    assert writer._sink.getvalue() == writer._pickled(array) + writer._pickled(array + 1)
    writer.discard()


def test_empty_array(tmp_path):
    writer = ObjectArrayWriter(tmp_path / "e.npz")
    writer.close({"keys": np.array(["w"])})
    assert np.load(tmp_path / "e.npz", allow_pickle=True)["data"].shape == (0, 6)
    assert list(ObjectArrayReader(tmp_path / "e.npz").rows()) == []


def test_no_reference_kept_to_handed_out_images(tmp_path):
    entries = _entries(300, size=(64, 64, 3))  # 48 KiB each
    np.savez(tmp_path / "r.npz", data=np.array(entries, dtype=object), keys=np.array(["w"]))
    del entries
    reader = ObjectArrayReader(tmp_path / "r.npz", memo_budget=1 << 20)
    alive = []
    for row in reader.rows():
        alive.append(weakref.ref(row[0]))
        del row
    gc.collect()
    still = sum(ref() is not None for ref in alive)
    assert still <= 25, f"{still} of 300 images still referenced"  # 1 MiB of memo + the lag, at most


def test_shared_image_beyond_budget_falls_back_to_whole_load(tmp_path):
    entries = _entries(400, size=(40, 40, 3))
    shared = entries[0][0]
    entries[399] = (shared, *entries[399][1:])
    np.savez(tmp_path / "r.npz", data=np.array(entries, dtype=object), keys=np.array(["w"]))
    reader = ObjectArrayReader(tmp_path / "r.npz", memo_budget=256 << 10)
    with pytest.warns(UserWarning, match="loading 'data' whole"):
        rows = list(reader.rows())
    _assert_rows_equal(rows, entries)
    assert reader.whole_loaded


def test_shared_image_within_budget_streams(tmp_path):
    entries = _entries(50)
    entries[3] = (entries[2][0], *entries[3][1:])  # same frame object for two events, as a recorder may do
    np.savez(tmp_path / "r.npz", data=np.array(entries, dtype=object), keys=np.array(["w"]))
    reader = ObjectArrayReader(tmp_path / "r.npz")
    _assert_rows_equal(list(reader.rows()), entries)
    assert reader.whole_loaded is None


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilNumpy:
    def __reduce__(self):
        return (np.load, ("/etc/passwd",))


@pytest.mark.parametrize("layout", ["rows", "tuples"])
@pytest.mark.parametrize("payload", ["os.system", "numpy.load", "builtins.eval"])
def test_hostile_pickles_run_nothing(tmp_path, layout, payload):
    marker = tmp_path / "pwned"
    entries = _entries(5)
    evil = {"os.system": _Evil(marker), "numpy.load": _EvilNumpy(),
            "builtins.eval": _EvalPayload(f"open({str(marker)!r}, 'w')")}[payload]
    entries[3] = (evil, *entries[3][1:])
    array = np.array(entries, dtype=object) if layout == "rows" else _as_1d(entries)
    np.savez(tmp_path / "evil.npz", data=array, keys=np.array(["w"]))
    recording = Recording(tmp_path / "evil.npz")
    with pytest.raises(JumpnetError, match=r"evil.npz: unsafe pickle in 'data' refused: refusing to unpickle"):
        list(recording.events())
    assert not marker.exists()


class _EvalPayload:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


def test_hostile_keys_refused(tmp_path):
    marker = tmp_path / "pwned"
    np.savez(tmp_path / "evil.npz", data=np.array(_entries(2), dtype=object),
             keys=np.array([_Evil(marker)], dtype=object))
    with pytest.raises(JumpnetError, match="unsafe pickle in 'keys' refused"):
        Recording(tmp_path / "evil.npz")
    assert not marker.exists()


def test_forbidden_opcode_refused(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    # protocol 0 INST opcode: builtins.print, would run on load
    payload = header.getvalue() + b"(ibuiltins\nprint\n(S'x'\ntR."
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as zf:
        zf.writestr("data.npy", payload)
    with pytest.raises(JumpnetError, match="unsafe pickle in 'data' refused"):
        list(ObjectArrayReader(tmp_path / "bad.npz").rows())


def test_truncated_file_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "r.npz", data=np.array(_entries(200), dtype=object), keys=np.array(["w"]))
    with zipfile.ZipFile(tmp_path / "r.npz") as zf:
        member = zf.read("data.npy")
    with zipfile.ZipFile(tmp_path / "cut.npz", "w") as zf:
        zf.writestr("data.npy", member[: len(member) // 2])
        zf.writestr("keys.npy", _npy(np.array(["w"])))
    with pytest.raises(JumpnetError, match="cut.npz: 'data' is corrupt or truncated"):
        list(Recording(tmp_path / "cut.npz").events())


def _npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


class _Crafted:
    """Stands in an entry for a hand-made (callable, args, state) triple when pickled."""

    def __init__(self, reduce_value):
        self.reduce_value = reduce_value


class _CraftingPickler(pickle.Pickler):
    def reducer_override(self, obj):
        return obj.reduce_value if isinstance(obj, _Crafted) else NotImplemented


def _write_crafted(path, crafted, compress=False):
    """A recorder-like npz whose entry 3 holds ``crafted`` as its multi_hot."""
    entries = _entries(6)
    entries[3] = (entries[3][0], 0.0, crafted, *entries[3][3:])
    array = _as_1d(entries)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": array.shape})
    _CraftingPickler(buf, protocol=3).dump(array)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        zf.writestr("data.npy", buf.getvalue())
        zf.writestr("keys.npy", _npy(np.array(["w", "a"])))


_RECONSTRUCT = np.empty(0, dtype=object).__reduce__()[0]


@pytest.mark.parametrize("name,crafted,message", [
    ("short object list", _Crafted((_RECONSTRUCT, (np.ndarray, (0,), b"b"),
                                    (1, (100000,), np.dtype("O"), False, [1.0, 2.0]))),
     "object array state does not match its shape"),
    ("short raw data", _Crafted((_RECONSTRUCT, (np.ndarray, (0,), b"b"),
                                 (1, (1000, 1000), np.dtype("f8"), False, b"\x00" * 16))),
     "data does not match its shape and dtype"),
    ("forged dtype", _Crafted((np.dtype, ("V8", False, True),
                               (3, "|", None, ("f0",), {"f0": (np.dtype("O"), 0)}, 8, 1, 0))),
     "is not a plain scalar type"),
    ("object flag cleared", _Crafted((np.dtype, ("O8", False, True), (3, "|", None, None, None, 8, 8, 0))),
     "is not a plain scalar type"),
])
def test_forged_array_and_dtype_states_refused(tmp_path, name, crafted, message):
    """numpy trusts array and dtype states: each of these would crash the process if passed on."""
    _write_crafted(tmp_path / "forged.npz", crafted)
    with pytest.raises(JumpnetError, match=f"forged.npz: unsafe pickle in 'data' refused: .*{message}"):
        list(Recording(tmp_path / "forged.npz").events())


def test_build_on_an_allowlisted_function_refused(tmp_path):
    """BUILD may only complete an array or dtype the allowlist just made, never patch a function."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    payload = b"\x80\x03cnumpy\ndtype\n(K\x01K\x02tb."  # GLOBAL numpy.dtype, (1, 2), BUILD
    with zipfile.ZipFile(tmp_path / "b.npz", "w") as zf:
        zf.writestr("data.npy", header.getvalue() + payload)
        zf.writestr("keys.npy", _npy(np.array(["w"])))
    with pytest.raises(JumpnetError, match="unsafe pickle in 'data' refused: pickle BUILD of a function"):
        list(Recording(tmp_path / "b.npz").events())


def test_unsupported_opcode_is_an_error_not_a_whole_load(tmp_path):
    _write_crafted(tmp_path / "d.npz", _Crafted((np.dtype, ("f4", False, True), {"fields": 1})))
    with pytest.raises(JumpnetError, match=r"'data' is corrupt or truncated: pickle opcode b'\}'"):
        list(Recording(tmp_path / "d.npz").events())


def test_decompression_bomb_refused_in_bounded_memory(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    head = pickle.dumps(np.empty(0, dtype=object), protocol=3).split(b"]")[0] + b"]("  # up to the element list
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("data.npy", "w", force_zip64=True) as f:
            f.write(buf.getvalue() + head)
            f.write(b"\x8e" + (1 << 30).to_bytes(8, "little"))  # a 1 GiB bytes object...
            for _ in range(64):
                f.write(bytes(1 << 24))  # ...of zeros, which deflate to almost nothing
        zf.writestr("keys.npy", _npy(np.array(["w"])))
    assert (tmp_path / "bomb.npz").stat().st_size < 4 << 20
    with pytest.raises(JumpnetError, match="over the .*-byte limit"):
        list(Recording(tmp_path / "bomb.npz").events())


def test_forged_keys_header_refused(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<U1", "fortran_order": False, "shape": (1 << 40,)})
    with zipfile.ZipFile(tmp_path / "k.npz", "w") as zf:
        zf.writestr("keys.npy", header.getvalue() + b"w\x00\x00\x00")
        zf.writestr("data.npy", b"")
    with pytest.raises(JumpnetError, match="'keys' header promises more data than the file holds"):
        Recording(tmp_path / "k.npz")


def test_lists_as_entries_of_a_1d_array(tmp_path):
    entries = [list(e) for e in _entries(7)]
    np.savez(tmp_path / "l.npz", data=_as_1d(entries), keys=np.array(["w", "a"]))
    recording = Recording(tmp_path / "l.npz")
    events = list(recording.events())
    assert sum(len(c) for c in events) == 7 and not recording.malformed


# -- issue 11: a MARK right after the element list is not always a batch of its items -----------------------
def test_one_entry_array_of_a_tuple(tmp_path):
    """Issue 11's failing seed, reduced: a one-entry keylog as a (1,) object array whose element is the
    entry's tuple. The C pickler writes a one-element list as ``item APPEND``, so the MARK after the
    element list opens the tuple, not a batch; it was taken for one and the tuple's fields handed out
    as elements ('data' holds 3 elements but its header says shape (1,))."""
    entry = (np.zeros((3, 4, 3), np.uint8), 0.5, np.ones(1, np.float32), np.zeros(1, np.float32), "press",
             np.int64(3))
    np.savez(tmp_path / "one.npz", data=_as_1d([entry]), keys=np.array(["w"]))
    rows = list(ObjectArrayReader(tmp_path / "one.npz").rows())
    _assert_rows_equal(rows, [entry])
    events = list(Recording(tmp_path / "one.npz").events())
    assert sum(len(chunk) for chunk in events) == 1


def test_python_picklers_lone_last_item(tmp_path):
    """Python's own pickler ends a list whose length is 1 past a batch with ``item APPEND``."""
    entries = [tuple(e) for e in _entries(1001, size=(2, 2, 3))]
    array = _as_1d(entries)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": array.shape})
    pickle._Pickler(buf, protocol=3).dump(array)
    with zipfile.ZipFile(tmp_path / "py.npz", "w") as zf:
        zf.writestr("data.npy", buf.getvalue())
        zf.writestr("keys.npy", _npy(np.array(["w", "a"])))
    reader = ObjectArrayReader(tmp_path / "py.npz")
    _assert_rows_equal(list(reader.rows()), entries)
    assert reader.whole_loaded is None


# -- issue 12: an object used is never changed afterwards; arrays match their buffers -------------------------
def test_handed_out_arrays_are_checked_against_their_buffer():
    """Defence in depth: were a dtype ever changed under an array, handing the array out is refused
    (nothing reads its memory: the check compares sizes)."""
    from jumpnet_stream.safe_pickle import StreamingUnpickler, UnsafePickleError

    vm = StreamingUnpickler(io.BytesIO(b""), 0)
    dtype = np.dtype("U1", copy=True)  # not numpy's shared one: this test changes it
    array = np.ndarray((0,), np.int8)
    array.__setstate__((1, (), dtype, False, b"w\0\0\0"))
    vm._note_array(array)
    assert vm._check_item(("x", [array])) > 4
    dtype.__setstate__((3, "<", None, None, None, 400_000_000, 4, 8))  # what a late BUILD did
    assert array.nbytes == 400_000_000
    with pytest.raises(UnsafePickleError, match="claims 400000000 bytes over a 4-byte buffer"):
        vm._check_item(("x", [array]))
    with pytest.raises(UnsafePickleError, match="an array this reader did not build"):
        vm._check_item(np.zeros(3))
