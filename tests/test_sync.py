"""check_sync: does a keylog fit its video? Real recordings from the generator, real videos."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from jumpnet_stream import JumpnetError
from jumpnet_stream.sync import MATCH_DIFFERENCE, check_sync
from jumpnet_stream.synth import make_recording, write_clip


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two 4-second recordings of different seeds (keylog + video each)."""
    folder = tmp_path_factory.mktemp("sync")
    return (make_recording(folder, name="one", seconds=4, keys=("w", "a"), seed=22),
            make_recording(folder, name="two", seconds=4, keys=("w", "a"), seed=24))


def _frame_indices(npz) -> np.ndarray:
    with np.load(npz, allow_pickle=True) as z:  # the generator's own file: trusted
        return np.array([int(row[5]) for row in z["data"]])


def _rewrite_frames(source, target, change):
    """A copy of a keylog with every frame_idx passed through ``change`` (and the entries reordered by
    the permutation it may return)."""
    with np.load(source, allow_pickle=True) as z:
        data, keys = z["data"].copy(), z["keys"]
    order = change(data)
    np.savez(target, data=data if order is None else data[order], keys=keys)
    return target


def test_matching_pair_is_ok(pair):
    rec = pair[0]
    report = check_sync(rec.npz, rec.video)
    frames = _frame_indices(rec.npz)
    assert report.verdict == "ok" and report.reasons == []
    assert report.events == len(frames) and report.malformed == 0
    assert (report.first_frame, report.last_frame) == (frames.min(), frames.max())
    assert report.frames_counted == report.frames_claimed == rec.frames and report.fps == 30.0
    assert report.past_end == 0 and report.decreasing_steps == 0
    assert report.compared == len(frames) and report.image_size == (227, 227)
    assert report.difference["max"] < MATCH_DIFFERENCE  # the capture, scaled 2x, overlaid, mp4v-coded and back
    assert report.baseline["median"] > 3 * report.difference["median"]
    assert report.best_offset == 0
    assert report.events_per_second == pytest.approx(len(frames) / ((frames.max() - frames.min() + 1) / 30.0))
    assert report.median_frame_gap == float(np.median(np.diff(frames)))
    assert json.loads(json.dumps(report.counts())) == report.counts()
    text = report.text()
    assert text.splitlines()[0] == f"check {rec.npz} against {rec.video}: ok"
    assert "events past the video's end   0" in text


def test_another_recordings_video_is_suspect(pair):
    one, two = pair
    good = check_sync(one.npz, one.video)
    report = check_sync(one.npz, two.video)
    assert report.verdict == "suspect"
    assert report.difference["median"] > max(MATCH_DIFFERENCE, 2 * good.difference["median"])
    assert report.past_end == 0 and report.decreasing_steps == 0  # the numbers alone look fine
    assert len(report.reasons) == 1 and "event images do not match the frames they name" in report.reasons[0]
    assert f"{report.difference['median']:.3f}" in report.reasons[0]
    assert "suspect" in report.text().splitlines()[0] and report.reasons[0] in report.text()


def test_indices_past_a_shorter_video_are_flagged_with_the_numbers(pair, tmp_path):
    """The recording's own video cut to its first 50 frames: the events before the cut still match."""
    rec = pair[0]
    capture = cv2.VideoCapture(rec.video)
    frames = []
    while len(frames) < 50:
        ok, frame = capture.read()
        assert ok
        frames.append(frame)
    capture.release()
    short = tmp_path / "short.avi"
    write_clip(short, np.stack(frames))
    report = check_sync(rec.npz, short)
    indices = _frame_indices(rec.npz)
    beyond = int(np.count_nonzero(indices >= 50))
    assert 0 < beyond < len(indices)
    assert report.verdict == "suspect" and report.frames_counted == 50
    assert report.past_end == beyond and report.compared == len(indices) - beyond
    assert report.reasons == [f"{beyond} of {len(indices)} events name frames past the video's end "
                              f"(frame_idx up to {indices.max()}, the video has 50 frames)"]
    assert report.difference["median"] < MATCH_DIFFERENCE  # what is there still matches (MJPG: lossy)


@pytest.mark.parametrize("shift", [1, -1, 2])
def test_shifted_frame_counter_is_found(pair, tmp_path, shift):
    rec = pair[0]

    def change(data):
        for row in data:
            row[5] = max(0, int(row[5]) + shift)

    path = _rewrite_frames(rec.npz, tmp_path / "shifted.npz", change)
    report = check_sync(path, rec.video)
    assert report.verdict == "suspect" and report.best_offset == -shift
    direction = "earlier" if shift > 0 else "later"
    assert len(report.reasons) == 1
    assert f"match the video best {abs(shift)} frame" in report.reasons[0] and direction in report.reasons[0]


def test_events_out_of_order_are_flagged(pair, tmp_path):
    rec = pair[0]
    path = _rewrite_frames(rec.npz, tmp_path / "shuffled.npz",
                           lambda data: np.random.default_rng(0).permutation(len(data)))
    frames = _frame_indices(path)
    steps = np.diff(frames)
    report = check_sync(path, rec.video)
    assert report.decreasing_steps == int(np.count_nonzero(steps < 0)) > 0
    assert report.largest_step_back == int(-steps.min())
    assert report.verdict == "suspect"
    assert any(f"frame_idx steps back {report.decreasing_steps} times" in r for r in report.reasons)
    assert report.difference["median"] < MATCH_DIFFERENCE  # each image still matches its own frame


def test_sample_bounds_the_images_compared(pair):
    rec = pair[0]
    report = check_sync(rec.npz, rec.video, sample=4, seed=3)
    assert report.compared == 4 and report.verdict == "ok"
    assert all(0 <= w["event"] < report.events for w in report.worst)
    again = check_sync(rec.npz, rec.video, sample=4, seed=3)
    assert again.counts() == report.counts()  # seeded


def test_compare_at_another_size(pair):
    rec = pair[0]
    report = check_sync(rec.npz, rec.video, size=64)
    assert report.image_size == (64, 64) and report.verdict == "ok"
    assert report.difference["median"] < MATCH_DIFFERENCE


def test_bad_inputs_are_one_line_errors(pair, tmp_path):
    rec = pair[0]
    with pytest.raises(JumpnetError, match="no such file"):
        check_sync(rec.npz, tmp_path / "none.mp4")
    with pytest.raises(JumpnetError, match="no such file"):
        check_sync(tmp_path / "none.npz", rec.video)
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(JumpnetError, match="cannot open video"):
        check_sync(rec.npz, tmp_path / "text.mp4")
    with pytest.raises(JumpnetError, match="sample must be between 1 and 1000"):
        check_sync(rec.npz, rec.video, sample=0)


def test_check_command_exit_codes(pair):
    """The command line: exit 0 and "ok" for the right video, 2 and the reason for another recording's."""
    from conftest import run_cli

    good = run_cli("check", str(pair[0].npz), str(pair[0].video), "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["verdict"] == "ok"
    wrong = run_cli("check", str(pair[0].npz), str(pair[1].video))
    assert wrong.returncode == 2 and ": suspect" in wrong.stdout.splitlines()[0]
    assert "do not match the frames they name" in wrong.stdout
    missing = run_cli("check", str(pair[0].npz) + ".gone", str(pair[0].video))
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_the_compared_frames_are_seeked_to_and_the_rest_counted_from_the_packets(tmp_path):
    """A keylog whose events name the first five seconds of a 20-second H.264 screen recording (B-frames, GOPs of
    60): the frames compared are decoded from the keyframe before them, the video's frames counted from
    its packets, not decoded to the end."""
    pytest.importorskip("av")
    from jumpnet_stream.screen_video import write_screen_recording

    rec = make_recording(tmp_path, name="short", seconds=5, keys=("w",), seed=3, video=False)
    video = write_screen_recording(tmp_path / "screen.mp4", frames=600, width=320, height=180, fps=30, gop=60,
                                   bframes=3, preset="veryfast").path
    report = check_sync(rec.npz, video, sample=20)
    assert report.video_read == "seek" and report.frames_counted == 600
    assert report.compared == min(20, report.events) >= 5 and report.past_end == 0
