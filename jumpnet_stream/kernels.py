"""Compiled pixel kernels (numba), kept apart from the public API, each with a plain-numpy twin.

``resize_rgb``: BGR frame of any size -> RGB ``(h, w)`` uint8 by pixel-area averaging (what OpenCV
calls INTER_AREA; when enlarging, the same area-overlap weights), fused with the channel swap in one
pass. An exact halving (the recorder's 454 -> 227) takes an integer-only path. The twins
(``resize_rgb_reference``) are deliberately simple matrix formulations used by the tests.
"""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np


@lru_cache(maxsize=64)
def area_table(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output pixel along one axis: first source pixel, how many, and their weights.

    Output pixel ``i`` covers source interval ``[i * s, (i + 1) * s)`` with ``s = src / dst``; a source
    pixel's weight is the length of its overlap with that interval divided by ``s`` (weights sum to 1).
    """
    scale = src / dst
    starts = np.empty(dst, np.int32)
    counts = np.empty(dst, np.int32)
    span = int(np.ceil(scale)) + 1
    weights = np.zeros((dst, span), np.float32)
    for i in range(dst):
        lo, hi = i * scale, min((i + 1) * scale, src)
        first, last = int(np.floor(lo)), min(int(np.ceil(hi)), src)
        starts[i], counts[i] = first, last - first
        for k, j in enumerate(range(first, last)):
            weights[i, k] = (min(hi, j + 1) - max(lo, j)) / scale
    return starts, counts, weights


@numba.njit(cache=True, nogil=True)
def _resize_area(src, out, y0, yn, yw, x0, xw):  # pragma: no cover - compiled
    # Vertical pass first, over whole contiguous rows (vectorises), into a float row that is
    # padded so the horizontal pass can run a fixed span with zero weights past each pixel's count.
    h, w = out.shape[0], out.shape[1]
    sh, sw = src.shape[0], src.shape[1]
    span = xw.shape[1]
    flat = src.reshape(sh, sw * 3)
    o = out.reshape(h, w * 3)
    n = sw * 3
    acc = np.zeros(n + 3 * span, np.float32)
    for oy in range(h):
        row = flat[y0[oy]]
        wk = yw[oy, 0]
        for i in range(n):
            acc[i] = row[i] * wk
        for k in range(1, yn[oy]):
            row = flat[y0[oy] + k]
            wk = yw[oy, k]
            for i in range(n):
                acc[i] += row[i] * wk
        for ox in range(w):
            base = 3 * x0[ox]
            b = np.float32(0.5)
            g = np.float32(0.5)
            r = np.float32(0.5)
            for m in range(span):
                wx = xw[ox, m]
                b += acc[base + 3 * m] * wx
                g += acc[base + 3 * m + 1] * wx
                r += acc[base + 3 * m + 2] * wx
            o[oy, 3 * ox] = np.uint8(min(r, np.float32(255)))
            o[oy, 3 * ox + 1] = np.uint8(min(g, np.float32(255)))
            o[oy, 3 * ox + 2] = np.uint8(min(b, np.float32(255)))


@numba.njit(cache=True, nogil=True)
def _resize_half(src, out):  # pragma: no cover - compiled
    # Exact 2x (the recorder's 454 -> 227): integer sums of 2x2 blocks, rounded half up.
    h, w = out.shape[0], out.shape[1]
    flat = src.reshape(src.shape[0], src.shape[1] * 3)
    o = out.reshape(h, w * 3)
    n = src.shape[1] * 3
    acc = np.empty(n, np.uint16)
    for oy in range(h):
        top = flat[2 * oy]
        bottom = flat[2 * oy + 1]
        for i in range(n):
            acc[i] = np.uint16(top[i]) + np.uint16(bottom[i])
        for ox in range(w):
            s = 6 * ox
            o[oy, 3 * ox] = (acc[s + 2] + acc[s + 5] + 2) >> 2
            o[oy, 3 * ox + 1] = (acc[s + 1] + acc[s + 4] + 2) >> 2
            o[oy, 3 * ox + 2] = (acc[s] + acc[s + 3] + 2) >> 2


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 BGR frame, got {getattr(frame, 'shape', type(frame))}")


def resize_rgb(frame: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """BGR uint8 frame -> RGB uint8 of ``size = (height, width)`` by area averaging, in one pass."""
    _check_frame(frame)
    h, w = size
    if out is None:
        out = np.empty((h, w, 3), np.uint8)
    elif out.shape != (h, w, 3) or out.dtype != np.uint8:
        raise ValueError(f"out must be ({h}, {w}, 3) uint8")
    sh, sw = frame.shape[:2]
    if not frame.flags.c_contiguous:
        frame = np.ascontiguousarray(frame)
    if (sh, sw) == (2 * h, 2 * w):
        _resize_half(frame, out)
    else:
        y0, yn, yw = area_table(sh, h)
        x0, _, xw = area_table(sw, w)
        _resize_area(frame, out, y0, yn, yw, x0, xw)
    return out


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
