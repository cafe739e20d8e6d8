"""Stage 1, preprocess: pair each jump's first press with the next release (SPEC 2.1).

A press with the target key held starts a pending jump if none is pending; further presses while
pending are auto-repeats and ignored. The next release closes it: one positive sample with the press's
image, multi_hot and frame index, and the release's hold duration for the target key in the target slot.
A press still pending at the end is emitted with hold NaN; a release with nothing pending is skipped.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

import numpy as np

from ..chunk import DEFAULT_ROWS, SAMPLE_FIELDS, Chunk
from ..errors import JumpnetError
from ..formats import WriteOptions, check_output, create_dataset
from ..legacy import SAMPLE_DTYPES
from ..progress import progress_bar
from ..recording import ImageBatcher, Recording


@dataclass
class PreprocessReport:
    """What preprocess saw: every entry is a press, a release, or malformed."""

    total: int = 0
    press_seen: int = 0
    release_seen: int = 0
    paired: int = 0
    unmatched_final_press: int = 0
    malformed: int = 0
    malformed_reasons: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """The six counts (what ``--json`` prints)."""
        return {k: v for k, v in asdict(self).items() if k != "malformed_reasons"}


def pair_jumps(events: Iterable[Chunk], *, key_index: int, source: str, counts: Counter,
               rows: int = DEFAULT_ROWS) -> Iterator[Chunk]:
    """Event chunks in, positive sample chunks out; ``counts`` gains press_seen, release_seen,
    paired and unmatched_final_press."""
    positives = ImageBatcher(SAMPLE_FIELDS, SAMPLE_DTYPES, rows)
    pending: tuple | None = None
    for chunk in events:
        active = chunk["multi_hot"][:, key_index] > 0.5
        for i, phase in enumerate(chunk["phase"]):
            if phase == "press":
                counts["press_seen"] += 1
                if pending is None and active[i]:
                    pending = (chunk["image"][i].copy(), chunk["multi_hot"][i].copy(), int(chunk["frame_idx"][i]))
                continue
            counts["release_seen"] += 1
            if pending is None:
                continue
            counts["paired"] += 1
            done = positives.add(pending[0], _positive(pending, chunk["hold_durations"][i, key_index], key_index, source))
            pending = None
            if done is not None:
                yield done
    if pending is not None:
        counts["unmatched_final_press"] += 1
        done = positives.add(pending[0], _positive(pending, np.nan, key_index, source))
        if done is not None:
            yield done
    done = positives.flush()
    if done is not None:
        yield done


def _positive(press: tuple, hold: float, key_index: int, source: str) -> tuple:
    """The fields after the image of a positive sample: the hold goes in the target key's slot."""
    _, multi_hot, frame = press
    holds = np.zeros(len(multi_hot), np.float32)
    holds[key_index] = hold
    return (1.0, multi_hot, holds, "press", frame, source)


def preprocess(raw: str | os.PathLike, output: str | os.PathLike, *, key: str = "w", overwrite: bool = False,
               scalar_hold: bool = False, quiet: bool = True) -> PreprocessReport:
    """Read a recorder keylog, write its positive samples to ``output`` (.zarr or .npz), return the counts."""
    raw, output = os.fspath(raw), os.fspath(output)
    check_output(output, overwrite)
    recording = Recording(raw)
    if key not in recording.keys:
        raise JumpnetError(raw, f"key '{key}' is not in the recording's keys ({', '.join(recording.keys)})")
    counts: Counter = Counter()
    report = PreprocessReport(total=len(recording))
    bar = progress_bar(recording.progress[1], f"preprocess {os.path.basename(raw)}", unit="B", quiet=quiet)
    with bar, create_dataset(output, recording.keys, overwrite=overwrite, options=WriteOptions(scalar_hold=scalar_hold)) as writer:
        for chunk in pair_jumps(recording.events(), key_index=recording.keys.index(key),
                                source=recording.name, counts=counts):
            writer.write(chunk)
            bar.update(recording.progress[0] - bar.n)
        report.press_seen, report.release_seen = counts["press_seen"], counts["release_seen"]
        report.paired, report.unmatched_final_press = counts["paired"], counts["unmatched_final_press"]
        report.malformed = sum(recording.malformed.values())
        report.malformed_reasons = dict(recording.malformed)
        writer.provenance = [{
            "stage": "preprocess", "parameters": {"key": key},
            "inputs": [{"path": os.path.abspath(raw), "bytes": os.path.getsize(raw)}],
            "counts": {**report.counts(), "positives": writer.rows,
                       "dropped": {"malformed": report.malformed_reasons,
                                   "release_without_press": report.release_seen - report.paired,
                                   "repeat_or_non_target_press": report.press_seen - report.paired
                                   - report.unmatched_final_press}},
        }]
    return report
