"""Video frames as a source of chunks: exact frame indices, cheap skipping, any container count.

Frame ``i`` is the ``i``-th frame the decoder delivers, counted from 0: what the recorder's
``frame_idx`` counts. The container's frame count is only a hint (for progress and sampling); it may
be wrong or missing, and reading goes on until the decoder stops. Frames that are not wanted are
only ``grab()``bed, never ``retrieve()``d (decoded to BGR).
"""

from __future__ import annotations

import os
import re
from typing import Callable, Iterator

import cv2
import numpy as np

from .chunk import Chunk
from .errors import JumpnetError
from .names import stem

# FFmpeg's own messages about damaged packets would interleave with ours; frames read against the
# container's claim are reported instead. Read when the first video is opened; a user's value wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # "cannot open" is ours to say, once


MAX_FRAME_PIXELS = 8192 * 8192  # frames larger than this (an 8K video is 33 M pixels) are refused
MIN_FRAME_BYTES = 8  # a compressed frame takes at least this many bytes of its file, container included
MAX_SECONDS = 31 * 24 * 3600  # a container claiming more than a month of video is not believed


def count_if_plausible(count: float, file_bytes: int, fps: float | None) -> int | None:
    """A container's claimed frame count, or None when it is missing or impossible: more frames than the
    file has room for, or (at its frame rate) more than a month of video. The frames are counted then."""
    if not count or count != count or count < 1 or count > file_bytes / MIN_FRAME_BYTES:
        return None
    if fps and count / fps > MAX_SECONDS:
        return None
    return int(count)


class Video:
    """An opened video file: frame size, fps, and the container's claimed frame count (or None)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise JumpnetError(self.path, "no such file")
        self.frames_read = 0  # frames delivered (grabbed or retrieved) by the last frames() run
        capture = self._open()
        self.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(capture.get(cv2.CAP_PROP_FPS)) or None
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        capture.release()
        if self.width < 1 or self.height < 1:
            raise JumpnetError(self.path, "video has no frame size (not a video, or a codec OpenCV lacks)")
        if self.width * self.height > MAX_FRAME_PIXELS:
            raise JumpnetError(self.path, f"frames of {self.width}x{self.height} are larger than this tool reads "
                                          f"({MAX_FRAME_PIXELS} pixels)")
        #: the container's frame count: a hint for progress and sampling, None when absent or implausible
        self.claimed_frames: int | None = count_if_plausible(count, os.path.getsize(self.path), self.fps)
        self._counted: int | None = None

    def _open(self) -> cv2.VideoCapture:
        # One decoder thread: the other core is busy converting and writing (README, benchmarks).
        try:
            self.path.encode("utf-8")
            name, descriptor = self.path, None
        except UnicodeEncodeError:  # OpenCV crashes on a name that is not UTF-8: give FFmpeg the open file
            descriptor = os.open(self.path, os.O_RDONLY)
            name = f"/proc/self/fd/{descriptor}"
        try:
            capture = cv2.VideoCapture(name, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        finally:
            if descriptor is not None:
                os.close(descriptor)  # FFmpeg opened its own descriptor of the file
        if not capture.isOpened():
            raise JumpnetError(self.path, "cannot open video (not a video file, or a codec OpenCV lacks)")
        return capture

    def check_complete(self, expected: int | None, *, strict: bool = False) -> str | None:
        """After :meth:`frames`: if fewer than ``expected`` frames decoded, a one-line warning (or, with
        ``strict``, a :class:`JumpnetError`): the video is truncated or corrupt, or its count is wrong."""
        if expected is None or self.frames_read >= expected:
            return None
        message = (f"video ends after {self.frames_read} frames, but its container claims {self.claimed_frames} "
                   "(truncated or corrupt?)")
        if strict:
            raise JumpnetError(self.path, f"{message} (--strict)")
        return f"{message}: kept what decoded"

    @property
    def name(self) -> str:
        """The recording's name: ``<name>_<HHMMSS>.mp4`` gives ``<name>``."""
        return re.sub(r"_\d{6}$", "", stem(self.path))

    def count_frames(self) -> int:
        """The true number of frames, by grabbing them all (for containers that do not say); a single
        frame is a still image, not a video."""
        if self._counted is None:
            capture = self._open()
            count = 0
            while capture.grab():
                count += 1
            capture.release()
            if count == 1:
                raise JumpnetError(self.path, "holds a single picture (a still image named like a video?), "
                                              "not a video")
            self._counted = count
        return self._counted

    def frame_count(self) -> int:
        """The container's count when it gives a plausible one, else the frames counted by grabbing."""
        return self.claimed_frames if self.claimed_frames is not None else self.count_frames()

    def frames(self, select: Callable[[int], bool] | None = None, *, stop_after: int | None = None,
               rows: int = 1) -> Iterator[Chunk]:
        """Chunks of ``frame`` (n, H, W, 3) BGR uint8 and ``frame_index`` (n,) int64, in order.

        ``select(i)`` says whether frame ``i`` is wanted (default: all); others are grabbed only.
        Reading stops after frame ``stop_after`` if given, else at the end of the video. The frame
        array is reused for the next chunk: convert or copy what you keep before asking for it. One
        frame per chunk (the default) is fastest: the next stage reads the frame while it is still
        in cache (decoding into a 16-frame buffer instead cost a quarter of the decode rate here).
        """
        capture = self._open()
        buffer = np.empty((rows, self.height, self.width, 3), np.uint8)
        slots = list(buffer)  # views made once, not per frame
        addresses = [slot.ctypes.data for slot in slots]
        shape = buffer.shape[1:]
        indices = np.empty(rows, np.int64)
        n = 0
        index = -1
        try:
            while stop_after is None or index < stop_after:
                if not capture.grab():
                    break
                index += 1
                if select is not None and not select(index):
                    continue
                ok, frame = capture.retrieve(slots[n])
                if not ok:
                    index -= 1  # grabbed but not decodable: the stream ends before it
                    break
                if frame.ctypes.data != addresses[n]:  # OpenCV made a new array instead of filling ours
                    if frame.shape != shape:
                        raise JumpnetError(self.path, f"frame {index} is {frame.shape}, expected {shape}")
                    slots[n][...] = frame
                indices[n] = index
                n += 1
                if n == rows:
                    yield Chunk({"frame": buffer, "frame_index": indices.copy()})
                    n = 0
            if n:
                yield Chunk({"frame": buffer[:n], "frame_index": indices[:n].copy()})
        finally:
            self.frames_read = index + 1
            capture.release()
