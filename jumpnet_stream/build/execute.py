"""Running a build's stage specs: one function per kind of stage (module level, so any process can run a
spec: :func:`run_spec`), the survey of a recording that the negatives' choice needs, and the executor that
runs specs in order, reuses what an earlier run finished with the same fingerprint, and is the only writer
of the manifest."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Any, Callable, Iterator

import numpy as np

from ..chunk import Chunk
from ..errors import JumpnetError
from ..formats import disk_size, open_dataset
from ..runner import described, run_stage
from ..sampling import Frames
from ..stages.augment import AugmentOptions, augment
from ..stages.export import export
from ..stages.merge import merge, merged_chunks, union_keys
from ..stages.negatives import check_fits, write_negatives
from ..stages.preprocess import preprocess
from ..video import Video
from .manifest import InputHashes, Manifest, fingerprint
from .plan import StageSpec


def _preprocess(spec: StageSpec, folder: str, quiet: bool) -> dict[str, Any]:
    out = os.path.join(folder, spec.output)
    result = preprocess(spec.paths["raw"], out, key=spec.parameters["key"], pairing=spec.parameters["pairing"],
                        overwrite=True, quiet=quiet)
    return {**result.counts(), "malformed_reasons": result.malformed_reasons, "positives": len(open_dataset(out)),
            "events": {"jump_press": result.paired + result.unmatched_final_press, "jump_release": result.paired,
                       "auto_repeat_or_other_key_press": result.repeat_or_other_press,
                       "other_key_release_during_jump": result.other_key_release_while_pending,
                       "release_without_press": result.release_without_press, "malformed": result.malformed}}


def _negatives(spec: StageSpec, folder: str, quiet: bool) -> dict[str, Any]:
    wanted = spec.parameters["frames"]
    clip = Video(spec.paths["video"])
    written = write_negatives(clip, os.path.join(folder, spec.output), select=set(wanted).__contains__,
                              stop_after=wanted[-1] if wanted else -1, keys=spec.parameters["keys"],
                              size=tuple(spec.parameters["size"]), overwrite=True, quiet=quiet,
                              strict=spec.parameters["strict"], parameters=spec.parameters,
                              inputs=[described(spec.paths["video"])])
    frames, eligible = spec.paths["frame_count"], spec.paths["eligible"]
    return {"frames_claimed": spec.paths["claimed"], "frames": frames, "frames_read": clip.frames_read,
            "excluded_near_positive": frames - eligible, "eligible": eligible, "chosen": len(wanted),
            "not_chosen": eligible - len(wanted), "written": written, "chosen_past_end": len(wanted) - written}


def _drop_unreleased(chunks: Iterator[Chunk], dropped: list[int]) -> Iterator[Chunk]:
    """Positives whose hold is NaN (the press was never released) left out; their number added to ``dropped[0]``."""
    for chunk in chunks:
        keep = ~np.isnan(chunk["hold_duration"]).any(axis=1)
        dropped[0] += int(len(chunk) - keep.sum())
        if keep.all():
            yield chunk
        elif keep.any():
            yield chunk.take(keep)


def _positives(spec: StageSpec, folder: str, quiet: bool) -> dict[str, Any]:
    """Every recording's positives in one set, keys remapped to their union, unreleased presses left out."""
    paths = [os.path.join(folder, p) for p in spec.paths["inputs"]]
    datasets = [open_dataset(p) for p in paths]
    union = union_keys([d.keys for d in datasets])
    dropped = [0]
    chunks = merged_chunks(datasets, union)
    if not spec.parameters["keep_unreleased"]:
        chunks = _drop_unreleased(chunks, dropped)
    counts: dict[str, Any] = {}

    def count(rows: int) -> dict:
        counts.update({"in": sum(len(d) for d in datasets), "dropped_unreleased": dropped[0], "out": rows,
                       "keys": union})
        return counts
    run_stage(chunks, os.path.join(folder, spec.output), keys=union, stage="positives", parameters=spec.parameters,
              inputs=[described(p, provenance=d.provenance) for p, d in zip(paths, datasets)], counts=count,
              image_shape=next((d.image_shape for d in datasets if len(d)), None), overwrite=True)
    return counts


def _augment(spec: StageSpec, folder: str, quiet: bool) -> dict[str, Any]:
    return asdict(augment(os.path.join(folder, spec.paths["input"]), os.path.join(folder, spec.output),
                          AugmentOptions(**spec.parameters), overwrite=True, quiet=quiet))


def _dataset(spec: StageSpec, folder: str, quiet: bool) -> dict[str, Any]:
    out = os.path.join(folder, spec.output)
    result = merge([os.path.join(folder, p) for p in spec.paths["inputs"]], out, shuffle=True,
                   seed=spec.parameters["seed"], overwrite=True, quiet=quiet)
    return {"samples": result.written, "keys": result.keys, "image_shape": list(open_dataset(out).image_shape),
            "bytes": disk_size(out)}


def _final(spec: StageSpec, folder: str, quiet: bool) -> dict[str, Any]:
    hold, key = spec.parameters["hold"], spec.parameters["hold_key"]
    result = export(os.path.join(folder, spec.paths["input"]), os.path.join(folder, spec.output), hold=hold,
                    hold_key=key, overwrite=True, quiet=quiet)
    return {"samples": result.samples, "bytes": result.bytes, "image_dtype": "float32", "hold": hold,
            "hold_key": key if hold == "scalar" else None}


STAGES: dict[str, Callable[[StageSpec, str, bool], dict[str, Any]]] = {
    "preprocess": _preprocess, "negatives": _negatives, "positives": _positives, "augment": _augment,
    "dataset": _dataset, "final": _final}


def run_spec(spec: StageSpec, folder: str, quiet: bool = True) -> dict[str, Any]:
    """Run one stage spec into ``folder`` (its output lands atomically); returns its counts."""
    return STAGES[spec.kind](spec, folder, quiet)


def survey(video: str, positives: str, keylog: str, radius: int) -> dict[str, Any]:
    """What the choice of negatives needs of one recording: its frame count (the container's, or counted),
    its eligible frames (more than ``radius`` from every positive), its image size and keys."""
    dataset = open_dataset(positives)
    clip = Video(video)
    frame_indices = dataset.column("frame_index")
    check_fits(clip, frame_indices, keylog, radius)
    frames = clip.frame_count()
    eligible = Frames.all(frames).minus(Frames.around(frame_indices, radius))
    return {"frames": frames, "claimed": clip.claimed_frames, "eligible": eligible, "eligible_count": len(eligible),
            "size": tuple(dataset.image_shape[:2]), "keys": dataset.keys}


class Executor:
    """Runs specs in order into ``folder``: a spec whose output is there and whose fingerprint (its kind,
    parameters, its input files' hashes and its upstream specs' fingerprints) matches the manifest's record
    is reused; any other runs, and is recorded once its output has landed."""

    def __init__(self, folder: str, manifest: Manifest, hashes: InputHashes, bar: Any, quiet: bool,
                 recorded: Callable[[], None]):
        self.folder, self.manifest, self.hashes, self.bar, self.quiet = folder, manifest, hashes, bar, quiet
        self.recorded = recorded  # called before each record is saved (the manifest's inputs so far)
        self.prints: dict[str, str] = {}
        self.counts: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.ran: list[str] = []
        self.reused: list[str] = []
        self.seconds: dict[str, float] = {}

    def fingerprint(self, spec: StageSpec) -> str:
        return fingerprint(spec.kind, spec.parameters, [self.hashes[path]["sha256"] for path in spec.inputs],
                           [self.prints[name] for name in spec.upstream])

    def run(self, spec: StageSpec) -> dict[str, Any]:
        self.bar.set_description(f"build: {spec.name}")
        self.order.append(spec.name)
        outputs = [os.path.join(self.folder, spec.output)]
        done = self.manifest.finished(spec.name, lambda: self.fingerprint(spec), outputs)
        if done is not None:
            self.reused.append(spec.name)
            self.counts[spec.name] = done["counts"]
        else:
            self.manifest.start(spec.name)
            start = time.perf_counter()
            self.counts[spec.name] = run_spec(spec, self.folder, self.quiet)
            self.seconds[spec.name] = round(time.perf_counter() - start, 3)
            self.ran.append(spec.name)
            self.recorded()
            self.manifest.record(spec.name, {"fingerprint": self.fingerprint(spec), "outputs": [spec.output],
                                             "counts": self.counts[spec.name]})
        self.prints[spec.name] = self.fingerprint(spec)
        self.bar.update(1)
        return self.counts[spec.name]

    def output(self, spec: StageSpec) -> str:
        return os.path.join(self.folder, spec.output)


def accounting(counts: dict[str, dict], names: list[str], multiplier: int) -> dict[str, Any]:
    """Where every event and every frame went, and the sums that tie them to the output."""
    positives, dataset = counts["positives"], counts["dataset"]
    recordings = {}
    for name in names:
        pre, neg = counts[f"preprocess {name}"], counts[f"negatives {name}"]
        recordings[name] = {
            "events": {"total": pre["total"], **pre["events"]},
            "positives": pre["positives"],
            "frames": {"frames": neg["frames"], "excluded_near_positive": neg["excluded_near_positive"],
                       "not_chosen": neg["not_chosen"], "chosen_past_end": neg["chosen_past_end"],
                       "negatives": neg["written"]},
        }
    negatives = sum(r["frames"]["negatives"] for r in recordings.values())
    augmented = positives["out"] * (1 + multiplier)
    return {"recordings": recordings,
            "positives": {"from_recordings": positives["in"], "dropped_unreleased": positives["dropped_unreleased"],
                          "kept": positives["out"], "with_augmented_copies": augmented},
            "dataset": {"positives": augmented, "negatives": negatives, "samples": dataset["samples"]}}


def check_sizes(surveys: list[dict[str, Any]]) -> None:
    sizes = {survey["size"] for survey in surveys}
    if len(sizes) > 1:
        raise JumpnetError(None, f"the recordings' captures differ in size ({', '.join(map(str, sorted(sizes)))}): "
                                 "build each size separately")
