"""Video frames as a source of chunks: exact frame indices, cheap skipping, any container count.

Frame ``i`` is the ``i``-th frame the decoder delivers, counted from 0: what the recorder's
``frame_idx`` counts. The container's frame count is only a hint (for progress and sampling); it may
be wrong or missing, and reading goes on until the decoder stops. Frames that are not wanted are
only ``grab()``bed, never ``retrieve()``d (decoded to BGR).

A sparse set of frames is read faster by seeking (:meth:`Video.frames_at`): from the keyframe before
each wanted frame (or run of frames), with PyAV, when the video's timestamps say which frame each
packet holds (:mod:`jumpnet_stream.keyframes`); otherwise, and whenever seeking meets a surprise,
sequentially as above. Either way the frames and their indices are the same, to the byte:
PyAV's decoder and colour conversion are FFmpeg's, as OpenCV's are, and frame 0 of both is compared
before PyAV's frames are used. :attr:`Video.read_report` says which way the last read went, and why.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
from dataclasses import dataclass
from typing import Callable, Generator, Iterator

import cv2
import numpy as np

from . import keyframes
from .chunk import Chunk
from .errors import JumpnetError
from .kernels import resize_rgb
from .keyframes import KeyframeIndex, SeekFailure, SeekingDecoder
from .names import stem
from .pipeline import threaded, trim_heap

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


# Seeking pays when it saves at least this share of the packets a sequential read decodes, or when the
# video has B-frames (the decoder then skips the ones nothing refers to): benchmarks/bench_video.py.
# Reading every frame, OpenCV stays faster: its decoding is as fast as PyAV's and its BGR conversion
# faster (1080p60 H.264 here: 3.4 + 2.2 ms a frame against 3.5 + 3.4 ms with PyAV).
MIN_SAVING = 0.25
# Frames of at least LARGE_FRAME pixels are read ahead by FFmpeg's frame threads (Video.frames(ahead=N)): 1080p60
# H.264 read and resized to 227x227, 1.2x (259-278 against 208-221 fps, beside 371 for a plain read()); 454x454
# mp4v that way: slower (2,500 against 3,100-3,500 fps). Seeking frames of up to LANE_PIXELS, SEEKING_LANES
# decoders read side by side, each on a thread of its own with one FFmpeg thread, the frames after each seek
# point by one of them (keyframes.lanes), its frames converted (and resized, given a size) on its thread: the 806
# frames a 10-minute 454x454 mp4v build wants in 1.05 s against 1.8 s for one decoder; a 5-minute 1080p60 H.264
# build's frames stage 15.8 s against 20.8 s for one decoder on two frame threads (the build 21.1 against 25.3 s).
# A lane queues up to LANE_BYTES of frames (2 to 16; a queue of 2 227x227 frames slowed reading that H.264 build's
# frames from 14.1 to 19.9 s: the lanes wait on each other). Lanes converting frames of LARGE_FRAME pixels or more
# take turns (one full-size BGR picture and its conversion's buffers at a time; frames not resized stay
# full-size in the lanes' queues, so callers that keep them small ask for a size): two lanes reading and resizing
# that build's frames rose 62 MB above where they started instead of 79, no slower (14.1 against 13.2-14.7 s).
# Each 1080p decoder holds about 26 MB of pictures; with the turns, the trims below and smaller batches
# (stages.frames) the 5- and 20-minute builds peak at 283-284 and 283-288 MB (three builds each). Larger frames
# are sought by one decoder on SEEKING_THREADS of FFmpeg's frame threads, on a thread of its own (one decoded
# picture queued) while the caller's thread converts them (2 threads: 1.14x faster than 1 at 1080p; 4 no faster,
# and more frames held).
SEEKING_THREADS = 2
LARGE_FRAME = 1280 * 720
LANE_PIXELS = 1920 * 1080
SEEKING_LANES = 2
LANE_BYTES = 8 << 20
# While lanes read frames of LARGE_FRAME pixels or more, the heap's free pages go back to the OS every TRIM_FRAMES
# frames delivered: their threads' allocations, freed in another order than made, otherwise leave the heaps
# growing (reading 1,500 of a 20-minute 1080p60 H.264 video's frames: 162 -> 203 MB; with a trim every 32 frames,
# 164-166 MB while the lanes start, then flat at 139-144 MB; 47-52 s either way). Pages given back cost a fault
# when used again, so the recorder's small frames (whose build stayed at 257-261 MB) are not trimmed.
TRIM_FRAMES = 32
# Reading ahead (Video.frames(ahead=N)) holds N + 2 chunks: N is lowered to keep them within this.
READ_AHEAD_BYTES = 128 << 20


@dataclass
class ReadReport:
    """How the last :meth:`Video.frames` or :meth:`Video.frames_at` read went."""

    method: str = "sequential"  # "seek" or "decode" (PyAV), "sequential" (OpenCV), "seek, then sequential"
    reason: str | None = None   # why PyAV was not used (or was given up), None when it was
    seeks: int = 0              # seeks made
    decoded: int = 0            # packets given to PyAV's decoder (0 for OpenCV)
    lanes: int = 0              # PyAV decoders started side by side (0 when PyAV was not used)
    index_seconds: float = 0.0  # time spent reading the keyframe index


class Video:
    """An opened video file: frame size, fps, and the container's claimed frame count (or None)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise JumpnetError(self.path, "no such file")
        self.frames_read = 0  # frames delivered (grabbed or retrieved) by the last frames() run
        self.read_report = ReadReport()  # which way the last read went
        self._index: KeyframeIndex | None = None
        self._first_agrees: bool | None = None  # PyAV's frame 0 is OpenCV's (checked on first use)
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

    @property
    def large_frames(self) -> bool:
        """Whether its frames are :data:`LARGE_FRAME` pixels or more (read ahead on FFmpeg's frame threads; when
        seeking, converted by the lanes in turn)."""
        return self.width * self.height >= LARGE_FRAME

    def _open(self, threads: int = 1) -> cv2.VideoCapture:
        # One decoder thread unless asked: the other core is busy converting and writing (README, benchmarks).
        try:
            self.path.encode("utf-8")
            name, descriptor = self.path, None
        except UnicodeEncodeError:  # OpenCV crashes on a name that is not UTF-8: give FFmpeg the open file
            descriptor = os.open(self.path, os.O_RDONLY)
            name = f"/proc/self/fd/{descriptor}"
        try:
            capture = cv2.VideoCapture(name, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
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
            raise JumpnetError(self.path, f"{message} (strict)")
        return f"{message}: kept what decoded"

    @property
    def name(self) -> str:
        """The recording's name: ``<name>_<HHMMSS>.mp4`` gives ``<name>``."""
        return re.sub(r"_\d{6}$", "", stem(self.path))

    def count_frames(self) -> int:
        """The true number of frames (for containers that do not say, like Matroska): from the keyframe
        index when it can be trusted and is complete (no decoding: 0.02 s per minute of 1080p60), else by
        grabbing them all; a single frame is a still image, not a video."""
        if self._counted is None:
            index = self.keyframe_index() if keyframes.av is not None else None
            if index is not None and index.trusted and index.complete:
                count = index.frames
            else:
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
        """The container's count when it gives a plausible one, else :meth:`count_frames`."""
        return self.claimed_frames if self.claimed_frames is not None else self.count_frames()

    def keyframe_index(self) -> KeyframeIndex:
        """The video's packets, read once without decoding: can seeking be trusted, and from where."""
        if self._index is None:
            self._index = keyframes.read_index(self.path)
        return self._index

    def frames(self, select: Callable[[int], bool] | None = None, *, stop_after: int | None = None,
               rows: int = 1, backend: str = "auto", ahead: int = 0) -> Iterator[Chunk]:
        """Chunks of ``frame`` (n, H, W, 3) BGR uint8 and ``frame_index`` (n,) int64, in order.

        ``select(i)`` says whether frame ``i`` is wanted (default: all); others are grabbed only.
        Reading stops after frame ``stop_after`` if given, else at the end of the video. The frame
        array is reused for the next chunk: convert or copy what you keep before asking for it. One
        frame per chunk (the default) is fastest: the next stage reads the frame while it is still
        in cache (decoding into a 16-frame buffer instead cost a quarter of the decode rate here).

        ``backend``: ``"opencv"`` (and ``"auto"``, the default) grabs and retrieves with OpenCV, the
        faster way to read most frames; ``"pyav"`` decodes with PyAV when the video's keyframe index can be
        trusted (frames not selected are then skipped by the decoder when nothing refers to them), else
        with OpenCV. The frames are the same either way.

        ``ahead`` (OpenCV's path): frames are grabbed on a thread of their own, by FFmpeg's frame threads
        for frames of :data:`LARGE_FRAME` pixels or more, up to ``ahead`` chunks before they are asked
        for, each into an array of its own (a chunk's array stays valid until the next chunk is asked for,
        as without); fewer when ``ahead + 2`` chunks would take more than :data:`READ_AHEAD_BYTES`. That
        pays for large frames (their decoding, not what the caller does with them, is the work), not for
        small ones.
        """
        if backend not in ("auto", "opencv", "pyav"):
            raise ValueError(f"backend must be auto, opencv or pyav, not {backend!r}")
        reason = None
        if backend == "pyav":
            reason = "PyAV is not installed" if keyframes.av is None else None
            if reason is None:
                index = self.keyframe_index()
                reason = self._why_not_pyav(index, stop_after)
            if reason is None:
                limit = index.frames if stop_after is None else min(stop_after + 1, index.frames)
                if select is None:
                    wanted = np.arange(limit, dtype=np.int64)
                else:
                    wanted = np.flatnonzero(np.fromiter(map(select, range(limit)), bool, limit))
                yield from self._decoded(wanted, rows, seek=False, method="decode", frames_read=limit,
                                         fallback_select=select, fallback_stop=stop_after)
                return
        ahead = min(ahead, READ_AHEAD_BYTES // (rows * self.width * self.height * 3) - 2)
        if ahead <= 0:
            yield from self._grabbed(select, stop_after=stop_after, rows=rows, reason=reason)
            return
        threads = 2 if self.large_frames else 1
        yield from threaded(self._grabbed(select, stop_after=stop_after, rows=rows, reason=reason, threads=threads,
                                          slots=ahead + 2), depth=ahead)

    def frames_at(self, indices, *, rows: int = 1, size: tuple[int, int] | None = None) -> Iterator[Chunk]:
        """The frames ``indices`` names (any order, repeats ignored), as chunks like :meth:`frames`
        gives, in index order, with the same buffer reuse: what ``frames(set(indices).__contains__,
        stop_after=max(indices))`` gives, to the byte, and the same :attr:`frames_read` afterwards.
        With ``size = (height, width)``, chunks carry ``image`` instead of ``frame``: each frame as
        :func:`kernels.resize_rgb` makes it (RGB of that size), resized where it was decoded.

        When the video can be trusted (:meth:`keyframe_index`) and it saves work, PyAV decodes from
        the keyframe before each wanted frame (or run of frames) instead of grabbing every frame up
        to the last, with up to :data:`SEEKING_LANES` decoders side by side; otherwise, or if seeking
        meets a surprise, the remaining frames are read sequentially. :attr:`read_report` says which
        way it went and why.
        """
        wanted = np.unique(np.asarray(indices, np.int64).ravel())
        if len(wanted) and wanted[0] < 0:
            raise ValueError(f"frame indices must not be negative, not {int(wanted[0])}")
        stop = int(wanted[-1]) if len(wanted) else -1
        select = set(wanted.tolist()).__contains__
        if not len(wanted):
            yield from _sized(self._grabbed(select, stop_after=stop, rows=rows, reason="no frame wanted"), size)
            return
        reason = "PyAV is not installed" if keyframes.av is None else None
        if reason is None:
            index = self.keyframe_index()
            reason = self._why_not_pyav(index, stop)
        if reason is None:
            inside = wanted[wanted < index.frames]
            estimate = keyframes.plan(index, inside)
            if estimate.packets > (1 - MIN_SAVING) * estimate.sequential and not index.reordered:
                reason = (f"seeking would save little here ({estimate.packets} of {estimate.sequential} frames "
                          "decoded, no B-frames to skip)")
        if reason is not None:
            yield from _sized(self._grabbed(select, stop_after=stop, rows=rows, reason=reason), size)
            return
        yield from self._decoded(inside, rows, seek=True, method="seek", frames_read=min(stop + 1, index.frames),
                                 fallback_select=select, fallback_stop=stop, size=size)

    def _why_not_pyav(self, index: KeyframeIndex, stop_after: int | None) -> str | None:
        """Why PyAV cannot deliver frames up to ``stop_after`` (None: the end) exactly as OpenCV would."""
        if not index.trusted:
            return index.problem
        if (index.width, index.height) != (self.width, self.height):
            return (f"PyAV decodes {index.width}x{index.height} frames, OpenCV {self.width}x{self.height} "
                    "(a rotated video?)")
        if not index.complete and (stop_after is None or stop_after >= index.frames):
            return f"{index.damage}: only frames before {index.frames} can be found by their timestamps"
        return None

    def _agrees(self, index: KeyframeIndex) -> None:
        """Frame 0 as PyAV converts it must be OpenCV's, byte for byte, before PyAV's frames are used
        (checked once per video)."""
        if self._first_agrees is None:
            frames = _converted(self._lane_frames(SeekingDecoder(self.path, index), np.zeros(1, np.int64)), None)
            try:
                _, ours = next(frames)
            finally:
                frames.close()
            capture = self._open()
            try:
                ok, first = capture.read()
            finally:
                capture.release()
            self._first_agrees = bool(ok) and first.shape == ours.shape and np.array_equal(first, ours)
        if not self._first_agrees:
            raise SeekFailure("PyAV's frame 0 differs from OpenCV's (its colour conversion, orientation or "
                              "decoder differs)")

    def _lanes(self, seek: bool) -> int:
        """How many decoders read side by side (:data:`SEEKING_LANES`): one unless seeking, on one core, or
        with frames of more than :data:`LANE_PIXELS` (their pictures would take too much memory)."""
        if not seek or self.width * self.height > LANE_PIXELS:
            return 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, min(SEEKING_LANES, cores))

    @staticmethod
    def _lane_frames(decoder: SeekingDecoder,
                     mine: np.ndarray) -> Generator[tuple[int, "keyframes.av.VideoFrame"], None, None]:
        """``(index, decoded frame)`` for each of ``mine`` (ascending). The decoder decodes frame 0 first,
        wanted or not (:meth:`SeekingDecoder.frames`)."""
        skip_first = not len(mine) or mine[0] != 0
        for i, frame in decoder.frames(np.concatenate([[0], mine[mine > 0]]).astype(np.int64)):
            if not (i == 0 and skip_first):
                yield i, frame

    def _decoded(self, wanted: np.ndarray, rows: int, *, seek: bool, method: str, frames_read: int,
                 fallback_select: Callable[[int], bool] | None, fallback_stop: int | None,
                 size: tuple[int, int] | None = None) -> Iterator[Chunk]:
        """PyAV's frames ``wanted`` (ascending, all in the trusted index) as chunks, read by up to
        :data:`SEEKING_LANES` decoders each on a thread of its own when seeking (frames of more than
        :data:`LANE_PIXELS`: by one, on a thread of its own with FFmpeg's frame threads, converted in this one);
        on a :class:`SeekFailure`, the frames after the last one delivered are grabbed with OpenCV."""
        index = self._index
        count = self._lanes(seek)
        used, order = np.unique(keyframes.lanes(index, wanted, count), return_inverse=True)  # lanes as started
        threads = SEEKING_THREADS if count == 1 and self.large_frames else 1
        turns = threading.Lock() if count > 1 and self.large_frames else None  # lanes convert in turn
        shape = (*size, 3) if size else (self.height, self.width, 3)
        report = self.read_report = ReadReport(method=method, index_seconds=index.seconds)
        field = "image" if size else "frame"
        buffer = np.empty((rows, *shape), np.uint8)
        indices = np.empty(rows, np.int64)
        decoders: list[SeekingDecoder] = []
        streams: list[Iterator[tuple[int, np.ndarray]]] = []
        running: list[threaded] = []  # the streams' threads
        n, last, failure = 0, -1, None
        try:
            self._agrees(index)
            for lane in range(len(used)):
                decoders.append(SeekingDecoder(self.path, index, seek=seek, threads=threads))
                frames = self._lane_frames(decoders[-1], wanted[order == lane])
                if count > 1:  # each lane converts its frames on its thread
                    depth = min(16, max(2, LANE_BYTES // math.prod(shape)))
                    running.append(threaded(_converted(frames, size, turns), depth))
                    streams.append(running[-1])
                elif threads > 1:  # decoded on a thread of its own (and FFmpeg's frame threads), converted here
                    running.append(threaded(frames, 1))
                    streams.append(_converted(running[-1], size))
                else:
                    streams.append(_converted(frames, size))
            for delivered, lane in enumerate(order, 1):
                i, frame = next(streams[lane])
                buffer[n] = frame  # into the reused buffer: a new 6 MB array per 1080p frame cost page faults
                frame = None
                indices[n] = i
                n += 1
                last = i
                if turns is not None and delivered % TRIM_FRAMES == 0:  # lanes reading large frames
                    trim_heap(collect=False)
                if n == rows:
                    yield Chunk({field: buffer, "frame_index": indices.copy()})
                    n = 0
        except SeekFailure as error:
            failure = str(error)
        finally:
            for thread in running:  # all told to stop before any is waited for
                thread.stop()
            for stream in [*streams, *running]:  # a lane's thread is both
                stream.close()
            report.seeks = sum(decoder.seeks for decoder in decoders)
            report.decoded = sum(decoder.sent for decoder in decoders)
            report.lanes = len(decoders)
            self.frames_read = last + 1
        if n:
            yield Chunk({field: buffer[:n], "frame_index": indices[:n].copy()})
        if failure is None:
            self.frames_read = frames_read
            return
        if fallback_stop is not None and fallback_stop <= last:
            self.frames_read = last + 1
            return

        def rest(i: int) -> bool:
            return i > last and (fallback_select is None or fallback_select(i))

        seeks, decoded, lanes = report.seeks, report.decoded, report.lanes
        yield from _sized(self._grabbed(rest, stop_after=fallback_stop, rows=rows, reason=failure), size)
        self.read_report = ReadReport(method=f"{method}, then sequential" if last >= 0 else "sequential",
                                      reason=failure, seeks=seeks, decoded=decoded, lanes=lanes,
                                      index_seconds=index.seconds)

    def _grabbed(self, select: Callable[[int], bool] | None, *, stop_after: int | None, rows: int,
                 reason: str | None, threads: int = 1, slots: int = 1) -> Iterator[Chunk]:
        """OpenCV: every frame grabbed, the selected ones retrieved (the sequential path), into ``slots``
        chunk arrays taken in turn."""
        self.read_report = ReadReport(method="sequential", reason=reason)
        capture = self._open(threads)
        buffers = np.empty((slots, rows, self.height, self.width, 3), np.uint8)
        turn = 0
        buffer = buffers[0]
        views = list(buffer)  # made once a chunk, not per frame
        addresses = [view.ctypes.data for view in views]
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
                ok, frame = capture.retrieve(views[n])
                if not ok:
                    index -= 1  # grabbed but not decodable: the stream ends before it
                    break
                if frame.ctypes.data != addresses[n]:  # OpenCV made a new array instead of filling ours
                    if frame.shape != shape:
                        raise JumpnetError(self.path, f"frame {index} is {frame.shape}, expected {shape}")
                    views[n][...] = frame
                indices[n] = index
                n += 1
                if n == rows:
                    yield Chunk({"frame": buffer, "frame_index": indices.copy()})
                    n = 0
                    if len(buffers) > 1:
                        turn = (turn + 1) % len(buffers)
                        buffer = buffers[turn]
                        views = list(buffer)
                        addresses = [view.ctypes.data for view in views]
            if n:
                yield Chunk({"frame": buffer[:n], "frame_index": indices[:n].copy()})
        finally:
            self.frames_read = index + 1
            capture.release()


def _converted(frames: Generator[tuple[int, "keyframes.av.VideoFrame"], None, None] | threaded,
               size: tuple[int, int] | None,
               turns: threading.Lock | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """PyAV's ``(index, frame)`` pairs as ``(index, BGR array)``, or resized RGB given ``size``
    (:func:`kernels.resize_rgb`), each converted while holding ``turns`` if given (lanes sharing it convert
    one at a time); a frame it cannot convert is a :class:`SeekFailure`. Closing this closes ``frames`` (and
    so the decoder's file, or its thread), as the conversion used to be part of them."""
    try:
        for i, frame in frames:
            with turns or contextlib.nullcontext():
                try:
                    bgr = frame.to_ndarray(format="bgr24", threads=1)
                except (keyframes.av.error.FFmpegError, ValueError) as error:  # a pixel format it cannot convert
                    raise SeekFailure(f"PyAV cannot convert frame {i} to BGR ({error})") from error
                frame = None  # its decoder picture released before the resize
                if size is not None:
                    bgr = resize_rgb(bgr, size)
            yield i, bgr
    finally:
        frames.close()


def _sized(chunks: Iterator[Chunk], size: tuple[int, int] | None) -> Iterator[Chunk]:
    """Chunks of ``frame`` (BGR) as chunks of ``image``: each frame resized to RGB of ``size`` by
    :func:`kernels.resize_rgb`, into one reused array; unchanged without ``size``."""
    if size is None:
        yield from chunks
        return
    images = None
    for chunk in chunks:
        frames = chunk["frame"]
        if images is None or len(images) < len(frames):
            images = np.empty((len(frames), *size, 3), np.uint8)
        for frame, image in zip(frames, images):
            resize_rgb(frame, size, out=image)
        yield Chunk({"image": images[:len(frames)], "frame_index": chunk["frame_index"]})
