"""Stages 4 and 5: exactly the right frames, the video's content, reduce's choice, flat memory."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest

from conftest import run_cli
from jumpnet_stream import Chunk, JumpnetError, open_dataset, preprocess
from jumpnet_stream.kernels import resize_rgb
from jumpnet_stream.stages.negatives import negatives
from jumpnet_stream.stages.reduce import reduce
from jumpnet_stream.synth import make_recording
from tools.measure import run_peak_rss


@pytest.fixture(scope="module")
def game(recordings, tmp_path_factory):
    """The 8-second two-key recording with its positives (target key w)."""
    rec = recordings["with_video"]
    positives = tmp_path_factory.mktemp("game") / "positives.zarr"
    preprocess(rec.npz, positives, key="w")
    capture = cv2.VideoCapture(rec.video)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    return rec, positives, np.stack(frames)


def read_all(path) -> Chunk:
    return Chunk.concat(list(open_dataset(path).chunks()))


def expected_frames(n, positive_frames, radius, releases=()):
    """Frames more than ``radius`` from every press and (with their releases) outside every jump."""
    inside = {f for press, release in zip(positive_frames, releases) for f in range(press, release)}
    return [i for i in range(n) if all(abs(i - p) > radius for p in positive_frames) and i not in inside]


@pytest.mark.parametrize("held_frames", ["exclude", "negative"])
@pytest.mark.parametrize("radius", [0, 2, 5])
def test_exact_frame_set_and_content(game, tmp_path, radius, held_frames):
    rec, positives, frames = game
    positive_frames = read_all(positives)["frame_index"].tolist()
    releases = read_all(positives)["release_index"].tolist() if held_frames == "exclude" else ()
    assert positive_frames
    report = negatives(rec.video, tmp_path / "neg.zarr", positives=positives, radius=radius, held_frames=held_frames)
    got = read_all(tmp_path / "neg.zarr")
    want = expected_frames(len(frames), positive_frames, radius, releases)
    if held_frames == "exclude":
        assert len(want) < len(expected_frames(len(frames), positive_frames, radius)), "jumps hold frames"
    assert got["frame_index"].tolist() == want
    for row, index in enumerate(want):
        np.testing.assert_array_equal(got["image"][row], resize_rgb(frames[index], (227, 227)))
        opencv = cv2.cvtColor(cv2.resize(frames[index], (227, 227), interpolation=cv2.INTER_AREA),
                              cv2.COLOR_BGR2RGB)
        assert np.abs(got["image"][row].astype(int) - opencv).max() <= 1
    assert set(got["label"]) == {0.0} and set(got["phase"]) == {"press"} and set(got["source"]) == {"game"}
    assert got["keys_raw"].shape == (len(want), 2) and not got["keys_raw"].any() and not got["hold_duration"].any()
    assert report.frames_read == len(frames) == report.excluded + report.written
    assert report.eligible == report.written == len(want)
    assert open_dataset(tmp_path / "neg.zarr").keys == ["w", "a"]


def test_keep_equals_reduce_of_all(game, tmp_path):
    rec, positives, _ = game
    negatives(rec.video, tmp_path / "all.zarr", positives=positives)
    kept = negatives(rec.video, tmp_path / "kept.zarr", positives=positives, keep=50, seed=7)
    reduced = reduce(tmp_path / "all.zarr", tmp_path / "reduced.zarr", keep=50, seed=7)
    a, b = read_all(tmp_path / "kept.zarr"), read_all(tmp_path / "reduced.zarr")
    for name in a.fields:
        np.testing.assert_array_equal(a[name], b[name])
    assert len(a) == 50 and np.all(np.diff(a["frame_index"]) > 0)
    assert reduced.total == kept.eligible and kept.not_chosen == kept.eligible - 50
    assert kept.excluded + kept.eligible == rec.frames  # every claimed frame accounted for
    other = negatives(rec.video, tmp_path / "other.zarr", positives=positives, keep=50, seed=8)
    assert other.written == 50
    assert read_all(tmp_path / "other.zarr")["frame_index"].tolist() != a["frame_index"].tolist()


def test_keep_more_than_eligible_keeps_all(game, tmp_path):
    rec, positives, frames = game
    report = negatives(rec.video, tmp_path / "n.zarr", positives=positives, keep=10_000)
    assert report.written == report.eligible and report.not_chosen == 0


def test_legacy_npz_in_and_out_and_size(game, tmp_path):
    rec, positives, frames = game
    preprocess(rec.npz, tmp_path / "pos.npz", key="w")
    negatives(rec.video, tmp_path / "neg.npz", positives=tmp_path / "pos.npz", keep=20, size=64)
    with np.load(tmp_path / "neg.npz", allow_pickle=True) as z:  # our own output, the trainer's loader
        data = z["data"]
    assert data.shape == (20, 6)
    assert data[0][0].shape == (64, 64, 3) and data[0][0].dtype == np.float32 and float(data[0][1]) == 0.0
    index = int(data[0][5])
    np.testing.assert_allclose(data[0][0], resize_rgb(frames[index], (64, 64)) / np.float32(255), atol=1e-6)


def test_reduce_keeps_order_and_provenance(game, tmp_path):
    rec, positives, _ = game
    negatives(rec.video, tmp_path / "all.zarr", positives=positives)
    total = len(open_dataset(tmp_path / "all.zarr"))
    result = run_cli("reduce", str(tmp_path / "all.zarr"), "-o", str(tmp_path / "r.npz"), "--keep", "30", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"total": total, "kept": 30, "dropped": total - 30}
    reduced = open_dataset(tmp_path / "r.npz")
    assert [p["stage"] for p in reduced.provenance] == ["negatives", "reduce", "legacy npz"]
    frames = read_all(tmp_path / "r.npz")["frame_index"]
    assert len(frames) == 30 and np.all(np.diff(frames) > 0)


def test_cli_negatives_json_and_errors(game, tmp_path):
    rec, positives, _ = game
    result = run_cli("negatives", rec.video, "-o", str(tmp_path / "n.zarr"), "--positives", str(positives),
                     "--keep", "40", "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts["written"] == 40 and counts["frames_claimed"] == rec.frames
    assert counts["excluded"] + counts["eligible"] == rec.frames
    result = run_cli("negatives", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "m.zarr"),
                     "--positives", str(positives))
    assert result.returncode == 1 and "missing.mp4: no such file" in result.stderr
    assert not (tmp_path / "m.zarr").exists()
    with pytest.raises(JumpnetError, match="no such zarr store"):
        negatives(rec.video, tmp_path / "x.zarr", positives=tmp_path / "nothing.zarr")


def test_negatives_peak_rss_flat_in_video_length(tmp_path):
    peaks = {}
    for seconds in (20, 120):
        rec = make_recording(tmp_path, name=f"v{seconds}", seconds=seconds, seed=3)
        preprocess(rec.npz, tmp_path / f"p{seconds}.zarr")
        code, peak, _, err = run_peak_rss([sys.executable, "-m", "jumpnet_stream", "negatives", rec.video,
                                           "-o", str(tmp_path / f"n{seconds}.zarr"),
                                           "--positives", str(tmp_path / f"p{seconds}.zarr"), "--quiet"])
        assert code == 0, err
        peaks[seconds] = peak
    # 6x the frames; keeping them would add ~450 MB. The margin covers transient buffers' timing.
    assert peaks[120] < peaks[20] + 40, peaks


def test_reduce_chooses_the_same_rows_from_any_format(game, tmp_path):
    rec, positives, _ = game
    negatives(rec.video, tmp_path / "all.zarr", positives=positives)
    negatives(rec.video, tmp_path / "all.npz", positives=positives)
    reduce(tmp_path / "all.zarr", tmp_path / "from_zarr.zarr", keep=25, seed=3)
    reduce(tmp_path / "all.npz", tmp_path / "from_npz.zarr", keep=25, seed=3)
    a, b = read_all(tmp_path / "from_zarr.zarr"), read_all(tmp_path / "from_npz.zarr")
    np.testing.assert_array_equal(a["frame_index"], b["frame_index"])
    np.testing.assert_array_equal(a["image"], b["image"])  # uint8 -> float32/255 -> uint8 is exact
