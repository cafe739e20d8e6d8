"""Crafted hostile and absurd inputs, one generator per idea, and the command line run under a memory cap.

Every generator takes a folder, writes real files into it (never a mock) and returns the path to give the
command. The registries at the end (:data:`CASES`) name, per generator, the command that reads it and a
fragment of the one-line refusal expected; ``tests/test_hostile.py`` runs them all through the real command
line, and ``python tests/hostile.py`` prints the table of refusals and their peak memory for the README.
The next hostile idea is one function and one registry line away.

Memory cap (measured on this project's 2-core machine, Linux 6.18): ``RLIMIT_AS`` at 400 MB kills numba's
import with a MemoryError (LLVM reserves large virtual areas), so it is not used. ``RLIMIT_DATA`` (private
writable memory, mmap included, since Linux 4.7) lets ``augment`` (numba) run at 400 MB, and turns an
allocation of gigabytes (``np.ones`` of 763 MiB under 400 MB) into an immediate failure instead of
swapping; it is set at :data:`DATA_LIMIT_MB`. On top of it a watcher polls the child's resident memory in ``/proc`` every 10 ms
and kills it above :data:`RSS_KILL_MB`. The peak is the child's own ``ru_maxrss`` (``os.wait4``), exact
whatever the polling saw, and the child is forked from a small launcher (``tools/measure.py``): forked
from pytest, it would start with pytest's own resident memory, which Linux counts in the child's peak.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.measure import run_measured  # noqa: E402

from jumpnet_stream import SAMPLE_FIELDS  # noqa: E402

DATA_LIMIT_MB = 1024   # RLIMIT_DATA of every run: a runaway allocation fails at once
RSS_KILL_MB = 400      # the watcher kills a child whose resident memory passes this
PROMISE_MB = 300       # what every refusal must stay under (issue 12)
ERROR = "jumpnet-stream: error: "


# -- pickle opcodes, assembled by hand ----------------------------------------------------------------
def p_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def p_int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    return b"J" + struct.pack("<i", n)


def p_str(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def p_float(x: float) -> bytes:
    return b"G" + struct.pack(">d", x)


def p_put(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)


def p_get(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)


MARK, TUPLE, TUPLE1, TUPLE3, REDUCE, BUILD, POP, APPEND, APPENDS, EMPTY_LIST, EMPTY_TUPLE, NONE, FALSE, TRUE = (
    b"(", b"t", b"\x85", b"\x87", b"R", b"b", b"0", b"a", b"e", b"]", b")", b"N", b"\x89", b"\x88")
RECONSTRUCT = p_global("numpy.core.multiarray", "_reconstruct")


def p_object(obj: object) -> bytes:
    """``obj`` pickled (protocol 3) without a memo, PROTO and STOP: a fragment that stands alone."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=3)
    pickler.fast = True
    pickler.dump(obj)
    return buf.getvalue()[2:-1]


def p_dtype(spec: str, state: tuple | None = None) -> bytes:
    """``numpy.dtype(spec)`` reduced, then BUILT with ``state`` (none: left awaiting its state)."""
    made = p_global("numpy", "dtype") + p_str(spec) + FALSE + TRUE + TUPLE3 + REDUCE
    return made if state is None else made + p_object(state) + BUILD


def p_array(shape: tuple[int, ...], dtype: bytes, data: bytes) -> bytes:
    """numpy's array pickle: ``_reconstruct(ndarray, (0,), b'b')`` BUILT with (1, shape, dtype, False, data);
    ``dtype`` is the dtype's own fragment (a :func:`p_dtype` or a memo fetch)."""
    return (RECONSTRUCT + p_global("numpy", "ndarray") + p_int(0) + TUPLE1 + b"C\x01b" + TUPLE3 + REDUCE
            + MARK + p_int(1) + p_object(tuple(shape)) + dtype + FALSE + data + TUPLE + BUILD)


def object_array_frame(count: int) -> tuple[bytes, bytes]:
    """The pickle of a (count,) object array, as numpy writes it, before and after its elements: the head
    ends with the element list and the MARK of its one batch, the tail starts with that batch's APPENDS."""
    head = (b"\x80\x03" + RECONSTRUCT + p_global("numpy", "ndarray") + p_int(0) + TUPLE1 + b"C\x01b" + TUPLE3
            + REDUCE + MARK + p_int(1) + p_object((count,)) + p_object(np.dtype("O")) + FALSE + EMPTY_LIST + MARK)
    return head, APPENDS + TUPLE + BUILD + b"."


def object_array_pickle(items: bytes, count: int) -> bytes:
    """The pickle of a (count,) object array whose elements are the fragment ``items``."""
    head, tail = object_array_frame(count)
    return head + items + tail


def npy_header(shape: tuple[int, ...], descr: str = "|O") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_npz(path: Path, members: dict[str, bytes | Callable[[io.BufferedWriter], None]],
              deflate: bool = False) -> Path:
    """A zip of ``NAME.npy`` members: bytes, or a function that streams them into the member."""
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method, compresslevel=1, allowZip64=True) as zf:
        for name, content in members.items():
            if callable(content):
                with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                    content(f)
            else:
                zf.writestr(f"{name}.npy", content)
    return path


def keylog_with_items(path: Path, items: bytes, count: int, keys=("w",), deflate: bool = False) -> Path:
    """A recorder keylog whose ``data`` is an object array of ``count`` elements given as a pickle fragment."""
    return write_npz(path, {"data": npy_header((count,)) + object_array_pickle(items, count),
                            "keys": npy(np.array(keys))}, deflate)


IMAGE = np.zeros((4, 4, 3), np.float32)


def good_entry(frame: int = 0, phase: bytes | None = None, image: bytes | None = None) -> bytes:
    """One valid press event (one key), as a pickle fragment; ``phase``/``image`` replace those fields."""
    return (MARK + (image or p_object(IMAGE)) + p_float(0.0) + p_object(np.ones(1, np.float32))
            + p_object(np.zeros(1, np.float32)) + (phase or p_str("press")) + p_int(frame) + TUPLE)


# -- pickles: crashes --------------------------------------------------------------------------------
def dtype_mutated_after_use(folder: Path) -> Path:
    """A 0-d ``<U1`` array is built with a dtype that was reduced but not yet BUILT; BUILD then gives that
    dtype the state of ``<U100000000``, so the array claims 400 MB over its 4-byte buffer: reading it
    over-reads the heap (SIGSEGV on numpy's own loader too). Every callable is allowlisted."""
    dtype = p_dtype("U1") + p_put(0) + POP               # reduced, memoized, awaiting its state
    array = p_array((), p_get(0), b"C\x04w\x00\x00\x00")  # used by an array
    mutate = p_get(0) + p_object((3, "<", None, None, None, 400_000_000, 4, 8)) + BUILD + POP
    entry = MARK + p_object(IMAGE) + p_float(0.0) + p_object(np.ones(1, np.float32)) \
        + p_object(np.zeros(1, np.float32)) + dtype + array + mutate + p_int(0) + TUPLE
    return keylog_with_items(folder / "mutated_dtype.npz", entry, 1)


def dtype_built_twice(folder: Path) -> Path:
    """A dtype built (``<U1``), used by an array, fetched from the memo and BUILT a second time with the
    state of ``<U100000000``: the same crash by a second state instead of a late first one."""
    dtype = p_dtype("U1", (3, "<", None, None, None, 4, 4, 8)) + p_put(0) + POP
    array = p_array((), p_get(0), b"C\x04w\x00\x00\x00")
    mutate = p_get(0) + p_object((3, "<", None, None, None, 400_000_000, 4, 8)) + BUILD + POP
    return keylog_with_items(folder / "dtype_built_twice.npz", good_entry(phase=dtype + array + mutate), 1)


def dtype_mutated_after_frombuffer(folder: Path) -> Path:
    """The late BUILD again, through ``numpy.core.numeric._frombuffer`` (protocol-5 arrays): a view over 4
    bytes is made with the dtype awaiting its state, which BUILD then makes ``<U100000000``."""
    dtype = p_dtype("U1") + p_put(0) + POP
    array = (p_global("numpy.core.numeric", "_frombuffer") + MARK + b"C\x04w\x00\x00\x00" + p_get(0)
             + EMPTY_TUPLE + p_str("C") + TUPLE + REDUCE)
    mutate = p_get(0) + p_object((3, "<", None, None, None, 400_000_000, 4, 8)) + BUILD + POP
    return keylog_with_items(folder / "dtype_frombuffer.npz", good_entry(phase=dtype + array + mutate), 1)


def binget_never_defined(folder: Path) -> Path:
    """A back-reference (BINGET) to a memo index no PUT ever defined: a corrupt file, not a reference
    to something dropped to bound memory."""
    return keylog_with_items(folder / "binget.npz", good_entry(phase=p_get(7)), 1)


# -- pickles: memory bombs (a few KB on disk, deflated) -----------------------------------------------
def _repeat(chunk: bytes, times: int) -> Callable[[io.BufferedWriter], None]:
    def write(f) -> None:
        block = chunk * max(1, (1 << 20) // len(chunk))
        per_block = len(block) // len(chunk)
        done = 0
        while done + per_block <= times:
            f.write(block)
            done += per_block
        f.write(chunk * (times - done))
    return write


def _streamed_keylog(path: Path, head: bytes, body: Callable, tail: bytes, count: int = 1) -> Path:
    """A deflated keylog whose ``data`` pickle is ``head``, then what ``body`` streams, then ``tail``,
    inside the single batch of the element list."""
    before, after = object_array_frame(count)

    def data(f) -> None:
        f.write(npy_header((count,)) + before + head)
        body(f)
        f.write(tail + after)
    return write_npz(path, {"data": data, "keys": npy(np.array(["w"]))}, deflate=True)


def nested_marks(folder: Path) -> Path:
    """Twenty million MARKs: each opens a level (a new list) that is never closed."""
    return _streamed_keylog(folder / "marks.npz", b"", _repeat(MARK, 20_000_000), b"")


def list_flood(folder: Path) -> Path:
    """Twenty million empty lists pushed onto one level of the stack, inside an entry's tuple."""
    return _streamed_keylog(folder / "lists.npz", MARK, _repeat(EMPTY_LIST, 20_000_000), TUPLE)


def deep_list_chain(folder: Path) -> Path:
    """Lists nested 150,000 deep with a stack that never grows: each list is appended into the one
    before it, fetched back from the memo, and the first one is fetched at the end (a whole load)."""
    def chain(f) -> None:
        for i in range(150_000 // 10_000):
            f.write(b"".join(p_get(i * 10_000 + j) + EMPTY_LIST + b"\x94" + APPEND + POP for j in range(10_000)))
    return _streamed_keylog(folder / "chain.npz", EMPTY_LIST + b"\x94" + POP, chain, p_get(0))


def list_growth(folder: Path) -> Path:
    """One list inside an entry grown to a hundred million Nones, a thousand at a time (APPENDS)."""
    batch = MARK + NONE * 1000 + APPENDS
    return _streamed_keylog(folder / "growth.npz", MARK + EMPTY_LIST, _repeat(batch, 100_000), TUPLE)


def memo_flood(folder: Path) -> Path:
    """600,000 memo entries (``None``, MEMOIZE, POP) and no element: the memo's own bookkeeping as the
    bomb (250 bytes an entry), held until something is handed out."""
    return _streamed_keylog(folder / "memo.npz", b"", _repeat(NONE + b"\x94" + POP, 600_000), b"")


def more_elements_than_declared(folder: Path) -> Path:
    """A header (and array state) of two elements, then fifty million of them: handed out one by one,
    each counted as malformed, for minutes."""
    return _streamed_keylog(folder / "overflow.npz", b"", _repeat(NONE, 50_000_000), b"", count=2)


def _big_bytes(size: int, opcode: bytes = b"\x8e") -> Callable[[io.BufferedWriter], None]:
    def write(f) -> None:
        f.write(opcode + size.to_bytes(8, "little"))
        _repeat(b"\x00", size)(f)
    return write


def big_object_declared(folder: Path) -> Path:
    """An entry of two 200 MiB bytes objects (each under the old 256 MiB limit), zeros that deflate to
    nothing: a small file declaring 400 MiB."""
    def body(f) -> None:
        for _ in range(2):
            _big_bytes(200 << 20)(f)
    return _streamed_keylog(folder / "bigobj.npz", MARK, body, TUPLE)


def big_text_declared(folder: Path) -> Path:
    """A 200 MiB UTF-8 text ending in one astral character: Python stores the whole str at 4 bytes a
    character (800 MiB)."""
    size = 200 << 20

    def body(f) -> None:
        f.write(b"\x8d" + size.to_bytes(8, "little"))
        _repeat(b"a", size - 4)(f)
        f.write("\U0001f600".encode())
    return _streamed_keylog(folder / "bigtext.npz", MARK, body, TUPLE)


def many_objects_in_one_entry(folder: Path) -> Path:
    """Each object under the per-object cap, sixteen of them (23 MiB each) in one entry: 368 MiB at once."""
    def body(f) -> None:
        for _ in range(16):
            _big_bytes(23 << 20)(f)
    return _streamed_keylog(folder / "manyobj.npz", MARK, body, TUPLE)


def _image_entries(path: Path, shape: tuple[int, ...], dtype: str, count: int) -> Path:
    """``count`` events whose image is an array of ``shape`` and ``dtype`` (zeros, deflated)."""
    head, nbytes, rest = _image_entry(shape, dtype)

    def body(f) -> None:
        for _ in range(count):
            f.write(head)
            _big_bytes(nbytes)(f)
            f.write(rest)
    return _streamed_keylog(path, b"", body, b"", count=count)


def image_bomb_float(folder: Path) -> Path:
    """An event with a 4096x4096 RGB float32 image (192 MiB, under the old 256 MiB object limit)."""
    return _image_entries(folder / "image_f32.npz", (4096, 4096, 3), "<f4", 1)


def image_bomb_uint8(folder: Path) -> Path:
    """Six events with 4096x4096 RGB uint8 images (48 MiB each): each passes every per-object check of
    old, and the file is read to the end (exit 0) while the chunk being built grows by 48 MiB per event."""
    return _image_entries(folder / "image_u8.npz", (4096, 4096, 3), "|u1", 6)


def _image_entry(shape: tuple[int, ...], dtype: str) -> tuple[bytes, int, bytes]:
    """An event whose image is an array of ``shape`` and ``dtype``: the pickle before its data, the data's
    size, the pickle after it (the data, zeros, is streamed by the caller)."""
    head = (MARK + RECONSTRUCT + p_global("numpy", "ndarray") + p_int(0) + TUPLE1 + b"C\x01b" + TUPLE3
            + REDUCE + MARK + p_int(1) + p_object(tuple(shape)) + p_object(np.dtype(dtype)) + FALSE)
    rest = (TUPLE + BUILD + p_float(0.0) + p_object(np.ones(1, np.float32)) + p_object(np.zeros(1, np.float32))
            + p_str("press") + p_int(0) + TUPLE)
    return head, int(np.prod(shape)) * np.dtype(dtype).itemsize, rest


def legal_images_then_payload(folder: Path) -> Path:
    """40 events with 1920x1080 float32 captures (23.7 MiB each, within every cap), then a payload
    (``os.system``): the file is refused, but only after the chunk being built holds 40 images converted
    to uint8 (6 MB each; recording.ImageBatcher fills 64 rows whatever their size: 548 MB with 63)."""
    head, nbytes, rest = _image_entry((1080, 1920, 3), "<f4")
    payload = MARK + p_global("os", "system") + p_str("true") + TUPLE1 + REDUCE + TUPLE

    def body(f) -> None:
        for _ in range(40):
            f.write(head)
            _big_bytes(nbytes)(f)
            f.write(rest)
        f.write(payload)
    return _streamed_keylog(folder / "legal_then_payload.npz", b"", body, b"", count=41)


def fortran_whole_load_bomb(folder: Path) -> Path:
    """A Fortran-ordered (N, 6) keylog, which is loaded whole, of twelve 24 MiB images of zeros: 1 MB on
    disk, 290 MB when loaded (a bomb of any size up to half the machine's memory, before)."""
    head, nbytes, rest = _image_entry((1080, 1920, 3), "<f4")
    head, rest = head[len(MARK):], rest[:-len(TUPLE)]  # the six fields are elements of a 2-D array
    before, after = object_array_frame(12 * 6)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": True, "shape": (12, 6)})

    def data(f) -> None:
        f.write(header.getvalue() + before)
        for _ in range(12):
            f.write(head)
            _big_bytes(nbytes)(f)
            f.write(rest)
        f.write(after)
    return write_npz(folder / "fortran_bomb.npz", {"data": data, "keys": npy(np.array(["w"]))}, deflate=True)


def image_bomb_wide(folder: Path) -> Path:
    """One 1x30000000 RGB uint8 'image' (86 MiB): absurd in shape, under any per-object limit of old."""
    return _image_entries(folder / "image_wide.npz", (1, 30_000_000, 3), "|u1", 1)


# -- running the command line under a memory cap -------------------------------------------------------
def run_capped(*args: object, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m jumpnet_stream ARGS`` under :data:`DATA_LIMIT_MB` of ``RLIMIT_DATA``, killed by the
    watcher above :data:`RSS_KILL_MB` resident (or after ``timeout`` s). The result also carries
    ``peak_mb`` (the child's own peak resident memory) and ``killed`` (what the watcher did, or None)."""
    return run_measured([sys.executable, "-m", "jumpnet_stream", *map(str, args)], env,
                        data_limit_mb=DATA_LIMIT_MB, kill_above_mb=RSS_KILL_MB, timeout=timeout)


def zip_of_many_members(folder: Path, members: int = 300_000) -> Path:
    """A zip of 300,000 empty members and nothing a keylog holds: Python's zipfile alone would take 180 MB
    and 5 s to open it, and the "it has: ..." list of names made a 2.6 MB "one line". Written as raw zip
    records (zipfile takes 15 s to write so many)."""
    local, central, offset = [], [], 0
    for i in range(members):
        name = f"m{i}.npy".encode()
        header = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
        central.append(struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0,
                                   0, 0, 0, offset) + name)
        local.append(header)
        offset += len(header)
    directory = b"".join(central)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(directory), offset, 0)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, offset + len(directory), 1)
    end64 = struct.pack("<4sQ2H2I4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, members, members, len(directory), offset)
    path = folder / "many_members.npz"
    path.write_bytes(b"".join(local) + directory + end64 + locator + end)
    return path


def zip_of_some_members(folder: Path) -> Path:
    """A zip of 1,000 members (within what is opened) none of which is a keylog's: the refusal lists ten."""
    return write_npz(folder / "some_members.npz", {f"m{i}": b"" for i in range(1000)})


# -- datasets: .zarr stores, .h5 files, columnar .npz ----------------------------------------------------
ROWS = 3


def _samples(rows: int = ROWS, keys: int = 1, size: tuple[int, int] = (4, 4)) -> dict[str, np.ndarray]:
    """Valid sample columns, as every format stores them."""
    return {"image": np.full((rows, *size, 3), 7, np.uint8), "label": np.ones(rows, np.float32),
            "keys_raw": np.ones((rows, keys), np.float32), "hold_duration": np.full((rows, keys), 0.25, np.float32),
            "phase": np.array(["press"] * rows), "frame_index": np.arange(rows, dtype=np.int64),
            "source": np.array(["crafted"] * rows)}


def _store(folder: Path, name: str, keys=("w",)) -> Path:
    """A valid store of three samples, written by this tool's own writer."""
    from jumpnet_stream.chunk import Chunk
    from jumpnet_stream.formats.zarr_store import ZarrDatasetWriter

    path = folder / name
    writer = ZarrDatasetWriter(path, list(keys))
    writer.write(Chunk(_samples(keys=len(keys))))
    writer.finish([])
    return path


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _store_attrs(folder: Path, name: str, **attrs) -> Path:
    path = _store(folder, name)
    _edit_json(path / "zarr.json", lambda meta: meta["attributes"].update(attrs))
    return path


def store_keys_none(folder: Path) -> Path:
    """A store whose ``keys`` attribute is null."""
    return _store_attrs(folder, "keys_none.zarr", keys=None)


def store_keys_ints(folder: Path) -> Path:
    """A store whose ``keys`` attribute is a list of numbers."""
    return _store_attrs(folder, "keys_ints.zarr", keys=[1])


def store_keys_dict(folder: Path) -> Path:
    """A store whose ``keys`` attribute is a mapping."""
    return _store_attrs(folder, "keys_dict.zarr", keys={"w": 0})


def store_keys_not_text(folder: Path) -> Path:
    """A store whose key is a lone surrogate (valid JSON, ``"\\udc80"``, but not text any output can hold)."""
    return _store_attrs(folder, "keys_surrogate.zarr", keys=["\udc80"])


def store_duplicate_keys(folder: Path) -> Path:
    """A two-key store whose key list names one key twice."""
    path = _store(folder, "dup_keys.zarr", keys=("w", "a"))
    _edit_json(path / "zarr.json", lambda meta: meta["attributes"].update(keys=["w", "w"]))
    return path


def store_more_keys_than_columns(folder: Path) -> Path:
    """A one-key store (vectors of one column) whose key list names three keys."""
    return _store_attrs(folder, "more_keys.zarr", keys=["w", "a", "d"])


def _resize(path: Path, field: str, shape: list[int], chunks: list[int] | None = None,
            dtype: str | None = None) -> None:
    def change(meta: dict) -> None:
        meta["shape"] = shape
        if chunks is not None:
            meta["chunk_grid"]["configuration"]["chunk_shape"] = chunks
        if dtype is not None:
            meta["data_type"] = dtype
    _edit_json(path / field / "zarr.json", change)


def store_label_short(folder: Path) -> Path:
    """A store whose ``label`` has one row fewer than ``image``: a row silently dropped, if read."""
    path = _store(folder, "label_short.zarr")
    _resize(path, "label", [ROWS - 1])
    return path


def store_float64_image(folder: Path) -> Path:
    """A store whose images are float64."""
    path = _store(folder, "float64.zarr")
    _resize(path, "image", [ROWS, 4, 4, 3], dtype="float64")
    return path


def store_2d_image(folder: Path) -> Path:
    """A store whose 'images' are rows of numbers (N, 4)."""
    path = _store(folder, "image_2d.zarr")
    _resize(path, "image", [ROWS, 4], chunks=[64, 4])
    return path


def store_huge_image(folder: Path) -> Path:
    """A store whose metadata claims 30000x30000 images, one per chunk."""
    path = _store(folder, "huge_image.zarr")
    _resize(path, "image", [ROWS, 30000, 30000, 3], chunks=[1, 30000, 30000, 3])
    return path


def _all_rows(path: Path, rows: int) -> None:
    for field in SAMPLE_FIELDS:
        meta = json.loads((path / field / "zarr.json").read_text())
        _resize(path, field, [rows, *meta["shape"][1:]])


def store_billion_rows(folder: Path) -> Path:
    """A store whose every field claims 10**9 rows (over three stored samples)."""
    path = _store(folder, "rows_1e9.zarr")
    _all_rows(path, 10 ** 9)
    return path


def store_trillion_rows(folder: Path) -> Path:
    """A store whose every field claims 10**12 rows."""
    path = _store(folder, "rows_1e12.zarr")
    _all_rows(path, 10 ** 12)
    return path


def store_chunk_bomb(folder: Path) -> Path:
    """A store of 64 rows of 2000x2000 images (each within the image cap) in one chunk of 768 MB."""
    path = _store(folder, "chunk_bomb.zarr")
    _all_rows(path, 64)
    _resize(path, "image", [64, 2000, 2000, 3], chunks=[64, 2000, 2000, 3])
    return path


def store_label_chunk_bomb(folder: Path) -> Path:
    """A store whose ``label`` is stored in chunks of 10**9 rows: reading row 0 decompresses 4 GB."""
    path = _store(folder, "label_chunks.zarr")
    _resize(path, "label", [ROWS], chunks=[10 ** 9])
    return path


def _h5_dtype(column: np.ndarray) -> object:
    return h5py.string_dtype("utf-8") if column.dtype.kind == "U" else column.dtype


def _h5(path: Path, columns: dict | None = None, keys=("w",), create: dict | None = None) -> Path:
    """An .h5 dataset as this tool writes it (fields as datasets, lzf, keys and provenance as attributes);
    ``columns`` replaces fields' data, ``create`` gives a field's create_dataset options instead of ours."""
    data, create = {**_samples(keys=len(keys)), **(columns or {})}, create or {}
    with h5py.File(path, "w") as f:
        for name, values in data.items():
            if name in create:
                f.create_dataset(name, **create[name])
                continue
            f.create_dataset(name, data=values.astype(object) if values.dtype.kind == "U" else values,
                             dtype=_h5_dtype(values), chunks=(64, *values.shape[1:]), compression="lzf",
                             maxshape=(None, *values.shape[1:]))
        f.attrs["keys"] = list(keys)
        f.attrs["provenance"] = "[]"
    return path


SECRET = b"the contents of another file on this machine\n"


def h5_external_storage(folder: Path) -> Path:
    """An .h5 whose ``image`` keeps its bytes in an external file (HDF5 external storage): another local file
    (here ``secret.txt``), which ``export`` copied into the output's pixels."""
    secret = folder / "secret.txt"
    secret.write_bytes(SECRET * 100)
    nbytes = ROWS * 4 * 4 * 3
    return _h5(folder / "external.h5", create={"image": dict(shape=(ROWS, 4, 4, 3), dtype="u1",
                                                              external=[(str(secret), 0, nbytes)])})


def h5_virtual_dataset(folder: Path) -> Path:
    """An .h5 whose ``image`` is a virtual dataset mapping another file's data."""
    other = _h5(folder / "other.h5")
    path = _h5(folder / "virtual.h5")
    layout = h5py.VirtualLayout(shape=(ROWS, 4, 4, 3), dtype="u1")
    layout[:] = h5py.VirtualSource(str(other), "image", shape=(ROWS, 4, 4, 3))
    with h5py.File(path, "a") as f:
        del f["image"]
        f.create_virtual_dataset("image", layout)
    return path


def h5_external_link(folder: Path) -> Path:
    """An .h5 whose ``image`` is an external link into another file."""
    other = _h5(folder / "linked.h5")
    path = _h5(folder / "extlink.h5")
    with h5py.File(path, "a") as f:
        del f["image"]
        f["image"] = h5py.ExternalLink(str(other), "/image")
    return path


def h5_soft_link(folder: Path) -> Path:
    """An .h5 whose ``image`` is a soft link to another dataset of the file."""
    path = _h5(folder / "softlink.h5")
    with h5py.File(path, "a") as f:
        f.move("image", "elsewhere")
        f["image"] = h5py.SoftLink("/elsewhere")
    return path


def h5_unknown_filter(folder: Path) -> Path:
    """An .h5 whose ``frame_index`` passes through the scale-offset filter: not a compression."""
    return _h5(folder / "scaleoffset.h5", create={"frame_index": dict(
        data=np.arange(ROWS, dtype=np.int64), chunks=(64,), maxshape=(None,), scaleoffset=0)})


def h5_huge_image(folder: Path) -> Path:
    """An .h5 whose ``image`` claims 30000x30000 images (nothing stored)."""
    return _h5(folder / "huge_image.h5", create={"image": dict(shape=(ROWS, 30000, 30000, 3), dtype="u1",
                                                                chunks=(1, 1000, 1000, 3), compression="lzf")})


def h5_billion_rows(folder: Path) -> Path:
    """An .h5 whose every field claims 10**9 rows (chunked, nothing stored)."""
    create = {name: dict(shape=(10 ** 9, *c.shape[1:]), chunks=(64, *c.shape[1:]), compression="lzf",
                         dtype=_h5_dtype(c)) for name, c in _samples().items()}
    return _h5(folder / "rows_1e9.h5", create=create)


def h5_chunk_bomb(folder: Path) -> Path:
    """An .h5 of 64 rows of 2000x2000 images (each within the image cap) in one chunk of 768 MB."""
    create = {name: dict(data=c.astype(object) if c.dtype.kind == "U" else c, dtype=_h5_dtype(c))
              for name, c in _samples(rows=64).items()}
    create["image"] = dict(shape=(64, 2000, 2000, 3), dtype="u1", chunks=(64, 2000, 2000, 3), compression="lzf")
    return _h5(folder / "chunk_bomb.h5", create=create)


def h5_label_short(folder: Path) -> Path:
    """An .h5 whose ``label`` has one row fewer than ``image``."""
    return _h5(folder / "label_short.h5", columns={"label": np.ones(ROWS - 1, np.float32)})


def h5_float64_image(folder: Path) -> Path:
    """An .h5 of float64 images (float32 ones are allowed)."""
    return _h5(folder / "float64.h5", columns={"image": np.zeros((ROWS, 4, 4, 3), np.float64)})


def h5_duplicate_keys(folder: Path) -> Path:
    """A two-key .h5 whose key list names one key twice."""
    return _h5(folder / "dup_keys.h5", columns=_samples(keys=2), keys=("w", "w"))


# -- columnar .npz --------------------------------------------------------------------------------------
def _columnar(path: Path, columns: dict | None = None, raw: dict | None = None, keys=("w",)) -> Path:
    """A columnar .npz (plain arrays, one per field); ``raw`` gives members' bytes instead."""
    data = {**_samples(keys=len(keys)), **(columns or {})}
    members = {name: npy(values) for name, values in data.items()}
    members.update(keys=npy(np.array(keys)), provenance=npy(np.array("[]")), **(raw or {}))
    return write_npz(path, members)


def columnar_billion_rows(folder: Path) -> Path:
    """A columnar .npz whose ``image`` header claims 10**9 rows over three."""
    return _columnar(folder / "col_rows.npz", raw={"image": npy_header((10 ** 9, 4, 4, 3), "|u1") + bytes(144)})


def columnar_huge_image(folder: Path) -> Path:
    """A columnar .npz whose ``image`` header claims 30000x30000 images."""
    return _columnar(folder / "col_huge.npz", raw={"image": npy_header((ROWS, 30000, 30000, 3), "|u1")})


def columnar_label_short(folder: Path) -> Path:
    """A columnar .npz whose ``label`` has one row fewer than ``image``: today the last row is dropped."""
    return _columnar(folder / "col_label_short.npz", columns={"label": np.ones(ROWS - 1, np.float32)})


def columnar_float64_image(folder: Path) -> Path:
    """A columnar .npz of float64 images."""
    return _columnar(folder / "col_f64.npz", columns={"image": np.zeros((ROWS, 4, 4, 3), np.float64)})


def columnar_small_field_bomb(folder: Path) -> Path:
    """A columnar .npz whose images are tiny (1x1) and whose ``source`` is 250 MB of text (deflated to
    almost nothing), all of it kept in memory on open."""
    rows = 2_000_000
    source = npy_header((rows,), "<U32")

    def write_source(f) -> None:
        f.write(source)
        _repeat(b"\x00", rows * 128)(f)

    def write_image(f) -> None:
        f.write(npy_header((rows, 1, 1, 3), "|u1"))
        _repeat(b"\x00", rows * 3)(f)

    columns = {"label": np.zeros(rows, np.float32), "keys_raw": np.zeros((rows, 1), np.float32),
               "hold_duration": np.zeros((rows, 1), np.float32), "phase": np.full(rows, "press"),
               "frame_index": np.zeros(rows, np.int64)}
    members = {"image": write_image, **{name: npy(values) for name, values in columns.items()},
               "source": write_source, "keys": npy(np.array(["w"])), "provenance": npy(np.array("[]"))}
    return write_npz(folder / "col_small_bomb.npz", members, deflate=True)


# -- keylogs: keys that are not text ---------------------------------------------------------------------
def keylog_keys_not_text(folder: Path) -> Path:
    """A keylog whose one key name is a lone surrogate (a ``<U1`` array holds the code point; no output can)."""
    return keylog_with_items(folder / "keys_surrogate.npz", good_entry(), 1, keys=("\udc80",))


def keylog_old_keys_not_text(folder: Path) -> Path:
    """The same in the recorder's old ``keys`` layout: a (1, K) object array of str, pickled."""
    keys = io.BytesIO()
    np.save(keys, np.array([["\udc80"]], dtype=object), allow_pickle=True)  # writing our own file
    data = npy_header((1,)) + object_array_pickle(good_entry(), 1)
    return write_npz(folder / "old_keys_surrogate.npz", {"data": data, "keys": keys.getvalue()})


# -- the registry: every crafted input, the command that reads it, and what its refusal says ----------------
@dataclass(frozen=True)
class Case:
    kind: str                       # its row in the table: "pickle: ...", "zip", "keylog: ..." are keylogs, others datasets
    make: Callable[[Path], Path]    # the generator
    expect: str                     # a fragment of the one-line refusal

    @property
    def name(self) -> str:
        return self.make.__name__

    @property
    def command(self) -> str:
        """``preprocess`` reads a keylog, ``export`` a dataset."""
        return "preprocess" if self.kind.startswith(("pickle", "zip", "keylog")) else "export"

    def args(self, path: Path, out: Path) -> list[object]:
        return [self.command, path, "-o", out]

    def output(self, folder: Path) -> Path:
        return folder / f"{self.name}-out.{'zarr' if self.command == 'preprocess' else 'npz'}"


UNSAFE, CORRUPT = "unsafe pickle in 'data' refused", "'data' is corrupt or truncated"
CASES = [
    Case("pickle: crash", dtype_mutated_after_use, f"{UNSAFE}: pickle uses a numpy dtype before its state is set"),
    Case("pickle: crash", dtype_mutated_after_frombuffer, f"{UNSAFE}: pickle uses a numpy dtype before its state"),
    Case("pickle: crash", dtype_built_twice, f"{UNSAFE}: pickle BUILD of a"),
    Case("pickle: corrupt", binget_never_defined, f"{CORRUPT}: back-reference to memo entry 7, which the pickle "
                                                  "never defined"),
    Case("pickle: memory bomb", nested_marks, f"{UNSAFE}: pickle nests MARKs more than 64 deep"),
    Case("pickle: memory bomb", list_flood, f"{UNSAFE}: pickle puts more than 262144 values on its stack"),
    Case("pickle: memory bomb", deep_list_chain, f"{UNSAFE}: pickle holds more than"),
    Case("pickle: memory bomb", list_growth, f"{UNSAFE}: pickle makes an object of more than 1048576 elements"),
    Case("pickle: memory bomb", memo_flood, "'data' holds 0 elements but its header says shape (1,)"),
    Case("pickle: memory bomb", more_elements_than_declared, f"{CORRUPT}: the pickle holds more than the 2 elements"),
    Case("pickle: memory bomb", big_object_declared, f"{UNSAFE}: a 209715200-byte object is over the"),
    Case("pickle: memory bomb", big_text_declared, f"{UNSAFE}: a 209715200-byte object is over the"),
    Case("pickle: memory bomb", fortran_whole_load_bomb, "'data' cannot be streamed (Fortran-ordered 2-D array), "
                                                         "and loading it whole would expand 1 MB on disk to 284 MB"),
    Case("pickle: memory bomb", many_objects_in_one_entry, f"{UNSAFE}: pickle holds more than 96 MB at once"),
    Case("pickle: image bomb", image_bomb_float, f"{UNSAFE}: a 201326592-byte object is over the 25165824-byte"),
    Case("pickle: image bomb", image_bomb_uint8, f"{UNSAFE}: a 50331648-byte object is over the 25165824-byte"),
    Case("pickle: image bomb", image_bomb_wide, f"{UNSAFE}: a 90000000-byte object is over the 25165824-byte"),
    Case("zip", zip_of_many_members, "a zip archive of 300000 members (more than 4096)"),
    Case("zip", zip_of_some_members, "npz has no 'keys' array (it has: m0, m1, m10, m100, m101, m102, m103, m104, "
                                     "m105, m106, and 990 more)"),
    Case("keylog: keys not text", keylog_keys_not_text, "'keys' holds '\\udc80', which is not valid text"),
    Case("keylog: keys not text", keylog_old_keys_not_text, "'keys' holds '\\udc80', which is not valid text"),
    Case("h5: disclosure", h5_external_storage, "'image' keeps its data in external files"),
    Case("h5: disclosure", h5_virtual_dataset, "'image' is a virtual dataset"),
    Case("h5: disclosure", h5_external_link, "'image' is an external link"),
    Case("h5: disclosure", h5_soft_link, "'image' is a soft link"),
    Case("h5: disclosure", h5_unknown_filter, "'frame_index' uses HDF5 filter 6, not one of the known"),
    Case("h5: absurd", h5_huge_image, "its images are 30000x30000"),
    Case("h5: absurd", h5_billion_rows, "claims 1000000000 samples, but its 'image' holds only 0 chunks"),
    Case("h5: absurd", h5_chunk_bomb, "'image' is stored in chunks of (64, 2000, 2000, 3)"),
    Case("h5: inconsistent", h5_label_short, "'label' has shape (2,), but 'image' has 3 rows"),
    Case("h5: inconsistent", h5_float64_image, "'image' is float64, expected uint8 or float32"),
    Case("h5: inconsistent", h5_duplicate_keys, "'keys' repeats w"),
    Case("zarr: inconsistent", store_keys_none, "'keys' is a NoneType, expected a list of key names"),
    Case("zarr: inconsistent", store_keys_ints, "'keys' is a list holding a int, expected a list"),
    Case("zarr: inconsistent", store_keys_dict, "'keys' is a dict, expected a list of key names"),
    Case("zarr: inconsistent", store_keys_not_text, "'keys' holds '\\udc80', which is not valid text"),
    Case("zarr: inconsistent", store_duplicate_keys, "'keys' repeats w"),
    Case("zarr: inconsistent", store_more_keys_than_columns, "'keys_raw' has 1 columns, but 'keys' names 3 keys"),
    Case("zarr: inconsistent", store_label_short, "'label' has shape (2,), but 'image' has 3 rows"),
    Case("zarr: inconsistent", store_float64_image, "'image' is float64, expected uint8"),
    Case("zarr: inconsistent", store_2d_image, "'image' has shape (3, 4), expected (N, height, width, 3)"),
    Case("zarr: absurd", store_huge_image, "its images are 30000x30000"),
    Case("zarr: absurd", store_billion_rows, "claims 1000000000 samples, but holds 1 of the 15625000 image chunks"),
    Case("zarr: absurd", store_trillion_rows, "claims 1000000000000 samples"),
    Case("zarr: absurd", store_chunk_bomb, "'image' is stored in chunks of (64, 2000, 2000, 3)"),
    Case("zarr: absurd", store_label_chunk_bomb, "'label' is stored in chunks of (1000000000,)"),
    Case("columnar npz", columnar_billion_rows, "'image' declares (1000000000, 4, 4, 3) uint8, more than"),
    Case("columnar npz", columnar_huge_image, "'image' declares (3, 30000, 30000, 3) uint8, more than"),
    Case("columnar npz", columnar_label_short, "'label' has shape (2,), but 'image' has 3 rows"),
    Case("columnar npz", columnar_float64_image, "'image' is float64, expected uint8 or float32"),
    Case("columnar npz", columnar_small_field_bomb, "its fields other than 'image' declare"),
]


def refusal_table(folder: Path, cases: list[Case] = CASES) -> str:
    """Run every case through the command line (capped) and tabulate, per kind: variants, how many were
    refused as promised (one line naming the file, no traceback, nothing left behind), the worst peak."""
    rows: dict[str, list] = {}
    for case in cases:
        path = case.make(folder)
        out = case.output(folder)
        result = run_capped(*case.args(path, out))
        lines = result.stderr.splitlines()
        refused = (result.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"{ERROR}{path}: ")
                   and case.expect in lines[0] and not os.path.lexists(out)
                   and not any(".partial-" in n for n in os.listdir(folder)))
        row = rows.setdefault(case.kind, [0, 0, 0.0])
        row[0] += 1
        row[1] += refused
        row[2] = max(row[2], result.peak_mb)
        print(f"{case.name:32} {'refused' if refused else 'NOT REFUSED'} {result.peak_mb:6.0f} MB  "
              f"{(lines or [result.stdout[:100]])[-1][:160]}", file=sys.stderr)
    table = ["| kind of crafted input | variants | refused | worst peak RSS MB |", "|---|---:|---:|---:|"]
    table += [f"| {kind} | {n} | {ok} | {peak:.0f} |" for kind, (n, ok, peak) in rows.items()]
    total = sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values()), max(r[2] for r in rows.values())
    table.append(f"| **all** | {total[0]} | {total[1]} | {total[2]:.0f} (promise: < {PROMISE_MB}) |")
    return "\n".join(table)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        print(refusal_table(Path(scratch)))
