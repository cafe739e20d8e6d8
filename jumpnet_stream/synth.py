"""Synthetic recordings made as the recorder makes them, for tests, benchmarks and the demo.

A scrolling, textured side-on scene with a player that jumps while the first key is held. The recorder
(``Data_scrap_tool.py`` and ``capture.py``/``data_collector.py`` beside it) grabs the game's window from
the screen (here a 454x454 rendering) and resizes it to the 227x227 capture with INTER_LINEAR. It writes,
per loop of capture, drawing and ``sleep(1/30)`` (so the real rate is below the labelled 30 fps), one
video frame: the capture with a green ``"<key>↓"`` drawn at ``(5 + 50 * i, 20)`` for every tracked key ``i`` held, scaled
up 2x with INTER_NEAREST, mp4v. A keyboard listener logs every event (the OS's auto-repeated presses
too) with a fresh, clean capture and ``frame_idx`` = the frames written so far: the frame with that
index is the first captured after the event, and an event after the last frame names the frame count.
``prev_interval`` is the time since the last release on a press (0.0 before the first), 0.0 on a release.
Everything follows from the seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import cv2
import numpy as np

from .object_array import ObjectArrayWriter

FPS = 30.0  # what the container is labelled
CAPTURE_PERIOD = 1 / FPS + 0.004  # the recorder's real loop: capture and drawing, then sleep(1/30)
LABEL_GREEN = (0, 255, 0)  # the key label's colour (the same in BGR and RGB)
REPEAT_DELAY = 0.5  # seconds before the OS starts repeating a held key's press
REPEAT_RATE = 30.0  # repeated presses per second while held
SCREEN = 2  # the game's window on the screen, in capture sizes (the recorder scales it down to the capture)


@dataclass(frozen=True)
class SyntheticRecording:
    npz: str
    video: str | None
    keys: tuple[str, ...]
    frames: int
    events: int


class Scene:
    """Renders the game's window at frame ``f`` (``size`` square, RGB uint8) as a pure function of ``f``
    and the jump timeline; :meth:`capture` is the recorder's grab of it."""

    def __init__(self, size: int, seed: int, jumps: list[tuple[int, int]]):
        rng = np.random.default_rng(seed)
        self.size = size
        width = 4 * size
        y = np.arange(size)[:, None]
        x = np.arange(width)[None, :]
        sky = np.stack([90 + 60 * y / size, 140 + 60 * y / size, 235 - 30 * y / size], -1) * np.ones((1, width, 1))
        hills = size * 0.55 + 18 * np.sin(2 * np.pi * x * 3 / width) + 9 * np.sin(2 * np.pi * x * 11 / width)
        shade = 20 * np.sin(x / 7.0 + y / 11.0)[..., None]
        sky = np.where((y > hills)[..., None], np.array([70, 155, 80]) + shade, sky)
        self.ground = int(size * 0.8)
        band = (y >= self.ground) & np.ones_like(x, bool)
        soil = np.stack([120 + 25 * np.sin(x / 3.0 + y / 5.0), 85 + 20 * np.cos(y / 2.0) + 0 * x,
                         50 + 0 * x + 0 * y], -1)
        tex = np.where(band[..., None], soil, sky)
        for cx in rng.integers(0, width, size=width // 60):  # obstacles
            h, w = int(rng.integers(size // 14, size // 6)), int(rng.integers(size // 20, size // 9))
            tex[self.ground - h:self.ground, cx:cx + w] = (40, 40, 55)
        for cx, cy in zip(rng.integers(0, width, width // 40), rng.integers(0, size // 3, width // 40)):  # clouds
            tex[cy:cy + 6, cx:cx + 20] = (245, 245, 250)
        tex = np.clip(tex, 0, 255).astype(np.uint8)
        self.texture = np.concatenate([tex, tex[:, :size]], axis=1)
        grain = rng.integers(-6, 7, size=(4, size, size, 3), dtype=np.int16)  # sensor-like speckle on ~10%
        self.grain = np.where(rng.random((4, size, size, 1)) < 0.1, grain, 0).astype(np.int16)
        self.width = width
        self.speed = max(1, size // 75)
        self.jumps = jumps

    def height(self, f: int) -> int:
        for start, frames in self.jumps:
            if start <= f < start + frames:
                t = f - start
                top = self.size * (0.12 + 0.25 * min(frames, 45) / 45)
                return int(4 * top * t * (frames - t) / frames ** 2)
        return 0

    def render(self, f: int) -> np.ndarray:
        offset = (f * self.speed) % self.width
        frame = self.texture[:, offset:offset + self.size].astype(np.int16) + self.grain[f % 4]
        side = max(4, self.size // 12)
        top = self.ground - side - self.height(f)
        left = self.size // 5
        frame[top:top + side, left:left + side] = (235, 60, 40)
        frame[top + side // 4:top + side // 2, left + side // 2:left + 3 * side // 4] = (255, 255, 255)
        return np.clip(frame, 0, 255).astype(np.uint8)

    def capture(self, f: int, size: int) -> np.ndarray:
        """The recorder's capture of frame ``f``: the window resized to ``size`` square with INTER_LINEAR."""
        return cv2.resize(self.render(f), (size, size), interpolation=cv2.INTER_LINEAR)


def _key_intervals(rng: np.random.Generator, end: float, main: bool) -> list[tuple[float, float]]:
    """Press/release times (seconds, before ``end``) of one key, never overlapping."""
    t = float(rng.uniform(0.2, 1.0))
    out = []
    while True:
        hold = float(rng.choice([rng.uniform(0.08, 0.45), rng.uniform(0.55, 1.6)], p=[0.7, 0.3]))
        if t + hold >= end:
            return out
        out.append((t, t + hold))
        t += hold + float(rng.exponential(1.2 if main else 3.0)) + 0.1


def _events(rng: np.random.Generator, end: float, keys: Sequence[str]) -> list[tuple[float, str, int]]:
    """(time, phase, key index) of every event, auto-repeats included, in time order."""
    events = []
    for k in range(len(keys)):
        for start, stop in _key_intervals(rng, end, k == 0):
            events.append((start, "press", k))
            repeat = start + REPEAT_DELAY
            while repeat < stop:
                events.append((repeat, "press", k))
                repeat += 1 / REPEAT_RATE
            events.append((stop, "release", k))
    events.sort(key=lambda e: (e[0], e[1] == "press"))
    return events


def frames_before(t: float) -> int:
    """Frames the recorder has written before time ``t``: frame ``f`` is captured at ``f * CAPTURE_PERIOD``."""
    return int(np.ceil(t / CAPTURE_PERIOD))


def _entries(events: list[tuple[float, str, int]], keys: Sequence[str]) -> Iterator[tuple]:
    """Recorder entries without images: (prev_interval, multi_hot, hold_durations, phase, frame_idx)."""
    held: dict[int, float] = {}
    last_release: float | None = None
    for t, phase, k in events:
        holds = np.zeros(len(keys), np.float32)
        if phase == "press":
            held.setdefault(k, t)
            prev = 0.0 if last_release is None else t - last_release
        else:
            if k not in held:
                continue
            prev = 0.0
        for j, since in held.items():
            holds[j] = t - since
        if phase == "release":
            del held[k]
            last_release = t
        multi_hot = np.zeros(len(keys), np.float32)
        multi_hot[list(held)] = 1.0
        yield prev, multi_hot, holds, phase, frames_before(t)


def _wrinkle(entry: list, rng: np.random.Generator) -> list:
    """One of the recorder's historical quirks applied to an entry, chosen at random."""
    image, prev, multi_hot, holds, phase, frame = entry
    choice = int(rng.integers(0, 7))
    if choice == 0:
        phase = phase.encode()
    elif choice == 1:
        phase = f"  {phase.upper()} "
    elif choice == 2:
        prev = np.array(prev, dtype=object)
    elif choice == 3:
        prev, frame = [prev], [frame]
    elif choice == 4:
        multi_hot, holds = multi_hot.tolist(), [np.array(h, dtype=object) for h in holds] if len(holds) == 1 \
            else holds.tolist()
    elif choice == 5:
        frame = np.int64(frame)
    else:
        image, phase = [image], np.str_(phase)
    return [image, prev, multi_hot, holds, phase, frame]


def _malformed(rng: np.random.Generator, keys: Sequence[str], size: int) -> tuple:
    image = np.zeros((size, size, 3), np.float32)
    return [
        (image, 0.0, np.zeros(len(keys), np.float32), np.zeros(len(keys), np.float32), "press"),  # arity
        (image, 0.0, np.zeros(len(keys), np.float32), np.zeros(len(keys), np.float32), "hover", 0),  # phase
        (np.zeros((9, 9), np.float32), 0.0, np.zeros(len(keys), np.float32), np.zeros(len(keys), np.float32),
         "press", 0),  # image shape
        (image, 0.0, np.zeros(len(keys) + 1, np.float32), np.zeros(len(keys), np.float32), "press", 0),  # keys
    ][int(rng.integers(0, 4))]


def make_recording(out_dir: str | os.PathLike, *, name: str = "demo", seconds: float = 60.0,
                   keys: Sequence[str] = ("w",), seed: int = 0, capture: int = 227, video: bool = True,
                   layout: str = "rows", writer: str = "stream", wrinkles: bool = False,
                   old_keys: bool = False, malformed: int = 0, folders: bool = False) -> SyntheticRecording:
    """Write ``<name>.npz`` (keylog) and ``<name>_120000.mp4`` (preview video) into ``out_dir``, or, with
    ``folders``, into the recorder's ``out_dir/collected/`` and ``out_dir/recordings/``.

    ``layout``: "rows" gives ``data`` shape (N, 6), "tuples" (N,) of tuples. ``writer``: "stream" writes
    entry by entry (any length); "numpy" builds the array and calls ``np.savez`` exactly as the recorder
    does (short recordings only). ``wrinkles`` applies the recorder's historical quirks at random,
    ``old_keys`` stores keys as an object array of shape (1, K), ``malformed`` adds broken entries.
    """
    if layout not in ("rows", "tuples") or writer not in ("stream", "numpy"):
        raise ValueError("layout is rows|tuples, writer is stream|numpy")
    keylog_dir = os.path.join(out_dir, "collected") if folders else os.fspath(out_dir)
    video_dir = os.path.join(out_dir, "recordings") if folders else os.fspath(out_dir)
    for folder in (keylog_dir, video_dir):
        os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = max(1, int(seconds / CAPTURE_PERIOD))
    events = _events(rng, frames * CAPTURE_PERIOD, keys)
    main_presses = [(frames_before(t0), frames_before(t1)) for t0, t1 in _pairs(events)]
    jumps = [(start, max(10, int(12 + 0.6 * (stop - start)))) for start, stop in main_presses]
    scene = Scene(SCREEN * capture, seed, jumps)
    npz_path = os.path.join(keylog_dir, f"{name}.npz")
    video_path = os.path.join(video_dir, f"{name}_120000.mp4") if video else None

    entries = list(_entries(events, keys))
    bad_at = set(rng.choice(len(entries) + malformed, size=malformed, replace=False).tolist()) if malformed else set()
    sink = _EntrySink(npz_path, layout, writer)
    out = None
    if video_path:
        side = 2 * capture
        out = cv2.VideoWriter(video_path, cv2.VideoWriter_fourcc(*"mp4v"), FPS, (side, side))
        if not out.isOpened():
            raise RuntimeError(f"{video_path}: OpenCV cannot write mp4v video here")
    position = 0
    held = np.zeros(len(keys), bool)  # keys held now: what the frame's label shows
    last = frames if video_path else (entries[-1][4] if entries else 0)
    for f in range(last + 1):  # events with frame_idx f come before frame f (f == frames: after the last)
        here = []
        while position < len(entries) and entries[position][4] == f:
            here.append(entries[position])
            position += 1
        if not here and (out is None or f == frames):
            continue
        capture_rgb = scene.capture(f, capture)
        image = capture_rgb.astype(np.float32) / np.float32(255)
        for prev, multi_hot, holds, phase, frame in here:
            while sink.count in bad_at:
                sink.add(_malformed(rng, keys, capture))
            entry = [image, prev, multi_hot, holds, phase, frame]
            sink.add(tuple(_wrinkle(entry, rng) if wrinkles else entry))
            held = multi_hot > 0
        if out is not None and f < frames:
            out.write(preview_frame(capture_rgb, keys, held))
    while sink.count in bad_at:
        sink.add(_malformed(rng, keys, capture))
    if out is not None:
        out.release()
    key_array = np.array([list(keys)], dtype=object) if old_keys else np.array(list(keys))
    sink.close(key_array)
    return SyntheticRecording(npz_path, video_path, tuple(keys), frames, sink.count)


def preview_frame(capture_rgb: np.ndarray, keys: Sequence[str], held: np.ndarray) -> np.ndarray:
    """The recorder's video frame (BGR): the capture with a green ``"<key>↓"`` for every held key ``i``
    at ``(5 + 50 * i, 20)`` (OpenCV draws the arrow as ``?``), scaled up 2x with INTER_NEAREST."""
    small = cv2.cvtColor(capture_rgb, cv2.COLOR_RGB2BGR)
    for i, key in enumerate(keys):
        if held[i]:
            cv2.putText(small, f"{key}\u2193", (5 + i * 50, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, LABEL_GREEN, 2)
    side = (2 * small.shape[1], 2 * small.shape[0])
    return cv2.resize(small, side, interpolation=cv2.INTER_NEAREST)


def _pairs(events: list[tuple[float, str, int]]) -> Iterator[tuple[float, float]]:
    """(press, release) times of the first key's presses, for the scene's jumps."""
    start = None
    for t, phase, k in events:
        if k != 0:
            continue
        if phase == "press" and start is None:
            start = t
        elif phase == "release" and start is not None:
            yield start, t
            start = None


class _EntrySink:
    """Collects entries for ``np.savez`` or streams them into the npz, per ``writer``."""

    def __init__(self, path: str, layout: str, writer: str):
        self.path, self.layout, self.writer = path, layout, writer
        self.count = 0
        self._entries: list[tuple] = []
        self._stream = ObjectArrayWriter(path, width=6 if layout == "rows" else None) if writer == "stream" else None

    def add(self, entry: tuple) -> None:
        self.count += 1
        if self._stream is None:
            self._entries.append(entry)
        elif self.layout == "rows" and len(entry) != 6:
            raise ValueError("a malformed entry of another arity needs layout='tuples'")
        else:
            self._stream.append(entry)

    def close(self, keys: np.ndarray) -> None:
        if self._stream is not None:
            self._stream.close({"keys": keys})
            return
        if self.layout == "rows":
            data = np.array(self._entries, dtype=object)
        else:
            data = np.empty(len(self._entries), dtype=object)
            for i, entry in enumerate(self._entries):
                data[i] = entry
        np.savez(self.path, data=data, keys=keys)


def write_clip(path: str | os.PathLike, frames: np.ndarray, *, claimed: int | None = None, fps: float = FPS) -> None:
    """An MJPG AVI of ``frames`` (N, H, W, 3 BGR); ``claimed`` rewrites the frame count its headers give,
    making the kind of file whose container count is wrong."""
    path = os.fspath(path)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames.shape[2], frames.shape[1]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    if claimed is None:
        return
    data = bytearray(open(path, "rb").read())
    for tag, offset in ((b"avih", 24), (b"strh", 40)):  # dwTotalFrames, dwLength
        at = data.find(tag)
        data[at + offset:at + offset + 4] = int(claimed).to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(data)


def write_event_flood(path: str | os.PathLike, events: int, *, frames: int, keys: Sequence[str] = ("w", "a"),
                      jump_every: int = 100, size: int = 1) -> str:
    """A recorder keylog of ``events`` events with ``size`` x ``size`` captures, spread evenly over the
    ``frames`` of a video: press/release pairs of the second key (taps of another key), every
    ``jump_every``-th pair the first key's (a jump). What a long session of tiny events makes, for the
    memory and time a build takes per event (``benchmarks/bench_events.py``)."""
    path = os.fspath(path)
    writer = ObjectArrayWriter(path, rows=events)
    image = np.zeros((size, size, 3), np.float32)
    nothing, interval = np.zeros(len(keys), np.float32), frames * CAPTURE_PERIOD / max(events, 1)
    for i in range(events):
        key = 0 if (i // 2) % jump_every == 0 else 1
        held = np.zeros(len(keys), np.float32)
        if i % 2 == 0:
            held[key] = 1.0
            entry = (image, interval, held, nothing, "press", i * frames // events)
        else:
            hold = np.zeros(len(keys), np.float32)
            hold[key] = interval
            entry = (image, 0.0, held, hold, "release", i * frames // events)
        writer.append(entry)
    writer.close({"keys": np.array(list(keys))})
    return path
