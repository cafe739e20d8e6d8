"""Slow, plain-numpy twins of the compiled kernels (``jumpnet_stream.kernels``), written for clarity, not speed:
the tests require the kernels to agree with them (stumpy keeps its ``naive.py`` the same way)."""

from __future__ import annotations

import numpy as np

from jumpnet_stream.kernels import _GOLDEN, _NOISE_SALT, _NOISE_SCALE


def area_matrix(src: int, dst: int) -> np.ndarray:
    """Dense (dst, src) matrix of area weights: the twin's formulation of :func:`area_table`."""
    edges_out = np.arange(dst + 1) * (src / dst)
    lo = np.maximum(edges_out[:-1, None], np.arange(src)[None, :])
    hi = np.minimum(edges_out[1:, None], np.arange(1, src + 1)[None, :])
    return np.clip(hi - lo, 0, None) / (src / dst)


def resize_rgb_reference(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Plain-numpy twin of :func:`resize_rgb`: rows and columns resampled by weight matrices."""
    h, w = size
    rows = area_matrix(frame.shape[0], h)
    cols = area_matrix(frame.shape[1], w)
    rgb = frame[..., ::-1].astype(np.float64)
    resized = np.tensordot(np.tensordot(rows, rgb, axes=(1, 0)), cols, axes=(1, 1))  # (h, 3, w)
    resized = resized.transpose(0, 2, 1)
    return np.floor(resized + 0.5).clip(0, 255).astype(np.uint8)


def _mix_reference(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def augment_reference(image: np.ndarray, index: int, copy: int, seed: int, *, p_flip: float = 0.5,
                      p_brightness: float = 0.5, p_noise: float = 0.3, p_shift: float = 0.3) -> np.ndarray:
    """Plain-numpy twin of one augmented copy (``copy`` is 1-based), step by step: flip, brightness,
    noise, shift with zero fill."""
    with np.errstate(over="ignore"):
        key = _mix_reference(_mix_reference(_mix_reference(np.array([seed], np.uint64)) + np.uint64(index) * _GOLDEN)
                             + np.uint64(copy))
        draws = _mix_reference(key + np.arange(6, dtype=np.uint64) * _GOLDEN)
    u = (draws >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    out = image.astype(np.float32)
    if u[0] < p_flip:
        out = out[:, ::-1]
    if u[1] < p_brightness:
        out = np.clip(out * np.float32(0.7 + 0.6 * u[2]), 0, 255)
    if u[3] < p_noise:
        counters = np.arange(out.size, dtype=np.uint64).reshape(out.shape)
        with np.errstate(over="ignore"):
            r = _mix_reference((key ^ _NOISE_SALT) + counters)
        s = sum((r >> np.uint64(b)) & np.uint64(0xFFFF) for b in (0, 16, 32, 48))
        z = s.astype(np.float32) * np.float32(1 / 65536) - np.float32(2)
        out = np.clip(out + z * _NOISE_SCALE, 0, 255)
    if u[4] < p_shift:
        shift = int(u[5] * 11) - 5
        shifted = np.zeros_like(out)
        if shift >= 0:
            shifted[:, shift:] = out[:, :out.shape[1] - shift]
        else:
            shifted[:, :shift] = out[:, -shift:]
        out = shifted
    return np.floor(out + np.float32(0.5)).astype(np.uint8)
