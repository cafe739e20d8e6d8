"""Inspect a dataset without loading it: a summary (counts, class balance, hold statistics, the first
entries, as the seed's preview printed) and a contact sheet PNG of sample images, captioned."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from .errors import JumpnetError
from .formats import check_target, format_of, open_dataset, partial_path, remove_output
from .formats.legacy_npz import is_keylog_file
from .formats.output import land
from .keylog import KeylogSummary, describe_keylog
from .history import describe as describe_history
from .quality import AuditReport, audit
from .sampling import choose

#: Contact sheet geometry in pixels: coloured border around each image, caption strip under it,
#: gap between cells (and around the sheet), title strip on top.
BORDER, CAPTION, GAP, TITLE = 4, 34, 6, 26
#: Border and tag colours (BGR): positives green, negatives grey, any other label amber.
POSITIVE_BGR, NEGATIVE_BGR, OTHER_BGR = (60, 200, 60), (150, 150, 150), (0, 170, 255)
_BACKGROUND_BGR, _TEXT_BGR = (32, 32, 32), (235, 235, 235)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
PICKS = ("first", "spread", "random")
MAX_SHEET_SAMPLES = 1000  # a sheet of 1000 160-pixel tiles is about 100 MB while it is drawn


def _number(value: float) -> str:
    """A float as short text: at most 3 decimals, no trailing zeros (``nan`` for NaN)."""
    return np.format_float_positional(np.float32(value), precision=3, trim="-")


def _vector(values: tuple[float, ...]) -> str:
    """A vector as short text: ``[0.412 0 0]``."""
    return "[" + " ".join(_number(v) for v in values) + "]"


def _json_float(value: float) -> float | None:
    """NaN becomes None: JSON has no NaN."""
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class Preview:
    """One entry as the seed's preview printed it: image shape, label, keys_raw, hold, phase, frame."""

    index: int
    image_shape: tuple[int, ...]
    label: float
    keys_raw: tuple[float, ...]
    hold_duration: tuple[float, ...]
    phase: str
    frame_index: int


@dataclass(frozen=True)
class HoldStats:
    """Hold durations (seconds) of the positives: one per sample, the largest of its vector's slots."""

    released: int          # positives with a finite hold: the statistics are over these
    unreleased: int        # positives with hold NaN (the press was never released)
    min: float | None
    max: float | None
    mean: float | None
    std: float | None      # population standard deviation (numpy's default, ddof=0)


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`describe` found: sizes, class balance, hold statistics and the first entries."""

    path: str
    format: str
    samples: int
    keys: tuple[str, ...]
    image_shape: tuple[int, ...]
    image_dtype: str | None  # as stored (the readers deliver uint8); None for an empty legacy .npz
    positives: int
    negatives: int
    other_labels: int        # labels neither 0 nor 1 (none in anything this tool writes)
    hold: HoldStats
    previews: tuple[Preview, ...]
    splits: dict[str, dict[str, int]] = field(default_factory=dict)  # per split: positives, negatives
    augmented: int = 0                                                # augmented copies among the samples
    audit: dict[str, Any] | None = None                               # the shortcut audit (quality.audit)
    history: dict[str, int] | None = None                             # frame history (history.describe)

    def fraction(self, count: int) -> float | None:
        return count / self.samples if self.samples else None

    def counts(self) -> dict[str, Any]:
        """The summary as JSON-serialisable values (what ``--json`` prints); NaN holds as null."""
        counts = asdict(self)
        counts.update(keys=list(self.keys), image_shape=list(self.image_shape),
                      positive_fraction=self.fraction(self.positives),
                      negative_fraction=self.fraction(self.negatives),
                      previews=[{**asdict(p), "image_shape": list(p.image_shape), "keys_raw": list(p.keys_raw),
                                 "hold_duration": [_json_float(h) for h in p.hold_duration]}
                                for p in self.previews])
        return counts

    def text(self) -> str:
        """The human summary: an aligned table of counts, then the first entries."""
        shape = "x".join(map(str, self.image_shape))
        rows = [("samples", str(self.samples)), ("keys", ", ".join(self.keys)),
                ("image", f"{shape} {self.image_dtype or '(no entries)'}")]
        classes = [("positives (label 1)", self.positives), ("negatives (label 0)", self.negatives)]
        if self.other_labels:
            classes.append(("other labels", self.other_labels))
        for name, count in classes:
            share = self.fraction(count)
            rows.append((name, f"{count:<8}" + ("" if share is None else f"{share:6.1%}")))
        hold = self.hold
        if hold.released:
            rows.append(("hold of positives (s)", f"min {_number(hold.min)}  max {_number(hold.max)}  "
                                                  f"mean {_number(hold.mean)}  std {_number(hold.std)}"))
        rows.append(("never released (hold NaN)", str(hold.unreleased)))
        rows.append(("augmented copies", str(self.augmented)))
        for split, counts in self.splits.items():
            rows.append((f"split {split}", f"{counts['positives']} positives, {counts['negatives']} negatives"))
        past = self.history
        rows.append(("frame history", "none" if not past else f"{past['frames']} frames before each sample, "
                     f"{past['stride']} apart ({past['stored']} frames stored)"))
        lines = [f"inspect {self.path} ({self.format})"] + [f"  {name:<28}{value}" for name, value in rows]
        if self.audit:
            lines += [f"  {line}" for line in AuditReport(**self.audit).lines()]
        if self.previews:
            lines.append(f"first {len(self.previews)}:")
            table = [("index", "image", "label", "keys_raw", "hold_duration", "phase", "frame_index")]
            table += [(str(p.index), "x".join(map(str, p.image_shape)), _number(p.label), _vector(p.keys_raw),
                       _vector(p.hold_duration), p.phase, str(p.frame_index)) for p in self.previews]
            widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
            right = {0, 2, 6}  # numbers right-aligned, text and vectors left-aligned
            lines += ["  " + "  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in table]
        return "\n".join(lines)


def positive_holds(hold_duration: np.ndarray) -> np.ndarray:
    """One hold per sample: the largest slot of its vector, NaN if any slot is NaN.

    A positive's vector is zero except the jump key's slot (after a merge, that slot differs between
    samples), so the largest slot is its hold; were several keys held at once, the jump lasted as long
    as the longest of them, whereas a sum would count overlapping time twice."""
    if hold_duration.shape[1] == 0:
        return np.full(len(hold_duration), np.nan, np.float64)
    return hold_duration.astype(np.float64).max(axis=1)  # max propagates NaN


def describe(path: str | os.PathLike, n: int = 5, keys: list[str] | None = None,
             shortcuts: bool = True) -> DatasetSummary | KeylogSummary:
    """Summarise a dataset of any format reading only its small fields whole, its first ``n`` rows and, for
    the shortcut audit (``shortcuts``), a seeded sample of its original images; a recorder keylog is
    described as one (:func:`keylog.describe_keylog`). ``keys`` names the keys of a legacy .npz that holds
    none."""
    if n < 0:
        raise JumpnetError(None, f"-n must be 0 or more, not {n}")
    if os.fspath(path).lower().endswith(".npz") and is_keylog_file(os.fspath(path)):
        return describe_keylog(path)
    dataset = open_dataset(path, keys=keys)
    image_shape = tuple(dataset.image_shape)
    format_name, image_dtype = format_of(dataset.path).name, dataset.stored_dtype
    small = dataset.columns(["label", "hold_duration", "split", "augmented"])
    labels = small["label"]
    positive = labels == 1
    holds = positive_holds(small["hold_duration"][positive])
    released = holds[~np.isnan(holds)]

    def stat(f) -> float | None:
        return float(f(released)) if len(released) else None

    hold = HoldStats(released=len(released), unreleased=len(holds) - len(released), min=stat(np.min),
                     max=stat(np.max), mean=stat(np.mean), std=stat(np.std))
    previews = []
    for chunk in dataset.take(np.arange(min(n, len(dataset)))):
        for i in range(len(chunk)):
            previews.append(Preview(
                index=len(previews), image_shape=tuple(chunk["image"].shape[1:]), label=float(chunk["label"][i]),
                keys_raw=tuple(float(v) for v in chunk["keys_raw"][i]),
                hold_duration=tuple(float(v) for v in chunk["hold_duration"][i]),
                phase=str(chunk["phase"][i]), frame_index=int(chunk["frame_index"][i])))
    negatives = int(np.count_nonzero(labels == 0))
    splits = {str(split): {"positives": int(np.count_nonzero(positive & (small["split"] == split))),
                           "negatives": int(np.count_nonzero((labels == 0) & (small["split"] == split)))}
              for split in sorted(set(small["split"].tolist()))}
    return DatasetSummary(path=dataset.path, format=format_name, samples=len(dataset), keys=tuple(dataset.keys),
                          image_shape=image_shape, image_dtype=image_dtype, positives=int(positive.sum()),
                          negatives=negatives, other_labels=len(labels) - int(positive.sum()) - negatives,
                          hold=hold, previews=tuple(previews), splits=splits,
                          augmented=int(np.count_nonzero(small["augmented"])), history=describe_history(dataset.path),
                          audit=audit(dataset).counts() if shortcuts and len(dataset) else None)


@dataclass(frozen=True)
class SheetReport:
    """What :func:`contact_sheet` drew: which samples, in what grid, and the PNG's size."""

    output: str
    samples: int                  # in the dataset
    positions: tuple[int, ...]    # the samples drawn, in drawing order (row by row)
    pick: str
    columns: int
    rows: int
    tile: int
    width: int
    height: int
    positives: int
    negatives: int


def cell_origin(index: int, columns: int, tile: int) -> tuple[int, int]:
    """(x, y) of the top-left pixel of cell ``index``'s border in a sheet of ``columns`` columns."""
    row, column = divmod(index, columns)
    return GAP + column * (tile + 2 * BORDER + GAP), TITLE + GAP + row * (tile + 2 * BORDER + CAPTION + GAP)


def _check_png_output(out_png: str, overwrite: bool, source: str) -> None:
    if not out_png.lower().endswith(".png"):
        raise JumpnetError(out_png, "a contact sheet is written as PNG: name it OUT.png")
    check_target(out_png, overwrite, inputs=[source])


def _positions(samples: int, count: int, pick: str, seed: int) -> np.ndarray:
    """Sorted positions of up to ``count`` samples: the first ones, evenly spaced, or seeded random."""
    if pick == "first" or count >= samples:
        return np.arange(min(count, samples))
    if pick == "spread":
        return np.unique(np.linspace(0, samples - 1, count).round().astype(np.int64))
    return choose(samples, count, seed)


def _draw_cell(sheet: np.ndarray, x: int, y: int, tile: int, image: np.ndarray, index: int, label: float,
               hold: float, frame: int) -> None:
    """One sample: its image scaled to fit ``tile`` (aspect kept) inside a class-coloured border, and a
    two-line caption (class tag and hold; position and frame index)."""
    colour, tag = (POSITIVE_BGR, "POS") if label == 1 else (NEGATIVE_BGR, "NEG") if label == 0 \
        else (OTHER_BGR, f"L={_number(label)}")
    side = tile + 2 * BORDER
    cv2.rectangle(sheet, (x, y), (x + side - 1, y + side - 1), colour, thickness=-1)
    scale = tile / max(image.shape[:2])
    h, w = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    fitted = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), (w, h), interpolation=interpolation)
    top, left = y + BORDER + (tile - h) // 2, x + BORDER + (tile - w) // 2
    sheet[top:top + h, left:left + w] = fitted
    caption = y + side
    cv2.putText(sheet, tag, (x, caption + 14), _FONT, 0.45, colour, 1, cv2.LINE_AA)
    if label != 0:
        cv2.putText(sheet, f"hold {_number(hold)}s", (x + 40, caption + 14), _FONT, 0.4, _TEXT_BGR, 1, cv2.LINE_AA)
    cv2.putText(sheet, f"#{index}  frame {frame}", (x, caption + 29), _FONT, 0.4, _TEXT_BGR, 1, cv2.LINE_AA)


def contact_sheet(path: str | os.PathLike, out_png: str | os.PathLike, *, count: int = 24, columns: int = 6,
                  pick: str = "first", seed: int = 42, tile: int = 160, overwrite: bool = False,
                  keys: list[str] | None = None) -> SheetReport:
    """Draw ``count`` samples of a dataset as a captioned PNG grid, to check a stage's output by eye.

    ``pick``: ``first`` (the default), ``spread`` (evenly spaced through the dataset, so an unshuffled
    positives-then-negatives set shows both) or ``random`` (seeded, as ``reduce`` chooses). Only the
    chosen rows are read. The PNG lands only once complete (a hidden ``.NAME.partial-HOST-PID`` sibling)."""
    out_png = os.fspath(out_png)
    _check_png_output(out_png, overwrite, os.fspath(path))
    if pick not in PICKS:
        raise JumpnetError(None, f"pick must be one of {', '.join(PICKS)}, not {pick}")
    for name, value, most in (("count", count, None), ("columns", columns, 100), ("tile", tile, 512)):
        if value < 1 or (most is not None and value > most):
            raise JumpnetError(None, f"{name} must be between 1 and {most}, not {value}" if most else
                               f"{name} must be 1 or more, not {value}")
    dataset = open_dataset(path, keys=keys)
    if not len(dataset):
        raise JumpnetError(dataset.path, "the dataset has no samples to draw")
    if min(count, len(dataset)) > MAX_SHEET_SAMPLES:
        raise JumpnetError(None, f"count must be at most {MAX_SHEET_SAMPLES} (a sheet of that many is about 100 MB), "
                                 f"not {count}")
    positions = _positions(len(dataset), count, pick, seed)
    columns = min(columns, len(positions))
    rows = -(-len(positions) // columns)
    width = GAP + columns * (tile + 2 * BORDER + GAP)
    height = TITLE + GAP + rows * (tile + 2 * BORDER + CAPTION + GAP)
    sheet = np.full((height, width, 3), _BACKGROUND_BGR, np.uint8)
    title = f"{os.path.basename(dataset.path.rstrip('/' + os.sep))}: {len(positions)} of {len(dataset)} ({pick})"
    cv2.putText(sheet, title, (GAP, TITLE - 6), _FONT, 0.5, _TEXT_BGR, 1, cv2.LINE_AA)
    drawn = positives = negatives = 0
    for chunk in dataset.take(positions):
        holds = positive_holds(chunk["hold_duration"])
        for i in range(len(chunk)):
            label = float(chunk["label"][i])
            x, y = cell_origin(drawn, columns, tile)
            _draw_cell(sheet, x, y, tile, chunk["image"][i], int(positions[drawn]), label, holds[i],
                       int(chunk["frame_index"][i]))
            positives += label == 1
            negatives += label == 0
            drawn += 1
    ok, encoded = cv2.imencode(".png", sheet)
    if not ok:
        raise JumpnetError(out_png, "OpenCV could not encode the sheet as PNG")
    temp = partial_path(out_png)
    try:
        with open(temp, "wb") as f:
            f.write(encoded.tobytes())
        land(temp, out_png)
    except BaseException:
        remove_output(temp)
        raise
    return SheetReport(output=out_png, samples=len(dataset), positions=tuple(int(p) for p in positions), pick=pick,
                       columns=columns, rows=rows, tile=tile, width=width, height=height, positives=positives,
                       negatives=negatives)
