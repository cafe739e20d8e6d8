"""Library calls refuse with messages that name their parameters, not the command line's flags (issue 13):
a Python caller has no ``--overwrite`` to pass."""

from __future__ import annotations

import socket

import pytest

from jumpnet_stream import JumpnetError
from jumpnet_stream.build import pair_directory, pair_files
from jumpnet_stream.formats import check_output
from jumpnet_stream.synth import make_recording
from jumpnet_stream.video import Video
from jumpnet_stream.viewer.server import serve


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return make_recording(tmp_path_factory.mktemp("messages"), name="play", seconds=1, seed=1)


def refusal(call) -> str:
    with pytest.raises(JumpnetError) as caught:
        call()
    message = str(caught.value)
    assert "--" not in message, f"a CLI flag in a library message: {message}"
    return message


def test_an_existing_output(recording):
    assert refusal(lambda: check_output(recording.npz)).endswith("output exists (the overwrite option replaces it)")


def test_unpaired_keylogs_and_videos(recording):
    assert "keylogs and videos go in pairs: got 1 keylogs and 0 videos" in refusal(lambda: pair_files([recording.npz], []))


def test_a_keylog_without_its_video(tmp_path):
    (tmp_path / "alone.npz").write_bytes(b"")
    assert "(pair it with its video by hand)" in refusal(lambda: pair_directory(tmp_path))


def test_a_short_video_under_strict(recording):
    video = Video(recording.video)
    for _ in video.frames():
        pass
    assert refusal(lambda: video.check_complete(video.frames_read + 5, strict=True)).endswith("(truncated or corrupt?) (strict)")


def test_a_viewer_port_in_use(recording):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"port {port} is in use: choose another port" in refusal(lambda: serve(recording.npz, port=port))
