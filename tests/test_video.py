"""The frame source: exact indices, cheap skipping, and containers that miscount their frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from jumpnet_stream import Chunk, JumpnetError
from jumpnet_stream.synth import write_clip
from jumpnet_stream.video import Video


def _plain_read(path):
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return np.stack(frames)
        frames.append(frame)


def _collect(chunks):
    frames, indices = [], []
    for chunk in chunks:
        frames.append(chunk["frame"].copy())  # the source reuses its buffer
        indices.append(chunk["frame_index"])
    return np.concatenate(frames), np.concatenate(indices)


@pytest.mark.parametrize("rows", [1, 7])
def test_all_frames_match_plain_decoding(recordings, rows):
    path = recordings["with_video"].video
    expected = _plain_read(path)
    video = Video(path)
    frames, indices = _collect(video.frames(rows=rows))
    assert video.claimed_frames == len(expected) == video.frames_read == recordings["with_video"].frames
    np.testing.assert_array_equal(indices, np.arange(len(expected)))
    np.testing.assert_array_equal(frames, expected)
    assert (video.width, video.height, video.fps) == (454, 454, 30.0)


def test_selected_frames_only_and_early_stop(recordings):
    path = recordings["with_video"].video
    expected = _plain_read(path)
    wanted = {0, 3, 4, 100, 150, 151}
    video = Video(path)
    frames, indices = _collect(video.frames(wanted.__contains__, stop_after=151, rows=4))
    assert indices.tolist() == sorted(wanted)
    np.testing.assert_array_equal(frames, expected[sorted(wanted)])
    assert video.frames_read == 152  # stopped after the last wanted frame


@pytest.mark.parametrize("claimed", [500, 10])
def test_wrong_container_count_does_not_matter(tmp_path, claimed):
    levels = (np.arange(50) * 5).astype(np.uint8)  # frame i is flat grey 5*i: decoded order is checkable
    frames = np.broadcast_to(levels[:, None, None, None], (50, 48, 64, 3)).copy()
    path = str(tmp_path / "clip.avi")
    write_clip(path, frames, claimed=claimed)
    video = Video(path)
    assert video.claimed_frames == claimed
    got, indices = _collect(video.frames())
    assert video.frames_read == 50 and video.count_frames() == 50
    np.testing.assert_array_equal(indices, np.arange(50))
    assert np.abs(got.astype(int) - frames).max() <= 2  # MJPG is lossy, but each frame is where it belongs


def test_missing_and_unreadable_videos(tmp_path):
    with pytest.raises(JumpnetError, match="no such file"):
        Video(tmp_path / "none.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(JumpnetError, match="cannot open video"):
        Video(tmp_path / "text.mp4")


def test_recording_name_from_recorder_naming(recordings):
    assert Video(recordings["with_video"].video).name == "game"


def test_chunks_are_chunks(recordings):
    chunk = next(Video(recordings["with_video"].video).frames(rows=3))
    assert isinstance(chunk, Chunk) and chunk.fields == ("frame", "frame_index") and len(chunk) == 3
