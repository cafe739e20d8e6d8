"""Synthetic H.264 screen recordings (PyAV + libx264), for the seeking tests and the video benchmark.

What a screen recorder (OBS and the like) writes, as opposed to the game's own mp4v preview: H.264 with
B-frames (some of them references, as x264's B-pyramid makes them) and long fixed GOPs (one keyframe
every ``gop`` frames, scene cuts off), at 1080p60 by default. The picture is a game-like screen: a
scrolling, textured landscape, a few moving blocks and a static HUD band, rendered straight into
YUV 4:2:0 planes (no colour conversion per frame), so writing is bound by the encoder. Every frame is a
pure function of ``seed`` and its number.

Besides the ordinary file, it makes the kinds that seeking must not trust: ``frame_times`` gives
every frame its own presentation time (a variable frame rate), a path ending in ``.h264`` writes a raw
Annex B stream (no container, no timestamps), ``faststart`` puts the MP4 index first (such a file cut
short still opens, its index naming frames it no longer has), and ``rotation`` tags the display matrix
(OpenCV turns such frames upright, FFmpeg's plain decode does not).

PyAV is needed here (``pip install av``); nothing else in the package imports this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import cv2
import numpy as np


@dataclass(frozen=True)
class ScreenVideo:
    path: str
    frames: int
    width: int
    height: int
    fps: float
    gop: int
    bframes: int


class ScreenScene:
    """Frame ``f`` of the scene as one (H * 3 / 2, W) uint8 I420 array (Y plane, then U, then V)."""

    def __init__(self, width: int, height: int, seed: int):
        if width % 4 or height % 4:
            raise ValueError(f"width and height must be multiples of 4, not {width}x{height}")
        rng = np.random.default_rng(seed)
        self.width, self.height = width, height
        wide = 2 * width
        y = np.arange(height, dtype=np.float32)[:, None]
        x = np.arange(wide, dtype=np.float32)[None, :]
        period = 2 * np.pi / wide  # the texture wraps around seamlessly
        sky = np.stack([235 - 40 * y / height + 0 * x, 180 - 20 * y / height + 0 * x, 110 + 40 * y / height + 0 * x], -1)
        hills = height * 0.55 + height * 0.05 * np.sin(3 * period * x) + height * 0.03 * np.sin(11 * period * x)
        grass = np.stack([60 + 25 * np.sin(x / 5.0 + y / 9.0), 150 + 30 * np.sin(x / 13.0) + 0 * y,
                          70 + 0 * x + 0 * y], -1)
        picture = np.where((y > hills)[..., None], grass, sky)
        ground = int(height * 0.82)
        picture[ground:] = np.stack([50 + 20 * np.sin(x / 3.0 + y[ground:] / 4.0),
                                     90 + 25 * np.cos(y[ground:] / 2.0) + 0 * x,
                                     130 + 0 * x + 0 * y[ground:]], -1)
        for cx in rng.integers(0, wide - width // 20, wide // 120):  # obstacles and clouds, BGR
            h, w = int(rng.integers(height // 20, height // 7)), int(rng.integers(width // 60, width // 25))
            picture[ground - h:ground, cx:cx + w] = (70, 50, 40)
        for cx, cy in zip(rng.integers(0, wide - width // 10, wide // 80), rng.integers(0, height // 3, wide // 80)):
            picture[cy:cy + height // 40, cx:cx + width // 25] = (250, 248, 245)
        picture = np.clip(picture, 0, 255).astype(np.uint8)
        picture = np.concatenate([picture, picture[:, :width]], axis=1)  # any window of `width` is a view
        i420 = cv2.cvtColor(picture, cv2.COLOR_BGR2YUV_I420)
        full = picture.shape[0] * picture.shape[1]
        flat = i420.reshape(-1)
        self.y = flat[:full].reshape(height, -1)
        self.u = flat[full:full + full // 4].reshape(height // 2, -1)
        self.v = flat[full + full // 4:].reshape(height // 2, -1)
        self.wide = wide
        self.speed = 2 * max(1, width // 480)  # even: chroma columns move with luma
        self.blocks = [(int(rng.integers(0, width)), int(rng.integers(height // 10, ground - height // 8)),
                        int(rng.integers(-6, 7)) * 2, int(rng.integers(-3, 4)) * 2,
                        tuple(int(c) for c in rng.integers(16, 240, 3))) for _ in range(6)]
        self.ground = ground

    def render(self, f: int) -> np.ndarray:
        w, h = self.width, self.height
        x0 = (f * self.speed) % self.wide
        out = np.empty((h * 3 // 2, w), np.uint8)
        out[:h] = self.y[:, x0:x0 + w]
        out[h:h + h // 4] = self.u[:, x0 // 2:x0 // 2 + w // 2].reshape(h // 4, w)
        out[h + h // 4:] = self.v[:, x0 // 2:x0 // 2 + w // 2].reshape(h // 4, w)
        y, u, v = out[:h], out[h:h + h // 4].reshape(h // 2, w // 2), out[h + h // 4:].reshape(h // 2, w // 2)
        side = max(4, h // 16) // 2 * 2
        for bx, by, dx, dy, (cy, cu, cv) in self.blocks:  # blocks bouncing around the screen
            px = (bx + dx * f) % (2 * (w - side))
            px = (px if px < w - side else 2 * (w - side) - px) // 2 * 2
            py = (by + dy * f) % (2 * (self.ground - side))
            py = (py if py < self.ground - side else 2 * (self.ground - side) - py) // 2 * 2
            y[py:py + side, px:px + side] = cy
            u[py // 2:(py + side) // 2, px // 2:(px + side) // 2] = cu
            v[py // 2:(py + side) // 2, px // 2:(px + side) // 2] = cv
        band = max(2, h // 27) // 2 * 2  # HUD: a dark band with a bar that grows with time
        y[:band] = 24
        u[:band // 2] = v[:band // 2] = 128
        bar = (f % 600) * (w // 2) // 600 // 2 * 2
        y[band // 4:band - band // 4, w // 4:w // 4 + bar] = 200
        return out


def write_screen_recording(path: str | os.PathLike, *, frames: int, width: int = 1920, height: int = 1080,
                           fps: int = 60, gop: int = 250, bframes: int = 3, preset: str = "superfast",
                           crf: int = 23, seed: int = 0, faststart: bool = False,
                           frame_times: Sequence[float] | None = None, rotation: int = 0) -> ScreenVideo:
    """Write ``frames`` frames of the scene to ``path`` (.mp4, .mkv, or .h264 for a raw stream) with
    libx264: a keyframe exactly every ``gop`` frames, up to ``bframes`` B-frames in a row (x264's
    B-pyramid makes some of them references), constant rate ``fps`` unless ``frame_times`` (seconds,
    increasing, one per frame) says when each frame is shown."""
    import av  # only this module needs PyAV to write

    path = os.fspath(path)
    if frame_times is not None and len(frame_times) != frames:
        raise ValueError(f"frame_times holds {len(frame_times)} times for {frames} frames")
    raw = path.endswith(".h264")
    options = {"movflags": "+faststart"} if faststart else {}
    container = av.open(path, "w", format="h264" if raw else None, options=options)
    try:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000) if frame_times is not None else Fraction(1, fps)
        stream.options = {"preset": preset, "crf": str(crf), "g": str(gop), "keyint_min": str(gop),
                          "sc_threshold": "0", "bf": str(bframes), "threads": "2"}
        if rotation:
            stream.set_display_rotation(rotation)
        scene = ScreenScene(width, height, seed)
        for f in range(frames):
            frame = av.VideoFrame.from_ndarray(scene.render(f), format="yuv420p")
            frame.pts = round(frame_times[f] * 1000) if frame_times is not None else f
            frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return ScreenVideo(path, frames, width, height, float(fps), gop, bframes)
