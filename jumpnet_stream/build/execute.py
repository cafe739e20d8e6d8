"""Running a build's stage specs: one function per kind of stage (module level, so any process can run a
spec: :func:`run_spec`; the shuffled set's runs on the driver and fans its work out as tasks of their own),
the survey of a recording that the negatives' choice needs, and the executor that runs specs in order,
reuses what an earlier run finished with the same fingerprint, and is the only writer of the manifest."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, Callable, Iterator

import numpy as np

from ..chunk import Chunk, keep_rows
from ..errors import JumpnetError
from ..formats import create_dataset, disk_size, open_dataset, partial_path, remove_output
from ..formats.zarr_store import ZarrDatasetWriter
from ..history import attach
from ..pipeline import return_large_buffers_to_os, trim_heap
from ..quality import audit
from ..runner import described, run_stage
from ..sampling import Frames
from ..stages.augment import AugmentOptions, augment
from ..stages.export import export
from ..stages.merge import RowSpool, merge_counts, merge_record, merged_chunks, open_inputs, permutation, union_keys
from ..stages.frames import recording_frames
from ..stages.negatives import check_fits, held
from ..stages.preprocess import preprocess
from ..video import Video
from .inputs import BuildOptions
from .manifest import InputHashes, Manifest, fingerprint
from .plan import StageSpec
from .split import SPLITS, choose_negatives, plan_split


def _preprocess(spec: StageSpec, folder: str, quiet: bool) -> dict[str, Any]:
    out = os.path.join(folder, spec.output)
    result = preprocess(spec.paths["raw"], out, key=spec.parameters["key"], pairing=spec.parameters["pairing"],
                        overwrite=True, quiet=quiet)
    return {**result.counts(), "malformed_reasons": result.malformed_reasons, "positives": len(open_dataset(out)),
            "events": {"jump_press": result.paired + result.unmatched_final_press, "jump_release": result.paired,
                       "auto_repeat_or_other_key_press": result.repeat_or_other_press,
                       "other_key_release_during_jump": result.other_key_release_while_pending,
                       "release_without_press": result.release_without_press, "malformed": result.malformed}}


def _frames(spec: StageSpec, folder: str, quiet: bool) -> dict[str, Any]:
    p = spec.parameters
    return recording_frames(spec.paths["video"], os.path.join(folder, spec.paths["positives"]),
                            os.path.join(folder, spec.outputs[0]), os.path.join(folder, spec.outputs[1]),
                            chosen=p["chosen"], zones=p["zones"], size=tuple(p["size"]),
                            positive_images=p["positive_images"], mask=p["mask"], strict=p["strict"],
                            history=tuple(p.get("history", (0, 1))),
                            history_out=os.path.join(folder, spec.outputs[2]) if len(spec.outputs) > 2 else None,
                            quiet=quiet)


def _drop_unreleased(chunks: Iterator[Chunk], dropped: list[int]) -> Iterator[Chunk]:
    """Positives whose hold is NaN (the press was never released) left out; their number added to ``dropped[0]``."""
    return keep_rows(chunks, lambda chunk: ~np.isnan(chunk["hold_duration"]).any(axis=1), dropped)


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


def count_classes(counts: dict[str, dict[float, int]], chunk: Chunk) -> None:
    """Add ``chunk``'s samples to ``counts``: per split (in the order first met), how many of each class
    (label 0.0, 1.0)."""
    splits, labels = chunk["split"], chunk["label"]
    for split in dict.fromkeys(splits.tolist()):  # in the order first met, as a row-by-row count
        by_class = counts.setdefault(str(split), {0.0: 0, 1.0: 0})
        for label in by_class:
            by_class[label] += int(np.count_nonzero((splits == split) & (labels == label)))


def class_weights(counts: dict[str, dict[float, int]]) -> dict[str, dict[str, float]]:
    """Per split, each class's weight from :func:`count_classes`' counts: inverse frequency, ``samples / (2 x samples
    of the class)``, so both classes weigh the same in total (1 where a split has one class only)."""
    weights = {}
    for split, by_class in counts.items():
        total = sum(by_class.values())
        both = all(by_class.values())
        weights[split] = {("positive" if label else "negative"): (total / (2 * n) if both else 1.0)
                          for label, n in by_class.items()}
    return weights


def weigh(chunk: Chunk, weights: dict[str, dict[str, float]]) -> Chunk:
    """``chunk`` with each sample's ``weight``: its class's in its split (:func:`class_weights`)."""
    table = {(split, label): weights[split]["positive" if label else "negative"] for split in weights
             for label in (0.0, 1.0)}
    values = np.array([table[(str(s), float(l))] for s, l in zip(chunk["split"], chunk["label"])], np.float32)
    return Chunk({**chunk.columns, "weight": values})


def spool_set(inputs: list[str], exclude: str | None, spool: str) -> dict[str, Any]:
    """The shuffled set's first task: its inputs' rows (keys remapped to their union, marked samples left out)
    into a row spool at ``spool`` that every range task reads (a shared folder), and what the driver needs:
    the rows' number, keys and image shape, their class counts and the store's provenance record."""
    datasets, report, chunks, image_shape = open_inputs(inputs, exclude=exclude)
    counts: dict[str, dict[float, int]] = {}
    remove_output(spool)  # what an earlier run of this task left (its worker died)
    rows = RowSpool("", len(report.keys), path=spool)
    try:
        for chunk in chunks:  # the marked samples already left out
            rows.append(chunk)
            count_classes(counts, chunk)
        rows.seal()
    finally:
        rows.close()
    return {"report": report, "provenances": [d.provenance for d in datasets], "image_shape": image_shape,
            "counts": counts}


def write_range(spool: str, store: str, keys: list[str], start: int, order: np.ndarray,
                weights: dict[str, dict[str, float]]) -> int:
    """A range task of the shuffled set: the spool's rows ``order`` (rows ``start`` on of the seeded
    permutation), weighted, into the chunk files of those rows of ``store`` (sized by the driver). Run twice,
    it writes the same files again."""
    rows = RowSpool.load(spool)
    try:
        writer = ZarrDatasetWriter(store, keys, start=start)
        for chunk in rows.rows(order):
            writer.write(weigh(chunk, weights))
        writer.finish_range()
    finally:
        rows.close()
    return len(order)


def _dataset(spec: StageSpec, folder: str, quiet: bool, pool: Pool) -> dict[str, Any]:
    """The shuffled set, run by the driver as tasks of ``pool``: the spool of its rows, then one task per range
    of whole chunks of every field (each chunk file written by one task), then the store's attributes, landed."""
    out = os.path.join(folder, spec.output)
    inputs = [os.path.join(folder, p) for p in spec.paths["inputs"]]
    exclude, seed = spec.paths.get("exclude"), spec.parameters["seed"]
    spool = partial_path(os.path.join(folder, "work", "dataset-rows"))
    began = time.perf_counter()
    try:
        found = dict(pool(spool_set, [("dataset rows", (inputs, exclude, spool))]))[0]
        spooled = time.perf_counter()
        report, counts = found["report"], found["counts"]
        weights = class_weights(counts)
        with create_dataset(out, report.keys, image_shape=found["image_shape"], overwrite=True) as writer:
            writer.allocate(report.total)
            step, order = writer.whole_rows, permutation(report.total, seed)  # drawn once, a range to each task
            tasks = [(f"dataset rows {start}-{min(start + step, report.total)}",
                      (spool, writer.path, report.keys, start, order[start:start + step], weights))
                     for start in range(0, report.total, step)]
            report.written = sum(written for _, written in pool(write_range, tasks))
            ranges, ranged = len(tasks), time.perf_counter()
            parameters, history_inputs = merge_record(report, found["provenances"], True, seed, exclude)
            writer.provenance = [{"stage": "merge", "parameters": parameters, "inputs": history_inputs,
                                  "counts": merge_counts(report, exclude)}]
    finally:
        remove_output(spool)
    history = {}
    if "history" in spec.parameters:
        count, stride = spec.parameters["history"]
        paths = [os.path.join(folder, p) for p in spec.paths["history"]]
        stored = dict(pool(attach, [("dataset history", (out, paths, count, stride))]))[0]
        history = {"history": {"frames": count, "stride": stride, "stored": stored}}
    splits = {split: {"positives": counts[split][1.0], "negatives": counts[split][0.0]} for split in sorted(counts)}
    excluded = {"excluded_marked": report.excluded} if exclude else {}
    return {"samples": report.written, "keys": report.keys, "image_shape": list(open_dataset(out).image_shape),
            "bytes": disk_size(out), "splits": splits, "class_weights": weights, "range_tasks": ranges,
            "seconds": {"spool": round(spooled - began, 3), "ranges": round(ranged - spooled, 3)},
            **excluded, **history}


def _audit(spec: StageSpec, folder: str, quiet: bool) -> dict[str, Any]:
    return audit(open_dataset(os.path.join(folder, spec.paths["input"])), seed=spec.parameters["seed"]).counts()


def _final(spec: StageSpec, folder: str, quiet: bool) -> dict[str, Any]:
    hold, key, split = spec.parameters["hold"], spec.parameters["hold_key"], spec.parameters["split"]
    result = export(os.path.join(folder, spec.paths["input"]), os.path.join(folder, spec.output), hold=hold,
                    hold_key=key, split=split, overwrite=True, quiet=quiet)
    return {"samples": result.samples, "bytes": result.bytes, "image_dtype": "float32", "hold": hold,
            "hold_key": key if hold == "scalar" else None, "split": split}


STAGES: dict[str, Callable[[StageSpec, str, bool], dict[str, Any]]] = {
    "preprocess": _preprocess, "frames": _frames, "positives": _positives, "augment": _augment,
    "audit": _audit, "final": _final}
#: Stages that write nothing and read only what an earlier wave wrote (the audit reads the dataset, as the exports
#: beside it do): without a cluster they run on a thread beside their wave's other stages. That wave (final.npz with the
#: audit beside it, against the two one after the other; stage seconds of benchmarks/bench_pipeline.py's median runs)
#: took 0.0, 0.17 and 0.41 s less on the 5-minute 1080p H.264 build and 0.4 and 0.6 s less on the 10-minute mp4v one,
#: whose peak RSS went from 248 to 260 MB.
BESIDE = {"audit"}
#: Stages the driver runs, as tasks of its pool (of their own: :func:`_dataset`).
FANNED: dict[str, Callable[[StageSpec, str, bool, Pool], dict[str, Any]]] = {"dataset": _dataset}


def run_spec(spec: StageSpec, folder: str, quiet: bool = True, pool: Pool | None = None) -> dict[str, Any]:
    """Run one stage spec into ``folder`` (its output lands atomically); returns its counts. A stage of
    :data:`FANNED` runs its tasks on ``pool`` (in this process without one)."""
    if spec.kind in FANNED:
        return FANNED[spec.kind](spec, folder, quiet, pool or in_process)
    return STAGES[spec.kind](spec, folder, quiet)


def survey(video: str, positives: str, keylog: str, radius: int) -> dict[str, Any]:
    """What the split and the choice of negatives need of one recording: its frame count (the container's, or
    counted), its positives' presses, releases and whether each was released, its image size and keys."""
    dataset = open_dataset(positives)
    clip = Video(video)
    small = dataset.columns(["frame_index", "release_index", "hold_duration"])
    check_fits(clip, small["frame_index"], keylog, radius)
    return {"frames": clip.frame_count(), "claimed": clip.claimed_frames, "presses": small["frame_index"],
            "releases": small["release_index"], "released": ~np.isnan(small["hold_duration"]).any(axis=1),
            "size": tuple(dataset.image_shape[:2]), "keys": dataset.keys}


def eligible(survey: dict[str, Any], zone: Frames, radius: int, held_frames: str) -> Frames:
    """A zone's frames that may be negatives: more than ``radius`` from every press and, unless
    ``held_frames`` is "negative", outside every jump (press to release; to the end if never released)."""
    near = Frames.around(survey["presses"], radius)
    if held_frames == "negative":
        return zone.minus(near)
    jumps = held(survey["presses"], survey["releases"], ~survey["released"], survey["frames"])
    return zone.minus(Frames.spans(np.concatenate([near.starts, jumps.starts]),
                                   np.concatenate([near.stops, jumps.stops])))


def choose(surveys: list[dict[str, Any]], options: BuildOptions) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """The driver's step between the per-recording phases: the split of every recording's frames, and the
    seeded choice of negatives over the eligible frames of all of them (each recording's, per split)."""
    split = plan_split(surveys, options.val_fraction, options.seed, options.radius)
    zones = split["zones"]
    pools = [{name: eligible(s, z[name], options.radius, options.held_frames) for name in SPLITS}
             for s, z in zip(surveys, zones)]
    chosen = choose_negatives(pools, surveys, zones, total=options.negatives, ratio=options.negative_ratio,
                              multiplier=options.multiplier, keep_unreleased=options.keep_unreleased, seed=options.seed)
    return split, zones, chosen


def waves(specs: list[StageSpec]) -> Iterator[list[StageSpec]]:
    """The specs in order, in runs of consecutive specs that read nothing of each other (each run can go
    to the pool at once: the audit and the legacy exports all read only the dataset)."""
    wave: list[StageSpec] = []
    for spec in specs:
        if {w.name for w in wave} & set(spec.upstream):
            yield wave
            wave = []
        wave.append(spec)
    if wave:
        yield wave


def run_task(spec: StageSpec | None, folder: str, quiet: bool, then: Callable[[], Any] | None,
             pool: Pool | None = None) -> tuple[dict[str, Any] | None, float | None, Any, Exception | None]:
    """One task of a build: ``spec`` (None when it is reused), then ``then``; the spec's counts and wall time,
    what ``then`` returned, and the error ``then`` raised once the spec's output had landed (so the executor
    records the spec before it raises the error). ``pool``: where a stage of :data:`FANNED` runs its tasks."""
    return_large_buffers_to_os()  # as the command line does (a Dask worker is a process of its own)
    counts = seconds = None
    if spec is not None:
        start = time.perf_counter()
        counts = run_spec(spec, folder, quiet, pool)
        seconds = round(time.perf_counter() - start, 3)
    try:
        return counts, seconds, then() if then is not None else None, None
    except Exception as exc:
        if counts is None:
            raise
        return counts, seconds, None, exc
    finally:
        trim_heap(collect=False)  # what the task freed, back to the OS before the next (a worker also collects)


#: Runs tasks, each ``(label, args)``, as ``fn(*args)``; yields ``(index, result)`` as each finishes (a
#: failing task raises its error). :func:`in_process` runs them here, in order; ``distributed.Cluster`` on Dask.
Pool = Callable[[Callable[..., Any], list[tuple[str, tuple]]], Iterator[tuple[int, Any]]]


def in_process(fn: Callable[..., Any], tasks: list[tuple[str, tuple]]) -> Iterator[tuple[int, Any]]:
    """The pool of a build without a cluster: each task in this process, in order."""
    for index, (_, args) in enumerate(tasks):
        yield index, fn(*args)


class Executor:
    """Runs specs in order into ``folder``: a spec whose output is there and whose fingerprint (its kind,
    parameters, its input files' hashes and its upstream specs' fingerprints) matches the manifest's record
    is reused; any other runs (in this process, or as a task of its pool), and is recorded once its output has
    landed. Only the executor, in the driver, writes the manifest."""

    def __init__(self, folder: str, manifest: Manifest, hashes: InputHashes, bar: Any, quiet: bool,
                 recorded: Callable[[], dict[str, Any]], pool: Pool | None = None):
        self.folder, self.manifest, self.hashes, self.bar, self.quiet = folder, manifest, hashes, bar, quiet
        self.pool = pool or in_process
        self.recorded = recorded  # build-wide entries set before each record is saved (the inputs hashed so far)
        self.prints: dict[str, str] = {}
        self.counts: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.ran: list[str] = []
        self.reused: list[str] = []
        self.seconds: dict[str, float] = {}

    def describe(self, **entries: Any) -> None:
        """Set build-wide entries of the manifest (saved with the next record, or by :meth:`finish`)."""
        self.manifest.update(entries)

    def finish(self, **entries: Any) -> None:
        """The manifest as the build ends: the records of the stages this run planned only, and ``entries``."""
        self.manifest.keep_only(self.order)
        self.describe(**entries)
        self.manifest.save()

    def fingerprint(self, spec: StageSpec) -> str:
        return fingerprint(spec.kind, spec.parameters, [self.hashes[path]["hash"] for path in spec.inputs],
                           [self.prints[name] for name in spec.upstream])

    def run_each(self, specs: list[StageSpec], then: list[Callable[[], Any]] | None = None) -> list[Any]:
        """Run specs that do not read each other's outputs, each followed by its ``then`` (in the same task: a
        worker's when the executor has a pool, in parallel); returns what the ``then`` calls returned."""
        then = then or [None] * len(specs)
        tasks = []
        for spec, follow in zip(specs, then):
            self.bar.set_description(f"build: {spec.name}")
            self.order.append(spec.name)
            outputs = [os.path.join(self.folder, output) for output in spec.outputs]
            done = self.manifest.finished(spec.name, lambda: self.fingerprint(spec), outputs)
            if done is not None:
                self.reused.append(spec.name)
                self.counts[spec.name] = done["counts"]
            else:
                self.manifest.start(spec.name)
            tasks.append((spec.name, (None if done else spec, self.folder, self.quiet, follow)))
        results: list[Any] = [None] * len(specs)
        for index, (counts, seconds, result, error) in self._run(specs, tasks):
            spec = specs[index]
            if counts is not None:
                self.counts[spec.name], self.seconds[spec.name] = counts, seconds
                self.ran.append(spec.name)
                self.describe(**self.recorded())
                self.manifest.record(spec.name, {"fingerprint": self.fingerprint(spec),
                                                 "outputs": list(spec.outputs), "counts": counts})
            if error is not None:
                raise error
            self.prints[spec.name] = self.fingerprint(spec)
            results[index] = result
            self.bar.update(1)
        return results

    def _run(self, specs: list[StageSpec], tasks: list[tuple[str, tuple]]) -> Iterator[tuple[int, Any]]:
        """The tasks' results as they finish: a stage of :data:`FANNED` run here, in the driver (its own
        tasks go to the pool), the others as tasks of the pool. Without a cluster, a spec of :data:`BESIDE`
        runs on a thread of its own beside the others of its wave, its result given after theirs; should one
        of theirs fail, its error (if it failed too) is noted on theirs."""
        here = [index for index, spec in enumerate(specs) if spec.kind in FANNED]
        there = [index for index in range(len(specs)) if index not in here]
        beside = [index for index in there if specs[index].kind in BESIDE and tasks[index][1][3] is None] \
            if self.pool is in_process and len(there) > 1 else []
        there = [index for index in there if index not in beside]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jumpnet-beside") as thread:
            futures = [(index, thread.submit(run_task, *tasks[index][1])) for index in beside]
            try:
                for index in here:
                    yield index, run_task(*tasks[index][1], self.pool)
                for at, result in self.pool(run_task, [tasks[index] for index in there]) if there else ():
                    yield there[at], result
            except BaseException as error:
                for index, future in futures:
                    failed = future.exception()  # waits for it: nothing runs on once the build has failed
                    if failed is not None:
                        error.add_note(f"{specs[index].name} failed too: {failed}")
                raise
            for index, future in futures:  # an error it raised, raised here (after the others have landed)
                yield index, future.result()

    def output(self, spec: StageSpec) -> str:
        return os.path.join(self.folder, spec.output)


def frame_accounting(survey: dict[str, Any], zone: dict[str, Frames], radius: int, held_frames: str,
                     frames_counts: dict[str, Any]) -> dict[str, int]:
    """Where every frame of a recording went: near a press, held (inside a jump), in the gap between the
    splits, chosen (written, or past the video's end) or not chosen; the parts add up to its frames."""
    everything = Frames.all(survey["frames"])
    near = Frames.around(survey["presses"], radius, survey["frames"])
    held = everything.minus(near).minus(eligible(survey, everything, radius, held_frames))
    zones = Frames.spans(np.concatenate([z.starts for z in zone.values()]),
                         np.concatenate([z.stops for z in zone.values()]))
    gap = everything.minus(zones).minus(near).minus(held)
    chosen = sum(frames_counts["chosen"].values())
    pool = sum(len(eligible(survey, z, radius, held_frames)) for z in zone.values())
    written = sum(frames_counts["written"].values())
    return {"frames": survey["frames"], "near_positive": len(near), "held": len(held), "in_gap": len(gap),
            "not_chosen": pool - chosen, "chosen_past_end": chosen - written, "negatives": written}


def accounting(counts: dict[str, dict], names: list[str], frames: list[dict[str, int]],
               multiplier: int) -> dict[str, Any]:
    """Where every event and every frame went, and the sums that tie them to the output."""
    positives, dataset = counts["positives"], counts["dataset"]
    recordings = {}
    for name, frame_counts in zip(names, frames):
        pre, fr = counts[f"preprocess {name}"], counts[f"frames {name}"]
        recordings[name] = {"events": {"total": pre["total"], **pre["events"]}, "positives": pre["positives"],
                            "positives_in_gap": fr["positives_in_gap"], "frames": frame_counts}
    splits = dataset.get("splits", {})
    return {"recordings": recordings,
            "positives": {"from_recordings": sum(r["positives"] for r in recordings.values()),
                          "dropped_in_gap": sum(r["positives_in_gap"] for r in recordings.values()),
                          "dropped_unreleased": positives["dropped_unreleased"], "kept": positives["out"],
                          "augmented_copies": counts["augment"]["copies"], "multiplier": multiplier},
            "dataset": {"positives": sum(s["positives"] for s in splits.values()),
                        "negatives": sum(s["negatives"] for s in splits.values()), "samples": dataset["samples"],
                        "excluded_marked": dataset.get("excluded_marked", 0), "splits": splits}}


def check_sizes(surveys: list[dict[str, Any]]) -> None:
    sizes = {survey["size"] for survey in surveys}
    if len(sizes) > 1:
        raise JumpnetError(None, f"the recordings' captures differ in size ({', '.join(map(str, sorted(sizes)))}): "
                                 "build each size separately")
