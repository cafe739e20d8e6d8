"""Keyframe index and seeking decoder: decode only what the wanted frames need (PyAV).

Frame ``i`` is the ``i``-th frame a sequential decoder delivers (see :mod:`jumpnet_stream.video`).
Seeking can only honour that when the timestamps say which frame a packet holds: this module reads
every packet of the video without decoding it (PyAV demuxing: pts, dts, keyframe flag; about 0.02 s
per minute of 1080p60 H.264) and trusts the file only if

* every packet has a presentation time, none is to be discarded (an edit list trimming frames), the
  decode times given increase and no two packets share a presentation time;
* presentation times advance by one constant step (give or take the one unit of rounding to the
  time base: 30 fps in milliseconds is 33, 33, 34): a constant frame rate with no frame missing, so
  frame ``i`` is the packet whose presentation time has rank ``i``;
* the first packet is a keyframe shown first (decoding from the start delivers frame 0 first), and
  there are no more packets than the container's frame count (OpenCV stops reading there).

A file cut short (the demuxer stops with an error, the last packets are flagged corrupt, or fewer
packets than its container claims) is trusted only up to the first frame that may be missing or
damaged (:attr:`KeyframeIndex.frames`); :attr:`KeyframeIndex.complete` says whether that is all
of it. Anything else gives :attr:`KeyframeIndex.problem`, and the caller reads sequentially.

A keyframe is a *seek point* only when no packet after it (in decode order) is shown before it: an
open GOP's leading B-frames would need the previous GOP. Decoding from a seek point after
``avcodec_flush_buffers`` gives the same pictures as decoding through (closed GOPs are independent).

:class:`SeekingDecoder` walks the wanted frames in order: when the seek point of the next wanted
frame lies ahead of the next packet to be read, it seeks there; otherwise it keeps decoding forward.
It seeks by the keyframe's presentation time, which is what MP4's and Matroska's demuxers index (by
its decode time, MP4 lands on the keyframe before). Packets of frames that are not wanted are sent with
``skip_frame = NONREF``, so frames no other frame refers to (most B-frames of long-GOP H.264) are not
decoded at all. Decoders can share the work side by side (:func:`lanes`): each takes all the wanted
frames between one seek point and the next, or none of them. Every decoded frame is identified by its presentation time, and
anything unexpected (a seek landing elsewhere than on a seek point, a frame out of order or missing, a
decoder error) raises :class:`SeekFailure` so that the caller can go on sequentially.

What the packets cannot show: a packet whose payload is damaged while the container is intact. A
sequential read ends at the first packet the decoder refuses (OpenCV stops there); seeking sees it only
if it decodes that packet (then it goes on sequentially, and ends there too). A damaged packet inside a
stretch that seeking skips is never seen: the frames after it are still delivered, each the frame its
timestamp names, where a sequential read would have ended the video before them.

PyAV is optional: without it :func:`read_index` reports the problem, and reading stays sequential.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import numpy as np

try:  # optional: every read falls back to OpenCV's sequential decoding without it
    import av
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    av = None


class SeekFailure(Exception):
    """Seeking met something the index did not promise; the caller goes on sequentially."""


@dataclass(frozen=True)
class KeyframeIndex:
    """What a video's packets say about its frames, read without decoding them."""

    frames: int = 0                 # frames 0 .. frames-1 are identified by their timestamps
    packets: int = 0                # video packets demuxed
    claimed: int | None = None      # the container's frame count, if it gives one
    complete: bool = False          # frames covers the whole video (nothing cut off or damaged)
    problem: str | None = None      # why seeking cannot be trusted at all (None: it can)
    damage: str | None = None       # why the index stops short of the container's claim, if it does
    codec: str = ""
    width: int = 0
    height: int = 0
    time_base: Fraction = Fraction(1)
    step: float = 0.0               # mean presentation time per frame, in time_base units
    reordered: bool = False         # frames are decoded out of presentation order (B-frames)
    pts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # of frame i, ascending
    seek_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # ascending
    decode_position: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # of frame i's packet
    seconds: float = 0.0            # time taken to read the index

    @property
    def trusted(self) -> bool:
        return self.problem is None

    def frame_of(self, pts: int | None) -> int:
        """The frame a presentation time names, or -1 if it names none of the indexed frames."""
        if pts is None:
            return -1
        i = int(np.searchsorted(self.pts, pts))
        return i if i < len(self.pts) and self.pts[i] == pts else -1

    def seek_point(self, frame: int) -> int:
        """The position (in :attr:`seek_frames`) of the last seek point at or before ``frame``."""
        return int(np.searchsorted(self.seek_frames, frame, side="right")) - 1


def untrusted(problem: str, **known) -> KeyframeIndex:
    return KeyframeIndex(problem=problem, **known)


@contextmanager
def open_input(path: str):
    """A PyAV input container for ``path`` (a name that is not UTF-8 is opened through /proc/self/fd,
    as :class:`~jumpnet_stream.video.Video` does for OpenCV)."""
    try:
        path.encode("utf-8")
        name, descriptor = path, None
    except UnicodeEncodeError:
        descriptor = os.open(path, os.O_RDONLY)
        name = f"/proc/self/fd/{descriptor}"
    try:
        container = av.open(name, "r")
    finally:
        if descriptor is not None:
            os.close(descriptor)
    try:
        yield container
    finally:
        container.close()


NO_DTS = np.iinfo(np.int64).min  # a packet without a decode time (Matroska gives none to some)


def read_index(path: str) -> KeyframeIndex:
    """Demux every packet of ``path``'s video stream (no decoding) and judge whether seeking can be trusted."""
    if av is None:
        return untrusted("PyAV is not installed (pip install av)")
    began = time.perf_counter()
    pts, dts, keys, corrupt = [], [], [], []
    damage = None
    try:
        with open_input(path) as container:
            stream = container.streams.best("video")
            if stream is None:
                return untrusted("PyAV finds no video stream in it")
            known = {"codec": stream.codec_context.name, "width": stream.codec_context.width,
                     "height": stream.codec_context.height, "time_base": stream.time_base or Fraction(1)}
            claimed = stream.frames or None
            try:
                for packet in container.demux(stream):
                    if packet.size == 0 and packet.pts is None:
                        continue  # PyAV's flush packet at the end
                    if packet.pts is None:
                        return untrusted("packets without presentation timestamps (a raw stream?)", **known)
                    if packet.is_discard:
                        return untrusted("packets the container discards (an edit list trims frames)", **known)
                    pts.append(packet.pts)
                    dts.append(NO_DTS if packet.dts is None else packet.dts)
                    keys.append(packet.is_keyframe)
                    corrupt.append(packet.is_corrupt)
            except av.error.FFmpegError as error:
                damage = f"demuxing stopped after {len(pts)} packets ({error.strerror or error})"
    except av.error.FFmpegError as error:
        return untrusted(f"PyAV cannot open it ({error.strerror or error})")
    index = analyse(np.array(pts, np.int64), np.array(dts, np.int64), np.array(keys, bool),
                    np.array(corrupt, bool), claimed=claimed, damage=damage, **known)
    return KeyframeIndex(**{**index.__dict__, "seconds": time.perf_counter() - began})


REORDER_DEPTH = 16  # frames an H.264 decoder may hold back before it outputs them (the standard's maximum)


def analyse(pts: np.ndarray, dts: np.ndarray, keys: np.ndarray, corrupt: np.ndarray, *, claimed: int | None = None,
            damage: str | None = None, **known) -> KeyframeIndex:
    """The index from the packets' timestamps, keyframe and corrupt flags, in decode order.

    With damage, the frames trusted are those before the first gap in the presentation times, before
    the first corrupt packet's frame, and before a seek point decoded at least :data:`REORDER_DEPTH`
    packets before the damage: OpenCV stops at the first packet its decoder refuses, and only the
    frames the decoder had output by then are its video's."""
    known["claimed"] = claimed
    n = len(pts)
    if n == 0:
        return untrusted("no video packets", **known)
    timed = dts[dts != NO_DTS]
    if len(timed) > 1 and not np.all(np.diff(timed) > 0):
        return untrusted("decode timestamps do not increase", **known)
    ranked = np.sort(pts)
    steps = np.diff(ranked)
    if np.any(steps == 0):
        return untrusted("two packets share a presentation time", **known)
    if not keys[0] or pts[0] != ranked[0]:
        return untrusted("the first packet is not a keyframe shown first", **known)
    if claimed is not None and n > claimed:
        return untrusted(f"{n} packets, but the container claims {claimed} frames (OpenCV stops at its count)",
                         **known)
    bad = np.flatnonzero(corrupt)
    if damage is None and len(bad):
        damage = f"{len(bad)} packets flagged corrupt (the file is cut short or damaged)"
    if damage is None and claimed is not None and n < claimed:
        damage = f"{n} packets, but the container claims {claimed} frames (the file is cut short?)"
    shortest = int(steps.min()) if n > 1 else 1
    irregular = np.flatnonzero(steps > shortest + 1)  # timestamps rounded to the time base vary by 1
    frames = n
    if irregular.size:
        if damage is None:
            return untrusted(f"variable frame rate (frames last {shortest} to {int(steps.max())} time units)",
                             **known)
        frames = int(irregular[0]) + 1  # the frames before the first gap are all there
    frame = np.searchsorted(ranked, pts)  # each packet's frame, in decode order
    clean = keys & (pts == np.minimum.accumulate(pts[::-1])[::-1])  # nothing after it is shown before it
    if damage is not None:
        if len(bad):
            frames = min(frames, int(frame[bad].min()))
        stop = int(bad[0]) if len(bad) else n
        early = np.flatnonzero(clean[:max(stop - REORDER_DEPTH, 0)])
        frames = min(frames, int(frame[early[-1]]) if len(early) else 0)
    clean &= frame < frames
    inside = frame < frames
    decode_position = np.full(frames, -1, np.int64)
    decode_position[frame[inside]] = np.flatnonzero(inside)
    step = float(ranked[-1] - ranked[0]) / (n - 1) if n > 1 else 0.0
    return KeyframeIndex(frames=frames, packets=n, complete=damage is None, damage=damage, step=step,
                         reordered=bool(np.any(np.diff(pts) < 0)),
                         pts=ranked[:frames].copy(), seek_frames=np.sort(frame[clean]),
                         decode_position=decode_position, **known)


@dataclass(frozen=True)
class Plan:
    """How the wanted frames would be read: seeks, and packets given to the decoder (an estimate)."""

    seeks: int
    packets: int      # packets sent to the decoder, excluding the decoder's reordering delay
    sequential: int   # frames a sequential read grabs to reach the last wanted frame


def plan(index: KeyframeIndex, wanted: np.ndarray) -> Plan:
    """The reads :class:`SeekingDecoder` makes for ``wanted`` (ascending, all below ``index.frames``),
    starting with frame 0 (always decoded first: see :meth:`SeekingDecoder.frames`)."""
    if not len(wanted):
        return Plan(0, 0, 0)
    position = index.decode_position
    points = index.seek_frames[np.maximum(np.searchsorted(index.seek_frames, wanted, side="right") - 1, 0)]
    starts = position[points]
    ends = position[wanted] + 1
    seeks, sent, reached = 0, 1, 1  # frame 0's packet
    for start, end in zip(starts.tolist(), ends.tolist()):
        if start > reached:
            seeks += 1
            sent += end - start
            reached = end
        elif end > reached:
            sent += end - reached
            reached = end
    return Plan(seeks, sent, int(wanted[-1]) + 1)


def lanes(index: KeyframeIndex, wanted: np.ndarray, count: int) -> np.ndarray:
    """Which of ``count`` decoders reads each of ``wanted`` (ascending, all below ``index.frames``). The frames
    after one seek point (decoded from it: nothing before it is needed) go to one decoder together, each such
    group to the decoder with the fewest packets so far (the first on a tie). Their frames are used in order,
    so decoders that take turns group by group can run side by side; none decodes a packet another does
    (frame 0's aside), and together they decode no more than one decoder would."""
    if count == 1 or not len(wanted):
        return np.zeros(len(wanted), np.int64)
    point = np.maximum(np.searchsorted(index.seek_frames, wanted, side="right") - 1, 0)
    first = np.flatnonzero(np.r_[True, point[1:] != point[:-1]])  # each group's first wanted frame
    position = index.decode_position
    cost = np.maximum.reduceat(position[wanted], first) + 1 - position[index.seek_frames[point[first]]]
    load = np.zeros(count, np.int64)
    lane_of_group = np.empty(len(first), np.int64)
    for g, packets in enumerate(cost.tolist()):
        lane_of_group[g] = k = int(np.argmin(load))
        load[k] += packets
    return np.repeat(lane_of_group, np.diff(np.r_[first, len(wanted)]))


class SeekingDecoder:
    """Decodes chosen frames of a video whose :class:`KeyframeIndex` is trusted, seeking between them."""

    def __init__(self, path: str, index: KeyframeIndex, *, seek: bool = True, skip: bool = True, threads: int = 1):
        if av is None or not index.trusted:
            raise SeekFailure(index.problem or "PyAV is not installed")
        self.path, self.index = path, index
        self.seek, self.skip, self.threads = seek, skip, threads
        self.seeks = 0      # seeks made
        self.sent = 0       # packets given to the decoder
        self.delivered = 0  # frames yielded

    def frames(self, wanted: np.ndarray) -> Iterator[tuple[int, "av.VideoFrame"]]:
        """``(frame index, decoded frame)`` for each of ``wanted`` (ascending, unique, below
        ``index.frames``), in order. Decoding starts at the first packet, so that a decoder
        guessing its workarounds from the first frame's headers (MPEG-4 part 2 does) starts as
        a sequential decoder does; it reaches frame 0 before any seek."""
        index = self.index
        wanted = np.asarray(wanted, np.int64)
        if not len(wanted):
            return
        if wanted[0] < 0 or wanted[-1] >= index.frames or np.any(np.diff(wanted) <= 0):
            raise ValueError("wanted frames must be ascending, unique and inside the index")
        marked = np.zeros(int(wanted[-1]) + 1, bool)
        marked[wanted] = True
        try:
            with open_input(self.path) as container:
                yield from self._decode(container, wanted, marked)
        except av.error.FFmpegError as error:
            raise SeekFailure(f"PyAV: {error.strerror or error}") from error

    def _decode(self, container, wanted: np.ndarray, marked: np.ndarray) -> Iterator[tuple[int, "av.VideoFrame"]]:
        index = self.index
        stream = container.streams.best("video")
        context = stream.codec_context
        # Frame threads: each decodes a whole frame (the same frames, byte for byte; slice threads
        # gain nothing on H.264 as screen recorders write it, one slice a frame).
        context.thread_type = "FRAME" if self.threads > 1 else "SLICE"
        context.thread_count = self.threads
        packets = container.demux(stream)
        position = 0          # decode position of the next packet to be read
        landing = False       # the next packet is the first after a seek
        last = -1             # the last frame output by the decoder
        skipping = None
        checking = False      # the next frame output must be a keyframe (the one a seek landed on)
        sought_for = -1       # the wanted frame the last seek was made for (one seek per wanted frame)
        w = 0                 # the next wanted frame is wanted[w]
        n_marked = len(marked)
        while w < len(wanted):
            target = int(wanted[w])
            if self.seek and sought_for != target:
                point = index.seek_point(target)
                if point >= 0 and index.decode_position[index.seek_frames[point]] > position:
                    keyframe = int(index.seek_frames[point])  # by its presentation time (see above)
                    container.seek(int(index.pts[keyframe]), stream=stream, backward=True)
                    context.flush_buffers()
                    packets = container.demux(stream)
                    self.seeks += 1
                    landing, sought_for = True, target
            packet = next(packets, None)
            if packet is None:
                raise SeekFailure(f"the video ended before frame {target}")
            if packet.size == 0 and packet.pts is None:  # the end: drain the decoder
                frames = context.decode(None)
                ended = True
            else:
                frame = index.frame_of(packet.pts)
                if landing:
                    point = index.seek_point(frame) if 0 <= frame < index.frames else -1
                    if point < 0 or index.seek_frames[point] != frame or frame > target:
                        raise SeekFailure(f"a seek for frame {target} landed on a packet of pts {packet.pts}, "
                                          "not on a keyframe before it")
                    position = int(index.decode_position[frame])
                    last = frame - 1  # the decoder starts afresh at the seek point
                    landing, checking = False, True
                position += 1
                if self.skip:
                    wanted_here = 0 <= frame < n_marked and marked[frame]
                    mode = "DEFAULT" if wanted_here else "NONREF"
                    if mode != skipping:
                        context.skip_frame = skipping = mode
                self.sent += 1
                frames = context.decode(packet)
                ended = False
            for decoded in frames:
                got = index.frame_of(decoded.pts)
                if checking:  # the first frame after a seek is the keyframe sought, decoded as one
                    if not decoded.key_frame:
                        raise SeekFailure(f"frame {got}, a keyframe by the container's index, does not decode "
                                          "as one (the index lies)")
                    checking = False
                if got <= last:
                    raise SeekFailure(f"the decoder delivered frame {got} after frame {last}")
                last = got
                if got > target:
                    raise SeekFailure(f"frame {target} was not delivered (frame {got} came instead)")
                if got == target:
                    self.delivered += 1
                    yield got, decoded
                    w += 1
                    if w == len(wanted):
                        return
                    target = int(wanted[w])
            if ended:
                raise SeekFailure(f"the video ended before frame {target}")
