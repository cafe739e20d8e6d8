"""A recorder keylog described (what ``inspect`` shows for one): events, presses, releases and jumps per
key, hold statistics, frame range and duration. Streamed: only the event fields are kept, per chunk."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .recording import Recording

#: The recorder labels its video 30 fps; the real rate is lower, so durations from frames are estimates.
NOMINAL_FPS = 30.0


@dataclass
class KeyStats:
    """One key's events: the presses that put it down (a jump, for the jump key), its releases, and the
    holds its releases report (seconds)."""

    went_down: int = 0
    releases: int = 0
    holds: list[float] = field(default_factory=list)

    def hold_stats(self) -> dict[str, float] | None:
        if not self.holds:
            return None
        holds = np.asarray(self.holds, np.float64)
        return {"min": float(holds.min()), "max": float(holds.max()), "mean": float(holds.mean()),
                "std": float(holds.std())}


@dataclass
class KeylogSummary:
    """What :func:`describe_keylog` found."""

    path: str
    format: str = "recorder keylog"
    keys: list[str] = field(default_factory=list)
    entries: int = 0
    events: int = 0
    presses: int = 0
    repeat_presses: int = 0  # presses that put no key down: the OS repeating a held key
    releases: int = 0
    malformed: int = 0
    malformed_reasons: dict[str, int] = field(default_factory=dict)
    image_shape: tuple[int, ...] = ()
    first_frame: int | None = None
    last_frame: int | None = None
    per_key: dict[str, KeyStats] = field(default_factory=dict)
    held_at_end: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        """The span of video the events cover, at the recorder's nominal rate (an estimate)."""
        return None if self.first_frame is None else (self.last_frame - self.first_frame) / NOMINAL_FPS

    def counts(self) -> dict[str, Any]:
        counts = asdict(self)
        counts["per_key"] = {key: {**{k: v for k, v in asdict(stats).items() if k != "holds"},
                                   "hold": stats.hold_stats()} for key, stats in self.per_key.items()}
        counts["image_shape"] = list(self.image_shape)
        counts["seconds"] = self.seconds
        return counts

    def text(self) -> str:
        span = "none" if self.first_frame is None else (
            f"{self.first_frame} .. {self.last_frame} (about {self.seconds:.1f} s at the nominal {NOMINAL_FPS:g} fps)")
        rows = [("keys", ", ".join(self.keys)), ("entries", str(self.entries)),
                ("events (readable)", f"{self.events}: {self.presses} presses ({self.repeat_presses} auto-repeats), "
                                      f"{self.releases} releases"),
                ("malformed (skipped)", str(self.malformed)),
                ("image", "x".join(map(str, self.image_shape)) or "(no events)"),
                ("frame_idx range", span)]
        lines = [f"inspect {self.path} ({self.format}: events, not samples; build or preprocess it)"]
        lines += [f"  {name:<28}{value}" for name, value in rows]
        lines += [f"    {count:>6} x {reason}" for reason, count in sorted(self.malformed_reasons.items())]
        lines.append(f"  {'key':<6}{'presses (jumps)':>16}{'releases':>10}  hold of releases (s)")
        for key, stats in self.per_key.items():
            hold = stats.hold_stats()
            text = "-" if hold is None else (f"min {hold['min']:.3f}  max {hold['max']:.3f}  mean {hold['mean']:.3f}"
                                             f"  std {hold['std']:.3f}")
            lines.append(f"  {key:<6}{stats.went_down:>16}{stats.releases:>10}  {text}")
        if self.held_at_end:
            lines.append(f"  still held when the keylog ends: {', '.join(self.held_at_end)}")
        return "\n".join(lines)


def describe_keylog(path: str | os.PathLike) -> KeylogSummary:
    """Count a keylog's events per key; which key went down or up is read from ``multi_hot`` changes."""
    recording = Recording(os.fspath(path))
    summary = KeylogSummary(path=recording.path, keys=list(recording.keys), entries=len(recording),
                            per_key={key: KeyStats() for key in recording.keys})
    stats = [summary.per_key[key] for key in recording.keys]
    held = np.zeros(len(recording.keys), bool)
    for chunk in recording.events():
        summary.image_shape = summary.image_shape or tuple(chunk["image"].shape[1:])
        frames = chunk["frame_idx"]
        summary.first_frame = int(frames.min()) if summary.first_frame is None else min(summary.first_frame,
                                                                                        int(frames.min()))
        summary.last_frame = max(summary.last_frame or 0, int(frames.max()))
        for after, holds, phase in zip(chunk["multi_hot"] > 0.5, chunk["hold_durations"], chunk["phase"]):
            if phase == "press":
                summary.presses += 1
                down = np.flatnonzero(after & ~held)
                summary.repeat_presses += not len(down)
                for k in down:
                    stats[k].went_down += 1
            else:
                summary.releases += 1
                for k in np.flatnonzero(held & ~after):
                    stats[k].releases += 1
                    stats[k].holds.append(float(holds[k]))
            held = after
        summary.events += len(chunk)
    summary.malformed = sum(recording.malformed.values())
    summary.malformed_reasons = dict(recording.malformed)
    summary.held_at_end = [key for key, down in zip(recording.keys, held) if down]
    return summary
