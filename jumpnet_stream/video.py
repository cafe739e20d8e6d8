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

# FFmpeg's own messages about damaged packets would interleave with ours; frames read against the
# container's claim are reported instead. Read when the first video is opened; a user's value wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # "cannot open" is ours to say, once


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
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.claimed_frames: int | None = count if count > 0 else None
        capture.release()
        if self.width < 1 or self.height < 1:
            raise JumpnetError(self.path, "video has no frame size (not a video, or a codec OpenCV lacks)")

    def _open(self) -> cv2.VideoCapture:
        # One decoder thread: the other core is busy converting and writing (PERF_NOTES).
        capture = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
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
        stem = os.path.splitext(os.path.basename(self.path))[0]
        return re.sub(r"_\d{6}$", "", stem)

    def count_frames(self) -> int:
        """The true number of frames, by grabbing them all (for containers that do not say)."""
        capture = self._open()
        count = 0
        while capture.grab():
            count += 1
        capture.release()
        return count

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
