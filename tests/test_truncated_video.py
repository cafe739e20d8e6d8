"""A video that ends early or does not belong to its keylog: kept as far as it decodes, or refused."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import run_cli
from jumpnet_stream import open_dataset, preprocess
from jumpnet_stream.synth import make_recording, write_clip


@pytest.fixture(scope="module")
def cut(tmp_path_factory):
    """A 120-frame MJPG AVI cut in half (its header still claims 120 frames) and positives from a keylog
    whose presses all lie in the first half."""
    folder = tmp_path_factory.mktemp("cut")
    frames = np.random.default_rng(0).integers(0, 255, (120, 64, 64, 3), dtype=np.uint8)
    write_clip(folder / "whole.avi", frames)
    data = (folder / "whole.avi").read_bytes()
    (folder / "cut.avi").write_bytes(data[:len(data) // 2])
    rec = make_recording(folder, name="keys", seconds=1.5, keys=("w",), seed=3, video=False)
    preprocess(rec.npz, folder / "positives.zarr")
    return folder


def test_truncated_video_keeps_what_decoded_and_warns(cut, tmp_path):
    result = run_cli("negatives", str(cut / "cut.avi"), "-o", str(tmp_path / "neg.zarr"), "--positives",
                     str(cut / "positives.zarr"), "--size", "32", "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts["frames_claimed"] == 120 and 40 <= counts["frames_read"] < 120
    assert counts["excluded"] + counts["eligible"] == counts["frames_read"] == len(open_dataset(tmp_path / "neg.zarr")) \
        + counts["excluded"]
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1 and str(cut / "cut.avi") in warning[0]
    assert f"ends after {counts['frames_read']} frames, but its container claims 120" in warning[0]


def test_truncated_video_is_an_error_with_strict(cut, tmp_path):
    result = run_cli("negatives", str(cut / "cut.avi"), "-o", str(tmp_path / "neg.zarr"), "--positives",
                     str(cut / "positives.zarr"), "--size", "32", "--strict")
    assert result.returncode == 1 and "(strict)" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


def test_keylog_past_the_video_end_is_named(tmp_path):
    """Positives that name frames the video does not have: the keylog belongs to another recording."""
    long = make_recording(tmp_path / "long", name="long", seconds=8, keys=("w",), seed=1, video=False)
    short = make_recording(tmp_path / "short", name="short", seconds=2, keys=("w",), seed=2)
    preprocess(long.npz, tmp_path / "positives.zarr")
    result = run_cli("negatives", short.video, "-o", str(tmp_path / "neg.zarr"), "--positives",
                     str(tmp_path / "positives.zarr"))
    assert result.returncode == 1
    assert f"has {short.frames} frames" in result.stderr and "another recording" in result.stderr
    assert not (tmp_path / "neg.zarr").exists()
    os.replace(long.npz, tmp_path / "short" / "short.npz")  # the wrong keylog under the video's name
    built = run_cli("build", str(tmp_path / "short"), "-o", str(tmp_path / "out"))
    assert built.returncode == 1 and "another recording" in built.stderr
    assert not (tmp_path / "out" / "dataset.zarr").exists()
