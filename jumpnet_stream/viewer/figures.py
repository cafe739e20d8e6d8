"""The plots of a set, shared by the viewer and the report: class balance per split, the hold histogram, events
per minute along each recording (with the negatives chosen), the shortcut audit and the build's accounting
(where every event and every frame went). Each is drawn from the small fields and the build's manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..quality import STATISTICS, TARGET_AUC, WARN_AUC, audit
from .plots import Series, Track, bars, histogram, shares, timeline
from .source import DatasetSource, Source

POSITIVE, AUGMENTED, NEGATIVE, OTHER = "#3a9d4a", "#9fd3a5", "#8c8c8c", "#e0a030"
VAL_SPAN, MARK = "#f3e7bf", "#555"
MIN_BIN_SECONDS, MAX_BINS = 5, 40  # the timeline's bins: at least 5 s wide, at most 40 along a recording


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


def class_balance(source: DatasetSource) -> Figure:
    """Positives (originals and augmented copies) and negatives of each split."""
    splits = sorted(set(source.small["split"].tolist()))
    split, augmented, label = source.small["split"], source.small["augmented"], source.label

    def count(mask: np.ndarray) -> list[int]:
        return [int(np.count_nonzero(mask & (split == name))) for name in splits]
    series = [Series("positives (originals)", POSITIVE, count((label == 1) & ~augmented)),
              Series("augmented copies", AUGMENTED, count((label == 1) & augmented)),
              Series("negatives", NEGATIVE, count(label == 0))]
    other = count((label != 0) & (label != 1))
    if any(other):
        series.append(Series("other labels", OTHER, other))
    return Figure("balance", bars(splits, series, title="Class balance per split", y_label="samples"))


def holds(source: Source) -> Figure:
    """The positives' holds (originals only: a copy repeats its original's), or a keylog's holds at release."""
    if source.label is not None:
        chosen = source.holds[(source.label == 1) & ~source.small["augmented"]]
        what = "positives (originals)"
    else:
        held = source.held
        before = np.vstack([np.zeros((1, held.shape[1]), bool), held[:-1]])
        released = before & ~held & (source.small["phase"] == "release")[:, None]
        chosen = source.small["hold_durations"][released].astype(np.float64)
        what = "releases"
    finite = chosen[np.isfinite(chosen)]
    note = f"{len(chosen) - len(finite)} never released (hold NaN) not shown" if len(finite) < len(chosen) else ""
    return Figure("holds", histogram(finite, title=f"Hold durations of {len(finite)} {what}", x_label="seconds",
                                     colour=POSITIVE), note)


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


def events_per_minute(source: Source) -> Figure:
    """Jumps per minute along each recording, the negatives chosen marked under it (a keylog: keys put down
    per minute, its releases marked)."""
    if source.label is not None:
        events = (source.label == 1) & (source.small["copy"] == 0)
        marked = source.label == 0
        labels = ("jumps per minute (original positives)", "negatives chosen")
    else:
        held = source.held
        before = np.vstack([np.zeros((1, held.shape[1]), bool), held[:-1]])
        events = (held & ~before).any(axis=1)
        marked = source.small["phase"] == "release"
        labels = ("keys put down per minute", "releases")
    tracks, guessed = [], []
    for recording in sorted(set(source.recordings.tolist())):
        here = source.recordings == recording
        count, val = _frames_of(source.manifest, recording)
        count = count or int(source.frames[here].max()) + 1
        fps, known = source.fps(recording)
        if not known:
            guessed.append(recording)
        seconds = count / fps
        edges = np.append(np.arange(0, seconds, _bin_seconds(seconds)), seconds)  # the last bin ends with it
        found, _ = np.histogram(source.frames[here & events] / fps, bins=edges)
        tracks.append(Track(recording, seconds / 60, edges / 60, found / (np.diff(edges) / 60),
                            np.sort(source.frames[here & marked]) / fps / 60,
                            [(a / fps / 60, b / fps / 60) for a, b in val]))
    note = f"no video found for {', '.join(guessed)}: timed at the recorder's nominal rate" if guessed else ""
    legend = [(labels[0], POSITIVE), (labels[1], MARK)] + [("validation part", VAL_SPAN)] * any(t.spans for t in tracks)
    return Figure("timeline", timeline(tracks, title="Along each recording", legend=legend,
                                       colours=(POSITIVE, MARK, VAL_SPAN)), note)


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


def figures(source: Source, audited: dict[str, Any] | None) -> list[Figure]:
    """Every plot that applies to ``source``; ``audited`` its shortcut audit (:func:`audit_of`)."""
    found = [class_balance(source)] if isinstance(source, DatasetSource) else []
    found += [holds(source), events_per_minute(source)]
    if audited:
        found.append(shortcut_audit(audited))
    counted = accounting(source.manifest) if source.manifest else None
    return found + ([counted] if counted else [])
