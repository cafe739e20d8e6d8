"""Images left in the keylog (issue 16): a stored keylog's events come without their pixels, each image an
IMAGE_REF record (offset, shape, dtype), and only the images asked for are read. What comes out must be what
a full read gives: the same events, the same positives, the same refusals; where it cannot be, SkipFallback
says so (and preprocess reads the keylog whole)."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import zipfile
from collections import Counter

import numpy as np
import pytest

import hostile
from hostile import (BUILD, CASES, FALSE, MARK, NONE, POP, RECONSTRUCT, REDUCE, TUPLE, TUPLE1, TUPLE3,
                     keylog_with_items, npy, npy_header, p_get, p_global, p_int, p_object, p_put, write_npz)
from jumpnet_stream import open_dataset, preprocess
from jumpnet_stream.errors import JumpnetError
from jumpnet_stream.image_refs import IMAGE_REF, SkipFallback
from jumpnet_stream.recording import Recording
from jumpnet_stream.stages.preprocess import pair_jumps

KINDS = ("single_rows", "single_tuples_wrinkled", "multi_rows_wrinkled", "multi_tuples_stream", "with_video")


def deflated_copy(path, folder) -> str:
    """The same keylog (its name too: the positives' source), its members deflated (nothing can be skipped)."""
    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, os.path.basename(path))
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst:
        for info in src.infolist():
            with src.open(info) as f, dst.open(info.filename, "w", force_zip64=True) as g:
                shutil.copyfileobj(f, g, 1 << 20)
    return str(out)


def digest(chunks) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        for name in chunk.fields:
            h.update(name.encode())
            h.update(np.ascontiguousarray(chunk[name]).tobytes())
    return h.hexdigest()


def outcome(path, lazy: bool) -> tuple:
    """What reading every event (and, lazily, then every image) gives: a digest and the malformed counts, or
    the error's type and line."""
    recording = Recording(path)
    try:
        chunks = recording.events(lazy_images=lazy)
        return "events", digest(recording.with_images(chunks) if lazy else chunks), dict(recording.malformed)
    except JumpnetError as exc:
        return type(exc).__name__, str(exc)


def positives(path, key: str, pairing: str, lazy: bool) -> tuple:
    recording, counts = Recording(path), Counter()
    chunks = pair_jumps(recording.events(lazy_images=lazy), key_index=recording.keys.index(key),
                        source=recording.name, counts=counts, pairing=pairing)
    return digest(recording.with_images(chunks) if lazy else chunks), counts, dict(recording.malformed)


def rchar() -> int:
    with open("/proc/self/io") as f:
        return int(next(line.split()[1] for line in f if line.startswith("rchar:")))


# -- the recorder's keylogs: the same events and positives, far fewer bytes read ------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_lazy_events_and_positives_are_the_full_reads(recordings, kind):
    rec = recordings[kind]
    recording = Recording(rec.npz)
    assert recording.skips_images  # np.savez and our writer store members uncompressed
    full, lazy = list(Recording(rec.npz).events()), list(recording.events(lazy_images=True))
    assert [len(c) for c in full] == [len(c) for c in lazy]
    for a, b in zip(full, lazy):
        assert b["image"].dtype == IMAGE_REF
        for name in a.fields:
            assert np.array_equal(a[name], recording.read_images(b[name]) if name == "image" else b[name]), name
    for key, pairing in [(rec.keys[0], "jump-key"), (rec.keys[-1], "seed")]:
        assert positives(rec.npz, key, pairing, lazy=True) == positives(rec.npz, key, pairing, lazy=False)


def test_the_scan_reads_a_few_percent_of_the_keylog(recordings):
    path = recordings["multi_rows_wrinkled"].npz
    before = rchar()
    events = sum(len(chunk) for chunk in Recording(path).events(lazy_images=True))
    assert events == 210 and rchar() - before < 0.03 * os.path.getsize(path)


@pytest.mark.parametrize("kind", ["single_tuples_wrinkled", "multi_tuples_stream"])
def test_stored_and_deflated_copies_preprocess_to_the_same_set(recordings, tmp_path, kind):
    """Whichever path preprocess takes for each (a stored keylog's images are left in the file), the sets
    written hold the same arrays."""
    rec = recordings[kind]
    deflated = deflated_copy(rec.npz, tmp_path / "deflated")
    assert not Recording(deflated).skips_images
    sets = []
    for source in (rec.npz, deflated):
        out = tmp_path / f"{len(sets)}.zarr"
        report = preprocess(source, out, key=rec.keys[0])
        sets.append((digest(open_dataset(out).chunks()), report.counts()))
    assert sets[0] == sets[1]


def test_a_deflated_keylog_gives_pixels_when_asked_for_none(recordings, tmp_path):
    rec = recordings["single_rows"]
    deflated = deflated_copy(rec.npz, tmp_path / "deflated")
    recording = Recording(deflated)
    chunks = list(recording.events(lazy_images=True))
    assert chunks[0]["image"].dtype == np.uint8
    assert digest(chunks) == digest(Recording(rec.npz).events())
    with pytest.raises(JumpnetError, match="deflated/single_rows.npz: its 'data' is compressed"):
        recording.read_images(np.zeros(1, IMAGE_REF))


# -- images as other writers may store them ----------------------------------------------------------------
def _event(image, phase="press", frame=0, held=1.0) -> tuple:
    return (image, 0.0, np.array([held], np.float32), np.array([0.25], np.float32), phase, frame)


def _keylog(path, entries) -> str:
    np.savez(path, data=np.array(entries, dtype=object), keys=np.array(["w"]))
    return str(path)


IMAGE = np.linspace(0, 1, 8 * 6 * 3, dtype=np.float32).reshape(8, 6, 3)


@pytest.mark.parametrize("image", [np.asfortranarray(IMAGE), IMAGE.astype(">f4"), IMAGE.astype(np.float64),
                                   (IMAGE * 255).astype(np.uint8), IMAGE[:, ::2]],
                         ids=["fortran", "big-endian", "float64", "uint8", "strided"])
def test_every_image_layout_reads_back_as_the_full_read(tmp_path, image):
    path = _keylog(tmp_path / "k.npz", [_event(image, frame=1), _event(IMAGE[:, :image.shape[1]], "release", 2, 0.0)])
    assert outcome(path, lazy=True) == outcome(path, lazy=False)
    chunk = next(Recording(path).events(lazy_images=True))
    assert chunk["image"].dtype == IMAGE_REF


# -- crafted pickles: what is left in the file never changes the outcome ------------------------------
def _image(data_then: bytes = b"", data: bytes | None = None) -> bytes:
    """An image array's pickle, its data memoized (index 50) and its state too (index 51), with
    ``data_then`` between the data and the state's TUPLE."""
    data = IMAGE.tobytes() if data is None else data
    return (RECONSTRUCT + p_global("numpy", "ndarray") + p_int(0) + TUPLE1 + b"C\x01b" + TUPLE3 + REDUCE
            + MARK + p_int(1) + p_object(IMAGE.shape) + p_object(IMAGE.dtype) + FALSE
            + b"B" + len(data).to_bytes(4, "little") + data + p_put(50) + data_then + TUPLE + p_put(51) + BUILD)


def _entry(image: bytes, phase: bytes | None = None) -> bytes:
    return hostile.good_entry(image=image, phase=phase)


CRAFTED = {
    # the data fetched back from the memo as the event's phase: read then, and refused as the full read does
    "data fetched as a phase": (_entry(_image(), phase=p_get(50)), "events"),
    # the state fetched back (its data read then) and BUILT into a second image, in the phase's place
    "state fetched and built again": (_entry(_image(), phase=RECONSTRUCT + p_global("numpy", "ndarray") + p_int(0)
                                             + TUPLE1 + b"C\x01b" + TUPLE3 + REDUCE + p_get(51) + BUILD), "events"),
    # data whose size is not the shape's: read and refused, as ever
    "data of the wrong size": (_entry(_image(data=b"\x00" * 100)), "UnsafeInputError"),
    # something between the data and its TUPLE: read as ever, an image that cannot be left in the file
    "an opcode before the TUPLE": (_entry(_image(data_then=NONE + POP)), "SkipFallback"),
}


@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_pickles_read_lazily_as_in_full(tmp_path, name):
    entry, expected = CRAFTED[name]
    path = keylog_with_items(tmp_path / "k.npz", entry + _entry(_image()), 2)
    lazy, full = outcome(path, lazy=True), outcome(path, lazy=False)
    assert lazy[0] == expected
    if expected != "SkipFallback":
        assert lazy == full
    else:
        assert full[0] == "events" and "holds an image that cannot be left in the file" in lazy[1]


@pytest.mark.parametrize("case", [c for c in CASES if c.make.__name__ in (
    "dtype_mutated_after_use", "dtype_built_twice", "dtype_mutated_after_frombuffer", "binget_never_defined")],
    ids=lambda case: case.name)
def test_hostile_stored_keylogs_are_refused_the_same_way(tmp_path, case):
    path = case.make(tmp_path)
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("data.npy").compress_type == zipfile.ZIP_STORED
    lazy = outcome(path, lazy=True)
    assert lazy == outcome(path, lazy=False) and case.expect in lazy[1]


def test_a_protocol_5_image_falls_back(tmp_path):
    """numpy's protocol-5 pickle rebuilds an array with _frombuffer, not BUILD: it is read, and the lazy
    read says it cannot go on without it."""
    entries = np.array([_event(IMAGE)], dtype=object)
    body = pickle.dumps(entries, protocol=5)
    path = write_npz(tmp_path / "p5.npz", {"data": npy_header(entries.shape) + body, "keys": npy(np.array(["w"]))})
    assert outcome(path, lazy=False)[0] == "events"
    assert outcome(path, lazy=True)[0] == "SkipFallback"


def test_a_truncated_pickle_is_the_usual_error(tmp_path):
    path = _keylog(tmp_path / "k.npz", [_event(IMAGE, frame=f) for f in range(6)])
    with zipfile.ZipFile(path) as zf:
        member = zf.read("data.npy")
    cut = write_npz(tmp_path / "cut.npz", {"data": member[:len(member) // 2], "keys": npy(np.array(["w"]))})
    lazy = outcome(cut, lazy=True)
    assert lazy == outcome(cut, lazy=False)
    assert lazy[1].startswith(f"{cut}: 'data' is corrupt or truncated: pickle data truncated")


# -- values the full read refuses: seen only in the images read ---------------------------------------
def test_a_bad_image_read_falls_back_and_one_left_unread_passes(tmp_path):
    bad = IMAGE.copy()
    bad[0, 0, 0] = np.nan
    path = _keylog(tmp_path / "k.npz", [_event(IMAGE, frame=1), _event(IMAGE, "release", 2, 0.0),
                                        _event(bad, frame=3), _event(IMAGE, frame=4), _event(IMAGE, "release", 5, 0.0)])
    assert Counter(Recording(path).malformed) == Counter()
    full = Recording(path)
    list(full.events())
    assert dict(full.malformed) == {"image has NaN or infinite values": 1}
    lazy = Recording(path)
    events = list(lazy.events(lazy_images=True))  # the NaN is not seen: its pixels were not read
    assert sum(map(len, events)) == 5 and not lazy.malformed
    with pytest.raises(SkipFallback, match="k.npz: 'data' holds an image that a full read would refuse"):
        lazy.read_images(events[0]["image"][2:3])
    with pytest.raises(SkipFallback):  # the jump that starts at the bad press
        list(lazy.with_images(pair_jumps(lazy.events(lazy_images=True), key_index=0, source="k", counts=Counter())))


def preprocessed_both_ways(path, tmp_path) -> list[tuple]:
    """What preprocess writes and reports for a stored keylog and for its deflated copy (read whole)."""
    sets = []
    for source in (path, deflated_copy(path, tmp_path / "deflated")):
        out = tmp_path / f"{len(sets)}.zarr"
        report = preprocess(source, out, key="w")
        sets.append((digest(open_dataset(out).chunks()), report.counts(), report.malformed_reasons))
    return sets


def test_preprocess_of_a_bad_press_image_is_the_full_reads(tmp_path):
    """preprocess's answer to SkipFallback is the full read: the set written is the deflated copy's."""
    bad = IMAGE.copy()
    bad[1, 1, 1] = 2.0
    path = _keylog(tmp_path / "k.npz", [_event(bad, frame=1), _event(IMAGE, frame=2), _event(IMAGE, "release", 3, 0.0)])
    sets = preprocessed_both_ways(path, tmp_path)
    assert sets[0] == sets[1] and sets[0][2] == {"image values are outside [0, 1]": 1}


def test_a_bad_image_on_the_release_that_ends_a_jump_falls_back(tmp_path):
    """A full read refuses the release (NaN pixels), so the jump ends at the next one: the lazy read checks
    the image of every release that ends a jump, and reads the keylog whole when it is bad."""
    bad = IMAGE.copy()
    bad[2, 2, 2] = np.nan

    def release(image, frame, hold):
        return (image, 0.0, np.array([0.0], np.float32), np.array([hold], np.float32), "release", frame)
    path = _keylog(tmp_path / "k.npz", [_event(IMAGE, frame=1), release(bad, 2, 0.5), release(IMAGE, 3, 0.75)])
    sets = preprocessed_both_ways(path, tmp_path)
    assert sets[0] == sets[1] and sets[0][2] == {"image has NaN or infinite values": 1}
    assert open_dataset(tmp_path / "0.zarr").columns(["hold_duration"])["hold_duration"].tolist() == [[0.75]]


# -- reading images back: checked against the file ---------------------------------------------------------
def test_read_images_checks_what_it_is_given_and_the_file(tmp_path):
    path = _keylog(tmp_path / "k.npz", [_event(IMAGE, frame=f) for f in range(3)])
    recording = Recording(path)
    refs = next(recording.events(lazy_images=True))["image"]
    assert np.array_equal(recording.read_images(refs[::-1]), np.stack([np.rint(IMAGE * 255).astype(np.uint8)] * 3))
    forged = refs.copy()
    forged[0]["offset"] = os.path.getsize(path) - 10
    with pytest.raises(JumpnetError, match="k.npz: an image reference of 576 bytes at byte .* is not within 'data'"):
        recording.read_images(forged)
    forged = refs.copy()
    forged[0]["dtype"] = b"<i4"
    with pytest.raises(JumpnetError, match=r"k.npz: an image reference names '<i4' of shape \(8, 6, 3\), not an"):
        recording.read_images(forged)
    with pytest.raises(TypeError):
        recording.read_images(np.zeros(2, np.int64))
    os.utime(path, ns=(0, 0))
    with pytest.raises(JumpnetError, match="k.npz: changed while it was being read"):
        recording.read_images(refs)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(JumpnetError, match="k.npz: 'data' is corrupt or truncated: the file is .* bytes, .* when it"):
        recording.read_images(refs)


# -- preprocess takes the lazy path: the same bytes written, a fraction of the keylog read -----------------
def _files(store) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(folder, name), store): open(os.path.join(folder, name), "rb").read()
            for folder, _, names in os.walk(store) for name in names}


@pytest.mark.parametrize("kind", ["single_rows", "multi_tuples_stream"])
def test_preprocess_reads_only_the_jumps_images_and_writes_the_full_reads_bytes(recordings, tmp_path, kind):
    from jumpnet_stream.formats import options_for, format_for
    from jumpnet_stream.stages.preprocess import _preprocess

    rec = recordings[kind]
    (tmp_path / "full").mkdir()
    (tmp_path / "lazy").mkdir()
    full = str(tmp_path / "full" / "positives.zarr")
    _preprocess(rec.npz, full, rec.keys[0], "jump-key", False, options_for(format_for(full), full), True, lazy=False)
    before = rchar()
    lazy = str(tmp_path / "lazy" / "positives.zarr")
    report = preprocess(rec.npz, lazy, key=rec.keys[0])
    image_bytes = 227 * 227 * 3 * 4  # the images read: each jump's press and the release that ends it
    assert rchar() - before < (2 * report.paired + report.unmatched_final_press) * image_bytes + (1 << 20)
    assert len(open_dataset(lazy)) > 5 and _files(lazy) == _files(full)
