"""Which frames of each recording train and which validate (a split that cannot leak), and which become
negatives.

Whole recordings go to validation when there are enough of them (at least :data:`MIN_RECORDINGS`, and the
fraction names at least one); otherwise each recording gives a contiguous block of its frames, at a seeded
place, and the frames within ``gap`` of the block (the radius around a press plus the longest hold) belong
to neither part, so no training frame sits next to a validation frame or inside the same jump. Every choice
is seeded. Frames are held as intervals (:class:`sampling.Frames`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..sampling import Frames, choose_across

MIN_RECORDINGS = 4
SPLITS = ("train", "val")


def longest_hold(surveys: list[dict[str, Any]]) -> int:
    """The longest jump of all recordings, in frames (press to release)."""
    holds = [int(np.max(s["releases"][s["releases"] >= 0] - s["presses"][s["releases"] >= 0], initial=0))
             for s in surveys]
    return max(holds, default=0)


def plan_split(surveys: list[dict[str, Any]], val_fraction: float, seed: int, radius: int) -> dict[str, Any]:
    """Per recording, its training and validation zones (lists of [start, stop) frame intervals), and how
    they were chosen: the record the manifest keeps."""
    n = len(surveys)
    everything = [Frames.all(s["frames"]) for s in surveys]
    if not val_fraction:
        return {"mode": "none", "gap": 0, "zones": [{"train": e, "val": Frames.all(0)} for e in everything]}
    rng = np.random.default_rng(seed)
    chosen = int(round(val_fraction * n))
    if n >= MIN_RECORDINGS and 1 <= chosen < n:
        validation = set(rng.choice(n, size=chosen, replace=False).tolist())
        zones = [{"train": Frames.all(0), "val": e} if i in validation else {"train": e, "val": Frames.all(0)}
                 for i, e in enumerate(everything)]
        return {"mode": "recordings", "gap": 0, "zones": zones}
    gap = radius + longest_hold(surveys)
    zones = []
    for survey, whole in zip(surveys, everything):
        frames = survey["frames"]
        length = int(round(val_fraction * frames))
        start = int(rng.integers(0, frames - length + 1)) if frames >= length else 0
        val = Frames.spans([start], [start + length], frames)
        kept_apart = Frames.spans([start - gap], [start + length + gap], frames)
        zones.append({"train": whole.minus(kept_apart), "val": val})
    return {"mode": "blocks", "gap": gap, "zones": zones}


def as_lists(frames: Frames) -> list[list[int]]:
    """Intervals as plain data: [[start, stop], ...]."""
    return [[int(a), int(b)] for a, b in zip(frames.starts, frames.stops)]


def choose_negatives(pools: list[dict[str, Frames]], surveys: list[dict[str, Any]], zones: list[dict[str, Frames]],
                     *, total: int, ratio: float | None, multiplier: int, keep_unreleased: bool,
                     seed: int) -> list[dict[str, np.ndarray]]:
    """Each recording's negatives per split, chosen uniformly (seeded) from the pools of eligible frames:
    ``total`` over all recordings and splits together, or with ``ratio``, ``ratio`` x the positives of each
    split (after augmentation: training positives count ``1 + multiplier`` times)."""
    if ratio is None:
        flat = choose_across([pool[split] for pool in pools for split in SPLITS], total, seed)
        return [dict(zip(SPLITS, flat[i * len(SPLITS):(i + 1) * len(SPLITS)])) for i in range(len(pools))]
    chosen: list[dict[str, np.ndarray]] = [{} for _ in pools]
    for offset, split in enumerate(SPLITS):
        positives = 0
        for survey, zone in zip(surveys, zones):
            counted = zone[split].holds(survey["presses"]) & (survey["released"] | keep_unreleased)
            positives += int(np.count_nonzero(counted))
        want = int(round(ratio * positives * (1 + multiplier if split == "train" else 1)))
        for per, picked in zip(chosen, choose_across([pool[split] for pool in pools], want, seed + offset)):
            per[split] = picked
    return chosen
