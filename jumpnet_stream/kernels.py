"""Compiled pixel kernels (numba), kept apart from the public API, each with a plain-numpy twin.

``resize_rgb``: BGR frame of any size -> RGB ``(h, w)`` uint8 by pixel-area averaging (what OpenCV
calls INTER_AREA; when enlarging, the same area-overlap weights), fused with the channel swap in one
pass. An exact halving (the recorder's 454 -> 227) takes an integer-only path. Their plain-numpy twins
live beside the tests (``tests/naive.py``), which require the kernels to agree with them; CI also runs the
kernel tests with ``NUMBA_DISABLE_JIT=1``, so the kernels' bodies run as Python too.
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


# -- augmentation -----------------------------------------------------------------------------------
# Every random number is a SplitMix64 hash of (seed, sample index, copy number, counter): a sample's
# augmentation depends on nothing else, whatever the chunking or the number of threads.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NOISE_SCALE = np.float32(0.02 * 255 * np.sqrt(3.0))  # Irwin-Hall(4) sum -> N(0, 1) -> sigma 0.02 of 255
_NOISE_SALT = np.uint64(0x5851F42D4C957F2D)


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(x):  # pragma: no cover - compiled
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _sample_key(seed, index, copy):  # pragma: no cover - compiled
    return _mix(_mix(_mix(np.uint64(seed)) + np.uint64(index) * _GOLDEN) + np.uint64(copy))


@numba.njit(cache=True, nogil=True)
def _uniform(key, j):  # pragma: no cover - compiled
    return np.float64(_mix(key + np.uint64(j) * _GOLDEN) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, nogil=True)
def _augment_one(src, out, lut, lut8, noise, key, p_flip, p_brightness, p_noise, p_shift):  # pragma: no cover
    # Brightness and its clip depend only on the input byte: a 256-entry table (float for the noisy path,
    # rounded bytes otherwise). A noisy row's noise is hashed first in one contiguous pass (vectorises).
    h, w = src.shape[0], src.shape[1]
    n = 3 * w
    flip = _uniform(key, 0) < p_flip
    factor = np.float32(0.7 + 0.6 * _uniform(key, 2)) if _uniform(key, 1) < p_brightness else np.float32(1)
    noisy = _uniform(key, 3) < p_noise
    shift = np.int64(_uniform(key, 5) * 11) - 5 if _uniform(key, 4) < p_shift else 0
    noise_key = key ^ _NOISE_SALT
    for v in range(256):
        lut[v] = min(max(np.float32(v) * factor, np.float32(0)), np.float32(255))
        lut8[v] = np.uint8(np.int32(lut[v] + np.float32(0.5)))  # >= 0, so truncation is floor
    flat = src.reshape(h, n)
    o = out.reshape(h, n)
    lo, hi = max(shift, 0), w + min(shift, 0)  # output columns with a source pixel; the rest stay zero
    for y in range(h):
        s = flat[y]
        d = o[y]
        d[:3 * lo] = 0
        d[3 * hi:] = 0
        if noisy:
            base = noise_key + np.uint64(y * n)  # counters index the pixel before the shift
            for i in range(n):
                r = _mix(base + np.uint64(i))
                t = (r & np.uint64(0xFFFF)) + ((r >> np.uint64(16)) & np.uint64(0xFFFF)) \
                    + ((r >> np.uint64(32)) & np.uint64(0xFFFF)) + (r >> np.uint64(48))
                noise[i] = np.float32(t) * np.float32(1 / 65536) - np.float32(2)
            for x in range(lo, hi):
                xs = x - shift
                xf = w - 1 - xs if flip else xs
                for c in range(3):
                    v = min(max(lut[s[3 * xf + c]] + noise[3 * xs + c] * _NOISE_SCALE, np.float32(0)),
                            np.float32(255))
                    d[3 * x + c] = np.uint8(np.int32(v + np.float32(0.5)))
        elif flip:
            for x in range(lo, hi):
                xf = 3 * (w - 1 - (x - shift))
                for c in range(3):
                    d[3 * x + c] = lut8[s[xf + c]]
        else:
            for i in range(3 * lo, 3 * hi):
                d[i] = lut8[s[i - 3 * shift]]


@numba.njit(cache=True, nogil=True, parallel=True)
def _augment_chunk(images, indices, copies, seed, out, p_flip, p_brightness, p_noise, p_shift):  # pragma: no cover
    n = images.shape[0]
    for t in numba.prange(n * copies):
        i, k = t // copies, t % copies
        _augment_one(images[i], out[i, k], np.empty(256, np.float32), np.empty(256, np.uint8),
                     np.empty(3 * images.shape[2], np.float32), _sample_key(seed, indices[i], k + 1), p_flip,
                     p_brightness, p_noise, p_shift)


def augment_images(images: np.ndarray, indices: np.ndarray, copies: int, seed: int, *, p_flip: float = 0.5,
                   p_brightness: float = 0.5, p_noise: float = 0.3, p_shift: float = 0.3) -> np.ndarray:
    """``copies`` augmented versions of each uint8 RGB image: (n, copies, H, W, 3).

    Per copy, independently: horizontal flip (p_flip), brightness x U(0.7, 1.3) (p_brightness),
    Gaussian noise sigma 0.02 of full scale (p_noise), horizontal shift by an integer in [-5, 5] with
    zero fill (p_shift); clipped and rounded to nearest. Copy ``k`` (1-based) of the sample with
    global index ``indices[i]`` depends only on (seed, indices[i], k).
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"expected (n, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    if indices.shape != (len(images),):
        raise ValueError("one global index per image")
    out = np.empty((len(images), copies, *images.shape[1:]), np.uint8)
    if copies:
        _augment_chunk(np.ascontiguousarray(images), indices, copies, seed, out, p_flip, p_brightness, p_noise,
                       p_shift)
    return out
