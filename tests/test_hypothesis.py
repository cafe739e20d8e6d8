"""Property-based tests (hypothesis).

(a) Whatever bytes a keylog holds (random, cut short, mutated, a soup of pickle opcodes), reading it
    raises nothing but ``JumpnetError``; when it reads, every entry is accounted for; a failed
    ``preprocess`` leaves nothing behind.
(b) Generated keylogs (random keys, valid entries in every recorder wrinkle, invalid entries of every
    kind), written as the recorder does: ``preprocess`` gives exactly what the README says of the valid
    entries, and the result round-trips unchanged through every format (.zarr, legacy and columnar
    .npz, .h5), every column of every row.

CI runs a fixed seed; ``HYPOTHESIS_PROFILE=wide python -m pytest tests/test_hypothesis.py`` draws new examples,
five times as many (tests/conftest.py).
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import examples
from jumpnet_stream import Chunk, JumpnetError, open_dataset, preprocess
from jumpnet_stream.formats.legacy_npz import SEED_FIELDS
from jumpnet_stream.schema import BY_NAME, FIELDS as SAMPLE_FIELDS
from jumpnet_stream.stages.export import export
from jumpnet_stream.object_array import object_array_pickle_frame
from jumpnet_stream.recording import Recording
from jumpnet_stream.synth import make_recording

FUZZ = settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- (a) hostile and damaged bytes -------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Real recorder files (tiny 6x6 captures, so mutations land in structure as often as in pixels):
    both layouts, both writers, wrinkles, malformed entries, one and three keys; each as its raw bytes
    and its members."""
    folder = tmp_path_factory.mktemp("corpus")
    files = []
    for i, (layout, writer, wrinkles) in enumerate([("rows", "numpy", False), ("tuples", "stream", True),
                                                     ("rows", "stream", True), ("tuples", "numpy", False)]):
        rec = make_recording(folder, name=f"r{i}", seconds=1.5, keys=("w", "a", "d")[: 1 + 2 * (i % 2)], seed=i,
                             capture=6, video=False, layout=layout, writer=writer, wrinkles=wrinkles,
                             malformed=2 if layout == "tuples" else 0)
        with zipfile.ZipFile(rec.npz) as zf:
            members = {name: zf.read(name) for name in zf.namelist()}
        files.append((open(rec.npz, "rb").read(), members))
    return folder, files


def _zip(members: dict[str, bytes], deflate: bool) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def read_all_or_refuse(path) -> None:
    """Recording(path).events() to the end: JumpnetError or nothing; if it reads, every entry of the
    header's count is an event or counted malformed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "loading 'data' whole": allowed, it is a warning
            recording = Recording(path)
            events = sum(len(chunk) for chunk in recording.events())
    except JumpnetError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        return
    assert events + sum(recording.malformed.values()) == len(recording)


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes(corpus, data):
    path = corpus[0] / "random.npz"
    path.write_bytes(data)
    read_all_or_refuse(path)


@FUZZ
@given(data=st.binary(max_size=4096), which=st.integers(0, 3), deflate=st.booleans())
def test_random_bytes_as_the_data_member(corpus, data, which, deflate):
    """A valid zip with valid keys, whose 'data' is anything (sometimes with a real .npy header)."""
    members = dict(corpus[1][which][1])
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (3,)})
    members["data.npy"] = (header.getvalue() if which % 2 else b"") + data
    path = corpus[0] / "member.npz"
    path.write_bytes(_zip(members, deflate))
    read_all_or_refuse(path)


@FUZZ
@given(which=st.integers(0, 3), cut=st.floats(0, 1))
def test_truncated_files(corpus, which, cut):
    data = corpus[1][which][0]
    path = corpus[0] / "cut.npz"
    path.write_bytes(data[: int(len(data) * cut)])
    read_all_or_refuse(path)


@FUZZ
@given(which=st.integers(0, 3), edits=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)),
                                              min_size=1, max_size=8))
def test_mutated_files(corpus, which, edits):
    """Bytes changed anywhere in the file: zip headers, .npy headers, pickle, pixels (CRC errors)."""
    path = corpus[0] / "mutated.npz"
    path.write_bytes(_mutate(corpus[1][which][0], edits))
    read_all_or_refuse(path)


@FUZZ
@given(which=st.integers(0, 3), member=st.sampled_from(["data.npy", "data.npy", "keys.npy"]),
       edits=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.floats(0, 1)), deflate=st.booleans())
def test_mutated_members_in_a_sound_zip(corpus, which, member, edits, cut, deflate):
    """The member's bytes changed, then zipped again: the CRC matches, so the damage reaches the .npy
    header parser and the unpickler."""
    members = dict(corpus[1][which][1])
    data = _mutate(members[member], edits)
    members[member] = data if cut is None else data[: int(len(data) * cut)]
    path = corpus[0] / "member.npz"
    path.write_bytes(_zip(members, deflate))
    read_all_or_refuse(path)


class _Forged:
    """Pickles as numpy's array reconstruction with an arbitrary state: what a forger writes."""

    def __init__(self, shape, dtype, data):
        self.state = (1, shape, dtype, False, data)


class _FragmentPickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, _Forged):
            return _RECONSTRUCT, (np.ndarray, (0,), b"b"), obj.state
        return NotImplemented


_RECONSTRUCT = np.empty(0, dtype=object).__reduce__()[0]


def _fragment(obj) -> bytes:
    """The opcodes that push ``obj`` (no PROTO, no STOP, no memo): a piece to splice into a pickle."""
    buf = io.BytesIO()
    pickler = _FragmentPickler(buf, protocol=2)
    pickler.fast = True
    pickler.dump(obj)
    return buf.getvalue()[2:-1]


_IMAGE = np.linspace(0, 1, 6 * 6 * 3, dtype=np.float32).reshape(6, 6, 3)
_FRAGMENTS = [_fragment(obj) for obj in [
    _IMAGE, np.float32(1.5), np.array("press"), np.dtype("U7"), np.array([1.0, 0.0], np.float32), np.int64(7),
    b"release", "press", [0.25], np.array(0.5, dtype=object), np.zeros((2, 2), np.float64), np.uint8(3),
    (_IMAGE, 0.0, np.array([1.0], np.float32), np.array([0.0], np.float32), "press", 3),
    (_IMAGE, 0.0, np.array([0.0], np.float32), np.array([0.4], np.float32), b"RELEASE ", np.int64(5)),
]]
_FORGED = st.builds(
    lambda shape, dtype, data: _fragment(_Forged(shape, dtype, data)),
    st.one_of(st.tuples(), st.tuples(st.integers(0, 1 << 40)),
              st.tuples(st.integers(0, 6), st.integers(0, 6), st.sampled_from([0, 3, 1 << 62]))),
    st.sampled_from([np.dtype(d) for d in ("f4", "u1", "O", "U3", "S0", "M8[s]", "c8", "?", "f2")]),
    st.one_of(st.binary(max_size=48), st.lists(st.sampled_from([0.5, "press", None]), max_size=4)),
)
_GLOBALS = [b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy._core.multiarray\nscalar\n", b"cnumpy\nndarray\n",
            b"cnumpy\ndtype\n", b"c_codecs\nencode\n", b"cnumpy.core.numeric\n_frombuffer\n", b"cposix\nsystem\n",
            b"cbuiltins\neval\n", b"ccollections\nOrderedDict\n"]
_OPCODES = list(b"()]ealtRb012NNN\x88\x89\x85\x86\x87\x94.")
_PICKLE_PIECE = st.one_of(
    st.sampled_from([bytes([op]) for op in _OPCODES] + _GLOBALS),
    st.builds(lambda n: b"K" + bytes([n]), st.integers(0, 255)),
    st.builds(lambda n: b"J" + n.to_bytes(4, "little", signed=True), st.integers(-(1 << 31), (1 << 31) - 1)),
    st.builds(lambda x: b"G" + np.float64(x).byteswap().tobytes(), st.floats(allow_nan=True)),
    st.builds(lambda n: b"\x8a\x09" + n.to_bytes(9, "little", signed=True), st.integers(-(1 << 71), (1 << 71) - 1)),
    st.builds(lambda t: b"\x8c" + bytes([len(t)]) + t, st.sampled_from(
        [b"O8", b"f4", b"u1", b"U7", b"V8", b"b", b"press", b"release", b"latin1", b"|", b"<", b"M8", b"S0",
         b"i4,i4", b"(2)i4", b"\xff"])),
    st.builds(lambda b: b"C" + bytes([len(b)]) + b, st.binary(max_size=24)),
    st.builds(lambda n: b"q" + bytes([n]), st.integers(0, 4)),
    st.builds(lambda n: b"h" + bytes([n]), st.integers(0, 6)),
    st.sampled_from(_FRAGMENTS), st.sampled_from(_FRAGMENTS), _FORGED,
)


@settings(max_examples=examples(600), deadline=None)
@given(pieces=st.lists(_PICKLE_PIECE, max_size=40), length=st.integers(0, 4), width=st.sampled_from([None, 6]),
       close=st.booleans())
def test_pickle_opcode_soup(corpus, pieces, length, width, close):
    """The head of a real object-array pickle, then arbitrary opcodes where its elements go: the
    interpreter must refuse or finish, never crash or run anything."""
    shape = (length,) if width is None else (length, width)
    head, tail = object_array_pickle_frame(shape)
    body = b"(" + b"".join(pieces) + (b"e" + tail if close else b"")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": shape})
    members = dict(corpus[1][0][1])
    members["data.npy"] = header.getvalue() + head + body
    path = corpus[0] / "soup.npz"
    path.write_bytes(_zip(members, deflate=False))
    read_all_or_refuse(path)


@settings(max_examples=examples(40), deadline=None)
@given(which=st.integers(0, 3), edits=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)),
                                              min_size=1, max_size=4),
       ext=st.sampled_from([".npz", ".zarr"]))
def test_preprocess_of_damaged_files_fails_cleanly(corpus, which, edits, ext):
    """The stage, not just the reader: JumpnetError or a consistent report, and on failure no output."""
    folder = corpus[0]
    members = dict(corpus[1][which][1])
    members["data.npy"] = _mutate(members["data.npy"], edits)
    path = folder / "damaged.npz"
    path.write_bytes(_zip(members, deflate=False))
    out = folder / f"positives{ext}"
    keys = _keys_or_none(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = preprocess(path, out, key=keys[0] if keys else "w", overwrite=True)
    except JumpnetError:
        assert not [name for name in os.listdir(folder) if ".partial-" in name]
        return
    assert report.total == report.press_seen + report.release_seen + report.malformed
    assert len(open_dataset(out)) == report.paired + report.unmatched_final_press


def _keys_or_none(path) -> list[str]:
    try:
        return Recording(path).keys
    except JumpnetError:
        return []


# -- (b) generated keylogs: the pairing rule exactly, and every format round-trips -------------------------------
SIZE = (3, 4)
VARIANT_SIZE = (4, 3)


@st.composite
def keylogs(draw):
    """(keys, target key, entries as written, model: per entry None (malformed) or the parsed event)."""
    keys = draw(st.lists(st.sampled_from("wasdqe"), min_size=1, max_size=3, unique=True))
    k = len(keys)
    n = draw(st.integers(0, 14))
    entries, model = [], []
    for _ in range(n):
        valid = draw(st.integers(0, 4)) > 0
        phase = draw(st.sampled_from(["press", "press", "release"]))
        shape = VARIANT_SIZE if draw(st.integers(0, 15)) == 0 else SIZE
        pixels = np.asarray(draw(st.lists(st.integers(0, 255), min_size=3 * shape[0] * shape[1],
                                          max_size=3 * shape[0] * shape[1])), np.uint8).reshape(*shape, 3)
        held = np.asarray(draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=k, max_size=k)), np.float32)
        holds = np.asarray(draw(st.lists(st.floats(0, 30, width=32), min_size=k, max_size=k)), np.float32)
        frame = draw(st.integers(0, 10 ** 6))
        prev = draw(st.floats(0, 100, width=32))
        image = pixels if draw(st.booleans()) else pixels.astype(np.float32) / np.float32(255)
        fields = [_wrap_image(draw, image), _wrap_scalar(draw, prev), _wrap_vector(draw, held),
                  _wrap_vector(draw, holds), _wrap_phase(draw, phase), _wrap_frame(draw, frame)]
        event = {"image": pixels, "multi_hot": held, "holds": holds, "phase": phase, "frame": frame}
        if not valid:
            fields = _break(draw, fields, k)
            event = None
        entries.append(tuple(fields) if len(fields) == 6 and draw(st.booleans()) else fields)
        model.append(event)
    return keys, draw(st.sampled_from(keys)), entries, model


def _wrap_scalar(draw, value):
    return draw(st.sampled_from([lambda v: v, lambda v: np.array(v, dtype=object), lambda v: [v],
                                 lambda v: np.float64(v)]))(value)


def _wrap_frame(draw, frame):
    return draw(st.sampled_from([lambda v: v, lambda v: np.int64(v), lambda v: [v], lambda v: float(v),
                                 lambda v: np.array(v, dtype=object)]))(frame)


def _wrap_vector(draw, vector):
    return draw(st.sampled_from([lambda v: v, lambda v: v.tolist(), lambda v: [np.array(x, dtype=object) for x in v],
                                 lambda v: v.astype(np.float64)]))(vector)


def _wrap_phase(draw, phase):
    return draw(st.sampled_from([lambda p: p, lambda p: p.encode(), lambda p: f"  {p.upper()} ", lambda p: np.str_(p),
                                 lambda p: [p]]))(phase)


def _in_0d(value):
    box = np.empty((), dtype=object)
    box[()] = value
    return box


def _wrap_image(draw, image):
    return draw(st.sampled_from([lambda i: i, lambda i: [i], _in_0d]))(image)


def _break(draw, fields, k):
    """Make a valid entry malformed, in one of the ways recorder files go wrong."""
    how = draw(st.integers(0, 10))
    fields = list(fields)
    if how == 0:
        return fields[:5]
    if how == 1:
        return fields + [0]
    if how == 2:
        fields[5] = float("nan")
    elif how == 3:
        fields[5] = -1 - draw(st.integers(0, 5))
    elif how == 4:
        fields[4] = "hover"
    elif how == 5:
        fields[0] = np.zeros(SIZE, np.float32)
    elif how == 6:
        fields[2] = np.zeros(k + 1, np.float32)
    elif how == 7:
        fields[3] = np.full(k, float("inf"), np.float32)
    elif how == 8:
        fields[0] = np.full((*SIZE, 3), 2.0, np.float32)
    elif how == 9:
        fields[1] = float("nan")
    else:
        fields[2] = ["1"] * k
    return fields


def spec_positives(keys, target, model):
    """The pairing rule (README: preprocess) over the valid entries, in order (the first valid image fixes the size: later others
    are malformed); a jump ends at the release that lets go of its key."""
    t = keys.index(target)
    rows, pending, size = [], None, None
    counts = dict(total=len(model), press_seen=0, release_seen=0, paired=0, unmatched_final_press=0, malformed=0,
                  other_key_release_while_pending=0)
    for event in model:
        if event is not None and size is None:
            size = event["image"].shape
        if event is None or event["image"].shape != size:
            counts["malformed"] += 1
            continue
        if event["phase"] == "press":
            counts["press_seen"] += 1
            if pending is None and event["multi_hot"][t] > 0.5:
                pending = event
            continue
        counts["release_seen"] += 1
        if pending is not None and event["multi_hot"][t] > 0.5:
            counts["other_key_release_while_pending"] += 1
        elif pending is not None:
            counts["paired"] += 1
            rows.append(_positive(pending, event["holds"][t], t, len(keys)))
            pending = None
    if pending is not None:
        counts["unmatched_final_press"] += 1
        rows.append(_positive(pending, np.float32("nan"), t, len(keys)))
    return rows, counts


def _positive(press, hold, t, k):
    holds = np.zeros(k, np.float32)
    holds[t] = hold
    return {"image": press["image"], "label": np.float32(1.0), "keys_raw": press["multi_hot"],
            "hold_duration": holds, "phase": "press", "frame_index": press["frame"]}


def _write_keylog(path, keys, entries, rows_layout, compressed=False):
    if rows_layout and entries and all(len(e) == 6 for e in entries):
        data = np.empty((len(entries), 6), dtype=object)
        for i, entry in enumerate(entries):
            for j, value in enumerate(entry):
                data[i, j] = value
    else:
        data = np.empty(len(entries), dtype=object)
        for i, entry in enumerate(entries):
            data[i] = entry
    (np.savez_compressed if compressed else np.savez)(path, data=data, keys=np.array(keys))


def _read(path) -> Chunk | None:
    chunks = list(open_dataset(path).chunks(rows=5))
    return Chunk.concat(chunks) if chunks else None


@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log=keylogs(), rows_layout=st.booleans())
def test_generated_keylogs_follow_the_spec_and_round_trip(tmp_path_factory, log, rows_layout):
    keys, target, entries, model = log
    folder = tmp_path_factory.mktemp("generated")
    raw = folder / "keylog.npz"
    _write_keylog(raw, keys, entries, rows_layout, compressed=True)  # read whole: every image's values checked
    expected, counts = spec_positives(keys, target, model)
    positives = folder / "positives.zarr"
    if counts["total"] and counts["malformed"] == counts["total"]:
        with pytest.raises(JumpnetError, match="none of its .* entries is a readable event"):
            preprocess(raw, positives, key=target)
        assert os.listdir(folder) == ["keylog.npz"]
        return
    report = preprocess(raw, positives, key=target)
    assert report.counts() == counts
    if not {"image has NaN or infinite values", "image values are outside [0, 1]"} & set(report.malformed_reasons):
        stored = folder / "stored" / "keylog.npz"  # its images left in the file: only those used are read
        stored.parent.mkdir()
        _write_keylog(stored, keys, entries, rows_layout)
        lazy = preprocess(stored, folder / "stored" / "positives.zarr", key=target)
        assert lazy.counts() == counts and lazy.malformed_reasons == report.malformed_reasons
        again = _read(folder / "stored" / "positives.zarr")
        for name in ("image", "label", "keys_raw", "hold_duration", "phase", "frame_index") if expected else ():
            np.testing.assert_array_equal(again[name], _read(positives)[name], err_msg=name)

    stored = _read(positives)
    assert len(open_dataset(positives)) == len(expected)
    if expected:
        for name in ("image", "label", "keys_raw", "hold_duration", "phase", "frame_index"):
            want = np.stack([np.asarray(row[name]) for row in expected])
            np.testing.assert_array_equal(stored[name], want, err_msg=name)
        assert set(stored["source"]) == {"keylog"}
        assert [stored[name].dtype for name in ("image", "label", "keys_raw", "hold_duration", "frame_index")] == \
            [np.uint8, np.float32, np.float32, np.float32, np.int64]

    for target_path, options in [("legacy.npz", {}), ("columnar.npz", {"layout": "columnar"}), ("copy.h5", {}),
                                 ("copy.zarr", {"image_rows": 2}), ("float.h5", {"image_dtype": "float32"})]:
        out = folder / target_path
        export(positives, out, **options)
        back = _read(out)
        assert len(open_dataset(out)) == len(expected)
        assert open_dataset(out).keys == keys
        if not expected:
            continue
        for name in SAMPLE_FIELDS:
            if name == "source" and target_path == "legacy.npz":
                assert set(back[name]) == {"legacy"}  # the seed's format names no source: its file does
                continue
            if name not in SEED_FIELDS and target_path == "legacy.npz":  # the seed's six fields only
                np.testing.assert_array_equal(back[name], BY_NAME[name].filled(len(expected), len(keys)), err_msg=name)
                continue
            np.testing.assert_array_equal(back[name], stored[name], err_msg=f"{target_path}: {name}")
            assert back[name].dtype == stored[name].dtype or name in ("phase", "source"), (target_path, name)
