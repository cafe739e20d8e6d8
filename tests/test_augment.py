"""Stage 3: the augmentation kernel against its numpy twin, its reproducibility, and the command."""

from __future__ import annotations

import json

import cv2
import numba
import numpy as np
import pytest

from conftest import run_cli
from jumpnet_stream import Chunk, JumpnetError, open_dataset, preprocess
from jumpnet_stream.kernels import augment_images
from naive import augment_reference
from jumpnet_stream.stages.augment import AugmentOptions, augment, augment_chunks

ALL = dict(p_flip=1.0, p_brightness=1.0, p_noise=1.0, p_shift=1.0)
NONE = dict(p_flip=0.0, p_brightness=0.0, p_noise=0.0, p_shift=0.0)


@pytest.fixture(scope="module")
def real_images(recordings):
    capture = cv2.VideoCapture(recordings["with_video"].video)
    frames = []
    for _ in range(12):
        ok, frame = capture.read()
        frames.append(cv2.cvtColor(cv2.resize(frame, (227, 227), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    return np.stack(frames)


@pytest.mark.parametrize("probabilities", [{}, ALL, NONE, dict(p_noise=1.0, p_shift=1.0, p_flip=0, p_brightness=0)])
@pytest.mark.parametrize("kind", ["random", "real"])
def test_kernel_equals_numpy_twin(real_images, kind, probabilities):
    images = real_images if kind == "real" else \
        np.random.default_rng(5).integers(0, 256, (12, 33, 41, 3), dtype=np.uint8)
    indices = np.arange(500, 500 + len(images))
    out = augment_images(images, indices, 3, 17, **probabilities)
    for i in range(len(images)):
        for k in range(3):
            np.testing.assert_array_equal(out[i, k], augment_reference(images[i], indices[i], k + 1, 17,
                                                                         **probabilities))


def test_each_transform_does_what_it_says(real_images):
    image = real_images[:1]
    flip = augment_images(image, [0], 1, 1, **{**NONE, "p_flip": 1.0})[0, 0]
    np.testing.assert_array_equal(flip, image[0][:, ::-1])
    ratios = []
    for seed in range(20):
        bright = augment_images(image, [seed], 1, seed, **{**NONE, "p_brightness": 1.0})[0, 0].astype(float)
        ratios.append(bright.sum() / image[0].astype(float).sum())
    assert min(ratios) >= 0.69 and max(ratios) <= 1.31 and max(ratios) - min(ratios) > 0.2  # applied, varied
    for seed in range(20):
        shifted = augment_images(image, [seed], 1, seed, **{**NONE, "p_shift": 1.0})[0, 0]
        matches = [s for s in range(-5, 6) if np.array_equal(shifted, np.roll(image[0], s, axis=1) *
                                                              _kept_columns(image.shape[2], s))]
        assert len(matches) == 1
    grey = np.full((1, 100, 100, 3), 128, np.uint8)
    noisy = augment_images(grey, [3], 1, 3, **{**NONE, "p_noise": 1.0})[0, 0].astype(float) - 128
    assert abs(noisy.mean()) < 0.1 and 4.8 < noisy.std() < 5.4  # sigma 0.02 of 255 = 5.1 grey levels


def _kept_columns(width, shift):
    keep = np.ones((1, width, 1), np.uint8)
    if shift > 0:
        keep[:, :shift] = 0
    elif shift < 0:
        keep[:, shift:] = 0
    return keep


def test_decisions_follow_their_probabilities():
    image = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    flips = sum(np.array_equal(augment_images(image, [i], 1, 9, **{**NONE, "p_flip": 0.5})[0, 0], image[0][:, ::-1])
                for i in range(400))
    assert 160 < flips < 240


def _chunks(images, rows):
    n = len(images)
    sample = Chunk({"image": images, "label": np.ones(n, np.float32), "keys_raw": np.ones((n, 1), np.float32),
                    "hold_duration": np.arange(n, dtype=np.float32)[:, None], "phase": np.full(n, "press"),
                    "frame_index": np.arange(n), "source": np.full(n, "r")})
    return [sample.take(slice(s, s + rows)) for s in range(0, n, rows)]


def test_independent_of_chunking_and_threads(real_images):
    options = AugmentOptions(multiplier=2, seed=5)
    whole = Chunk.concat(list(augment_chunks(_chunks(real_images, 12), options)))
    pieces = Chunk.concat(list(augment_chunks(_chunks(real_images, 5), options)))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = Chunk.concat(list(augment_chunks(_chunks(real_images, 7), options)))
    finally:
        numba.set_num_threads(threads)
    for name in whole.fields:
        np.testing.assert_array_equal(whole[name], pieces[name])
        np.testing.assert_array_equal(whole[name], single[name])
    assert len(whole) == 36
    np.testing.assert_array_equal(whole["image"][::3], real_images)  # originals first, unchanged
    np.testing.assert_array_equal(whole["hold_duration"][:, 0], np.repeat(np.arange(12), 3))


def test_validation_samples_are_never_augmented(recordings, tmp_path):
    """A validation sample stays one original: no copy of it can land in the training part."""
    chunk = Chunk.concat(list(augment_chunks([_hand_made(6)], AugmentOptions(multiplier=2, seed=1))))
    assert chunk["split"].tolist() == ["train"] * 3 + ["val"] + ["train"] * 3 + ["val"] + ["train"] * 3 + ["val"]
    assert chunk["copy"].tolist() == [0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2, 0]
    assert chunk["frame_index"].tolist() == [0, 0, 0, 1, 2, 2, 2, 3, 4, 4, 4, 5]


def _hand_made(n: int) -> Chunk:
    rng = np.random.default_rng(0)
    return Chunk({"image": rng.integers(0, 256, (n, 8, 9, 3), dtype=np.uint8), "label": np.ones(n, np.float32),
                  "frame_index": np.arange(n), "split": np.array(["train", "val"] * (n // 2))})


def test_command_end_to_end(recordings, tmp_path):
    rec = recordings["multi_rows_wrinkled"]
    preprocess(rec.npz, tmp_path / "pos.zarr", key="a")
    positives = Chunk.concat(list(open_dataset(tmp_path / "pos.zarr").chunks()))
    result = run_cli("augment", str(tmp_path / "pos.zarr"), "-o", str(tmp_path / "aug.zarr"), "--multiplier", "3",
                     "--seed", "4", "--json")
    assert result.returncode == 0, result.stderr
    n = len(positives)
    assert json.loads(result.stdout) == {"originals": n, "copies": 3 * n, "written": 4 * n}
    aug = Chunk.concat(list(open_dataset(tmp_path / "aug.zarr").chunks()))
    for name in positives.fields:
        np.testing.assert_array_equal(aug[name][::4], positives[name])  # originals preserved
        if name not in ("image", "augmented", "copy"):
            np.testing.assert_array_equal(aug[name], np.repeat(positives[name], 4, axis=0))  # fields copied
    np.testing.assert_array_equal(aug["copy"], np.tile([0, 1, 2, 3], n))  # copies marked
    np.testing.assert_array_equal(aug["augmented"], np.tile([False, True, True, True], n))
    assert (aug["image"][1::4] != aug["image"][::4]).any()
    assert [p["stage"] for p in open_dataset(tmp_path / "aug.zarr").provenance] == ["preprocess", "augment"]

    run_cli("augment", str(tmp_path / "pos.zarr"), "-o", str(tmp_path / "again.npz"), "--multiplier", "3",
            "--seed", "4")
    again = Chunk.concat(list(open_dataset(tmp_path / "again.npz").chunks()))
    np.testing.assert_array_equal(again["image"], aug["image"])  # same seed, same bytes (through .npz too)
    augment(tmp_path / "pos.zarr", tmp_path / "other.zarr", AugmentOptions(multiplier=3, seed=5))
    other = Chunk.concat(list(open_dataset(tmp_path / "other.zarr").chunks()))
    assert not np.array_equal(other["image"], aug["image"])
    np.testing.assert_array_equal(other["image"][::4], aug["image"][::4])


def test_options_are_validated():
    with pytest.raises(JumpnetError, match="p_flip must be between 0 and 1"):
        AugmentOptions(p_flip=1.5)
    for bad in (-1, 65, 10 ** 9):
        with pytest.raises(JumpnetError, match="multiplier must be between 0 and 64"):
            AugmentOptions(multiplier=bad)


def test_multiplier_zero_copies_the_input(recordings, tmp_path):
    preprocess(recordings["single_rows"].npz, tmp_path / "pos.zarr")
    report = augment(tmp_path / "pos.zarr", tmp_path / "same.zarr", AugmentOptions(multiplier=0))
    assert report.copies == 0 and report.written == report.originals
    a = Chunk.concat(list(open_dataset(tmp_path / "pos.zarr").chunks()))
    b = Chunk.concat(list(open_dataset(tmp_path / "same.zarr").chunks()))
    for name in a.fields:
        np.testing.assert_array_equal(a[name], b[name])
