"""Seeded choices, and sets of video frames held as intervals.

A frame set is a few intervals however long the video or wide the radius (an hour is 108,000 frames,
and a container may claim 10**13): never one flag per frame. ``choose`` picks positions among a set's
members; :meth:`Frames.at` turns positions into frame indices.
"""

from __future__ import annotations

import numpy as np

from .errors import JumpnetError


def choose(n: int, keep: int | None, seed: int) -> np.ndarray:
    """Sorted positions of ``keep`` of ``n`` items, uniform without replacement (all if fewer)."""
    if keep is not None and keep < 0:
        raise JumpnetError(None, f"keep must be 0 or more, not {keep}")
    if keep is None or keep >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=keep, replace=False))


class Frames:
    """Frame indices as sorted, disjoint, non-touching half-open intervals ``[start, stop)``."""

    def __init__(self, starts: np.ndarray, stops: np.ndarray):
        self.starts = np.asarray(starts, np.int64)
        self.stops = np.asarray(stops, np.int64)
        self._before = np.concatenate([[0], np.cumsum(self.stops - self.starts)])  # members before interval i

    @classmethod
    def spans(cls, starts: np.ndarray, stops: np.ndarray, limit: int | None = None) -> "Frames":
        """The union of ``[starts[i], stops[i])``, clipped to ``[0, limit)``; empty spans are dropped."""
        starts = np.maximum(np.asarray(starts, np.int64), 0)
        stops = np.asarray(stops, np.int64)
        if limit is not None:
            stops = np.minimum(stops, limit)
        keep = stops > starts
        starts, stops = starts[keep], stops[keep]
        if not len(starts):
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64))
        order = np.argsort(starts, kind="stable")
        starts, stops = starts[order], np.maximum.accumulate(stops[order])
        new = np.concatenate([[True], starts[1:] > stops[:-1]])  # an interval that neither overlaps nor touches
        first = np.flatnonzero(new)
        last = np.concatenate([first[1:] - 1, [len(starts) - 1]])
        return cls(starts[first], stops[last])

    @classmethod
    def around(cls, centres: np.ndarray, radius: int, limit: int | None = None) -> "Frames":
        """Every frame within ``radius`` of a centre."""
        centres = np.asarray(centres, np.int64)
        return cls.spans(centres - radius, centres + radius + 1, limit)

    @classmethod
    def all(cls, n: int) -> "Frames":
        return cls.spans(np.zeros(1, np.int64), np.array([n], np.int64))

    def __len__(self) -> int:
        return int(self._before[-1])

    def __contains__(self, frame: int) -> bool:
        i = int(np.searchsorted(self.starts, frame, side="right")) - 1
        return i >= 0 and frame < self.stops[i]

    def holds(self, frames: np.ndarray) -> np.ndarray:
        """For each frame, whether it is a member."""
        frames = np.asarray(frames, np.int64)
        i = np.searchsorted(self.starts, frames, side="right") - 1
        return (i >= 0) & (frames < self.stops[np.maximum(i, 0)]) if len(self.starts) else np.zeros(len(frames), bool)

    def count_below(self, n: int) -> int:
        """Members smaller than ``n``."""
        i = int(np.searchsorted(self.starts, n, side="left"))
        if i == 0:
            return 0
        return int(self._before[i - 1] + min(self.stops[i - 1], n) - self.starts[i - 1])

    def minus(self, other: "Frames") -> "Frames":
        """Members of this set that are not in ``other``."""
        if not len(self) or not len(other):
            return self
        points = np.unique(np.concatenate([self.starts, self.stops, other.starts, other.stops]))
        inside = self.holds(points[:-1]) & ~other.holds(points[:-1])  # each elementary segment is all in or out
        return Frames.spans(points[:-1][inside], points[1:][inside])

    def at(self, positions: np.ndarray) -> np.ndarray:
        """The members at sorted ``positions`` (0 is the smallest member)."""
        positions = np.asarray(positions, np.int64)
        interval = np.searchsorted(self._before, positions, side="right") - 1
        return self.starts[interval] + positions - self._before[interval]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frames) and np.array_equal(self.starts, other.starts) \
            and np.array_equal(self.stops, other.stops)

    def __repr__(self) -> str:
        shown = ", ".join(f"[{a}, {b})" for a, b in zip(self.starts[:4], self.stops[:4]))
        return f"Frames({shown}{', ...' if len(self.starts) > 4 else ''}; {len(self)} frames)"


def choose_across(sets: list[Frames], total: int, seed: int) -> list[np.ndarray]:
    """``total`` members chosen uniformly without replacement from several sets together (all if fewer),
    as sorted members per set: the same choice as :func:`choose` over the sets' members in order."""
    sizes = [len(s) for s in sets]
    picked = choose(sum(sizes), total, seed)
    bounds = np.cumsum([0] + sizes)
    return [s.at(picked[(picked >= lo) & (picked < hi)] - lo) for s, lo, hi in zip(sets, bounds[:-1], bounds[1:])]
