"""The resize+colour kernel against OpenCV (same output within 1 grey level) and its numpy twin."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT
from jumpnet_stream.kernels import area_table, resize_rgb
from naive import resize_rgb_reference

SIZES = [((454, 454), (227, 227)), ((720, 1280), (227, 227)), ((301, 517), (227, 227)),
         ((455, 453), (227, 227)), ((100, 90), (227, 227)), ((481, 640), (120, 160)), ((227, 227), (227, 227))]


@pytest.fixture(scope="module")
def real_frame(recordings):
    capture = cv2.VideoCapture(recordings["with_video"].video)
    for _ in range(40):
        ok, frame = capture.read()
    assert ok
    return frame


def _frame(kind, shape, real_frame):
    if kind == "random":
        return np.random.default_rng(shape[0] * 7 + shape[1]).integers(0, 256, (*shape, 3), dtype=np.uint8)
    return cv2.resize(real_frame, shape[::-1], interpolation=cv2.INTER_LINEAR)


def _opencv(frame, size):
    return cv2.cvtColor(cv2.resize(frame, size[::-1], interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("kind", ["random", "real"])
@pytest.mark.parametrize("src,dst", SIZES)
def test_matches_opencv_area_within_one_level(real_frame, kind, src, dst):
    frame = _frame(kind, src, real_frame)
    ours = resize_rgb(frame, dst).astype(int)
    theirs = _opencv(frame, dst).astype(int)
    assert ours.shape == (*dst, 3)
    assert np.abs(ours - theirs).max() <= 1
    assert (ours == theirs).mean() > 0.9


@pytest.mark.parametrize("kind", ["random", "real"])
@pytest.mark.parametrize("src,dst", SIZES)
def test_matches_numpy_twin(real_frame, kind, src, dst):
    frame = _frame(kind, src, real_frame)
    ours = resize_rgb(frame, dst).astype(int)
    twin = resize_rgb_reference(frame, dst).astype(int)
    assert np.abs(ours - twin).max() <= 1
    assert (ours == twin).mean() > 0.99


def test_exact_halving_is_exact(real_frame):
    frame = _frame("real", (454, 454), real_frame)
    np.testing.assert_array_equal(resize_rgb(frame, (227, 227)), resize_rgb_reference(frame, (227, 227)))
    np.testing.assert_array_equal(resize_rgb(frame, (227, 227)), _opencv(frame, (227, 227)))


def test_area_weights_sum_to_one():
    for src, dst in [(720, 227), (90, 227), (454, 227), (7, 3)]:
        starts, counts, weights = area_table(src, dst)
        np.testing.assert_allclose(weights.sum(axis=1), 1, rtol=1e-5)
        assert starts[0] == 0 and starts[-1] + counts[-1] == src


def test_writes_into_out_and_accepts_views(real_frame):
    frame = _frame("real", (454, 454), real_frame)
    out = np.zeros((227, 227, 3), np.uint8)
    assert resize_rgb(frame[:, ::-1], (227, 227), out=out) is out
    np.testing.assert_array_equal(out, _opencv(np.ascontiguousarray(frame[:, ::-1]), (227, 227)))


@pytest.mark.parametrize("bad", [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10), np.uint8),
                                 np.zeros((10, 10, 4), np.uint8)])
def test_rejects_non_bgr_frames(bad):
    with pytest.raises(ValueError, match="expected an HxWx3 uint8 BGR frame"):
        resize_rgb(bad, (5, 5))


def test_kernel_bodies_run_as_plain_python():
    """With NUMBA_DISABLE_JIT=1 the kernels run as the Python they are written in (stumpy's test.sh does
    the same): on small inputs, every path agrees with the twins there too."""

    script = """
import numpy as np, numba
from jumpnet_stream.kernels import augment_images, resize_rgb
from naive import augment_reference, resize_rgb_reference
assert numba.config.DISABLE_JIT
rng = np.random.default_rng(0)
for src, dst in (((40, 60), (20, 30)), ((41, 67), (17, 23)), ((9, 8), (20, 21))):
    frame = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    assert np.abs(resize_rgb(frame, dst).astype(int) - resize_rgb_reference(frame, dst)).max() <= 1, (src, dst)
images = rng.integers(0, 256, (3, 12, 10, 3), dtype=np.uint8)
indices = np.arange(5, 8)
out = augment_images(images, indices, 4, 9, p_flip=0.5, p_brightness=0.7, p_noise=0.6, p_shift=0.6)
for i in range(3):
    for k in range(4):
        want = augment_reference(images[i], indices[i], k + 1, 9, p_flip=0.5, p_brightness=0.7, p_noise=0.6, p_shift=0.6)
        assert np.array_equal(out[i, k], want), (i, k)
print("ok")
"""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.path.join(ROOT, 'tests')}"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
