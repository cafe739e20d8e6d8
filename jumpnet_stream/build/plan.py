"""The build as a plan: stage specs, plain data that any process can run.

A spec names its stage, the function that runs it (``kind``), the parameters that decide its output, where
its inputs are (``paths``: not part of its fingerprint, so a moved recording is not rebuilt), the input files
whose content it depends on, the specs whose outputs it reads, and its output, named by what decides it (its
kind, parameters and recording) rather than by its position, so adding a recording changes no other
recording's outputs. The plan comes in three parts, because what the later parts choose depends on what the
first found: each recording's positives, then each recording's negatives (the frames chosen over all
recordings), then the set.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..stages.augment import AugmentOptions
from .inputs import BuildOptions, Session


@dataclass(frozen=True)
class StageSpec:
    """One stage of a build (see the module's docstring)."""

    name: str
    kind: str
    parameters: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ()
    output: str = ""


def session_names(sessions: list[Session]) -> list[str]:
    """Each session's stage label: its name, numbered when two share one."""
    names: list[str] = []
    for session in sessions:
        same = sum(1 for other in sessions[:len(names)] if other.name == session.name)
        names.append(session.name if not same else f"{session.name}#{same + 1}")
    return names


def _output(kind: str, label: str, parameters: dict[str, Any], suffix: str = ".zarr") -> str:
    """``work/<kind>-<label>-<key>.zarr``: the key hashes what decides the output."""
    key = hashlib.sha256(json.dumps([kind, label, parameters], sort_keys=True).encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:40] or "set"
    return os.path.join("work", f"{kind}-{slug}-{key}{suffix}")


def plan_positives(sessions: list[Session], options: BuildOptions) -> list[StageSpec]:
    """Part 1: each recording's keylog into its positives."""
    specs = []
    for session, name in zip(sessions, session_names(sessions)):
        parameters = {"key": options.key, "pairing": options.pairing}
        specs.append(StageSpec(f"preprocess {name}", "preprocess", parameters, {"raw": os.path.abspath(session.raw)},
                               inputs=(session.raw,), output=_output("positives", name, parameters)))
    return specs


def plan_negatives(sessions: list[Session], surveys: list[dict[str, Any]], chosen: list[np.ndarray],
                   options: BuildOptions) -> list[StageSpec]:
    """Part 2: each recording's chosen frames into negatives. ``surveys``: what :func:`execute.survey` found
    of each recording (its frame count, eligible frames, image size and keys)."""
    specs = []
    for session, name, survey, frames in zip(sessions, session_names(sessions), surveys, chosen):
        parameters = {"frames": [int(f) for f in frames], "size": list(survey["size"]), "keys": survey["keys"],
                      "strict": options.strict}
        specs.append(StageSpec(
            f"negatives {name}", "negatives", parameters,
            {"video": os.path.abspath(session.video), "frame_count": survey["frames"],
             "claimed": survey["claimed"], "eligible": survey["eligible_count"]},
            inputs=(session.video,), output=_output("negatives", name, parameters)))
    return specs


def plan_set(positives: list[StageSpec], negatives: list[StageSpec], options: BuildOptions) -> list[StageSpec]:
    """Part 3: the positives together, augmented, merged with the negatives and shuffled; the legacy export."""
    merged = {"keep_unreleased": options.keep_unreleased}
    augment = asdict(AugmentOptions(multiplier=options.multiplier, seed=options.seed))
    specs = [
        StageSpec("positives", "positives", merged, {"inputs": [s.output for s in positives]},
                  upstream=tuple(s.name for s in positives), output=_output("positives", "all", merged)),
    ]
    specs.append(StageSpec("augment", "augment", augment, {"input": specs[0].output}, upstream=("positives",),
                           output=_output("augmented", "all", augment)))
    specs.append(StageSpec("dataset", "dataset", {"seed": options.seed},
                           {"inputs": [specs[1].output, *(s.output for s in negatives)]},
                           upstream=("augment", *(s.name for s in negatives)), output="dataset.zarr"))
    if options.legacy:
        specs.append(StageSpec("final", "final", {"hold": options.hold, "hold_key": options.key},
                               {"input": "dataset.zarr"}, upstream=("dataset",), output="final.npz"))
    return specs
