"""The build as a plan: stage specs, plain data that any process can run.

A spec names its stage, the function that runs it (``kind``), the parameters that decide its output, where
its inputs are (``paths``: not part of its fingerprint, so a moved recording is not rebuilt), the input files
whose content it depends on, the specs whose outputs it reads, and its outputs, named by what decides them
(its kind, parameters and recording) rather than by its position, so adding a recording changes no other
recording's outputs. The plan comes in three parts, because what the later parts choose depends on what the
first found: each recording's positives; then each recording's frames (its negatives, chosen over all
recordings, and its positives with their split and, by default, their images from the video); then the set.
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
from .split import as_lists


@dataclass(frozen=True)
class StageSpec:
    """One stage of a build (see the module's docstring)."""

    name: str
    kind: str
    parameters: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    @property
    def output(self) -> str:
        """The main output (what a later stage reads)."""
        return self.outputs[0]


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
                               inputs=(session.raw,), outputs=(_output("positives", name, parameters),)))
    return specs


def plan_frames(sessions: list[Session], positives: list[StageSpec], surveys: list[dict[str, Any]],
                zones: list[dict[str, Any]], chosen: list[dict[str, np.ndarray]],
                options: BuildOptions) -> list[StageSpec]:
    """Part 2: each recording's frames: its chosen negatives and its positives, with their splits."""
    specs = []
    for session, name, spec, survey, zone, frames in zip(sessions, session_names(sessions), positives, surveys,
                                                         zones, chosen):
        parameters = {"chosen": {split: [int(f) for f in listed] for split, listed in frames.items()},
                      "zones": {split: as_lists(z) for split, z in zone.items()}, "size": list(survey["size"]),
                      "positive_images": options.positive_images, "mask": options.mask, "strict": options.strict}
        if options.history:
            parameters["history"] = [options.history, options.history_stride]
        history = (_output("history", name, parameters),) if options.history else ()
        specs.append(StageSpec(
            f"frames {name}", "frames", parameters, {"video": os.path.abspath(session.video),
                                                     "positives": spec.output},
            inputs=(session.video,), upstream=(spec.name,),
            outputs=(_output("negatives", name, parameters), _output("positive-frames", name, parameters), *history)))
    return specs


def plan_set(frames: list[StageSpec], options: BuildOptions, splits: tuple[str, ...]) -> list[StageSpec]:
    """Part 3: the positives together, augmented (training ones), merged with the negatives, shuffled and
    weighted; the shortcut audit; the legacy export of each split."""
    merged = {"keep_unreleased": options.keep_unreleased}
    augment = asdict(AugmentOptions(multiplier=options.multiplier, seed=options.seed))
    specs = [StageSpec("positives", "positives", merged, {"inputs": [s.outputs[1] for s in frames]},
                       upstream=tuple(s.name for s in frames), outputs=(_output("positives", "all", merged),))]
    specs.append(StageSpec("augment", "augment", augment, {"input": specs[0].output}, upstream=("positives",),
                           outputs=(_output("augmented", "all", augment),)))
    history = {"history": [options.history, options.history_stride]} if options.history else {}
    specs.append(StageSpec("dataset", "dataset", {"seed": options.seed, **history},
                           {"inputs": [specs[1].output, *(s.outputs[0] for s in frames)],
                            "history": [s.outputs[2] for s in frames if len(s.outputs) > 2],
                            "exclude": options.exclude},
                           inputs=(options.exclude,) if options.exclude else (),
                           upstream=("augment", *(s.name for s in frames)), outputs=("dataset.zarr",)))
    specs.append(StageSpec("audit", "audit", {"seed": options.seed}, {"input": "dataset.zarr"}, upstream=("dataset",)))
    if options.legacy:
        for split in splits:
            name = "final" if split == "train" else f"final {split}"
            specs.append(StageSpec(name, "final", {"hold": options.hold, "hold_key": options.key, "split": split},
                                   {"input": "dataset.zarr"}, upstream=("dataset",),
                                   outputs=("final.npz" if split == "train" else f"final-{split}.npz",)))
    return specs
