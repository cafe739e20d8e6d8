"""A recording's share of a build, from its video in one pass: its chosen negatives, and its positives with
their split, their images taken from the video frame at each press (``positive_images="video"``, the
default) or kept as the keylog's clean captures (``"keylog"``, the original scripts').

Why from the video: positives that are clean captures and negatives that are mp4v-decoded frames can be told
apart by sharpness alone, a shortcut a model learns instead of the game; taken from the same video, both
classes carry the same codec artifacts. The recorder's key label, drawn on the press frames and on no kept
negative, would then tell them apart instead: ``mask`` fills the strip that holds it, in every image of
both classes (:mod:`recorder`).

This is the one stage that writes two outputs, and so the one that does not go through
:func:`runner.run_stage` (one chunk stream into one output): each decoded frame may be a negative, a
positive's image and a history frame at once, and the video is read once for all of them.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import numpy as np

from ..chunk import DEFAULT_ROWS, Chunk
from ..formats import create_dataset, open_dataset
from ..formats.zarr_store import ZarrOptions
from ..history import HistoryWriter, needed
from ..progress import progress_bar
from ..recorder import mask_labels
from ..runner import described
from ..sampling import Frames
from ..schema import SMALL_FIELDS, complete
from ..video import Video

POSITIVE_IMAGES = ("video", "keylog")
# Negatives and positives are gathered FRAME_ROWS at a time and stored in chunks of as many rows (the work stores;
# the dataset is chunked by the merge). 32 instead of chunk.DEFAULT_ROWS' 64: the two batches of 227x227 images
# 9.9 -> 4.9 MB each, and the same for each chunk the store compresses; the 5-minute 1080p60 H.264 build
# (decoded by two lanes, video.LANE_PIXELS) peaked at 279-291 MB instead of 300-302 (three builds each).
FRAME_ROWS = 32


def recording_frames(video: str, positives: str, negatives_out: str, positives_out: str, *,
                     chosen: dict[str, list[int]], zones: dict[str, list[list[int]]], size: tuple[int, int],
                     positive_images: str = "video", mask: bool = True, strict: bool = False,
                     history: tuple[int, int] = (0, 1), history_out: str | None = None,
                     quiet: bool = True) -> dict[str, Any]:
    """Write a recording's negatives (the ``chosen`` frames of each split) and its positives (each assigned the
    split whose zone holds its press; one in neither zone, the gap between them, is left out and counted) to
    ``negatives_out`` and ``positives_out``, and with ``history`` (K frames, S apart) the frames before each
    of them to ``history_out`` (:mod:`history`); returns the counts."""
    known = open_dataset(positives)
    keys, rows = known.keys, len(known)
    small = known.columns(["frame_index", "source"])
    zone = {split: Frames.spans(*np.asarray(spans, np.int64).reshape(-1, 2).T) for split, spans in zones.items()}
    split = np.full(rows, "", dtype=object)
    for name, frames in zone.items():
        split[(split == "") & frames.holds(small["frame_index"])] = name
    kept = split != ""
    clip = Video(video)
    frames = clip.frame_count()
    negative_split = {int(f): name for name, listed in chosen.items() for f in listed}
    press_frame = np.minimum(small["frame_index"], frames - 1)  # a press after the last frame: the last frame
    from_video = positive_images == "video"
    wanted = set(negative_split) | (set(press_frame[kept].tolist()) if from_video else set())
    count, stride = history
    samples = np.array(sorted(set(negative_split) | set(small["frame_index"][kept].tolist())), np.int64)
    before = set(needed(samples, count, stride).tolist()) if count else set()
    wanted |= before
    counts: dict[str, Any] = {"frames_claimed": clip.claimed_frames, "frames": frames,
                              "chosen": {name: len(listed) for name, listed in chosen.items()},
                              "positives_in": rows, "positives_in_gap": int(np.count_nonzero(~kept)),
                              "positive_images": positive_images, "label_mask": mask}
    record = {"parameters": {"size": list(size), "positive_images": positive_images, "mask": mask},
              "inputs": [described(video), described(positives, provenance=known.provenance)]}
    bar = progress_bar(max(wanted, default=-1) + 1, f"frames {os.path.basename(video)}", unit="frame", quiet=quiet)
    with contextlib.ExitStack() as stack:
        stored = ZarrOptions(rechunk=FRAME_ROWS)
        negative_writer = stack.enter_context(create_dataset(negatives_out, keys, image_shape=(*size, 3),
                                                             options=stored, overwrite=True))
        positive_writer = stack.enter_context(create_dataset(positives_out, keys, image_shape=(*size, 3),
                                                             options=stored, overwrite=True))
        stack.enter_context(bar)
        past = HistoryWriter(history_out, len(before), (*size, 3), [clip.name, *map(str, small["source"][:1])]) \
            if count else None
        if past is not None:
            stack.callback(past.abort)
        negatives = _Batch(keys, size, clip.name)
        positive_rows = _PositiveRows(known, kept, split, press_frame if from_video else None, size)
        for chunk in clip.frames_at(np.array(sorted(wanted), np.int64), size=size) if wanted else ():
            index, image = int(chunk["frame_index"][0]), chunk["image"][0]
            if mask:
                mask_labels(image)
            if index in negative_split:
                negatives.add(image, index, negative_split[index], negative_writer)
            if from_video:
                positive_rows.at_frame(index, image, positive_writer)
            if index in before:
                past.add(index, image)
            bar.update(index + 1 - bar.n)
        negatives.finish(negative_writer)
        positive_rows.finish(positive_writer, mask)
        problem = clip.check_complete(max(wanted) + 1 if wanted else None, strict=strict)
        if past is not None:
            past.finish()
            counts["history_frames"] = past.rows
        counts.update(frames_read=clip.frames_read,
                      written={name: int(n) for name, n in negatives.written.items()},
                      chosen_past_end=len(negative_split) - negatives.total,
                      positives={name: int(n) for name, n in positive_rows.written.items()},
                      positives_past_end=positive_rows.missed)
        negative_writer.provenance = [{"stage": "negatives", **record, "counts": counts}]
        positive_writer.provenance = [*known.provenance, {"stage": "positive frames", **record, "counts": counts}]
    if problem:
        warnings.warn(f"{video}: {problem}", stacklevel=2)
    return counts


class _Batch:
    """Negative samples gathered into chunks of FRAME_ROWS and written; counted by split."""

    def __init__(self, keys: list[str], size: tuple[int, int], source: str):
        self.keys, self.source = keys, source
        self.images = np.empty((FRAME_ROWS, *size, 3), np.uint8)
        self.frames = np.empty(FRAME_ROWS, np.int64)
        self.splits: list[str] = []
        self.written: dict[str, int] = {}
        self.total = 0

    def add(self, image: np.ndarray, frame: int, split: str, writer: Any) -> None:
        n = len(self.splits)
        self.images[n], self.frames[n] = image, frame
        self.splits.append(split)
        if len(self.splits) == FRAME_ROWS:
            self.flush(writer)

    def flush(self, writer: Any) -> None:
        n = len(self.splits)
        if not n:
            return
        writer.write(complete({"image": self.images[:n], "label": np.zeros(n, np.float32),
                               "frame_index": self.frames[:n].copy(), "source": np.full(n, self.source),
                               "split": np.array(self.splits)}, len(self.keys)))
        for split in self.splits:
            self.written[split] = self.written.get(split, 0) + 1
        self.total += n
        self.splits = []

    def finish(self, writer: Any) -> None:
        """The last rows written, and the buffer freed (before the writers write their last partial chunks)."""
        self.flush(writer)
        del self.images


class _PositiveRows:
    """The recording's positives written in order, each with its split; from the video, each takes the image
    of the frame at its press when that frame is decoded (positives are in frame order), gathered in a
    buffer of FRAME_ROWS images, and the keylog's positives are read for their small fields only (once,
    a few bytes each: never their images)."""

    def __init__(self, known: Any, kept: np.ndarray, split: np.ndarray, press_frame: np.ndarray | None,
                 size: tuple[int, int]):
        self.known, self.kept, self.split, self.press_frame = known, kept, split, press_frame
        self.order = np.flatnonzero(kept)
        # from the video, the positives' small fields only: read whole where they lie among the images, else
        # over each batch's rows (consecutive ones: positives are stored in press order)
        self.small: dict[str, np.ndarray] | None = None
        if press_frame is not None:
            self.order = self.order[np.argsort(press_frame[self.order], kind="stable")]
            self.small = None if known.cheap_columns else known.columns(list(SMALL_FIELDS))
            self.images = np.empty((FRAME_ROWS, *size, 3), np.uint8)
        self.next = 0
        self.pending: list[int] = []  # rows whose images are in self.images, in order
        self.written: dict[str, int] = {}
        self.missed = 0

    def at_frame(self, frame: int, image: np.ndarray, writer: Any) -> None:
        while self.next < len(self.order) and self.press_frame[self.order[self.next]] <= frame:
            row = int(self.order[self.next])
            if self.press_frame[row] == frame:
                self.images[len(self.pending)] = image
                self.pending.append(row)
            else:
                self.missed += 1  # its frame never decoded (the video ended before it)
            self.next += 1
            if len(self.pending) == FRAME_ROWS:
                self._write(writer)

    def _rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Rows of the keylog's positives, in the order given, their split set (from the video: no image)."""
        if self.press_frame is not None:
            first = 0 if self.small is not None else int(rows.min())
            small = self.small if self.small is not None else \
                self.known.column_rows(list(SMALL_FIELDS), first, int(rows.max()) + 1)
            columns = {name: column[rows - first] for name, column in small.items()}
            return {**columns, "split": self.split[rows].astype(str)}
        order = np.argsort(rows, kind="stable")
        chunk = Chunk.concat(list(self.known.take(rows[order]))).take(np.argsort(order, kind="stable"))
        return {**chunk.columns, "split": self.split[rows].astype(str)}

    def _put(self, columns: dict[str, np.ndarray], writer: Any) -> None:
        writer.write(Chunk(columns))
        for split in columns["split"]:
            self.written[split] = self.written.get(split, 0) + 1

    def _write(self, writer: Any) -> None:
        if self.pending:
            self._put({**self._rows(np.array(self.pending)), "image": self.images[:len(self.pending)]}, writer)
        self.pending = []

    def finish(self, writer: Any, mask: bool) -> None:
        if self.press_frame is not None:
            self.missed += len(self.order) - self.next
            self._write(writer)
            del self.images  # before the writers write their last partial chunks
            return
        for start in range(0, len(self.order), DEFAULT_ROWS):  # keylog images: every kept positive as it is
            columns = self._rows(self.order[start:start + DEFAULT_ROWS])
            if mask:
                columns["image"] = mask_labels(columns["image"].copy())
            self._put(columns, writer)

