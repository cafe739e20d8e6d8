"""Stage 1, preprocess: pair each jump's first press with the release that ends it.

A press with the target key held starts a pending jump if none is pending; further presses while
pending are auto-repeats and ignored. The jump ends at the first release after which the target key is
no longer held (its ``multi_hot`` slot is 0): one positive sample with the press's image, multi_hot and
frame index, and that release's hold duration for the target key in the target slot. Releases of other
keys while a jump is pending are counted, not used. ``pairing="seed"`` is the original scripts' rule:
the next release of *any* key ends the jump (with overlapping keys, its hold is the wrong key's).
A press still pending at the end is emitted with hold NaN; a release with nothing pending is skipped.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..chunk import DEFAULT_ROWS, Chunk
from ..errors import JumpnetError
from ..image_refs import SkipFallback
from ..formats import check_output, options_for, format_for
from ..progress import progress_bar
from ..recording import ImageBatcher, Recording
from ..runner import described, run_stage
from ..schema import DTYPES, complete

POSITIVE_FIELDS = ("image", "label", "keys_raw", "hold_duration", "phase", "frame_index", "source", "release_index")


@dataclass
class PreprocessReport:
    """What preprocess saw: every entry is a press, a release, or malformed."""

    total: int = 0
    press_seen: int = 0
    release_seen: int = 0
    paired: int = 0
    unmatched_final_press: int = 0
    malformed: int = 0
    other_key_release_while_pending: int = 0  # releases of other keys during a jump (the seed paired them)
    malformed_reasons: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """The counts (what ``--json`` prints)."""
        return {k: v for k, v in asdict(self).items() if k != "malformed_reasons"}

    @property
    def release_without_press(self) -> int:
        """Releases with no jump pending (a key let go that no jump started with)."""
        return self.release_seen - self.paired - self.other_key_release_while_pending

    @property
    def repeat_or_other_press(self) -> int:
        """Presses that started no jump: the OS's auto-repeat, or another key."""
        return self.press_seen - self.paired - self.unmatched_final_press


PAIRINGS = ("jump-key", "seed")


def pair_jumps(events: Iterable[Chunk], *, key_index: int, source: str, counts: Counter,
               pairing: str = "jump-key", rows: int = DEFAULT_ROWS,
               ending: Callable[[np.ndarray], object] | None = None) -> Iterator[Chunk]:
    """Event chunks in, positive sample chunks out; ``counts`` gains press_seen, release_seen, paired,
    unmatched_final_press and other_key_release_while_pending. ``ending`` is called with the image (a
    one-row column) of each release that ends a jump (a lazy read checks its pixels there: a release a full read would refuse would
    not have ended the jump)."""
    if pairing not in PAIRINGS:
        raise JumpnetError(None, f"pairing must be one of {', '.join(PAIRINGS)}, not {pairing!r}")
    any_release = pairing == "seed"
    positives = ImageBatcher(POSITIVE_FIELDS, DTYPES, rows)
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
            if active[i] and not any_release:  # another key let go: the jump key is still held
                counts["other_key_release_while_pending"] += 1
                continue
            if ending is not None:
                ending(chunk["image"][i:i + 1])
            counts["paired"] += 1
            done = positives.add(pending[0], _positive(pending, chunk["hold_durations"][i, key_index], key_index, source,
                                                       int(chunk["frame_idx"][i])))
            pending = None
            if done is not None:
                yield complete(done.columns, len(done["keys_raw"][0]))
    if pending is not None:
        counts["unmatched_final_press"] += 1
        done = positives.add(pending[0], _positive(pending, np.nan, key_index, source, -1))
        if done is not None:
            yield complete(done.columns, len(done["keys_raw"][0]))
    done = positives.flush()
    if done is not None:
        yield complete(done.columns, len(done["keys_raw"][0]))


def _positive(press: tuple, hold: float, key_index: int, source: str, release: int) -> tuple:
    """The fields after the image of a positive sample: the hold goes in the target key's slot; ``release``
    is the frame index of the release that ended the jump (-1: never released)."""
    _, multi_hot, frame = press
    holds = np.zeros(len(multi_hot), np.float32)
    holds[key_index] = hold
    return (1.0, multi_hot, holds, "press", frame, source, release)


def preprocess(raw: str | os.PathLike, output: str | os.PathLike, *, key: str = "w", pairing: str = "jump-key",
               overwrite: bool = False, hold: str | None = None, quiet: bool = True) -> PreprocessReport:
    """Read a recorder keylog, write its positive samples to ``output`` (any dataset format), return the
    counts. ``pairing``: "jump-key" (a jump ends when its key is released) or "seed" (the next release of
    any key ends it). ``hold``: a legacy .npz output's hold layout (``formats.legacy_npz.LegacyOptions``)."""
    raw, output = os.fspath(raw), os.fspath(output)
    if pairing not in PAIRINGS:
        raise JumpnetError(None, f"pairing must be one of {', '.join(PAIRINGS)}, not {pairing!r}")
    check_output(output, overwrite, inputs=[raw])
    options = options_for(format_for(output), output, hold=hold)
    try:  # a stored keylog: its images left in the file, only the positives' read
        return _preprocess(raw, output, key, pairing, overwrite, options, quiet, lazy=True)
    except SkipFallback:  # an image it cannot step over, or one the full read would refuse: read them all
        return _preprocess(raw, output, key, pairing, overwrite, options, quiet, lazy=False)


def _preprocess(raw: str, output: str, key: str, pairing: str, overwrite: bool, options: Any, quiet: bool,
                lazy: bool) -> PreprocessReport:
    """One read of the keylog into ``output``: with ``lazy`` (and a stored 'data'), the events' images left in
    the file, each jump's press image read when its positive is written and its release's checked
    (:class:`SkipFallback` where that cannot give what the full read gives)."""
    recording = Recording(raw)
    if key not in recording.keys:
        raise JumpnetError(raw, f"key '{key}' is not in the recording's keys ({', '.join(recording.keys)})")
    lazy = lazy and recording.skips_images
    counts: Counter = Counter()
    report = PreprocessReport(total=len(recording))
    bar = progress_bar(recording.progress[1], f"preprocess {os.path.basename(raw)}", unit="B", quiet=quiet)

    def finish(rows: int) -> dict:
        report.press_seen, report.release_seen = counts["press_seen"], counts["release_seen"]
        report.paired, report.unmatched_final_press = counts["paired"], counts["unmatched_final_press"]
        report.other_key_release_while_pending = counts["other_key_release_while_pending"]
        report.malformed = sum(recording.malformed.values())
        report.malformed_reasons = dict(recording.malformed)
        return {**report.counts(), "positives": rows,
                "dropped": {"malformed": report.malformed_reasons, "release_without_press": report.release_without_press,
                            "other_key_release_while_pending": report.other_key_release_while_pending,
                            "repeat_or_non_target_press": report.repeat_or_other_press}}

    positives = pair_jumps(recording.events(lazy_images=lazy), key_index=recording.keys.index(key),
                           source=recording.name, counts=counts, pairing=pairing,
                           ending=recording.read_images if lazy else None)
    run_stage(recording.with_images(positives) if lazy else positives, output, keys=recording.keys,
              stage="preprocess", parameters={"key": key, "pairing": pairing},
              inputs=[described(raw, bytes=os.path.getsize(raw))], counts=finish, bar=bar,
              advance=lambda chunk: recording.progress[0] - bar.n, options=options, jump_key=key,
              overwrite=overwrite)
    return report
