"""Stage 4, negatives: every video frame not within ``radius`` of a positive becomes a sample.

``(frame RGB resized to the positives' size, 0.0, zeros(K), zeros(K), "press", frame_index)``, in
frame order. With ``keep``, the frames are chosen (as stage 5 would choose them from the full set)
before decoding, and only those are decoded to pixels; the rest are only grabbed. Decoding and
resizing run in a background thread while the caller's thread compresses and writes (large frames are
decoded on a third).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from ..chunk import DEFAULT_ROWS, Chunk
from ..errors import JumpnetError
from ..formats import check_output, jump_key, open_dataset
from ..kernels import resize_rgb
from ..pipeline import BufferPool, threaded
from ..progress import progress_bar
from ..runner import described, recycled, run_stage
from ..schema import complete
from ..sampling import Frames, choose
from ..video import Video


@dataclass
class NegativesReport:
    """Every frame accounted for: decoded = excluded + eligible (+ frames past the last chosen one)."""

    frames_claimed: int | None = None   # what the container says
    frames_read: int = 0                # frames the decoder delivered (grabbed or retrieved)
    excluded: int = 0                   # within radius of a positive
    eligible: int = 0                   # candidates for a negative
    written: int = 0                    # negatives written
    not_chosen: int = 0                 # eligible but left out by --keep
    chosen_past_end: int = 0            # chosen from the claimed count, but the video ended first


MAX_RADIUS = 10 ** 9  # frames; a radius beyond the video's length covers the whole video


HELD_FRAMES = ("exclude", "negative")


def held(presses: np.ndarray, releases: np.ndarray, unreleased: np.ndarray, end: int) -> Frames:
    """The frames written while a jump's key is held: from each press's frame up to, not including, its
    release's; to ``end`` for a press never released. A positive with no release frame on record (a dataset
    written before they were kept) holds none."""
    presses, releases = np.asarray(presses, np.int64), np.asarray(releases, np.int64)
    stops = np.where(releases >= 0, releases, np.where(unreleased, end, presses))
    return Frames.spans(presses, stops)


def check_radius(radius: int) -> None:
    if not isinstance(radius, int) or not 0 <= radius <= MAX_RADIUS:
        raise JumpnetError(None, f"radius must be between 0 and {MAX_RADIUS} frames, not {radius!r}")


def to_samples(frames: Iterable[Chunk], *, size: tuple[int, int], keys: int, source: str,
               rows: int = DEFAULT_ROWS, buffers: BufferPool | None = None) -> Iterator[Chunk]:
    """BGR frame chunks -> negative sample chunks of ``rows`` (RGB resized to ``size``, label 0; every other
    field its schema default: zero vectors, phase "press"). Chunks of ``image`` instead of ``frame`` are frames
    already resized (:meth:`Video.frames_at` with a size) and taken as they are.

    Each frame is resized straight into the sample chunk being filled, so frames are never copied;
    image arrays come from ``buffers`` when given (the consumer gives them back after use)."""
    buffers = buffers or BufferPool((rows, *size, 3), np.uint8, keep=0)
    images = buffers.take()
    indices = np.empty(rows, np.int64)
    n = 0
    for chunk in frames:
        resized = "image" in chunk.fields
        for frame, index in zip(chunk["image" if resized else "frame"], chunk["frame_index"]):
            if resized:
                images[n] = frame
            else:
                resize_rgb(frame, size, out=images[n])
            indices[n] = index
            n += 1
            if n == rows:
                yield _negatives(images, indices, keys, source)
                images, n = buffers.take(), 0
    if n:
        yield _negatives(images[:n], indices[:n], keys, source)


def _negatives(images: np.ndarray, indices: np.ndarray, keys: int, source: str) -> Chunk:
    n = len(images)
    return complete({"image": images, "label": np.zeros(n, np.float32), "frame_index": indices.copy(),
                     "source": np.full(n, source)}, keys)


def write_negatives(clip: Video, output: str, *, select: Callable[[int], bool] | None = None,
                    wanted: np.ndarray | None = None, keys: list[str], size: tuple[int, int],
                    overwrite: bool = False, quiet: bool = True,
                    strict: bool = False, record: Callable[[int], dict] = lambda written: {},
                    parameters: dict | None = None, inputs: list[dict] = (), jump_key: str | None = None) -> int:
    """Decode the frames of ``clip`` that ``select`` picks (every frame, read in order), or the sorted frames
    ``wanted`` names (read by seeking where that saves work: :meth:`Video.frames_at`), into negative samples
    at ``output``; returns how many were written. ``record(written)`` gives the stage's counts.
    A video that ends before its container's count (or the last wanted frame) is kept as far as it decoded,
    with a warning; ``strict`` makes that an error, and nothing is written."""
    if wanted is None:  # large frames: decoded on a thread of their own (video.LARGE_FRAME)
        total = clip.claimed_frames
        frames = clip.frames(select, ahead=2 if clip.large_frames else 0)
    else:
        total = int(wanted[-1]) + 1 if len(wanted) else 0
        frames = clip.frames_at(wanted, size=size) if len(wanted) else iter(())  # resized where decoded
    bar = progress_bar(total, f"negatives {os.path.basename(clip.path)}", unit="frame", quiet=quiet)
    buffers = BufferPool((DEFAULT_ROWS, *size, 3), np.uint8)
    source = to_samples(frames, size=size, keys=len(keys), source=clip.name, buffers=buffers)
    problem: list[str | None] = []

    def counts(written: int) -> dict:
        problem.append(clip.check_complete(total, strict=strict))  # before the output lands
        return record(written)

    written = run_stage(recycled(threaded(source), buffers), output, keys=keys, stage="negatives",
                        parameters=parameters or {}, inputs=list(inputs), counts=counts, bar=bar,
                        advance=lambda chunk: int(chunk["frame_index"][-1]) + 1 - bar.n, image_shape=(*size, 3),
                        jump_key=jump_key, overwrite=overwrite)
    if problem and problem[0]:
        warnings.warn(f"{clip.path}: {problem[0]}", stacklevel=2)
    return written


def check_fits(clip: Video, positive_frames: np.ndarray, positives: str, radius: int) -> None:
    """Refuse positives whose frame indices lie clearly past the video's end (its container's count, or the
    frames counted when it gives none): the keylog is most likely from another recording. A press after the
    last frame names the frame count (no frame was captured after it yet), so positives up to ``radius``
    (at least 1) frames past the last frame are kept."""
    if not len(positive_frames):
        return
    frames = clip.frame_count()
    limit = frames - 1 + max(radius, 1)
    past = int(np.count_nonzero(positive_frames > limit))
    if past:
        raise JumpnetError(clip.path, f"has {frames} frames, but {past} of the {len(positive_frames)} "
                                      f"positives in {positives} name later frames (up to "
                                      f"{int(positive_frames.max())}): is the keylog from another recording? "
                                      f"(jumpnet-stream check RAW VIDEO compares them)")


def negatives(video: str | os.PathLike, output: str | os.PathLike, *, positives: str | os.PathLike,
              radius: int = 2, keep: int | None = None, seed: int = 42, size: int | None = None,
              held_frames: str = "exclude", overwrite: bool = False, quiet: bool = True,
              strict: bool = False) -> NegativesReport:
    """Write the negatives of ``video`` to ``output``, excluding frames near ``positives``' frame indices
    and (``held_frames="exclude"``) the frames inside their jumps."""
    video, output, positives = os.fspath(video), os.fspath(output), os.fspath(positives)
    check_radius(radius)
    if size is not None and not 1 <= size <= 4096:
        raise JumpnetError(None, f"size must be between 1 and 4096, not {size}")
    choose(0, keep, seed)  # validates keep before any work
    if held_frames not in HELD_FRAMES:
        raise JumpnetError(None, f"held_frames must be one of {', '.join(HELD_FRAMES)}, not {held_frames!r}")
    check_output(output, overwrite, inputs=[video, positives])
    known = open_dataset(positives)
    small = known.columns(["frame_index", "release_index", "hold_duration"])
    keys, positive_frames = known.keys, small["frame_index"]
    shape = (size, size) if size is not None else tuple(known.image_shape[:2])
    clip = Video(video)
    check_fits(clip, positive_frames, positives, radius)
    report = NegativesReport(frames_claimed=clip.claimed_frames)
    excluded = Frames.around(positive_frames, radius)
    if held_frames == "exclude":
        jumps = held(positive_frames, small["release_index"], np.isnan(small["hold_duration"]).any(axis=1),
                     clip.frame_count() if (small["release_index"] < 0).any() else 0)
        excluded = Frames.spans(np.concatenate([excluded.starts, jumps.starts]),
                                np.concatenate([excluded.stops, jumps.stops]))

    wanted = None
    if keep is not None:
        n_frames = clip.frame_count()
        candidates = Frames.all(n_frames).minus(excluded)
        wanted = candidates.at(choose(len(candidates), keep, seed))
        report.eligible, report.not_chosen = len(candidates), len(candidates) - len(wanted)

    def counts(written: int) -> dict:
        report.frames_read = clip.frames_read
        report.written = written
        if keep is None:  # frames_read = excluded + eligible, all eligible written
            report.excluded = excluded.count_below(report.frames_read)
            report.eligible = report.written
        else:  # claimed frames = excluded + eligible; eligible = written + not_chosen + chosen_past_end
            report.excluded = excluded.count_below(n_frames)
            report.chosen_past_end = len(wanted) - report.written
        return asdict(report)

    write_negatives(clip, output, select=lambda i: i not in excluded, wanted=wanted, keys=keys, size=shape, overwrite=overwrite,
                    quiet=quiet, strict=strict, record=counts, jump_key=jump_key(known.provenance),
                    parameters={"radius": radius, "keep": keep, "seed": seed, "size": list(shape),
                                "held_frames": held_frames},
                    inputs=[described(video, bytes=os.path.getsize(video)),
                            described(positives, positives=len(positive_frames), provenance=known.provenance)])
    return report
