"""Absurd options, lying containers, outputs that would replace inputs, odd names, signals and two builds at
once (issue 12), through the real command line under the memory cap of ``tests/hostile.py``: each ends as the
tool promises (one line naming the file or the option, a non-zero exit, nothing half-written, the inputs
untouched, peak memory under 300 MB) or, where the input is legal, works."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest

from hostile import PROMISE_MB, run_capped
from jumpnet_stream import Chunk, create_dataset, open_dataset
from jumpnet_stream.synth import make_recording, write_clip
from test_bad_input import assert_refused


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A recording in the recorder's layout and its built set."""
    root = tmp_path_factory.mktemp("faults")
    rec = make_recording(root / "in", name="run", seconds=8, keys=("w",), seed=4, folders=True)
    result = run_capped("build", root / "in", "-o", root / "set", "--negatives", "40")
    assert result.returncode == 0, result.stderr
    return root, rec


def digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def ok(result) -> dict:
    """A legal input's run: it worked, within the watcher's cap (the 300 MB promise is a refusal's: the
    libraries a build loads, numba's LLVM among them, take about 220 MB before any data)."""
    assert result.returncode == 0, result.stderr
    assert result.killed is None, result.killed
    return json.loads(result.stdout) if result.stdout.startswith("{") else {}


# -- containers that lie ----------------------------------------------------------------------------------
def _claiming_avi(path, frames: np.ndarray, claimed: int) -> str:
    write_clip(path, frames, claimed=claimed)
    return str(path)


def _claiming_mkv(path, frames: np.ndarray, duration_ms: float) -> str:
    """The frames as mp4v in Matroska, its Duration element patched: FFmpeg counts duration x fps frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (frames.shape[2], frames.shape[1]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    data = bytearray(open(path, "rb").read())
    at = data.find(bytes.fromhex("4489"))  # the Segment Info's Duration, an 8-byte float of milliseconds
    assert data[at + 2] == 0x88
    data[at + 3:at + 11] = struct.pack(">d", duration_ms)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


@pytest.mark.parametrize("kind", ["avi claiming 2**31", "mkv claiming 3e13"])
def test_a_container_claiming_billions_of_frames_is_counted_instead(session, tmp_path, kind):
    """Today's claims: one flag per claimed frame would be 2 GB (AVI) or 27 TiB (Matroska's duration)."""
    root, rec = session
    capture = cv2.VideoCapture(rec.video)
    frames = np.stack([capture.read()[1] for _ in range(rec.frames)])
    if kind.startswith("avi"):
        video = _claiming_avi(tmp_path / "run_120000.avi", frames, 2 ** 31)
    else:
        video = _claiming_mkv(tmp_path / "run_120000.mkv", frames, 1e15)
    claim = cv2.VideoCapture(video).get(cv2.CAP_PROP_FRAME_COUNT)
    assert claim >= 2 ** 31, "the crafted container does claim billions"
    frames = rec.frames
    positives = next(root.glob("set/work/positives-run-*.zarr"))
    counts = ok(run_capped("negatives", video, "-o", tmp_path / "n.zarr", "--positives", positives, "--keep", "10",
                           "--radius", "0", "--json"))
    assert counts["frames_claimed"] is None  # not believed
    assert counts["excluded"] + counts["eligible"] == frames and counts["written"] == 10


def test_a_build_on_a_container_claiming_billions_of_frames_counts_them(session, tmp_path):
    """The whole build on an AVI claiming 2**31 frames: its frames counted by decoding, every stage in
    bounded memory (the watcher's cap; a flag per claimed frame would be 2 GB, over RLIMIT_DATA)."""
    root, rec = session
    capture = cv2.VideoCapture(rec.video)
    video = _claiming_avi(tmp_path / "run_120000.avi", np.stack([capture.read()[1] for _ in range(rec.frames)]),
                          2 ** 31)
    result = run_capped("build", "--recording", rec.npz, "--video", video, "-o", tmp_path / "set", "--negatives", "40",
                        "--json")
    report = ok(result)
    assert report["accounting"]["recordings"]["run"]["frames"]["frames"] == rec.frames
    assert report["negatives"] == 40
    # nothing sized from the claim (a flag per claimed frame: 2 GB); a whole build peaks at 260-320 MB here, near
    # the 300 MB promise on its own (issue 16 has it to do), so this checks the claim's cost, not that promise
    assert result.peak_mb < 400, f"peak {result.peak_mb:.0f} MB"


def test_a_still_image_named_like_a_video_is_refused(session, tmp_path):
    root, rec = session
    still = tmp_path / "run_120000.mp4"
    cv2.imwrite(str(tmp_path / "still.png"), np.full((454, 454, 3), 90, np.uint8))
    os.replace(tmp_path / "still.png", still)
    result = run_capped("build", "--recording", rec.npz, "--video", still, "-o", tmp_path / "out")
    assert_refused(result, still, "holds a single picture")
    assert result.peak_mb < PROMISE_MB


# -- options with no sense ---------------------------------------------------------------------------------
def _tall_set(path, rows: int = 1200):
    with create_dataset(path, ["w"]) as writer:
        writer.write(Chunk({"image": np.zeros((rows, 4, 4, 3), np.uint8), "label": np.zeros(rows, np.float32),
                            "keys_raw": np.zeros((rows, 1), np.float32), "hold_duration": np.zeros((rows, 1), np.float32),
                            "phase": np.full(rows, "press"), "frame_index": np.arange(rows),
                            "source": np.full(rows, "tall")}))
    return path


@pytest.mark.parametrize("args,message", [
    (["build", "{in}", "-o", "{out}", "--radius", str(10 ** 11)], "radius must be between 0 and 1000000000"),
    (["build", "{in}", "-o", "{out}", "--multiplier", str(10 ** 9)], "multiplier must be between 0 and 64"),
    (["augment", "{set}/dataset.zarr", "-o", "{out}.zarr", "--multiplier", "65"], "multiplier must be between 0 and 64"),
    (["negatives", "{video}", "-o", "{out}.zarr", "--positives", "{set}/dataset.zarr", "--radius", str(2 ** 62)],
     "radius must be between 0 and 1000000000"),
    (["inspect", "{tall}", "--sheet", "{out}.png", "--count", "100000"], "count must be at most 1000"),
    (["check", "{raw}", "{video}", "--sample", str(10 ** 9)], "sample must be between 1 and 1000"),
    (["demo", "{out}", "--seconds", "1e9"], "seconds must be between 1 and 600"),
])
def test_absurd_options_are_refused_before_any_work(session, tmp_path, args, message):
    root, rec = session
    tall = _tall_set(tmp_path / "tall.zarr")
    values = {"in": root / "in", "out": tmp_path / "out", "set": root / "set", "video": rec.video, "raw": rec.npz,
              "tall": tall}
    result = run_capped(*(a.format(**values) for a in args))
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out")]
    assert result.peak_mb < PROMISE_MB


def test_the_largest_sensible_radius_covers_the_whole_video(session, tmp_path):
    root, rec = session
    counts = ok(run_capped("negatives", rec.video, "-o", tmp_path / "n.zarr", "--positives",
                           next(root.glob("set/work/positives-run-*.zarr")), "--radius", str(10 ** 9), "--keep", "5",
                           "--json"))
    assert counts["eligible"] == counts["written"] == 0 and counts["excluded"] == rec.frames


# -- outputs never replace inputs ---------------------------------------------------------------------------
def test_an_output_is_never_one_of_the_inputs(session, tmp_path):
    root, rec = session
    raw = tmp_path / "run.npz"
    shutil.copy(rec.npz, raw)
    before = digest(raw)
    os.symlink(raw, tmp_path / "link.npz")
    os.link(raw, tmp_path / "hard.npz")
    dataset = tmp_path / "set.zarr"
    shutil.copytree(root / "set" / "dataset.zarr", dataset)
    for args, output in [
        (["preprocess", raw, "-o", raw, "--overwrite"], raw),
        (["preprocess", raw, "-o", tmp_path / "link.npz", "--overwrite"], tmp_path / "link.npz"),
        (["preprocess", raw, "-o", tmp_path / "hard.npz", "--overwrite"], tmp_path / "hard.npz"),
        (["export", dataset, "-o", dataset / "inner.zarr"], dataset / "inner.zarr"),
        (["export", dataset, "-o", dataset, "--overwrite"], dataset),
        (["merge", dataset, tmp_path / "link.npz", "-o", tmp_path / "link.npz", "--overwrite"], tmp_path / "link.npz"),
        (["inspect", dataset, "--sheet", dataset / "zarr.json.png"], dataset / "zarr.json.png"),
    ]:
        result = run_capped(*args)
        assert result.returncode == 1 and "an output never replaces an input" in result.stderr, (args, result.stderr)
        assert result.stderr.startswith(f"jumpnet-stream: error: {output}: ") and len(result.stderr.splitlines()) == 1
    assert digest(raw) == before and len(open_dataset(dataset)) == len(open_dataset(root / "set" / "dataset.zarr"))
    assert not (dataset / "inner.zarr").exists()


@pytest.mark.parametrize("kind", ["dangling", "to a folder"])
def test_overwrite_onto_a_link_replaces_the_link_and_names_the_output(session, tmp_path, kind):
    root, _ = session
    out = tmp_path / "out.zarr"
    target = tmp_path / "elsewhere.zarr"
    if kind == "to a folder":
        target.mkdir()
        (target / "keep.txt").write_text("mine")
    os.symlink(target, out)
    result = run_capped("export", root / "set" / "dataset.zarr", "-o", out, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert not out.is_symlink() and len(open_dataset(out)) == len(open_dataset(root / "set" / "dataset.zarr"))
    assert kind == "dangling" or (target / "keep.txt").read_text() == "mine"


# -- names that are not UTF-8, settings of the wrong type ------------------------------------------------------
def test_file_names_and_keys_that_are_not_utf8(session, tmp_path):
    root, rec = session
    folder = os.path.join(os.fsencode(tmp_path), b"caf\xe9")  # a Latin-1 name
    os.makedirs(os.path.join(folder, b"collected"))
    os.makedirs(os.path.join(folder, b"recordings"))
    shutil.copy(rec.npz, os.path.join(folder, b"collected", b"r\xe9c.npz"))
    shutil.copy(rec.video, os.path.join(folder, b"recordings", b"r\xe9c_120000.mp4"))
    name = os.fsdecode(folder)
    built = run_capped("build", name, "-o", os.path.join(name, "out"), "--negatives", "10", "--json")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["samples"] > 10
    raw = os.path.join(name, "collected", os.fsdecode(b"r\xe9c.npz"))
    summary = run_capped("preprocess", raw, "-o", os.path.join(name, "p\udce9.zarr"))
    assert summary.returncode == 0 and "p\\udce9.zarr" in summary.stdout, summary.stderr
    exported = run_capped("export", os.path.join(name, "p\udce9.zarr"), "-o", os.path.join(name, "p.h5"), "--json")
    assert exported.returncode == 0, exported.stderr


@pytest.mark.parametrize("setting,message", [
    ('negatives = "500"', "setting negatives must be a whole number, not '500'"),
    ("seed = 1.5", "setting seed must be a whole number, not 1.5"),
    ("legacy = 1", "setting legacy must be true or false, not 1"),
    ('directories = "data"', "directories must be a list of folders"),
    ("key = 3", "setting key must be a string, not 3"),
])
def test_config_settings_of_the_wrong_type_name_the_setting(tmp_path, setting, message):
    config = tmp_path / "build.toml"
    config.write_text(f'output = "out"\n{setting}\n')
    result = run_capped("build", "--config", config)
    assert_refused(result, config, message, outputs=[tmp_path / "out"])


# -- signals, stale partials, two builds at once --------------------------------------------------------------
# The command as from a terminal, where Ctrl-C is not ignored, however these tests were started (a script's
# background job ignores it, and the command then keeps it ignored, as Python does)
_AS_FROM_A_TERMINAL = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                       "from jumpnet_stream.cli import main; sys.exit(main(sys.argv[1:]))")


def _start(*args):
    return subprocess.Popen([sys.executable, "-c", _AS_FROM_A_TERMINAL, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _partials(folder) -> list[str]:
    return [n for n in os.listdir(folder) if ".partial-" in n]


def _when_partial_appears(process, folder, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None and not _partials(folder):
        time.sleep(0.002)
    assert process.poll() is None and _partials(folder), "the command ended before it could be interrupted"


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A set large enough that its legacy export takes a few seconds."""
    path = tmp_path_factory.mktemp("big") / "big.zarr"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 227, 227, 3), dtype=np.uint8)
    with create_dataset(path, ["w"]) as writer:
        for start in range(0, 1280, 64):
            writer.write(Chunk({"image": images, "label": np.zeros(64, np.float32),
                                "keys_raw": np.zeros((64, 1), np.float32), "hold_duration": np.zeros((64, 1), np.float32),
                                "phase": np.full(64, "press"), "frame_index": np.arange(start, start + 64),
                                "source": np.full(64, "big")}))
    return path


@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_sigterm_and_ctrl_c_clean_up(big, tmp_path, sig, code, word):
    process = _start("export", big, "-o", tmp_path / "final.npz")
    _when_partial_appears(process, tmp_path)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code and word in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command, output", [("export", "final.npz"), ("inspect", "sheet.png")])
def test_an_interrupt_python_dropped_still_keeps_the_output_from_landing(big, tmp_path, command, output):
    """A Ctrl-C whose KeyboardInterrupt Python drops (raised while a finalizer runs, it is only printed) must
    not let the command finish and land its output: the signal is noted, and landing raises it again. Here
    a finalizer takes the signal as the command opens its output's temporary file (an audit hook)."""
    out = tmp_path / "out"
    out.mkdir()
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        from jumpnet_stream.cli import main
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal (see _start)
        class TakesTheSignal:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler runs here: its KeyboardInterrupt is dropped with the finalizer
        def hook(event, args):
            if event == "open" and not taken and ".partial-" in str(args[0]) \\
                    and threading.current_thread() is threading.main_thread():
                taken.append(1)
                TakesTheSignal()  # and gone: its finalizer runs
        taken = []
        sys.addaudithook(hook)
        sys.exit(main([{command!r}, {str(big)!r}, {"-o" if command == "export" else "--sheet"!r},
                       {str(out / output)!r}]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "Exception ignored in" in result.stderr and "KeyboardInterrupt" in result.stderr  # Python dropped it
    assert result.returncode == 130 and "interrupted (nothing half-written was kept)" in result.stderr
    assert os.listdir(out) == []


def test_a_program_that_runs_the_command_line_keeps_its_own_ctrl_c(big, tmp_path):
    """``main`` run in a program's process: afterwards Ctrl-C is the program's again, and one it handles
    does not stop its later outputs from landing."""
    script = textwrap.dedent(f"""
        import os, signal
        from jumpnet_stream.cli import main
        from jumpnet_stream.stages.export import export
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the program's (inherited: may be ignored)
        assert main(["inspect", {str(big)!r}]) == 0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass
        export({str(big)!r}, {str(tmp_path / "after.npz")!r}, quiet=True)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "after.npz").is_file()


@pytest.mark.parametrize("command", ["export", "merge"])
def test_the_next_run_removes_what_a_killed_run_left(big, tmp_path, command):
    args = [command, big, "-o", tmp_path / "out.npz"] if command == "export" else \
        [command, big, big, "-o", tmp_path / "out.npz", "--shuffle"]
    process = _start(*args)
    _when_partial_appears(process, tmp_path)
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = _partials(tmp_path)
    assert left, "a SIGKILL leaves its partial output"
    ok(run_capped(*args, "--json"))
    assert _partials(tmp_path) == [] and (tmp_path / "out.npz").is_file()


def test_two_builds_on_one_folder(session, tmp_path):
    root, _ = session
    out = tmp_path / "out"
    first = _start("build", root / "in", "-o", out, "--negatives", "200", "--multiplier", "8")
    deadline = time.monotonic() + 60
    while not (out / "manifest.json").exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    second = run_capped("build", root / "in", "-o", out, "--negatives", "200", "--multiplier", "8")
    assert second.returncode == 1 and "is in use by another build (pid " in second.stderr, second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert open_dataset(out / "dataset.zarr")  # the first build was not disturbed


def test_a_build_killed_in_its_first_stage_resumes(session, tmp_path):
    root, _ = session
    out = tmp_path / "out"
    process = _start("build", root / "in", "-o", out, "--negatives", "20")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "work").exists():
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / "manifest.json").exists(), "the manifest is written before the first stage"
    ok(run_capped("build", root / "in", "-o", out, "--negatives", "20", "--json"))
