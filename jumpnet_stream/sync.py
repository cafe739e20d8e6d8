"""Does a keylog fit its video? The check behind ``jumpnet-stream check RAW.npz VIDEO``.

Everything downstream trusts ``frame_idx``: preprocess keeps it, negatives excludes the frames around
it. A keylog paired with the wrong video, a frame counter that is shifted, or a video cut short all
give datasets that look fine and teach the wrong thing. :func:`check_sync` measures, in one pass over
each file:

* **range**: the smallest and largest ``frame_idx`` against the video's frames (counted, not the
  container's claim), and how many events name frames past the end;
* **order**: how often ``frame_idx`` steps back (the recorder's counter only grows);
* **rate**: events per second over the span of video the keylog covers, and the median frame gap;
* **pictures**: each event's image is the screen at ``frame_idx``, and the video frame there, resized
  to the image's size, should look the same. For a uniform sample of events (at most ``sample``, so
  memory stays bounded however long the keylog; only their images are held, and only the frames they
  need are decoded), the mean absolute difference (0..1) against the named frame, against the frames
  up to ``max_offset`` either side (a shifted counter matches best elsewhere), and against a random
  far-away frame of the same video (the baseline: what "not the same moment" looks like here).

The verdict is "ok", or "suspect" with one reason per problem found.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import JumpnetError
from .kernels import resize_rgb
from .progress import progress_bar
from .recording import Recording
from .video import Video

#: Below this median difference (about 5 grey levels) the pictures match, whatever the baseline.
MATCH_DIFFERENCE = 0.02
#: Above this share of the baseline's median difference, the named frames are no closer than random ones.
BASELINE_SHARE = 0.35
#: A neighbouring offset must beat frame_idx by this factor to call the counter shifted.
OFFSET_SHARE = 0.75
MIN_COMPARED = 3
MAX_SAMPLE = 1000  # events whose images are held for comparison: 1000 captures of 227x227 are 155 MB


@dataclass
class SyncReport:
    """What :func:`check_sync` measured, and its verdict; ``counts()`` is JSON-able, ``text()`` for people."""

    raw: str
    video: str
    events: int = 0                        # readable events in the keylog
    malformed: int = 0                     # entries counted malformed (skipped)
    first_frame: int | None = None         # smallest frame_idx
    last_frame: int | None = None          # largest frame_idx
    frames_counted: int = 0                # frames the decoder delivered
    frames_claimed: int | None = None      # what the container says
    fps: float | None = None
    past_end: int = 0                      # events whose frame_idx > frames_counted (== is after the last frame)
    decreasing_steps: int = 0              # consecutive events whose frame_idx steps back
    largest_step_back: int = 0
    events_per_second: float | None = None  # over the video span the keylog covers (first..last frame)
    median_frame_gap: float | None = None   # between consecutive events
    image_size: tuple[int, int] | None = None
    compared: int = 0                      # sampled events whose named frame was decoded and compared
    difference: dict[str, float] = field(default_factory=dict)  # vs the named frame: median, mean, max
    baseline: dict[str, float] = field(default_factory=dict)    # vs a random far-away frame: median, mean, max
    offsets: dict[str, float] = field(default_factory=dict)     # median difference at frame_idx + offset
    best_offset: int | None = None
    worst: list[dict] = field(default_factory=list)             # the sampled events that differ most
    video_read: str | None = None          # how the compared frames were read (Video.read_report.method)
    verdict: str = "ok"
    reasons: list[str] = field(default_factory=list)

    def counts(self) -> dict:
        """Every figure as plain JSON types (what ``check --json`` prints)."""
        out = asdict(self)
        out["image_size"] = list(self.image_size) if self.image_size else None
        return out

    def text(self) -> str:
        """A human summary: the figures, the verdict, and the reasons."""
        def stats(values: dict[str, float]) -> str:
            if not values:
                return "not measured"
            return f"median {values['median']:.3f}, mean {values['mean']:.3f}, max {values['max']:.3f}"

        seconds = f", {self.frames_counted / self.fps:.1f} s" if self.fps else ""
        claimed = "unknown" if self.frames_claimed is None else self.frames_claimed
        fps = f"{self.fps:g} fps" if self.fps else "fps unknown"
        span = "none" if self.first_frame is None else f"{self.first_frame} .. {self.last_frame}"
        rate = "n/a" if self.events_per_second is None else \
            f"{self.events_per_second:.1f}/s (median gap {self.median_frame_gap:g} frames)"
        offsets = ", ".join(f"{int(k):+d}: {v:.3f}" for k, v in sorted(self.offsets.items(), key=lambda kv: int(kv[0])))
        rows = [("keylog events", f"{self.events} ({self.malformed} malformed, skipped)"),
                ("frame_idx range", span),
                ("video frames", f"{self.frames_counted} decoded (container claims {claimed}), {fps}{seconds}"),
                ("events past the video's end", str(self.past_end)),
                ("frame_idx steps back", str(self.decreasing_steps)
                 + (f" (largest {self.largest_step_back})" if self.decreasing_steps else "")),
                ("event rate", rate),
                ("image vs its frame", f"{stats(self.difference)} ({self.compared} events compared)"),
                ("image vs a random frame", stats(self.baseline)),
                ("median by offset", offsets or "not measured")]
        lines = [f"check {self.raw} against {self.video}: {self.verdict}"]
        lines += [f"  {label:<30}{value}" for label, value in rows]
        lines += [f"  - {reason}" for reason in self.reasons]
        return "\n".join(lines)


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values, np.float64)
    return {"median": float(np.median(array)), "mean": float(array.mean()), "max": float(array.max())}


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images, on the 0..1 scale."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) / 255.0


class _Sample:
    """A uniform sample of at most ``size`` events (reservoir sampling, seeded): their positions,
    frame indices and images (uint8), the only images held."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.positions: list[int] = []
        self.frames: list[int] = []
        self.images: list[np.ndarray] = []

    def offer(self, position: int, frame: int, image: np.ndarray) -> None:
        if len(self.positions) < self.size:
            self.positions.append(position)
            self.frames.append(frame)
            self.images.append(image.copy())
            return
        slot = int(self.rng.integers(0, position + 1))
        if slot < self.size:
            self.positions[slot], self.frames[slot] = position, frame
            self.images[slot][...] = image


def check_sync(raw_path: str | os.PathLike, video_path: str | os.PathLike, *, size: tuple[int, int] | int | None = None,
               sample: int = 200, max_offset: int = 2, seed: int = 0, quiet: bool = True) -> SyncReport:
    """Check that the keylog ``raw_path`` fits the video ``video_path`` (see the module docstring).

    ``size``: compare at this (height, width) (or square size) instead of the keylog images' own size;
    the images are resized too then. ``sample``: how many events' images to compare at most.
    ``max_offset``: frames either side of ``frame_idx`` also compared. ``seed``: the sample's and the
    baseline frames' choice.
    """
    raw_path, video_path = os.fspath(raw_path), os.fspath(video_path)
    if not 1 <= sample <= MAX_SAMPLE:
        raise JumpnetError(None, f"sample must be between 1 and {MAX_SAMPLE}, not {sample}")
    if not 0 <= max_offset <= 100:
        raise JumpnetError(None, f"max_offset must be between 0 and 100, not {max_offset}")
    if isinstance(size, int):
        size = (size, size)
    if size is not None and not all(1 <= s <= 4096 for s in size):
        raise JumpnetError(None, f"size must be between 1 and 4096, not {size}")
    recording = Recording(raw_path)
    video = Video(video_path)
    report = SyncReport(raw=raw_path, video=video_path, frames_claimed=video.claimed_frames, fps=video.fps)

    # Pass 1, the keylog: every frame index (8 bytes an event), and a sample of images.
    picked = _Sample(sample, seed)
    frames: list[np.ndarray] = []
    previous: int | None = None
    bar = progress_bar(recording.progress[1], f"check {os.path.basename(raw_path)}", unit="B", quiet=quiet)
    with bar:
        for chunk in recording.events():
            indices = chunk["frame_idx"].astype(np.int64)
            steps = np.diff(indices, prepend=indices[0] if previous is None else previous)
            back = steps[steps < 0]
            report.decreasing_steps += len(back)
            if len(back):
                report.largest_step_back = max(report.largest_step_back, int(-back.min()))
            previous = int(indices[-1])
            for i in range(len(chunk)):
                picked.offer(report.events + i, int(indices[i]), chunk["image"][i])
            report.events += len(chunk)
            frames.append(indices)
            bar.update(recording.progress[0] - bar.n)
    report.malformed = sum(recording.malformed.values())
    all_frames = np.concatenate(frames) if frames else np.zeros(0, np.int64)
    del frames
    if len(all_frames):
        report.first_frame, report.last_frame = int(all_frames.min()), int(all_frames.max())
        report.median_frame_gap = float(np.median(np.diff(all_frames))) if len(all_frames) > 1 else 0.0
        if report.fps:
            report.events_per_second = len(all_frames) / ((report.last_frame - report.first_frame + 1) / report.fps)
    if picked.images:
        image_shape = picked.images[0].shape[:2]
        report.image_size = tuple(size or image_shape)
        if size is not None and tuple(size) != tuple(image_shape):
            picked.images = [resize_rgb(np.ascontiguousarray(im[..., ::-1]), size) for im in picked.images]

    # The frames the sample needs: frame_idx + each offset, and one random far-away frame per event.
    known = video.frame_count()
    offsets = range(-max_offset, max_offset + 1)
    needs: dict[int, list[tuple[int, object]]] = {}
    for slot, frame in enumerate(picked.frames):
        for offset in offsets:
            if frame + offset >= 0:
                needs.setdefault(frame + offset, []).append((slot, offset))
        baseline = _far_frame(picked.rng, frame, known, away=max(2 * max_offset + 1, int(video.fps or 30)))
        if baseline is not None:
            needs.setdefault(baseline, []).append((slot, "baseline"))
    results: list[dict[object, float]] = [{} for _ in picked.frames]

    # Pass 2, the video: only the needed frames are decoded (seeking to them where it can be trusted), and
    # the frames counted (from the packets when the keyframe index is complete, else by grabbing them).
    if picked.images:
        for chunk in video.frames_at(sorted(needs), size=report.image_size):
            index, resized = int(chunk["frame_index"][0]), chunk["image"][0]
            for slot, kind in needs[index]:
                results[slot][kind] = _difference(resized, picked.images[slot])
        report.video_read = video.read_report.method
    report.frames_counted = video.count_frames()

    if len(all_frames):
        report.past_end = int(np.count_nonzero(all_frames > report.frames_counted))
    _summarise(report, picked, results, offsets)
    _judge(report, max_offset)
    return report


def _far_frame(rng: np.random.Generator, frame: int, n_frames: int, away: int) -> int | None:
    """A random frame of ``[0, n_frames)`` more than ``away`` frames from ``frame`` (None if there is none)."""
    lo, hi = frame - away, frame + away  # excluded: [lo, hi]
    below = max(0, min(lo, n_frames))
    above = max(0, n_frames - max(hi + 1, 0))
    if below + above == 0:
        return None
    pick = int(rng.integers(0, below + above))
    return pick if pick < below else max(hi + 1, 0) + pick - below


def _summarise(report: SyncReport, picked: _Sample, results: list[dict], offsets: range) -> None:
    matched = [r[0] for r in results if 0 in r]
    report.compared = len(matched)
    report.difference = _summary(matched)
    report.baseline = _summary([r["baseline"] for r in results if "baseline" in r])
    for offset in offsets:
        values = [r[offset] for r in results if offset in r]
        if values:
            report.offsets[str(offset)] = float(np.median(values))
    if report.offsets:
        report.best_offset = int(min(report.offsets, key=lambda k: (report.offsets[k], abs(int(k)))))
    ranked = sorted((slot for slot, r in enumerate(results) if 0 in r), key=lambda s: -results[s][0])[:5]
    report.worst = [{"event": picked.positions[s], "frame_idx": picked.frames[s], "difference": results[s][0]}
                    for s in ranked]


def _judge(report: SyncReport, max_offset: int) -> None:
    reasons = report.reasons
    if report.events == 0:
        reasons.append("the keylog has no readable events: nothing to check")
    if report.past_end:
        reasons.append(f"{report.past_end} of {report.events} events name frames past the video's end "
                       f"(frame_idx up to {report.last_frame}, the video has {report.frames_counted} frames)")
    if report.decreasing_steps:
        reasons.append(f"frame_idx steps back {report.decreasing_steps} times (by up to {report.largest_step_back} "
                       "frames): events out of order, or recordings joined")
    if report.compared < MIN_COMPARED:  # too few pictures to judge them (the reasons above say why, if any)
        report.verdict = "suspect" if reasons else "ok"
        return
    best = report.best_offset
    here = report.offsets.get("0", math.inf)
    shifted = bool(best) and here > MATCH_DIFFERENCE / 2 and report.offsets[str(best)] < OFFSET_SHARE * here
    if shifted:
        direction = "later" if best > 0 else "earlier"
        edge = " (or more: the edge of the offsets tried)" if abs(best) == max_offset else ""
        frames = "frame" if abs(best) == 1 else "frames"
        reasons.append(f"event images match the video best {abs(best)} {frames} {direction}{edge} (median "
                       f"difference {report.offsets[str(best)]:.3f}, against {here:.3f} at frame_idx): the frame "
                       "counter is shifted")
    elif report.baseline:
        median, base = report.difference["median"], report.baseline["median"]
        if median > MATCH_DIFFERENCE and median > BASELINE_SHARE * base:
            reasons.append(f"event images do not match the frames they name: median difference {median:.3f}, "
                           f"against {base:.3f} for random frames of this video (a keylog of another recording?)")
    report.verdict = "suspect" if reasons else "ok"
