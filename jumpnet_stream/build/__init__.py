"""One command from recordings to a training set: every stage in order, resumable, and accounted for in
``manifest.json``.

For each recording: preprocess (positives), then negatives decoded only at the frames chosen (uniformly
over the eligible frames of *all* recordings). Then the positives are merged (presses never released are
left out and counted), augmented, and merged with the negatives, shuffled, into ``DIR/dataset.zarr``;
``DIR/final.npz`` is its legacy export for the original trainer. The build is a plan of stage specs
(:mod:`.plan`, plain data that any process can run) carried out by an executor (:mod:`.execute`) that
records each finished stage with a fingerprint of its inputs and parameters; a re-run redoes only stages
whose fingerprint is missing or changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..errors import JumpnetError
from ..formats import overlaps, partial_path, remove_output
from ..npz import read_small_array
from ..progress import progress_bar
from ..recording import normalize_keys
from ..video import Video
from .execute import Executor, accounting, check_sizes, choose, frame_accounting, survey, waves
from .inputs import MANIFEST, OPTION_NAMES, BuildOptions, Session, load_config, pair_directory, pair_files
from .manifest import InputHashes, Manifest
from .plan import plan_frames, plan_positives, plan_set, session_names
from .shard import adopt, run_shard
from .split import SPLITS, as_lists

if TYPE_CHECKING:
    from .distributed import Cluster

__all__ = ["MANIFEST", "OPTION_NAMES", "BuildOptions", "BuildReport", "Session", "build", "build_shard", "demo",
           "load_config", "pair_directory", "pair_files"]
MAX_DEMO_SECONDS = 600
#: The build's phases: per recording (positives, survey), the driver's choice of negatives, per recording
#: (negatives, the positives' frames), the set (positives, augment, dataset, audit, final).
PHASES = ("recordings", "choice", "frames", "set")


@dataclass
class BuildReport:
    """What a build did: where its outputs are, what was redone or reused, and the manifest's counts."""

    folder: str = ""
    samples: int = 0
    positives: int = 0
    negatives: int = 0
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    wrote: list[str] = field(default_factory=list)      # outputs this run wrote (names in the folder)
    unchanged: list[str] = field(default_factory=list)  # outputs of an earlier run, reused as they are
    removed: list[str] = field(default_factory=list)    # earlier outputs that no longer belong to the build
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage that ran
    phases: dict[str, float] = field(default_factory=dict)   # wall time of each phase, as the driver saw it
    accounting: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, dict[str, int]] = field(default_factory=dict)  # positives and negatives of each split
    class_weights: dict[str, dict[str, float]] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)  # the shortcut audit (quality.audit)


def _remove_partials(folder: str) -> None:
    """Temporary outputs left by an interrupted run (``.NAME.partial-HOST-PID``)."""
    for path in glob.glob(os.path.join(folder, "**", ".*.partial-*"), recursive=True):
        remove_output(path)


def _check_sessions(sessions: list[Session], options: BuildOptions, folder: str) -> None:
    """What can be refused before any work: no recordings, a keylog given twice, missing files, a jump key a
    keylog does not track, a video that does not open, an input inside the output folder."""
    if not sessions:
        raise JumpnetError(None, "no recordings given (sessions is empty: pair keylogs with their videos, or find "
                                 "them in a folder or a config file)")
    seen: set[str] = set()
    for session in sessions:
        if os.path.realpath(session.raw) in seen:
            raise JumpnetError(session.raw, "this keylog is given twice")
        seen.add(os.path.realpath(session.raw))
    for recording in sessions:
        for path in (recording.raw, recording.video):
            if not os.path.isfile(path):
                raise JumpnetError(path, "no such file")
            if overlaps(folder, path):
                raise JumpnetError(folder, f"holds the input {path}: a build's folder holds only its outputs; "
                                           "choose another output folder")
        keys = normalize_keys(read_small_array(recording.raw, "keys"), recording.raw)
        if options.key not in keys:
            raise JumpnetError(recording.raw, f"key '{options.key}' is not in the recording's keys ({', '.join(keys)})")
        Video(recording.video)
    if options.exclude is not None:
        from ..viewer.marks import load_marks

        load_marks(options.exclude)   # a marks file that cannot be read is refused before any work
        # (it may sit in the build's folder: the viewer saves DIR/dataset.marks.json, which no stage writes)


LOCK = ".jumpnet-build.lock"


@contextlib.contextmanager
def _build_folder(folder: str, fresh: bool, shard: bool = False,
                  settle: Callable[[], None] | None = None) -> Iterator["Manifest"]:
    """The output folder (and its missing parents) made, or an earlier build's folder checked; locked
    against a second build for as long as this one runs; its manifest written before any stage runs (so a
    build killed in its first stage leaves a folder the next run recognises), with the records of the shards
    that ran in it (removed once the build is done). Partial outputs an earlier run left are removed (after
    ``settle`` returns: a cluster's workers may still be writing them for a killed driver). A shard (``build
    --shard``) shares the lock with the other shards, and neither writes the manifest nor removes what may be
    another shard's partial outputs."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise JumpnetError(folder, "output exists and is not a directory")
    if os.path.isdir(folder) and set(os.listdir(folder)) - {LOCK, "work"} \
            and not os.path.exists(os.path.join(folder, MANIFEST)):
        raise JumpnetError(folder, "output directory is not empty and holds no earlier build (manifest.json): "
                                   "choose a new or empty directory")
    try:
        os.makedirs(folder, exist_ok=True)
        lock = open(os.path.join(folder, LOCK), "a+")
    except OSError as exc:
        raise JumpnetError(folder, f"cannot create the output folder: {exc.strerror}") from None
    with lock:
        try:
            fcntl.flock(lock, (fcntl.LOCK_SH if shard else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "shards of a build"
            raise JumpnetError(folder, f"is in use by another build ({holder}): wait for it, or choose another "
                                       "output folder") from None
        if shard:
            os.makedirs(os.path.join(folder, "work"), exist_ok=True)
            yield Manifest(folder)
            return
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        manifest = Manifest(folder, fresh=fresh)
        shards = adopt(manifest.data, folder) if not fresh else []
        manifest.save()
        os.makedirs(os.path.join(folder, "work"), exist_ok=True)  # after the manifest: a folder a stage wrote in has one
        if settle is not None:
            settle()
        _remove_partials(folder)
        yield manifest
        for path in shards:
            os.remove(path)  # their records are in the manifest now
        _remove_partials(folder)  # every task is done: what is left is of a worker killed mid-task, on any host


def build(sessions: list[Session], folder: str | os.PathLike, options: BuildOptions = BuildOptions(), *,
          fresh: bool = False, quiet: bool = True, workers: int | None = None,
          scheduler: str | None = None) -> BuildReport:
    """Build ``folder``/dataset.zarr (and final.npz) from ``sessions``; stages already done are reused.

    ``workers``: run the stages as tasks on a Dask ``LocalCluster`` of that many worker processes;
    ``scheduler``: on the Dask cluster at that address (its workers must see ``folder`` and the inputs at the
    same paths). The outputs are the same bytes either way."""
    folder = os.fspath(folder)
    if options.exclude is not None:  # read by the dataset stage, wherever it runs
        options = replace(options, exclude=os.path.abspath(options.exclude))
    _check_sessions(sessions, options, folder)
    cluster = contextlib.nullcontext()
    if workers is not None or scheduler is not None:
        from .distributed import Cluster

        cluster = Cluster(workers, scheduler, tag=os.path.abspath(folder))
        sessions = [Session(os.path.abspath(s.raw), os.path.abspath(s.video)) for s in sessions]  # workers' cwd
    with cluster as pool, _build_folder(folder, fresh, settle=pool and pool.settle) as manifest:
        try:
            return _build(sessions, folder, options, manifest, quiet, pool)
        except BaseException:
            if pool is not None and pool.stop_local():  # its workers end with the build (an error, Ctrl-C)
                _remove_partials(folder)  # what they were writing, half-written
            raise


def build_shard(sessions: list[Session], folder: str | os.PathLike, options: BuildOptions = BuildOptions(), *,
                index: int, count: int, quiet: bool = True) -> dict[str, Any]:
    """Shard ``index`` of ``count`` of a build (``build --shard I/N``, :mod:`.shard`): the per-recording work
    of recordings ``index``, ``index + count``, ... into ``folder``, where a later :func:`build` reuses it."""
    folder = os.fspath(folder)
    _check_sessions(sessions, options, folder)
    with _build_folder(folder, fresh=False, shard=True):
        return run_shard(sessions, folder, options, index, count, quiet)


def _build(sessions: list[Session], folder: str, options: BuildOptions, manifest: Manifest,
           quiet: bool, cluster: Cluster | None = None) -> BuildReport:
    from .. import __version__

    names = session_names(sessions)
    paths = [path for s in sessions for path in (s.raw, s.video)] + ([options.exclude] if options.exclude else [])
    hashes = cluster.hashes(paths, manifest) if cluster else InputHashes(paths, manifest)

    def hashed_inputs(wait: bool = False) -> dict[str, Any]:
        return {"inputs": [{"name": name, "raw": hashes[s.raw], "video": hashes[s.video]}
                           for name, s in zip(names, sessions) if wait or (hashes.done(s.raw) and hashes.done(s.video))]}
    report = BuildReport(folder=os.path.abspath(folder))
    bar = progress_bar(2 * len(sessions) + 4 + options.legacy * (1 + (options.val_fraction > 0)), "build",
                       unit="stage", quiet=quiet)
    executor = Executor(os.path.abspath(folder), manifest, hashes, bar, quiet, recorded=hashed_inputs, pool=cluster)
    executor.describe(tool=f"jumpnet-stream {__version__}", options=asdict(options))
    try:
        with bar:
            marks = [time.perf_counter()]
            positives = plan_positives(sessions, options)  # phase 1, per recording: positives, survey
            surveys = executor.run_each(positives, [partial(survey, s.video, executor.output(spec), s.raw,
                                                            options.radius) for s, spec in zip(sessions, positives)])
            marks.append(time.perf_counter())
            check_sizes(surveys)
            split, zones, chosen = choose(surveys, options)  # phase 2, the driver: the negatives' choice
            marks.append(time.perf_counter())
            frames = plan_frames(sessions, positives, surveys, zones, chosen, options)
            executor.run_each(frames)  # phase 3, per recording: negatives and positives' frames
            marks.append(time.perf_counter())
            splits = tuple(name for name in SPLITS if name == "train" or any(len(z[name]) for z in zones))
            finals = {"final.npz"} | {f"final-{name}.npz" for name in splits if name != "train"}
            for stale in ("final.npz", *(f"final-{name}.npz" for name in SPLITS if name != "train")):
                if os.path.lexists(os.path.join(folder, stale)) and (not options.legacy or stale not in finals):
                    remove_output(os.path.join(folder, stale))  # an earlier build's: it no longer belongs
                    report.removed.append(stale)
            for wave in waves(plan_set(frames, options, splits)):  # phase 4: the set
                executor.run_each(wave)
            marks.append(time.perf_counter())
        inputs = hashed_inputs(wait=True)
    finally:
        hashes.close()

    counts = executor.counts
    names = session_names(sessions)
    report.ran, report.reused, report.seconds = executor.ran, executor.reused, executor.seconds
    report.phases = {phase: round(end - start, 3) for phase, start, end in zip(PHASES, marks, marks[1:])}
    frame_counts = [frame_accounting(s, z, options.radius, options.held_frames, counts[f"frames {name}"])
                    for s, z, name in zip(surveys, zones, names)]
    report.accounting = accounting(counts, names, frame_counts, options.multiplier)
    report.samples = counts["dataset"]["samples"]
    report.positives = report.accounting["dataset"]["positives"]
    report.negatives = report.accounting["dataset"]["negatives"]
    report.splits = report.accounting["dataset"]["splits"]
    report.class_weights = counts["dataset"]["class_weights"]
    report.audit = counts["audit"]
    outputs = {spec.outputs[0]: counts[spec.name] for spec in plan_set(frames, options, splits)
               if spec.outputs and not spec.outputs[0].startswith("work")}
    for name in outputs:
        stage = next(spec.name for spec in plan_set(frames, options, splits) if spec.outputs and spec.output == name)
        (report.wrote if stage in report.ran else report.unchanged).append(name)
    report.wrote.append(MANIFEST)
    executor.finish(**inputs, outputs=outputs, accounting=report.accounting, audit=report.audit,
                    split={"mode": split["mode"], "gap": split["gap"], "val_fraction": options.val_fraction,
                           "recordings": {name: {part: as_lists(z[part]) for part in SPLITS}
                                          for name, z in zip(names, zones)}})
    from ..viewer.report import REPORT, write_report  # the viewer's parts read build records: imported late

    write_report(folder)  # the plots, the accounting and a contact sheet, in one file that opens offline
    report.wrote.append(REPORT)
    return report


def demo(folder: str | os.PathLike, *, seconds: float = 60.0, quiet: bool = True) -> BuildReport:
    """A synthetic recording in the recorder's layout (``folder``/collected/demo.npz and
    ``folder``/recordings/demo_120000.mp4, written once), built into ``folder``/build with the defaults."""
    from ..synth import make_recording

    folder = os.fspath(folder)
    if not 1 <= seconds <= MAX_DEMO_SECONDS:
        raise JumpnetError(None, f"seconds must be between 1 and {MAX_DEMO_SECONDS}, not {seconds}")
    recording = Session(os.path.join(folder, "collected", "demo.npz"),
                          os.path.join(folder, "recordings", "demo_120000.mp4"))
    if not (os.path.isfile(recording.raw) and os.path.isfile(recording.video)):
        os.makedirs(folder, exist_ok=True)
        temp = partial_path(os.path.join(folder, "demo"))
        remove_output(temp)
        made = make_recording(temp, name="demo", seconds=seconds, keys=("w",), seed=0, folders=True)
        for made_path, path in ((made.npz, recording.raw), (made.video, recording.video)):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.replace(made_path, path)
        remove_output(temp)
    return build([recording], os.path.join(folder, "build"), quiet=quiet)
