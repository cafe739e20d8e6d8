"""Seeking (Video.frames_at) gives exactly the frames sequential decoding gives, and falls back to it
whenever the video's timestamps cannot be trusted: every fallback is taken here on a real file, and
``Video.read_report`` proves which way each read went."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import jumpnet_stream.video as video_module
from jumpnet_stream.kernels import resize_rgb
from jumpnet_stream.keyframes import REORDER_DEPTH, analyse, lanes, plan, read_index
from jumpnet_stream.synth import make_recording, write_clip
from jumpnet_stream.video import LANE_PIXELS, SEEKING_LANES, Video

av = pytest.importorskip("av")
from jumpnet_stream.screen_video import write_screen_recording  # noqa: E402  (needs PyAV)

SMALL = {"width": 320, "height": 180, "fps": 30, "preset": "veryfast"}
LANES_HERE = min(SEEKING_LANES, len(os.sched_getaffinity(0)))  # decoders side by side when seeking small frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Small files of every kind: the recorder's mp4v, H.264 with B-frames in MP4 and Matroska, and the
    kinds seeking must not trust."""
    out = tmp_path_factory.mktemp("seek")
    rec = make_recording(out, name="game", seconds=10, keys=("w",), seed=7, capture=90)  # 180x180 mp4v
    files = {"mp4v": rec.video}
    files["h264"] = write_screen_recording(out / "screen.mp4", frames=300, gop=60, bframes=3, **SMALL).path
    files["mkv"] = write_screen_recording(out / "screen.mkv", frames=240, gop=50, bframes=2, seed=1, **SMALL).path
    whole = write_screen_recording(out / "whole.mp4", frames=300, gop=30, faststart=True, seed=2, **SMALL).path
    data = open(whole, "rb").read()
    (out / "cut.mp4").write_bytes(data[:len(data) // 2])  # its index (written first) names every frame
    files["cut"] = str(out / "cut.mp4")
    times = np.cumsum(np.random.default_rng(3).uniform(0.02, 0.05, 200))
    files["vfr"] = write_screen_recording(out / "vfr.mp4", frames=200, frame_times=times - times[0], **SMALL).path
    files["raw"] = write_screen_recording(out / "raw.h264", frames=120, gop=30, **SMALL).path
    files["upside_down"] = write_screen_recording(out / "rot180.mp4", frames=90, gop=30, rotation=180, **SMALL).path
    files["portrait"] = write_screen_recording(out / "rot90.mp4", frames=90, gop=30, rotation=90, **SMALL).path
    files["lying_h264"] = _lie_about_keyframes(
        write_screen_recording(out / "lying.mp4", frames=150, gop=60, bframes=0, **SMALL).path, 60, 30)
    (out / "lying_mp4v.mp4").write_bytes(open(rec.video, "rb").read())  # OpenCV's mp4v: a keyframe every 12
    files["lying_mp4v"] = _lie_about_keyframes(str(out / "lying_mp4v.mp4"), 12, 18)
    return files


def _lie_about_keyframes(path: str, true: int, false: int) -> str:
    """Rewrite the MP4's sync-sample table so that it names frame ``false`` (not a keyframe) where it
    named frame ``true``: a container whose keyframe index lies."""
    data = bytearray(open(path, "rb").read())
    at = data.index(b"stss")
    count = int.from_bytes(data[at + 8:at + 12], "big")
    entries = [int.from_bytes(data[at + 12 + 4 * k:at + 16 + 4 * k], "big") for k in range(count)]
    k = entries.index(true + 1)  # 1-based sample numbers
    data[at + 12 + 4 * k:at + 16 + 4 * k] = (false + 1).to_bytes(4, "big")
    open(path, "wb").write(bytes(data))
    return path


def _collect(chunks):
    frames, indices = [], []
    for chunk in chunks:
        frames.append(chunk["frame"].copy())  # the source may reuse its buffer
        indices.append(chunk["frame_index"])
    if not frames:
        return np.zeros((0,), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(frames), np.concatenate(indices)


def _sequential(path, wanted):
    """What the sequential path (OpenCV grabbing every frame) gives: frames, indices, frames_read."""
    video = Video(path)
    frames, indices = _collect(video.frames(set(int(i) for i in wanted).__contains__, stop_after=int(max(wanted)),
                                            backend="opencv"))
    assert video.read_report.method == "sequential"
    return frames, indices, video.frames_read


def _seeked(path, wanted, rows=1):
    video = Video(path)
    frames, indices = _collect(video.frames_at(wanted, rows=rows))
    return frames, indices, video.frames_read, video


def _assert_same(path, wanted, rows=1):
    """frames_at gives what sequential grabbing gives, byte for byte; returns the read's report."""
    expected, expected_indices, expected_read = _sequential(path, wanted)
    frames, indices, read, video = _seeked(path, wanted, rows)
    np.testing.assert_array_equal(indices, expected_indices)
    assert frames.shape == expected.shape and np.array_equal(frames, expected)
    assert read == expected_read
    return video


def _sparse(n, k, seed):
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


@pytest.mark.parametrize("kind", ["mp4v", "h264", "mkv"])
def test_seeked_frames_are_the_sequential_ones(videos, kind):
    path = videos[kind]
    index = read_index(path)
    assert index.trusted and index.complete and len(index.seek_frames) > 3, index
    n = index.frames
    cases = [_sparse(n, 6, 1),                        # far apart: a seek for each
             np.array([0, 1, 2, n // 2, n // 2 + 1]),  # runs, and frame 0 itself
             np.array([n - 1]),                       # only the last frame
             np.concatenate([_sparse(n - 40, 12, 2), np.arange(n - 40, n, 3)])]  # mixed densities
    for wanted in cases:
        video = _assert_same(path, wanted, rows=1)
        assert video.read_report.method == "seek" and video.read_report.reason is None
    assert _assert_same(path, cases[0], rows=4).read_report.seeks >= 3  # chunks of several rows


def test_seeking_decodes_far_less_and_skips_what_nothing_refers_to(videos):
    path = videos["h264"]  # 300 frames, GOPs of 60, B-frames
    video = _assert_same(path, np.array([70, 200, 290]))
    report = video.read_report
    assert report.method == "seek" and report.seeks == 3
    # from each keyframe (60, 180, 240) to the wanted frame: most packets, not 291
    assert report.decoded < 150


def test_wanted_frames_past_the_end_and_repeats(videos):
    path = videos["h264"]
    wanted = np.array([290, 5, 5, 299, 340, 1000])  # unsorted, a repeat, two past the last frame (299)
    frames, indices, read, video = _seeked(path, wanted, rows=3)
    assert indices.tolist() == [5, 290, 299] and read == 300 and video.read_report.method == "seek"
    expected, expected_indices, expected_read = _sequential(path, np.unique(wanted))
    assert expected_read == 300 and np.array_equal(frames, expected)
    assert video.check_complete(1001) is not None  # the same warning as after a sequential read


def test_nothing_wanted_and_negative_indices(videos):
    video = Video(videos["h264"])
    assert list(video.frames_at([])) == [] and video.frames_read == 0
    with pytest.raises(ValueError, match="negative"):
        list(video.frames_at([-1, 3]))


def test_truncated_file_seeks_only_where_its_frames_are_certain(videos):
    """An MP4 whose index comes first, cut in half: the index names 300 frames, about half are there.
    Frames well before the cut are sought; a wanted frame past the trusted part makes the read sequential."""
    path = videos["cut"]
    index = read_index(path)
    assert not index.complete and index.trusted and "corrupt" in index.damage
    assert 30 <= index.frames < 150 and index.frames % 30 == 0  # up to a keyframe well before the damage
    inside = _assert_same(path, np.array([3, 40, index.frames - 1]))
    assert inside.read_report.method == "seek" and inside.frames_read == index.frames
    past = _assert_same(path, np.array([3, 40, index.frames + 5, 250]))
    assert past.read_report.method == "sequential" and "cut short or damaged" in past.read_report.reason
    assert past.frames_read < 250 and "claims 300" in past.check_complete(251)


def test_truncated_avi_without_its_index_reads_sequentially(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (120, 48, 64, 3), dtype=np.uint8)
    write_clip(tmp_path / "whole.avi", frames)
    data = (tmp_path / "whole.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[:len(data) // 2])
    path = str(tmp_path / "cut.avi")
    video = _assert_same(path, np.array([2, 30, 100]))
    assert video.read_report.method == "sequential" and video.frames_read < 100


def test_variable_frame_rate_reads_sequentially(videos):
    video = _assert_same(videos["vfr"], np.array([3, 90, 180]))
    assert video.read_report.method == "sequential"
    assert video.read_report.reason.startswith("variable frame rate")


def test_raw_stream_without_timestamps_reads_sequentially(videos):
    video = _assert_same(videos["raw"], np.array([3, 70, 110]))
    assert video.read_report.method == "sequential" and "without presentation timestamps" in video.read_report.reason


def test_frame_zero_must_agree_with_opencv(videos):
    """A video tagged to be shown upside down: OpenCV turns its frames, PyAV does not. Same size, different
    pixels: caught by comparing frame 0 before any of PyAV's frames is used."""
    video = _assert_same(videos["upside_down"], np.array([2, 45, 80]))
    assert video.read_report.method == "sequential" and "frame 0 differs" in video.read_report.reason


def test_frame_size_must_agree_with_opencv(videos):
    video = _assert_same(videos["portrait"], np.array([2, 45, 80]))
    assert video.read_report.method == "sequential" and "rotated" in video.read_report.reason


def test_a_seek_landing_elsewhere_is_caught(videos):
    """The MP4's sync-sample table names frame 30 (a P-frame) instead of 60. FFmpeg's H.264 parser flags
    the packets from the bitstream, so the index has the true keyframes, but the demuxer seeks by the
    table: asked for 60, it lands on 30. Caught, and the rest is read sequentially (the frames already
    delivered stay)."""
    path = videos["lying_h264"]
    assert read_index(path).seek_frames.tolist() == [0, 60, 120]
    video = _assert_same(path, np.array([5, 70, 140]))
    report = video.read_report
    # the other decoder may have sought for frame 140 meanwhile (its frame is not used)
    assert report.method == "seek, then sequential" and "landed on a packet" in report.reason and report.seeks >= 1


def test_a_keyframe_that_does_not_decode_as_one_is_caught(videos):
    """In mp4v the packets' keyframe flags come from the container's table alone: one that names frame 18
    (a P-frame) is believed until frame 18 decodes as a P-frame right after the seek."""
    path = videos["lying_mp4v"]
    assert 18 in read_index(path).seek_frames.tolist()
    video = _assert_same(path, np.array([5, 20, 140]))
    report = video.read_report
    assert report.method == "seek, then sequential" and "does not decode as one" in report.reason


def test_without_pyav_every_read_is_sequential(videos, tmp_path):
    """PyAV is optional: with it absent (an import that fails), frames_at reads sequentially."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["av"] = None  # "import av" now raises ImportError, as when it is not installed
        import numpy as np
        from jumpnet_stream.video import Video
        video = Video({videos["h264"]!r})
        got = [int(i) for chunk in video.frames_at([4, 200]) for i in chunk["frame_index"]]
        print(got, video.frames_read, video.read_report.method, video.read_report.reason)
        frames = [int(i) for chunk in video.frames(stop_after=9, backend="pyav") for i in chunk["frame_index"]]
        print(len(frames), video.read_report.reason)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first == "[4, 200] 201 sequential PyAV is not installed"
    assert second == "10 PyAV is not installed"


@pytest.mark.parametrize("rows", [1, 5])
def test_dense_decoding_with_pyav_is_opencvs(videos, rows):
    """Every frame but a few, as the negatives command reads them: PyAV's decoder (asked for) gives
    OpenCV's frames; by default every frame is OpenCV's (it is the faster way to read them all)."""
    path = videos["h264"]
    excluded = {7, 8, 9, 150, 151}
    reference = Video(path)
    expected, expected_indices = _collect(reference.frames(lambda i: i not in excluded, backend="opencv", rows=rows))
    video = Video(path)
    frames, indices = _collect(video.frames(lambda i: i not in excluded, rows=rows, backend="pyav"))
    assert video.read_report.method == "decode" and video.frames_read == reference.frames_read == 300
    np.testing.assert_array_equal(indices, expected_indices)
    assert np.array_equal(frames, expected)
    stopped = Video(path)
    frames, indices = _collect(stopped.frames(stop_after=99, rows=rows, backend="pyav"))
    assert stopped.read_report.method == "decode" and stopped.frames_read == 100 and indices.tolist() == list(range(100))
    assert np.array_equal(frames[10:100], expected[7:97])  # expected lacks frames 7, 8 and 9
    default = Video(path)
    next(default.frames())
    assert default.read_report.method == "sequential" and default.read_report.reason is None
    cut = Video(videos["cut"])  # every frame to the end: only OpenCV knows where a damaged video ends
    next(cut.frames(backend="pyav"))
    assert cut.read_report.method == "sequential" and "cut short" in cut.read_report.reason
    with pytest.raises(ValueError, match="backend"):
        next(Video(path).frames(backend="ffmpeg"))


@pytest.mark.parametrize("size", [(320, 180), (1280, 720), (2560, 1440)])
def test_frames_read_ahead_on_a_thread_are_the_frames(tmp_path, size):
    """``frames(ahead=2)``, as the negatives command reads large frames (their decoder on a thread of its own,
    with FFmpeg's frame threads from 1280x720 on): the same frames and count, each chunk intact while it is
    the caller's, however far the reader has run ahead. And frames sought: by two lanes up to 1080p (taking
    turns to convert them from 1280x720 on), by frame threads on a thread of their own beyond."""
    width, height = size
    path = write_screen_recording(tmp_path / "v.mp4", frames=36, width=width, height=height, fps=30, gop=12,
                                  bframes=2, preset="ultrafast").path
    wanted = lambda i: i % 5 != 3  # noqa: E731
    expected, expected_indices = _collect(Video(path).frames(wanted))
    video = Video(path)
    indices = []
    for k, chunk in enumerate(video.frames(wanted, ahead=2)):
        time.sleep(0.01)  # a slow caller: the reader fills its queue and writes the next frame meanwhile
        assert np.array_equal(chunk["frame"][0], expected[k]), k
        indices.append(int(chunk["frame_index"][0]))
    assert indices == expected_indices.tolist() and video.frames_read == 36
    assert video.read_report.method == "sequential"
    # seeking frames larger than 1080p: one decoder on FFmpeg's frame threads (smaller ones on several
    # decoders); still the sequential frames
    report = _assert_same(path, np.array([2, 17, 30])).read_report
    assert report.method == "seek" and report.lanes == (1 if width * height > LANE_PIXELS else LANES_HERE)
    chosen = _sequential(path, np.array([2, 17, 30]))[0]  # and resized where they are decoded
    sized = np.concatenate([chunk["image"].copy() for chunk in
                            Video(path).frames_at(np.array([2, 17, 30]), size=(24, 40))])
    assert np.array_equal(sized, [resize_rgb(frame, (24, 40)) for frame in chosen])
    if width * height > LANE_PIXELS:  # that decoder on a thread of its own, gone with the read
        before = {thread.ident for thread in threading.enumerate()}
        frames = Video(path).frames_at(np.array([2, 17, 30]), size=(24, 40))
        next(frames)
        assert any(thread.name == "jumpnet-source" for thread in threading.enumerate())
        frames.close()
        assert {thread.ident for thread in threading.enumerate()} <= before


def test_read_ahead_keeps_to_its_byte_budget(videos, monkeypatch):
    """``ahead + 2`` chunks must fit in READ_AHEAD_BYTES, or fewer are read ahead; with room for fewer than
    3, none, and no thread (an 8K video's four chunks would take 800 MB). The same frames either way."""
    path = videos["h264"]
    expected, expected_indices = _collect(Video(path).frames())
    for room, threaded in ((2, False), (3, True)):
        monkeypatch.setattr(video_module, "READ_AHEAD_BYTES", room * 320 * 180 * 3)
        frames, indices, threads = [], [], set()
        for chunk in Video(path).frames(ahead=2):
            threads |= {thread.name for thread in threading.enumerate()}
            frames.append(chunk["frame"].copy())
            indices.append(chunk["frame_index"])
        assert np.array_equal(np.concatenate(frames), expected)
        assert np.concatenate(indices).tolist() == expected_indices.tolist()
        assert ("jumpnet-source" in threads) == threaded, room


def test_lanes_keep_the_frames_after_each_seek_point_together_and_share_the_work(videos):
    """The frames after one seek point go to one decoder, each such group to the decoder with the fewest
    packets so far; side by side the decoders send the packets one decoder would, each also frame 0's. A long
    stretch of wanted frames is shared at its seek points, so that decoders take turns as the frames are used."""
    index = read_index(videos["h264"])  # a seek point every 60 frames
    assert index.seek_frames.tolist() == [0, 60, 120, 180, 240]
    wanted = np.array([3, 5, 70, 75, 130, 200, 205, 290])
    lane_of = lanes(index, wanted, 2)
    point = np.searchsorted(index.seek_frames, wanted, side="right") - 1
    for group in np.unique(point):
        assert len(set(lane_of[point == group].tolist())) == 1
    assert set(lane_of.tolist()) == {0, 1} and lane_of[0] == 0
    sent = [plan(index, wanted[lane_of == lane]).packets for lane in (0, 1)]
    assert sum(sent) == plan(index, wanted).packets + 1
    assert abs(sent[0] - sent[1]) <= 60
    long = np.concatenate([np.arange(100), [130, 190, 250]])  # one run for one decoder, shared at frame 60
    assert lanes(index, long, 2)[:100].tolist() == [0] * 60 + [1] * 40
    assert lanes(index, np.array([0, 100]), 2).tolist() == [0, 1]  # frame 0's group costs its packet
    assert lanes(index, np.array([150]), 2).tolist() == [0]
    assert lanes(index, np.array([10, 70]), 4).tolist() == [0, 1]  # more decoders than groups
    assert lanes(index, np.zeros(0, np.int64), 2).tolist() == []
    assert lanes(index, wanted, 1).tolist() == [0] * len(wanted)


@pytest.mark.parametrize("kind", ["h264", "720p"])
def test_decoders_side_by_side_end_with_the_read(videos, tmp_path, kind):
    """A caller that stops early, or fails, leaves no decoder's thread behind (720p: lanes that take turns to
    convert), and a read after it is whole."""
    if kind == "720p":
        path = write_screen_recording(tmp_path / "v.mp4", frames=48, width=1280, height=720, fps=30, gop=12,
                                      bframes=2, preset="ultrafast").path
        wanted = np.array([2, 17, 30, 41])
    else:
        path, wanted = videos["h264"], np.array([5, 70, 130, 200, 290])
    before = {thread.ident for thread in threading.enumerate()}
    video = Video(path)
    frames = video.frames_at(wanted, size=(24, 40))
    next(frames)
    assert LANES_HERE == 1 or any(t.name == "jumpnet-source" for t in threading.enumerate())
    frames.close()
    with pytest.raises(RuntimeError, match="the caller's"):
        for _ in Video(path).frames_at(wanted):
            raise RuntimeError("the caller's own error")
    time.sleep(0.05)
    assert {thread.ident for thread in threading.enumerate()} <= before
    assert _assert_same(path, wanted).read_report.lanes == LANES_HERE  # nothing left held by the reads before


@pytest.mark.parametrize("kind, method", [("mp4v", "seek"), ("h264", "seek"),
                                          ("lying_h264", "seek, then sequential"), ("vfr", "sequential")])
def test_frames_resized_where_they_are_decoded_are_the_frames_resized(videos, kind, method):
    """``frames_at(size=...)``, as the build reads: each frame as resize_rgb makes it of the sequential frame,
    whichever way the frames were read (several decoders resizing on their threads, seeking given up half-way
    with the rest grabbed, grabbing only)."""
    path = videos[kind]
    n = Video(path).frame_count()
    wanted = np.array([0, 5, 70, 75, n - 12, n - 2])
    expected, expected_indices, _ = _sequential(path, wanted)
    video = Video(path)
    images, indices = [], []
    for chunk in video.frames_at(wanted, rows=4, size=(24, 40)):
        assert set(chunk.fields) == {"image", "frame_index"}
        images.append(chunk["image"].copy())
        indices.append(chunk["frame_index"])
    assert np.concatenate(indices).tolist() == expected_indices.tolist()
    assert np.array_equal(np.concatenate(images), np.stack([resize_rgb(frame, (24, 40)) for frame in expected]))
    assert video.read_report.method == method
    assert video.read_report.lanes == (0 if method == "sequential" else LANES_HERE)


def test_frame_count_from_the_index_when_the_container_gives_none(videos):
    """Matroska states no frame count: the trusted index gives it without decoding, and it is OpenCV's."""
    video = Video(videos["mkv"])
    assert video.count_frames() == 240 == video.keyframe_index().frames
    counted = 0
    for chunk in Video(videos["mkv"]).frames(backend="opencv"):
        counted += len(chunk)
    assert counted == 240


def test_index_rules_on_timestamps():
    """The judgement itself, on packet timestamps as demuxers give them."""
    def index(pts, keys=(0,), corrupt=(), claimed=None, damage=None, dts=None):
        pts = np.asarray(pts, np.int64)
        key = np.zeros(len(pts), bool)
        key[list(keys)] = True
        bad = np.zeros(len(pts), bool)
        bad[list(corrupt)] = True
        return analyse(pts, np.arange(len(pts), dtype=np.int64) if dts is None else np.asarray(dts, np.int64),
                       key, bad, claimed=claimed, damage=damage)

    millis = np.round(np.arange(90) * 1000 / 30).astype(np.int64)  # 30 fps in ms: steps of 33 and 34
    assert index(millis, keys=(0, 30, 60)).trusted
    assert index(millis, keys=(0, 30, 60)).seek_frames.tolist() == [0, 30, 60]
    gap = np.delete(millis, 40)
    assert index(gap).problem.startswith("variable frame rate")  # a frame missing: not to be trusted
    assert index(millis, dts=np.arange(90)[::-1]).problem == "decode timestamps do not increase"
    assert "claims 80" in index(millis, claimed=80).problem  # more frames than the container says
    assert index([5, 0, 1, 2], keys=(0,)).problem == "the first packet is not a keyframe shown first"
    # B-frames: the keyframe at 4 is followed by a frame shown before it (an open GOP): not a seek point
    open_gop = index([0, 2, 1, 3, 6, 4, 5, 7], keys=(0, 4))
    assert open_gop.trusted and open_gop.seek_frames.tolist() == [0]
    # damage: only frames before a keyframe decoded REORDER_DEPTH packets before the corrupt one are trusted
    pts = np.arange(100)
    cut = index(pts, keys=(0, 20, 40, 60, 80), corrupt=(70,), claimed=120)
    assert not cut.complete and cut.frames == 40 and 70 - REORDER_DEPTH > 40


def test_seeking_only_where_it_saves_work(videos):
    """Every other frame of an mp4v (no B-frames): seeking would decode nearly every packet anyway, so the
    read is OpenCV's. Of H.264 with B-frames, PyAV still reads them: its decoder skips the B-frames
    nothing refers to."""
    every_other = np.arange(0, 200, 2)
    mp4v = _assert_same(videos["mp4v"], every_other)
    assert mp4v.read_report.method == "sequential" and "save little" in mp4v.read_report.reason
    h264 = _assert_same(videos["h264"], every_other)
    assert h264.read_report.method == "seek" and read_index(videos["h264"]).reordered
