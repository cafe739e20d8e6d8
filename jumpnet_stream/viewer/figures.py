"""The plots of a set, shared by the viewer and the report: class balance per split, the hold histogram, events
per minute along each recording (with the negatives chosen), the shortcut audit and the build's accounting
(where every event and every frame went). Each is drawn from the build's manifest and from counts of the small
fields (a dataset's :class:`Tally`, gathered a block at a time in memory flat in the set's length)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..inspection import positive_holds
from ..quality import STATISTICS, TARGET_AUC, WARN_AUC, audit
from ..sampling import choose
from .plots import Series, Track, bars, histogram, mark_column, shares, timeline
from .source import DatasetSource, Source

POSITIVE, AUGMENTED, NEGATIVE, OTHER = "#3a9d4a", "#9fd3a5", "#8c8c8c", "#e0a030"
VAL_SPAN, MARK = "#f3e7bf", "#555"
MIN_BIN_SECONDS, MAX_BINS = 5, 40  # the timeline's bins: at least 5 s wide, at most 40 along a recording
HOLD_BINS = 20
CLASSES = ("original positives", "augmented copies", "negatives", "other labels")  # a dataset's samples, by class
SERIES = ("positives (originals)", "augmented copies", "negatives", "other labels")  # the same in the balance plot
TALLIED = ["label", "augmented", "copy", "split", "hold_duration", "source", "frame_index"]  # what :func:`tally` reads


@dataclass(frozen=True)
class Figure:
    """One plot: an id for links and tests, its SVG, and a line saying what it leaves out."""

    name: str
    svg: str
    note: str = ""


def _counts(values: dict[str, Any], leave_out: str) -> list[tuple[str, int]]:
    """A manifest record's whole-number parts, but ``leave_out`` (its total)."""
    return [(name, int(value)) for name, value in values.items()
            if name != leave_out and isinstance(value, (int, float)) and not isinstance(value, bool)]


class Holds:
    """A histogram of holds in :data:`HOLD_BINS` equal bins between the least and largest, counted in two
    passes over blocks of them: :meth:`see` each block (the range), then :meth:`count` each again."""

    def __init__(self) -> None:
        self.low, self.high, self.shown, self.missing = math.inf, -math.inf, 0, 0
        self.counts, self.edges = np.zeros(HOLD_BINS, np.int64), np.zeros(HOLD_BINS + 1)

    def see(self, holds: np.ndarray) -> None:
        finite = holds[np.isfinite(holds)]
        self.shown += len(finite)
        self.missing += len(holds) - len(finite)
        if len(finite):
            self.low, self.high = min(self.low, float(finite.min())), max(self.high, float(finite.max()))

    def count(self, holds: np.ndarray) -> None:
        if self.shown:  # the bins np.histogram(values, HOLD_BINS) makes: the same counts, a block at a time
            counts, self.edges = np.histogram(holds[np.isfinite(holds)], HOLD_BINS, range=(self.low, self.high))
            self.counts += counts

    def figure(self, what: str) -> Figure:
        note = f"{self.missing} never released (hold NaN) not shown" if self.missing else ""
        counts, edges = (self.counts, self.edges) if self.shown else (np.zeros(1, np.int64), np.array([0.0, 1.0]))
        return Figure("holds", histogram(counts, edges, title=f"Hold durations of {self.shown} {what}",
                                         x_label="seconds", colour=POSITIVE), note)


def _bin_seconds(seconds: float) -> float:
    """The timeline's bin width: a round number of seconds, at least :data:`MIN_BIN_SECONDS`."""
    for width in (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if width >= MIN_BIN_SECONDS and seconds / width <= MAX_BINS:
            return width
    return seconds / MAX_BINS


def _frames_of(manifest: dict[str, Any] | None, recording: str) -> tuple[int | None, list[tuple[int, int]]]:
    """A recording's frame count and validation intervals, as the build's manifest records them."""
    if not manifest:
        return None, []
    try:
        count = int(manifest["accounting"]["recordings"][recording]["frames"]["frames"])
    except (KeyError, TypeError, ValueError):
        count = None
    try:
        val = [(int(a), int(b)) for a, b in manifest["split"]["recordings"][recording]["val"]]
    except (KeyError, TypeError, ValueError):
        val = []
    return count, val


class Along:
    """One recording of the timeline: its events per bin and its marks (one per column drawn), added a block
    of frame indices at a time. ``known``: its rate is its video's (else the recorder's nominal one)."""

    def __init__(self, source: Source, recording: str, last_frame: int):
        count, self.val = _frames_of(source.manifest, recording)
        self.name, (self.fps, self.known) = recording, source.fps(recording)
        self.seconds = (count or last_frame + 1) / self.fps
        self.edges = np.append(np.arange(0, self.seconds, _bin_seconds(self.seconds)), self.seconds)  # last: its end
        self.found = np.zeros(len(self.edges) - 1, np.int64)
        self.marks: dict[str, float] = {}
        self._column = mark_column(self.seconds / 60)

    def add(self, events: np.ndarray, marked: np.ndarray) -> None:
        self.found += np.histogram(events / self.fps, bins=self.edges)[0]
        for minute in (np.unique(marked) / self.fps / 60).tolist():
            self.marks.setdefault(self._column(minute), minute)

    def track(self) -> Track:
        fps = self.fps
        return Track(self.name, self.seconds / 60, self.edges / 60, self.found / (np.diff(self.edges) / 60),
                     np.array(sorted(self.marks.values())), [(a / fps / 60, b / fps / 60) for a, b in self.val])


def events_per_minute(alongs: list[Along], labels: tuple[str, str]) -> Figure:
    """Events per minute along each recording, the ones ``labels`` names second marked under it."""
    tracks = [along.track() for along in alongs]
    guessed = [along.name for along in alongs if not along.known]
    note = f"no video found for {', '.join(guessed)}: timed at the recorder's nominal rate" if guessed else ""
    legend = [(labels[0], POSITIVE), (labels[1], MARK)] + [("validation part", VAL_SPAN)] * any(t.spans for t in tracks)
    return Figure("timeline", timeline(tracks, title="Along each recording", legend=legend,
                                       colours=(POSITIVE, MARK, VAL_SPAN)), note)


@dataclass
class Tally:
    """What the plots and the report count of a dataset. ``splits``: each split's samples of each of
    :data:`CLASSES`; ``picks``: the contact sheet's positions of each kind (of the first three classes)."""

    splits: dict[str, np.ndarray]
    holds: Holds
    alongs: list[Along]
    picks: list[tuple[str, np.ndarray]]


def _classes(block: dict[str, np.ndarray]) -> list[np.ndarray]:
    label, augmented = block["label"], block["augmented"]
    return [(label == 1) & ~augmented, (label == 1) & augmented, label == 0, (label != 0) & (label != 1)]


def tally(source: DatasetSource, sheet: Sequence[tuple[str, int]] = (), seed: int = 0) -> Tally:
    """Count ``source`` in two passes over its small fields, a block at a time: memory flat in its length.
    ``sheet``: how many samples of each class to pick (seeded, :func:`choose`) for a contact sheet."""
    splits: dict[str, np.ndarray] = {}
    holds, last, sizes = Holds(), {}, np.zeros(len(CLASSES), np.int64)
    for block in source.blocks(TALLIED):
        classes, split = _classes(block), block["split"]
        for name in np.unique(split).tolist():
            here = split == name
            splits[name] = splits.get(name, 0) + np.array([np.count_nonzero(c & here) for c in classes])
        holds.see(positive_holds(block["hold_duration"][classes[0]]))  # originals: a copy repeats its original's
        recordings, frames = block["source"].astype(str), block["frame_index"]
        for name in np.unique(recordings).tolist():
            last[name] = max(last.get(name, -1), int(frames[recordings == name].max()))
        sizes += [np.count_nonzero(c) for c in classes]
    alongs = {name: Along(source, name, last[name]) for name in sorted(last)}
    ranks = {kind: choose(int(sizes[CLASSES.index(kind)]), count, seed) for kind, count in sheet}
    picks: dict[str, list[np.ndarray]] = {kind: [] for kind in ranks}
    before, offset = np.zeros(len(CLASSES), np.int64), 0
    for block in source.blocks(TALLIED):
        classes, label = _classes(block), block["label"]
        holds.count(positive_holds(block["hold_duration"][classes[0]]))
        recordings, frames = block["source"].astype(str), block["frame_index"]
        events, marked = (label == 1) & (block["copy"] == 0), label == 0
        for name in np.unique(recordings).tolist():
            here = recordings == name
            alongs[name].add(frames[here & events], frames[here & marked])
        for kind, chosen in ranks.items():  # a rank among a class's members, to the member's position
            members, lo = np.flatnonzero(classes[CLASSES.index(kind)]), before[CLASSES.index(kind)]
            picks[kind].append(members[chosen[(chosen >= lo) & (chosen < lo + len(members))] - lo] + offset)
        before += [np.count_nonzero(c) for c in classes]
        offset += len(label)
    return Tally(dict(sorted(splits.items())), holds, list(alongs.values()),
                 [(kind, np.concatenate(p)) for kind, p in picks.items() if sizes[CLASSES.index(kind)]])


def class_balance(splits: dict[str, np.ndarray]) -> Figure:
    """Positives (originals and augmented copies) and negatives of each split (:attr:`Tally.splits`)."""
    names = list(splits)
    series = [Series(name, colour, [int(splits[split][c]) for split in names])
              for c, (name, colour) in enumerate(zip(SERIES, (POSITIVE, AUGMENTED, NEGATIVE, OTHER)))]
    return Figure("balance", bars(names, series[:3] + series[3:] * any(series[3].values),
                                  title="Class balance per split", y_label="samples"))


def _keylog_figures(source: Source) -> list[Figure]:
    """A keylog's holds at release, and keys put down per minute with its releases marked."""
    held = source.held
    before = np.vstack([np.zeros((1, held.shape[1]), bool), held[:-1]])
    released = before & ~held & (source.small["phase"] == "release")[:, None]
    holds, chosen = Holds(), source.small["hold_durations"][released].astype(np.float64)
    holds.see(chosen)
    holds.count(chosen)
    events, marked = (held & ~before).any(axis=1), source.small["phase"] == "release"
    alongs = []
    for recording in sorted(set(source.recordings.tolist())):
        here = source.recordings == recording
        alongs.append(Along(source, recording, int(source.frames[here].max())))
        alongs[-1].add(source.frames[here & events], source.frames[here & marked])
    return [holds.figure("releases"), events_per_minute(alongs, ("keys put down per minute", "releases"))]


def audit_of(source: DatasetSource) -> dict[str, Any] | None:
    """The shortcut audit: the build's (its manifest keeps it), else measured now (up to 2000 original images
    of each class read); None for a set without samples."""
    kept = (source.manifest or {}).get("audit")
    if isinstance(kept, dict) and isinstance(kept.get("auc"), dict):
        return kept
    with source.lock:
        return audit(source.reader).counts() if len(source) else None


def shortcut_audit(result: dict[str, Any]) -> Figure:
    """How well each image statistic alone tells positives from negatives (0.5: not at all)."""
    auc = [result["auc"].get(name) for name in STATISTICS]
    missing = [name for name, value in zip(STATISTICS, auc) if value is None]
    figure = bars(list(STATISTICS), [Series("separability, max(AUC, 1 - AUC)", "#3a7dc9",
                                            [0.5 if value is None else float(value) for value in auc])],
                  title=f"Shortcut audit ({result.get('positives', '?')} positives, {result.get('negatives', '?')} "
                        "negatives)", y_label="ROC AUC", y_range=(0.5, 1.0),
                  references=[(TARGET_AUC, f"target {TARGET_AUC}"), (WARN_AUC, f"warning {WARN_AUC}")])
    warnings = [str(w) for w in result.get("warnings") or []]
    note = "; ".join(warnings + ([f"not measured (one class is missing): {', '.join(missing)}"] if missing else []))
    return Figure("audit", figure, note)


def accounting(manifest: dict[str, Any]) -> Figure | None:
    """Where every event and every frame of each recording went, from the build's manifest."""
    try:
        recordings = manifest["accounting"]["recordings"]
        rows = []
        for name, record in recordings.items():
            rows.append((f"{name}: events", _counts(record["events"], "total")))
            rows.append((f"{name}: frames", _counts(record["frames"], "frames")))
    except (KeyError, TypeError, AttributeError):
        return None
    return Figure("accounting", shares(rows, title="Where every event and every frame went")) if rows else None


def figures(source: Source, audited: dict[str, Any] | None, counted: Tally | None = None) -> list[Figure]:
    """Every plot that applies to ``source``; ``audited`` its shortcut audit (:func:`audit_of`), ``counted``
    a dataset's :func:`tally` (counted here if None)."""
    if isinstance(source, DatasetSource):
        counted = counted or tally(source)
        found = [class_balance(counted.splits), counted.holds.figure("positives (originals)"),
                 events_per_minute(counted.alongs, ("jumps per minute (original positives)", "negatives chosen"))]
    else:
        found = _keylog_figures(source)
    if audited:
        found.append(shortcut_audit(audited))
    accounted = accounting(source.manifest) if source.manifest else None
    return found + ([accounted] if accounted else [])
