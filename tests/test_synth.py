"""Synthetic recordings are made as the recorder makes them (its capture.py, data_collector.py and
Data_scrap_tool.py): a video of the capture with the held keys' labels, 2x nearest, mp4v; a keylog of clean
captures whose frame_idx counts the frames written before the event."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT, run_cli
from jumpnet_stream.formats import open_dataset
from jumpnet_stream.recording import Recording
from jumpnet_stream.synth import CAPTURE_PERIOD, FPS, LABEL_GREEN, SCREEN, Scene, make_recording, preview_frame


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    rec = make_recording(tmp_path_factory.mktemp("synth"), name="two", seconds=12, keys=("w", "a"), seed=21,
                         folders=True)
    events = list(Recording(rec.npz).events())
    return rec, {name: np.concatenate([c[name] for c in events]) for name in events[0].fields}


def decoded(video: str) -> list[np.ndarray]:
    capture = cv2.VideoCapture(video)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_recorder_layout_and_rate(recorded):
    rec, _ = recorded
    assert rec.npz.endswith(os.path.join("collected", "two.npz"))
    assert rec.video.endswith(os.path.join("recordings", "two_120000.mp4"))
    capture = cv2.VideoCapture(rec.video)
    assert capture.get(cv2.CAP_PROP_FPS) == FPS and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == rec.frames
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    assert fourcc.lower() in ("mp4v", "fmp4")  # MPEG-4 part 2, as OpenCV's writer names mp4v (FFmpeg: FMP4)
    assert rec.frames == int(12 / CAPTURE_PERIOD) < 12 * FPS  # the real rate is below the labelled 30 fps


def test_keylog_images_are_clean_captures_of_the_next_frame(recorded):
    """Each event's image is the capture the recorder grabs at the event: the scene of frame frame_idx, without
    any label; frame_idx never steps back and reaches at most the frame count."""
    rec, events = recorded
    frames = events["frame_idx"]
    assert np.all(np.diff(frames) >= 0) and frames.max() <= rec.frames
    scene = _scene(rec)
    for i in range(0, len(frames), 7):
        np.testing.assert_array_equal(events["image"][i], scene.capture(int(frames[i]), 227))


def _scene(rec) -> Scene:
    """The recording's scene, rebuilt from its keylog's jump presses and releases (as make_recording does)."""
    events = list(Recording(rec.npz).events())
    phases = np.concatenate([c["phase"] for c in events])
    held = np.concatenate([c["multi_hot"][:, 0] for c in events]) > 0.5
    frames = np.concatenate([c["frame_idx"] for c in events])
    jumps, start, before = [], None, False
    for phase, now, frame in zip(phases, held, frames):
        if now and not before:
            start = frame
        if before and not now:
            jumps.append((int(start), max(10, int(12 + 0.6 * (frame - start)))))
        before = now
    return Scene(SCREEN * 227, 21, jumps)


def test_video_frames_are_the_labelled_preview(recorded):
    """Frame f: the capture with a green "<key>↓" for every key held when it was captured, 2x nearest."""
    rec, events = recorded
    video = decoded(rec.video)
    assert len(video) == rec.frames and video[0].shape == (454, 454, 3)
    scene = _scene(rec)
    state = np.zeros(2, bool)
    position, held_at = 0, []
    for f in range(rec.frames):
        while position < len(events["frame_idx"]) and events["frame_idx"][position] <= f:
            state = events["multi_hot"][position] > 0.5
            position += 1
        held_at.append(state.copy())
    checked = {True: 0, False: 0}
    for f in range(0, rec.frames, 5):
        want = preview_frame(scene.capture(f, 227), ("w", "a"), held_at[f])
        other = preview_frame(scene.capture(f + 2, 227), ("w", "a"), held_at[f])
        loss = np.abs(video[f].astype(int) - want).mean()
        assert loss < 4 and loss < 0.5 * np.abs(video[f].astype(int) - other).mean(), f  # mp4v's loss only
        label = video[f][2 * 6:2 * 22, 2 * 5:2 * 45].astype(int)  # where "w↓" is drawn, in the 2x frame
        green = np.count_nonzero((label[..., 1] > 200) & (label[..., 0] < 120) & (label[..., 2] < 120))
        assert (green > 40) == bool(held_at[f][0]), (f, green)
        checked[bool(held_at[f][0])] += 1
    assert checked[True] > 3 and checked[False] > 3
    assert LABEL_GREEN == (0, 255, 0)


def test_prev_interval_is_zero_before_the_first_release_and_on_releases(recorded):
    _, events = recorded
    release = events["phase"] == "release"
    first = int(np.argmax(release))
    assert not events["prev_interval"][:first].any() and not events["prev_interval"][release].any()
    assert (events["prev_interval"][first + 1:][~release[first + 1:]] > 0).all()


def test_a_jump_after_the_last_frame_is_kept(tmp_path):
    """The recorder names the frame count for an event after the last frame: build, negatives and check keep
    such a jump instead of refusing the keylog as another recording's."""
    rec = make_recording(tmp_path / "in", name="late", seconds=6, keys=("w",), seed=3, writer="numpy", folders=True)
    with np.load(rec.npz, allow_pickle=True) as z:  # our own generated file
        data, keys = list(z["data"]), z["keys"]
    image = data[-1][0]
    data += [(image, 0.4, np.ones(1, np.float32), np.zeros(1, np.float32), "press", rec.frames),
             (image, 0.0, np.zeros(1, np.float32), np.full(1, 0.2, np.float32), "release", rec.frames)]
    entries = np.empty((len(data), 6), dtype=object)
    for i, entry in enumerate(data):
        entries[i] = entry
    np.savez(rec.npz, data=entries, keys=keys)
    check = run_cli("check", rec.npz, rec.video, "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["past_end"] == 0
    built = run_cli("build", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--negatives", "20", "--json")
    assert built.returncode == 0, built.stderr
    frames = json.loads(built.stdout)["accounting"]["recordings"]["late"]
    assert frames["positives"] == sum(1 for e in data if str(e[4]) == "release")
    positives = str(tmp_path / "late-positives.zarr")
    assert run_cli("preprocess", rec.npz, "-o", positives, "--quiet").returncode == 0
    assert open_dataset(positives).column("frame_index").max() == rec.frames   # the late jump is a positive
    negatives = run_cli("negatives", rec.video, "--positives", positives, "-o", str(tmp_path / "neg.zarr"),
                        "--keep", "20", "--json")
    assert negatives.returncode == 0 and json.loads(negatives.stdout)["written"] == 20, negatives.stderr
    far = run_cli("build", "--recording", rec.npz, "--video", _short_video(rec, tmp_path), "-o", str(tmp_path / "x"))
    assert far.returncode == 1 and "is the keylog from another recording?" in far.stderr


def _short_video(rec, tmp_path) -> str:
    """The recording's first half: its last jumps are then clearly past the end."""
    path = str(tmp_path / "short_120000.mp4")
    frames = decoded(rec.video)[: rec.frames // 2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), FPS, (454, 454))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_make_recording_tool_writes_the_recorders_folders(tmp_path):
    tool = os.path.join(ROOT, "tools", "make_recording.py")
    usage = subprocess.run([sys.executable, tool, "--help"], capture_output=True, text=True, check=True).stdout
    options = re.findall(r"^  (--[\w-]+)", usage, flags=re.M)
    assert {"--name", "--seconds", "--keys", "--seed", "--no-video"} <= set(options)
    for option in options:  # every option has help text after it
        assert re.search(rf"^  {option}\b.*\S.*\n?(\s{{10,}}\S.*)?", usage, flags=re.M), option
    described = [line for line in usage.splitlines() if line.startswith("  --")]
    assert all(len(line.split(None, 2)) >= 2 for line in described)
    result = subprocess.run([sys.executable, tool, str(tmp_path), "--name", "run7", "--seconds", "3"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "collected" / "run7.npz").is_file()
    assert (tmp_path / "recordings" / "run7_120000.mp4").is_file()


def test_an_event_flood_is_a_keylog_of_tiny_taps_and_jumps(tmp_path):
    """``write_event_flood`` (bench_events.py's keylogs): N events over the video's frames, presses and
    releases alternating, one pair in ``jump_every`` the jump key's: that many positives."""
    from jumpnet_stream import open_dataset, preprocess
    from jumpnet_stream.synth import write_event_flood

    path = write_event_flood(tmp_path / "flood.npz", 40, frames=7, jump_every=4, size=2)
    recording = Recording(path)
    events = {name: np.concatenate([c[name] for c in recording.events()]) for name in ("phase", "frame_idx", "image")}
    assert recording.keys == ["w", "a"] and not recording.malformed
    assert events["phase"].tolist() == ["press", "release"] * 20
    assert events["frame_idx"].tolist() == sorted(events["frame_idx"]) and events["frame_idx"].max() < 7
    assert events["image"].shape == (40, 2, 2, 3)
    preprocess(path, tmp_path / "p.zarr", key="w")
    assert len(open_dataset(tmp_path / "p.zarr")) == 5
