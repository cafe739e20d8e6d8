"""Every bad input, through the real command line: one line on stderr that names the file and the problem,
a non-zero exit, no traceback, and nothing left behind (no output, no hidden ``.NAME.partial-*`` sibling).

Malformed keylog *entries* are the exception the README describes: preprocess counts them by reason and skips
them (exit 0, the counts reported), unless not one entry of the file is readable.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import numpy.testing._private.utils as numpy_testing_utils
import pytest

from conftest import run_cli
from jumpnet_stream import open_dataset, preprocess
from jumpnet_stream.synth import make_recording

ERROR = "jumpnet-stream: error: "
DATASET_COMMANDS = {  # command line (before -o) for a dataset input IN
    "reduce": lambda src: ["reduce", src, "--keep", "2"],
    "augment": lambda src: ["augment", src, "--multiplier", "1"],
    "merge": lambda src: ["merge", src],
    "export": lambda src: ["export", src],
}


# -- running the command and judging its failure ------------------------------------------------------
def cli(*args: object, preexec_fn=None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The real command line in a subprocess (``run_cli``, or with a wrapper / a pre-exec hook)."""
    args = tuple(str(a) for a in args)
    if preexec_fn is None and not prefix:
        return run_cli(*args)
    return subprocess.run([*prefix, sys.executable, "-m", "jumpnet_stream", *args], capture_output=True,
                          text=True, timeout=300, preexec_fn=preexec_fn)


def partials(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if ".partial-" in name) if os.path.isdir(folder) else []


def assert_refused(result: subprocess.CompletedProcess, path, *problem: str, outputs=()) -> str:
    """Exit != 0, exactly one stderr line ``jumpnet-stream: error: PATH: ...problem...``, no traceback,
    nothing on stdout, none of ``outputs`` (nor a partial sibling) on disk. Returns the line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith(f"{ERROR}{path}: "), line
    for fragment in problem:
        assert fragment in line, line
    assert result.stdout == ""
    for output in outputs:
        assert not os.path.lexists(output), f"{output} left behind"
        assert partials(os.path.dirname(os.path.abspath(output))) == []
    return line


def assert_ok(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return json.loads(result.stdout)


# -- inputs ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def game(tmp_path_factory):
    """A 4-second two-key recording with its video, its positives (.zarr) and a legacy .npz copy."""
    folder = tmp_path_factory.mktemp("game")
    rec = make_recording(folder, name="game", seconds=4, keys=("w", "a"), seed=11)
    preprocess(rec.npz, folder / "positives.zarr", key="w")
    preprocess(rec.npz, folder / "positives.npz", key="w")
    assert len(open_dataset(folder / "positives.zarr")) >= 2
    return rec, folder / "positives.zarr", folder / "positives.npz"


IMAGE = np.linspace(0, 1, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)


def event(frame, phase="press", held=(1.0, 0.0), hold=(0.0, 0.0), image=None, prev=0.0):
    """One recorder entry: (image, prev_interval, multi_hot, hold_durations, phase, frame_idx)."""
    return (IMAGE if image is None else image, prev, np.array(held, np.float32), np.array(hold, np.float32),
            phase, frame)


def jump(press_frame, hold=0.25):
    """A press of 'w' and its release two frames later."""
    return [event(press_frame), event(press_frame + 2, "release", held=(0, 0), hold=(hold, 0))]


def write_keylog(path, entries, keys=("w", "a")):
    """As the recorder does: ``np.savez(path, data=<object array of entries>, keys=...)``; an (N,) array
    (any entry may be of any arity or type)."""
    data = np.empty(len(entries), dtype=object)
    for i, entry in enumerate(entries):
        data[i] = entry
    np.savez(path, data=data, keys=np.array(keys))
    return path


def rows(entries) -> np.ndarray:
    """An (N, 6) object array of 6-tuples, what ``np.array(entries, dtype=object)`` makes of the recorder's."""
    data = np.empty((len(entries), 6), dtype=object)
    for i, entry in enumerate(entries):
        for j, value in enumerate(entry):
            data[i, j] = value
    return data


def write_dataset(path, entries, keys=("w",)):
    """A seed-format dataset: ``data`` an (N, 6) object array of samples, ``keys`` beside it."""
    np.savez(path, data=rows(entries), keys=np.array(keys))
    return path


def sample(frame, image=None, label=1.0):
    return (IMAGE if image is None else image, label, np.array([1.0], np.float32), np.array([0.3], np.float32),
            "press", frame)


def rezip(source, target, **members):
    """A copy of the npz ``source`` with some members replaced (bytes) or removed (None)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for name in zin.namelist():
            key = name[:-4]
            if key in members:
                if members[key] is not None:
                    zout.writestr(name, members[key])
            else:
                zout.writestr(name, zin.read(name))
    return target


def member(path, name):
    with zipfile.ZipFile(path) as zf:
        return zf.read(f"{name}.npy")


# -- missing, unreadable and truncated inputs -------------------------------------------------------------
@pytest.mark.parametrize("command", ["preprocess", "negatives-video", "negatives-positives", *DATASET_COMMANDS,
                                     "merge-second"])
def test_missing_input(game, tmp_path, command):
    rec, positives, _ = game
    missing = tmp_path / "missing.npz"
    out = tmp_path / "out.zarr"
    args = {"preprocess": ["preprocess", missing],
            "negatives-video": ["negatives", tmp_path / "missing.mp4", "--positives", positives],
            "negatives-positives": ["negatives", rec.video, "--positives", missing],
            "merge-second": ["merge", positives, missing]}.get(command) or DATASET_COMMANDS[command](missing)
    named = tmp_path / "missing.mp4" if command == "negatives-video" else missing
    assert_refused(cli(*args, "-o", out), named, "no such file", outputs=[out])


def test_missing_zarr_store(tmp_path):
    out = tmp_path / "out.zarr"
    assert_refused(cli("reduce", tmp_path / "none.zarr", "--keep", 1, "-o", out), tmp_path / "none.zarr",
                   "no such zarr store", outputs=[out])


@pytest.mark.parametrize("command", ["preprocess", *DATASET_COMMANDS])
def test_not_a_zip(tmp_path, command):
    text = tmp_path / "notes.npz"
    text.write_text("not a zip archive\n")
    out = tmp_path / "out.zarr"
    args = ["preprocess", text] if command == "preprocess" else DATASET_COMMANDS[command](text)
    assert_refused(cli(*args, "-o", out), text, "not an npz file", outputs=[out])


def test_zip_without_arrays(tmp_path):
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    out = tmp_path / "out.zarr"
    assert_refused(cli("preprocess", path, "-o", out), path, "npz has no 'keys' array (it has: readme.txt)",
                   outputs=[out])


@pytest.mark.parametrize("which", ["keylog", "dataset"])
def test_npz_cut_in_half(game, tmp_path, which):
    """A half-copied file: the zip's directory (at its end) is gone."""
    rec, _, legacy = game
    source = rec.npz if which == "keylog" else legacy
    cut = tmp_path / "cut.npz"
    data = open(source, "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.zarr"
    args = ["preprocess", cut] if which == "keylog" else ["export", cut]
    assert_refused(cli(*args, "-o", out), cut, "a zip archive, but cut short or damaged", outputs=[out])


def test_member_cut_short(game, tmp_path):
    """The zip is whole but its 'data' member ends half-way through the pickle."""
    rec, _, _ = game
    data = member(rec.npz, "data")
    cut = rezip(rec.npz, tmp_path / "cut.npz", data=data[: len(data) // 2])
    out = tmp_path / "out.npz"
    assert_refused(cli("preprocess", cut, "-o", out), cut, "'data' is corrupt or truncated", outputs=[out])


def test_damaged_bytes_found_by_the_zip_checksum(game, tmp_path):
    """A deflated keylog (read whole) whose 'data' does not match its checksum, as after bytes flipped in
    image data: every entry still parses and the partial output is being written when the CRC check at the
    member's end fails; the whole file must still be refused. (A stored keylog's unused images are left in
    the file, unread: see test_keylog_skip.)"""
    rec, _, _ = game
    from test_keylog_skip import deflated_copy

    deflated = deflated_copy(rec.npz, tmp_path / "deflated")
    with zipfile.ZipFile(deflated) as zf:
        start, crc = zf.start_dir, zf.getinfo("data.npy").CRC
    data = bytearray(open(deflated, "rb").read())
    entry = data.index(b"PK\x01\x02", start)  # the central directory's record of each member, in order
    while data[entry + 46:entry + 46 + int.from_bytes(data[entry + 28:entry + 30], "little")] != b"data.npy":
        entry = data.index(b"PK\x01\x02", entry + 46)
    assert int.from_bytes(data[entry + 16:entry + 20], "little") == crc
    data[entry + 16:entry + 20] = (crc ^ 0x01000000).to_bytes(4, "little")
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out.zarr"
    assert_refused(cli("preprocess", damaged, "-o", out), damaged, "'data' is corrupt or truncated",
                   "Bad CRC-32", outputs=[out])


@pytest.mark.parametrize("missing,other", [("data", "keys"), ("keys", "data")])
def test_npz_without_data_or_keys(game, tmp_path, missing, other):
    rec, _, _ = game
    path = rezip(rec.npz, tmp_path / f"no_{missing}.npz", **{missing: None})
    out = tmp_path / "out.zarr"
    assert_refused(cli("preprocess", path, "-o", out), path, f"npz has no '{missing}' array (it has: {other})",
                   outputs=[out])


def test_dataset_without_keys(game, tmp_path):
    """A legacy dataset without keys reads with keys named after its vectors (key0, ...) or given with --keys;
    one of ours whose scalar holds name a key (its provenance says which) needs that key among them."""
    _, _, legacy = game
    path = rezip(legacy, tmp_path / "no_keys.npz", keys=None)
    out = tmp_path / "out.h5"
    assert_refused(cli("export", path, "-o", out), path, "holds the hold of key 'w' only", "name them with the keys option",
                   outputs=[out])
    assert_ok(cli("export", path, "-o", out, "--keys", "w,a", "--json"))
    assert open_dataset(out).keys == ["w", "a"]


@pytest.mark.parametrize("data,problem", [
    (np.zeros((3, 6)), "'data' is a float64 array, expected an object array of entries"),
    (np.empty((2, 3, 6), dtype=object), "'data' has shape (2, 3, 6), expected (N,) or (N, 6)"),
])
def test_data_that_is_not_an_entry_array(tmp_path, data, problem):
    path = tmp_path / "odd.npz"
    np.savez(path, data=data, keys=np.array(["w"]))
    out = tmp_path / "out.zarr"
    assert_refused(cli("preprocess", path, "-o", out), path, problem, outputs=[out])


def test_header_promising_more_entries_than_the_file_holds(game, tmp_path):
    rec, _, _ = game
    data = io.BytesIO(member(rec.npz, "data"))
    assert np.lib.format.read_magic(data) == (1, 0)
    np.lib.format.read_array_header_1_0(data)
    forged = io.BytesIO()
    np.lib.format.write_array_header_1_0(forged, {"descr": "|O", "fortran_order": False, "shape": (10 ** 10, 6)})
    path = rezip(rec.npz, tmp_path / "forged.npz", data=forged.getvalue() + data.read())
    out = tmp_path / "out.zarr"
    assert_refused(cli("preprocess", path, "-o", out), path, "header promises 60000000000 elements",
                   outputs=[out])


# -- malformed entries: counted and skipped (README: preprocess), unless none is readable ---------------------------
BAD_ENTRIES = {
    "entry has 5 fields, expected 6": event(40)[:5],
    "entry has 7 fields, expected 6": (*event(41), 1),
    "entry is not a tuple of fields": "a string",
    "phase is neither press nor release": event(42, phase="hover"),
    "phase is not a string": event(43, phase=7),
    "image is not an HxWx3 array": event(44, image=np.zeros((8, 8), np.float32)),
    "image is neither float nor uint8": event(45, image=np.zeros((8, 8, 3), np.int32)),
    "image values are outside [0, 1]": event(46, image=np.full((8, 8, 3), 3.0, np.float32)),
    "image size differs from the first image": event(47, image=np.zeros((9, 9, 3), np.float32)),
    "image is not an array": event(48, image="pixels"),
    "multi_hot has 3 values, expected 2 (one per key)": event(49, held=(1, 0, 0)),
    "hold_durations is not numeric": (IMAGE, 0.0, np.array([1, 0], np.float32), ["0.5", "0"], "press", 50),
    "multi_hot is not numeric": (IMAGE, 0.0, np.array(["1", "0"]), np.zeros(2, np.float32), "press", 56),
    "frame_idx is not a number": event("52"),
    "frame_idx is negative": event(-3),
    "frame_idx is not an integer": event(53.5),
    "frame_idx is implausibly large": event(2 ** 70),
    "prev_interval is not a number": event(55, prev=b"0.1"),
}


def test_malformed_entries_are_counted_and_skipped(tmp_path):
    entries = jump(10) + list(BAD_ENTRIES.values()) + jump(20, hold=0.5)
    path = write_keylog(tmp_path / "bad.npz", entries)
    out = tmp_path / "positives.zarr"
    counts = assert_ok(cli("preprocess", path, "-o", out, "--json"))
    assert counts == {"total": len(entries), "press_seen": 2, "release_seen": 2, "paired": 2,
                      "unmatched_final_press": 0, "malformed": len(BAD_ENTRIES), "other_key_release_while_pending": 0}
    written = open_dataset(out)
    assert written.column("frame_index").tolist() == [10, 20]
    reasons = written.provenance[0]["counts"]["dropped"]["malformed"]
    assert reasons == {why: 1 for why in BAD_ENTRIES}

    human = cli("preprocess", path, "-o", tmp_path / "again.zarr")  # the summary lists every reason
    assert human.returncode == 0 and human.stderr == ""
    assert f"malformed (skipped){len(BAD_ENTRIES):>13}" in human.stdout
    for why in BAD_ENTRIES:
        assert f"1 x {why}" in human.stdout


def test_no_readable_entry_is_an_error(tmp_path):
    entries = [event(1)[:5], "junk", event(2, phase="hover"), event(3, image=np.zeros(3))]
    path = write_keylog(tmp_path / "junk.npz", entries)
    out = tmp_path / "positives.zarr"
    line = assert_refused(cli("preprocess", path, "-o", out), path, "none of its 4 entries is a readable event",
                          outputs=[out])
    assert "1 x entry has 5 fields, expected 6" in line and "1 x entry is not a tuple of fields" in line


def test_keys_that_do_not_fit_the_entries(tmp_path):
    """A recorder version that wrote the wrong key list: every multi_hot has 2 slots, 'keys' names one."""
    path = write_keylog(tmp_path / "keys.npz", jump(5) + jump(9), keys=("w",))
    out = tmp_path / "positives.npz"
    assert_refused(cli("preprocess", path, "-o", out), path, "none of its 4 entries is a readable event",
                   "4 x multi_hot has 2 values, expected 1 (one per key)", outputs=[out])


def test_empty_keylog_is_not_an_error(tmp_path):
    path = write_keylog(tmp_path / "empty.npz", [])
    out = tmp_path / "positives.zarr"
    assert assert_ok(cli("preprocess", path, "-o", out, "--json"))["total"] == 0
    assert len(open_dataset(out)) == 0


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("bad,reason,frames", [
    (event(NAN), "frame_idx is NaN or infinite", [20]),
    (event(INF), "frame_idx is NaN or infinite", [20]),
    (event(np.float32(NAN)), "frame_idx is NaN or infinite", [20]),
    (event(10, prev=NAN), "prev_interval is NaN or infinite", [20]),
    (event(10, held=(NAN, 0)), "multi_hot or hold_durations has NaN or infinite values", [20]),
    (event(10, image=np.full((8, 8, 3), NAN, np.float32)), "image has NaN or infinite values", [20]),
    (event(10, image=np.full((8, 8, 3), INF, np.float32)), "image has NaN or infinite values", [20]),
    # the release is dropped: the jump stays pending and the next release closes it (from frame 10)
    (event(12, "release", held=(0, 0), hold=(INF, 0)), "multi_hot or hold_durations has NaN or infinite values",
     [10]),
], ids=["nan-frame", "inf-frame", "float32-nan-frame", "nan-prev", "nan-multi-hot", "nan-image", "inf-image",
        "inf-hold"])
def test_non_finite_values_are_malformed_never_samples(tmp_path, bad, reason, frames):
    entries = [event(10), event(12, "release", held=(0, 0), hold=(0.2, 0))] + jump(20)
    entries[0 if bad[4] == "press" else 1] = bad
    path = write_keylog(tmp_path / "nan.npz", entries)
    out = tmp_path / "positives.zarr"
    counts = assert_ok(cli("preprocess", path, "-o", out, "--json"))
    assert counts["malformed"] == 1 and counts["total"] == 4
    written = open_dataset(out)
    assert written.column("frame_index").tolist() == frames
    assert np.isfinite(written.column("hold_duration")).all()
    assert written.provenance[0]["counts"]["dropped"]["malformed"] == {reason: 1}


@pytest.mark.parametrize("entry,problem", [
    (sample(3, image=np.zeros((8, 8, 3), np.int16)), "entry 1: image is neither float nor uint8"),
    (sample(3, image=np.zeros((8, 8, 4), np.float32)), "entry 1: image is not an HxWx3 array"),
    (sample(3, label=NAN), "entry 1: label is NaN or infinite"),
    (sample(NAN), "entry 1: frame_index is NaN or infinite"),
])
@pytest.mark.parametrize("command", ["reduce", "export"])
def test_bad_sample_in_a_dataset_is_refused(tmp_path, entry, problem, command):
    """A dataset is not a raw keylog: a sample that does not parse refuses the file."""
    path = write_dataset(tmp_path / "set.npz", [sample(1), entry, sample(5)])
    out = tmp_path / "out.zarr"
    assert_refused(cli(*DATASET_COMMANDS[command](path), "-o", out), path, problem, outputs=[out])


def test_target_key_not_in_keys(game, tmp_path):
    rec, _, _ = game
    out = tmp_path / "out.zarr"
    assert_refused(cli("preprocess", rec.npz, "-o", out, "--key", "q"), rec.npz,
                   "key 'q' is not in the recording's keys (w, a)", outputs=[out])


# -- outputs -------------------------------------------------------------------------------------------
def _command(name, game, tmp_path):
    """A command line that succeeds, up to its ``-o``."""
    rec, positives, legacy = game
    return {"preprocess": ["preprocess", rec.npz],
            "negatives": ["negatives", rec.video, "--positives", positives, "--keep", "5"],
            "merge": ["merge", positives, legacy, "--shuffle"]}.get(name) or DATASET_COMMANDS[name](positives)


ALL_COMMANDS = ["preprocess", "negatives", *DATASET_COMMANDS]


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_unknown_output_extension(game, tmp_path, command):
    out = tmp_path / "out.csv"
    assert_refused(cli(*_command(command, game, tmp_path), "-o", out), out,
                   "unknown dataset format '.csv': use one of .zarr, .npz, .h5", outputs=[out])


@pytest.mark.parametrize("kind", ["file", "store"])
@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_existing_output_is_refused_and_kept(game, tmp_path, command, kind):
    out = tmp_path / ("out.npz" if kind == "file" else "out.zarr")
    if kind == "file":
        out.write_bytes(b"precious")
    else:
        out.mkdir()
        (out / "precious.txt").write_text("keep me")
    result = cli(*_command(command, game, tmp_path), "-o", out)
    assert_refused(result, out, "output exists (the overwrite option replaces it)")
    if kind == "file":
        assert out.read_bytes() == b"precious"
    else:
        assert (out / "precious.txt").read_text() == "keep me"
    assert partials(tmp_path) == []


@pytest.mark.parametrize("command", ["preprocess", "merge"])
def test_overwrite_replaces(game, tmp_path, command):
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "precious.txt").write_text("old")
    result = cli(*_command(command, game, tmp_path), "-o", out, "--overwrite", "--json")
    assert_ok(result)
    assert not (out / "precious.txt").exists() and len(open_dataset(out)) > 0
    assert sorted(os.listdir(tmp_path)) == ["out.zarr"]


def test_missing_output_folder(game, tmp_path):
    out = tmp_path / "nowhere" / "out.zarr"
    assert_refused(cli("preprocess", game[0].npz, "-o", out), out, f"output folder {tmp_path / 'nowhere'} does not exist",
                   outputs=[out])


def _without_root_privileges() -> tuple[str, ...]:
    """A command prefix under which permissions apply: none needed for a normal user; as root, drop the
    capabilities that bypass them (setpriv), or skip."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions do not apply")
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search")


@pytest.mark.parametrize("command", ["preprocess", "negatives", "export"])
def test_unwritable_output_folder(game, tmp_path, command):
    prefix = _without_root_privileges()
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    out = folder / "out.zarr"
    try:
        result = cli(*_command(command, game, tmp_path), "-o", out, prefix=prefix)
        assert_refused(result, out, f"output folder {folder} is not writable")
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o700)


def _file_size_limit(limit: int):
    """Pre-exec hook: files may not grow past ``limit`` bytes (a full disk, as far as the writer can
    tell); SIGXFSZ ignored so the write fails with EFBIG instead of killing the process."""
    def hook() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return hook


@pytest.mark.parametrize("command,ext,options", [
    ("preprocess", ".zarr", []), ("preprocess", ".npz", []), ("preprocess", ".h5", []),
    ("negatives", ".zarr", []), ("merge", ".zarr", []), ("augment", ".h5", []), ("export", ".npz", []),
    ("export", ".npz", ["--layout", "columnar"]),
])
def test_disk_full(game, tmp_path, command, ext, options):
    out = tmp_path / f"out{ext}"
    result = cli(*_command(command, game, tmp_path), *options, "-o", out, preexec_fn=_file_size_limit(16 << 10))
    line = assert_refused(result, out, outputs=[out])
    assert "file too large" in line.lower() and "nothing was kept" in line


# -- video -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"not a video\n", b""], ids=["text", "empty"])
def test_video_that_will_not_open(game, tmp_path, content):
    video = tmp_path / "clip.mp4"
    video.write_bytes(content)
    out = tmp_path / "negatives.zarr"
    assert_refused(cli("negatives", video, "--positives", game[1], "-o", out), video, "cannot open video",
                   outputs=[out])


# -- hostile pickles: refused, and their code never runs ---------------------------------------------------
class Payload:
    """An object whose pickle is ``callable(*args)``: what a crafted file carries."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _touch_code(marker) -> str:
    return f"open({str(marker)!r}, 'w').close()"


HOSTILE = {  # name -> (payload for a marker path, the name the refusal gives, whether it runs code)
    "os.system": (lambda m: Payload(os.system, f"touch {m}"), f"{os.system.__module__}.system", True),
    "builtins.eval": (lambda m: Payload(eval, _touch_code(m)), "builtins.eval", True),
    "builtins.exec": (lambda m: Payload(exec, _touch_code(m)), "builtins.exec", True),
    "subprocess.Popen": (lambda m: Payload(subprocess.Popen, ["touch", str(m)]), "subprocess.Popen", True),
    "numpy.testing runstring": (lambda m: Payload(numpy_testing_utils.runstring, _touch_code(m), {}),
                                "numpy.testing._private.utils.runstring", True),
    "collections.OrderedDict": (lambda m: collections.OrderedDict(a=1), "collections.OrderedDict", False),
    "numpy.ma.MaskedArray": (lambda m: np.ma.masked_array([1.0, 0.0], mask=[0, 1]),
                             "numpy.ma.core._mareconstruct", False),
}


def _assert_really_hostile(path, marker, runs_code) -> None:
    """The control: numpy's own loader (allow_pickle=True) does run the payload, or builds the object."""
    if not runs_code:
        with np.load(path, allow_pickle=True) as z:
            assert z["data"].dtype == object and z["keys"].size
        return
    with np.load(path, allow_pickle=True) as z:
        z["data"]
    deadline = time.monotonic() + 10  # Popen runs touch in the background
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the payload is not hostile: the test would prove nothing"


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_keylog_is_refused_and_runs_nothing(tmp_path, name):
    make, refused_name, runs_code = HOSTILE[name]
    marker = tmp_path / "pwned"
    entries = jump(1) + jump(5)
    image, prev, held, hold, phase, frame = entries[2]
    entries[2] = (image, prev, make(marker), hold, phase, frame)
    path = tmp_path / "evil.npz"
    np.savez(path, data=rows(entries), keys=np.array(["w", "a"]))
    out = tmp_path / "out.zarr"
    assert_refused(cli("preprocess", path, "-o", out), path,
                   f"unsafe pickle in 'data' refused: refusing to unpickle {refused_name}", outputs=[out])
    assert not marker.exists()
    _assert_really_hostile(path, marker, runs_code)


def test_hostile_entry_after_many_good_ones_leaves_no_output(game, tmp_path):
    """The streaming reader has handed out every earlier entry (positives written to the partial
    output) before it meets the payload at the end: the partial output must go."""
    rec, _, _ = game
    marker = tmp_path / "pwned"
    good = np.load(rec.npz, allow_pickle=True)["data"]  # our own synthetic file: trusted
    data = np.empty(len(good) + 1, dtype=object)
    for i, row in enumerate(good):
        data[i] = tuple(row)
    data[len(good)] = (good[0][0], 0.0, Payload(os.system, f"touch {marker}"), good[0][3], "press", 99)
    path = tmp_path / "evil.npz"
    np.savez(path, data=data, keys=np.array(["w", "a"]))
    for ext in (".zarr", ".npz", ".h5"):
        out = tmp_path / f"out{ext}"
        assert_refused(cli("preprocess", path, "-o", out), path, "unsafe pickle in 'data' refused",
                       f"refusing to unpickle {os.system.__module__}.system", outputs=[out])
    assert not marker.exists()


def test_hostile_keys_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    data = np.empty(2, dtype=object)
    data[0], data[1] = jump(1)
    np.savez(path, data=data, keys=np.array([Payload(os.system, f"touch {marker}")], dtype=object))
    out = tmp_path / "out.zarr"
    assert_refused(cli("preprocess", path, "-o", out), path, "unsafe pickle in 'keys' refused", outputs=[out])
    assert not marker.exists()


@pytest.mark.parametrize("command", list(DATASET_COMMANDS))
def test_hostile_dataset_is_refused(tmp_path, command):
    marker = tmp_path / "pwned"
    evil = sample(3)
    evil = (evil[0], evil[1], Payload(eval, _touch_code(marker)), *evil[3:])
    path = write_dataset(tmp_path / "evil.npz", [sample(1), evil])
    out = tmp_path / "out.zarr"
    assert_refused(cli(*DATASET_COMMANDS[command](path), "-o", out), path,
                   "unsafe pickle in 'data' refused: refusing to unpickle builtins.eval", outputs=[out])
    assert not marker.exists()


def test_hostile_provenance_is_refused(tmp_path):
    """Provenance is only a record, and an unreadable one is ignored; a hostile one refuses the file."""
    marker = tmp_path / "pwned"
    path = tmp_path / "set.npz"
    data = np.empty((1, 6), dtype=object)
    data[0] = sample(1)
    np.savez(path, data=data, keys=np.array(["w"]),
             provenance=np.array([Payload(os.system, f"touch {marker}")], dtype=object))
    out = tmp_path / "out.h5"
    assert_refused(cli("export", path, "-o", out), path, "unsafe pickle in 'provenance' refused", outputs=[out])
    assert not marker.exists()


def test_hostile_columnar_field_is_refused(game, tmp_path):
    """A columnar .npz's small fields are plain arrays; an object array there goes through the same
    restricted unpickler."""
    columnar = tmp_path / "columnar.npz"
    assert_ok(cli("export", game[1], "-o", columnar, "--layout", "columnar", "--json"))
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    n = len(open_dataset(columnar))
    np.save(buf, np.array([Payload(os.system, f"touch {marker}")] + ["press"] * (n - 1), dtype=object),
            allow_pickle=True)
    path = rezip(columnar, tmp_path / "evil.npz", phase=buf.getvalue())
    out = tmp_path / "out.zarr"
    assert_refused(cli("export", path, "-o", out), path, "unsafe pickle in 'phase' refused", outputs=[out])
    assert not marker.exists()


def test_pickle_opcode_that_builds_objects_is_refused(tmp_path):
    """Protocol 0's INST calls what it names without any REDUCE: refused by opcode."""
    marker = tmp_path / "pwned"
    command = f"touch {marker}".encode()
    payload = b"(\x8c" + bytes([len(command)]) + command + b"ios\nsystem\n."  # MARK, the command, INST os.system
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    path = tmp_path / "inst.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data.npy", header.getvalue() + payload)
        zf.writestr("keys.npy", _npy(np.array(["w"])))
    out = tmp_path / "out.zarr"
    assert_refused(cli("preprocess", path, "-o", out), path, "unsafe pickle in 'data' refused",
                   "refusing pickle opcode INST", outputs=[out])
    assert not marker.exists()
    pickle.loads(payload)  # the control: Python's unpickler runs it
    assert marker.exists()


def test_protocol_2_pickle_of_an_empty_array_is_not_hostile(tmp_path):
    """The other way round: protocol 2 pickles an empty array's data as ``bytes()``, a call to a
    builtin; that one (with no arguments) is allowed, so such a file is read, not refused."""
    entries = rows(jump(3) + jump(8))
    for row in entries:
        row[1] = np.zeros(0, np.float64)  # prev_interval as an empty array: malformed, but not hostile
    entries[0, 1] = entries[2, 1] = 0.0
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": entries.shape})
    pickled = pickle.dumps(entries, protocol=2)
    assert b"__builtin__\nbytes" in pickled
    buf.write(pickled)
    path = tmp_path / "p2.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data.npy", buf.getvalue())
        zf.writestr("keys.npy", _npy(np.array(["w", "a"])))
    counts = assert_ok(cli("preprocess", path, "-o", tmp_path / "out.zarr", "--json"))
    assert (counts["press_seen"], counts["malformed"], counts["paired"]) == (2, 2, 0)


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()
