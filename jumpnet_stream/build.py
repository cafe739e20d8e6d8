"""One command from recordings to a training set: every stage of SPEC 2 in order, resumable, and
accounted for in ``manifest.json``.

For each recording: preprocess (positives), then negatives decoded only at the frames chosen
(uniformly over the eligible frames of *all* recordings). Then the positives are merged (presses never
released are left out and counted), augmented, and merged with the negatives, shuffled, into
``DIR/dataset.zarr``; ``DIR/final.npz`` is its legacy export for the original trainer. Each stage's
output lands atomically and is recorded in the manifest with a fingerprint of its inputs and
parameters; a re-run redoes only stages whose fingerprint is missing or changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterator

import numpy as np

from . import __version__
from .errors import JumpnetError
from .export import export
from .formats import HOLD_LAYOUTS, create_dataset, disk_size, open_dataset, overlaps, partial_path, remove_output
from .progress import progress_bar
from .stages.augment import AugmentOptions, augment, check_multiplier
from .stages.merge import merge, merged_chunks, union_keys
from .stages.negatives import check_fits, check_radius, write_negatives
from .stages.preprocess import PAIRINGS, preprocess
from .sampling import Frames, choose_across
from .npz import read_small_array
from .recording import normalize_keys
from .video import Video

MANIFEST = "manifest.json"
MAX_DEMO_SECONDS = 600
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")


@dataclass(frozen=True)
class Recording:
    """One recorder session: its keylog and its video."""

    raw: str
    video: str

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.raw))[0]


@dataclass(frozen=True)
class BuildOptions:
    """Every choice a build makes; validated on construction (the config file and the CLI fill it)."""

    key: str = "w"                 # the jump key
    pairing: str = "jump-key"      # what ends a jump: its own key's release, or (seed) any release
    multiplier: int = 2            # augmented copies per positive
    negatives: int = 500           # negatives in total, over all recordings
    radius: int = 2                # frames either side of a positive that are never negatives
    seed: int = 42                 # the negatives' choice, the augmentation and the final shuffle
    keep_unreleased: bool = False  # keep positives whose press was never released (hold NaN)
    legacy: bool = True            # also write final.npz (the seed's format)
    hold: str = "scalar"           # final.npz: the jump key's hold as a 0-d array, or the seed's vector
    strict: bool = False           # a video that ends before its container's count is an error, not a warning

    def __post_init__(self) -> None:
        for name in ("multiplier", "negatives", "radius"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise JumpnetError(None, f"--{name} must be a whole number, 0 or more, not {getattr(self, name)!r}")
        check_radius(self.radius)
        check_multiplier(self.multiplier)
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 63:
            raise JumpnetError(None, f"--seed must be between 0 and 2**63 - 1, not {self.seed!r}")
        if not isinstance(self.key, str) or not self.key:
            raise JumpnetError(None, f"--key must be a key name, not {self.key!r}")
        if self.pairing not in PAIRINGS:
            raise JumpnetError(None, f"--pairing must be one of {', '.join(PAIRINGS)}, not {self.pairing!r}")
        if self.hold not in HOLD_LAYOUTS:
            raise JumpnetError(None, f"--hold must be one of {', '.join(HOLD_LAYOUTS)}, not {self.hold!r}")


OPTION_NAMES = tuple(f.name for f in fields(BuildOptions))


# -- finding the inputs ---------------------------------------------------------------------------

def pair_directory(folder: str | os.PathLike) -> list[Recording]:
    """Recordings in ``folder`` and its direct subfolders (the recorder's ``collected/`` and
    ``recordings/``): each ``<name>.npz`` with the one ``<name>_<HHMMSS>.<video>`` beside it."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise JumpnetError(folder, "not a directory")
    places = [folder] + sorted(os.path.join(folder, d) for d in os.listdir(folder)
                               if os.path.isdir(os.path.join(folder, d)) and not d.startswith(".")
                               and not os.path.exists(os.path.join(folder, d, MANIFEST)))  # skip build outputs
    files = [os.path.join(place, f) for place in places for f in sorted(os.listdir(place))
             if os.path.isfile(os.path.join(place, f))]
    keylogs = [f for f in files if f.lower().endswith(".npz")]
    videos = [f for f in files if os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS]
    pairs = []
    for raw in keylogs:
        name = os.path.splitext(os.path.basename(raw))[0]
        pattern = re.compile(re.escape(name) + r"_\d{6}$")
        matches = [v for v in videos if pattern.match(os.path.splitext(os.path.basename(v))[0])]
        if not matches:
            raise JumpnetError(raw, f"no video named {name}_<HHMMSS>.mp4 beside it in {folder} "
                                    "(pair it by hand with --recording and --video)")
        if len(matches) > 1:
            raise JumpnetError(raw, f"several videos could be its recording: {', '.join(matches)} "
                                    "(pair it by hand with --recording and --video)")
        pairs.append(Recording(raw, matches[0]))
    if not pairs:
        raise JumpnetError(folder, "no recordings found (<name>.npz with <name>_<HHMMSS>.mp4)")
    return pairs


def pair_files(raws: list[str], videos: list[str]) -> list[Recording]:
    """``--recording``/``--video`` given in pairs, in order."""
    if len(raws) != len(videos):
        raise JumpnetError(None, f"--recording and --video go in pairs: got {len(raws)} keylogs and {len(videos)} videos")
    return [Recording(os.fspath(raw), os.fspath(video)) for raw, video in zip(raws, videos)]


def load_config(path: str | os.PathLike) -> tuple[list[Recording], dict[str, Any]]:
    """A build.toml: option values (as BuildOptions names; ``output`` too) and the recordings, given as
    ``[[recording]]`` tables (``raw``, ``video``) and/or ``directories = [...]``. Relative paths are
    relative to the config file."""
    path = os.fspath(path)
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise JumpnetError(path, f"not valid TOML: {exc}") from None
    base = os.path.dirname(os.path.abspath(path))

    def resolve(value: Any, what: str) -> str:
        if not isinstance(value, str):
            raise JumpnetError(path, f"{what} must be a path string, not {value!r}")
        return os.path.join(base, os.path.expanduser(value))

    recordings = []
    entries, folders = config.pop("recording", []), config.pop("directories", [])
    if not isinstance(entries, list):
        raise JumpnetError(path, "recording must be a list of [[recording]] tables")
    if not isinstance(folders, list):
        raise JumpnetError(path, f"directories must be a list of folders (directories = [\"...\"]), not {folders!r}")
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"raw", "video"}:
            raise JumpnetError(path, f"each [[recording]] needs exactly 'raw' and 'video', not {entry!r}")
        recordings.append(Recording(resolve(entry["raw"], "raw"), resolve(entry["video"], "video")))
    for folder in folders:
        recordings += pair_directory(resolve(folder, "a directory"))
    if "output" in config:
        config["output"] = resolve(config["output"], "output")
    unknown = set(config) - set(OPTION_NAMES) - {"output"}
    if unknown:
        raise JumpnetError(path, f"unknown setting(s) {', '.join(sorted(unknown))}: known are "
                                 f"{', '.join(OPTION_NAMES + ('output', 'recording', 'directories'))}")
    types = {f.name: f.type for f in fields(BuildOptions)}
    for name, value in config.items():
        expected = {"int": int, "bool": bool, "str": str}.get(types.get(name, "str"), str)
        if type(value) is not expected:  # bool is an int, and an int is no bool: the exact type
            kind = {int: "a whole number", bool: "true or false", str: "a string"}[expected]
            raise JumpnetError(path, f"setting {name} must be {kind}, not {value!r}")
    return recordings, config


# -- the manifest ---------------------------------------------------------------------------------

def file_record(path: str, known: dict[str, Any] | None = None, stop: threading.Event | None = None) -> dict[str, Any]:
    """Path, size, modification time and SHA-256 of an input file (the hash reused from ``known`` when
    size and modification time are unchanged: hashing an hour's keylog takes seconds). ``stop`` abandons it."""
    if not os.path.isfile(path):
        raise JumpnetError(path, "no such file")
    stat = os.stat(path)
    record = {"path": os.path.abspath(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if known and all(known.get(k) == record[k] for k in record):
        return {**record, "sha256": known["sha256"]}
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while (block := f.read(1 << 22)) and not (stop and stop.is_set()):
            digest.update(block)
    return {**record, "sha256": digest.hexdigest()}


class InputHashes:
    """The inputs' records (:func:`file_record`), hashed one after another on a background thread
    (hashlib releases the GIL), so hashing a keylog overlaps the stages instead of preceding them."""

    def __init__(self, paths: list[str], manifest: "Manifest"):
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jumpnet-hash")
        self._records = {path: self._pool.submit(file_record, path, manifest.known_input(path), self._stop)
                         for path in paths}

    def __getitem__(self, path: str) -> dict[str, Any]:
        return self._records[path].result()

    def done(self, path: str) -> bool:
        return self._records[path].done() and self._records[path].exception() is None

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


def fingerprint(*parts: Any) -> str:
    """A stable hash of a stage's parameters and its inputs' fingerprints."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class Manifest:
    """``DIR/manifest.json``: inputs, options, each finished stage (fingerprint, output, counts) and the
    accounting. Rewritten atomically after every stage, so an interrupted build loses at most the
    stage it was in."""

    ORDER = ("tool", "options", "inputs", "stages", "outputs", "accounting")

    def __init__(self, folder: str, fresh: bool = False):
        self.path = os.path.join(folder, MANIFEST)
        self.data: dict[str, Any] = {}
        if os.path.exists(self.path) and not fresh:
            try:
                with open(self.path) as f:
                    self.data = json.load(f)
            except (OSError, ValueError):
                self.data = {}  # unreadable: every stage is redone
        self.data.setdefault("stages", {})

    def known_input(self, path: str) -> dict[str, Any] | None:
        for recording in self.data.get("inputs", []):
            for record in (recording.get("raw"), recording.get("video")):
                if record and record.get("path") == os.path.abspath(path):
                    return record
        return None

    def finished(self, stage: str, print_: Callable[[], str], outputs: list[str]) -> dict | None:
        """The stage's record if it finished with this fingerprint and its outputs are still there (the
        fingerprint is asked for only then: it may wait for an input's hash)."""
        record = self.data["stages"].get(stage)
        if record and all(os.path.exists(p) for p in outputs) and record.get("fingerprint") == print_():
            return record
        return None

    def start(self, stage: str) -> None:
        """Forget a stage before it runs: once its new output lands, the old record would lie about it."""
        if self.data["stages"].pop(stage, None) is not None:
            self.save()

    def record(self, stage: str, entry: dict) -> None:
        self.data["stages"][stage] = entry
        self.save()

    def keep_only(self, stages: list[str]) -> None:
        """Drop the records of stages that are no longer part of the build."""
        self.data["stages"] = {name: self.data["stages"][name] for name in stages}

    def save(self) -> None:
        ordered = {k: self.data[k] for k in self.ORDER if k in self.data}
        temp = partial_path(self.path)
        with open(temp, "w") as f:
            json.dump(ordered, f, indent=2, default=_json_default)
            f.write("\n")
        os.replace(temp, self.path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value)}")


# -- the build ------------------------------------------------------------------------------------

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
    accounting: dict[str, Any] = field(default_factory=dict)


def _drop_unreleased(chunks, dropped: list[int]):
    """Positives whose hold is NaN (the press was never released) left out; their number added to ``dropped[0]``."""
    for chunk in chunks:
        keep = ~np.isnan(chunk["hold_duration"]).any(axis=1)
        dropped[0] += int(len(chunk) - keep.sum())
        if keep.all():
            yield chunk
        elif keep.any():
            yield chunk.take(keep)


def _remove_partials(folder: str) -> None:
    """Temporary outputs left by an interrupted run (``.NAME.partial-HOST-PID``)."""
    for path in glob.glob(os.path.join(folder, "**", ".*.partial-*"), recursive=True):
        remove_output(path)


def _check_inputs(recordings: list[Recording], options: BuildOptions, folder: str) -> None:
    """What can be refused before any work: missing files, a jump key a keylog does not track, a video
    that does not open, an input inside the output folder."""
    for recording in recordings:
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


LOCK = ".jumpnet-build.lock"


@contextlib.contextmanager
def _build_folder(folder: str, fresh: bool) -> Iterator["Manifest"]:
    """The output folder (and its missing parents) made, or an earlier build's folder checked; locked
    against a second build for as long as this one runs; its manifest written before any stage runs (so a
    build killed in its first stage leaves a folder the next run recognises)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise JumpnetError(folder, "output exists and is not a directory")
    if os.path.isdir(folder) and set(os.listdir(folder)) - {LOCK} \
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
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise JumpnetError(folder, f"is in use by another build ({holder}): wait for it, or choose another "
                                       "output folder") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        manifest = Manifest(folder, fresh=fresh)
        manifest.save()
        os.makedirs(os.path.join(folder, "work"), exist_ok=True)
        _remove_partials(folder)
        yield manifest


def build(recordings: list[Recording], folder: str | os.PathLike, options: BuildOptions = BuildOptions(), *,
          fresh: bool = False, quiet: bool = True) -> BuildReport:
    """Build ``folder``/dataset.zarr (and final.npz) from ``recordings``; stages already done are reused."""
    folder = os.fspath(folder)
    if not recordings:
        raise JumpnetError(None, "no recordings given (use --recording/--video pairs, a directory or --config)")
    seen: set[str] = set()
    for recording in recordings:
        if os.path.realpath(recording.raw) in seen:
            raise JumpnetError(recording.raw, "this keylog is given twice")
        seen.add(os.path.realpath(recording.raw))
    _check_inputs(recordings, options, folder)
    with _build_folder(folder, fresh) as manifest:
        return _build(recordings, folder, options, manifest, quiet)


def _build(recordings: list[Recording], folder: str, options: BuildOptions, manifest: "Manifest",
           quiet: bool) -> BuildReport:
    names = []  # stage labels: the recording's name, numbered when two share one
    for recording in recordings:
        same = sum(1 for r in recordings[:len(names)] if r.name == recording.name)
        names.append(recording.name if not same else f"{recording.name}#{same + 1}")
    hashes = InputHashes([path for r in recordings for path in (r.raw, r.video)], manifest)
    manifest.data.update({"tool": f"jumpnet-stream {__version__}", "options": asdict(options)})

    def hashed_inputs(wait: bool) -> list[dict]:
        return [{"name": name, "raw": hashes[r.raw], "video": hashes[r.video]} for name, r in zip(names, recordings)
                if wait or (hashes.done(r.raw) and hashes.done(r.video))]
    report = BuildReport(folder=os.path.abspath(folder))
    work = [os.path.join(folder, "work", f"{i:02d}-{r.name}") for i, r in enumerate(recordings)]
    plan_stages = 2 * len(recordings) + 3 + options.legacy
    bar = progress_bar(plan_stages, "build", unit="stage", quiet=quiet)

    order: list[str] = []

    def stage(name: str, print_: Callable[[], str], outputs: list[str], run: Callable[[], dict]) -> str:
        """Run a stage unless its output is there with this fingerprint; returns the fingerprint."""
        bar.set_description(f"build: {name}")
        order.append(name)
        done = manifest.finished(name, print_, outputs)
        if done is not None:
            report.reused.append(name)
            counts[name] = done["counts"]
        else:
            manifest.start(name)
            start = time.perf_counter()
            counts[name] = run()
            report.seconds[name] = round(time.perf_counter() - start, 3)
            report.ran.append(name)
            manifest.data["inputs"] = hashed_inputs(wait=False)
            manifest.record(name, {"fingerprint": print_(), "outputs": [os.path.relpath(p, folder) for p in outputs],
                                   "counts": counts[name]})
        bar.update(1)
        return print_()

    counts: dict[str, dict] = {}
    try:
        with bar:
            # 1. preprocess each recording
            positive_prints = []
            for recording, name, place in zip(recordings, names, work):
                def run_preprocess(recording=recording, out=f"{place}.positives.zarr") -> dict:
                    result = preprocess(recording.raw, out, key=options.key, pairing=options.pairing,
                                        overwrite=True, quiet=quiet)
                    return {**result.counts(), "malformed_reasons": result.malformed_reasons,
                            "positives": len(open_dataset(out)),
                            "events": {"jump_press": result.paired + result.unmatched_final_press,
                                       "jump_release": result.paired,
                                       "auto_repeat_or_other_key_press": result.repeat_or_other_press,
                                       "other_key_release_during_jump": result.other_key_release_while_pending,
                                       "release_without_press": result.release_without_press,
                                       "malformed": result.malformed}}
                positive_prints.append(stage(
                    f"preprocess {name}", lambda raw=recording.raw: fingerprint("preprocess", options.key,
                                                                                options.pairing,
                                                                                hashes[raw]["sha256"]),
                    [f"{place}.positives.zarr"], run_preprocess))
            positives_paths = [f"{place}.positives.zarr" for place in work]

            # 2. choose negatives over every recording's eligible frames, then decode only those
            plan = [_plan_negatives(recording, path, options.radius) for recording, path in zip(recordings, positives_paths)]
            sizes = {entry["size"] for entry in plan}
            if len(sizes) > 1:
                raise JumpnetError(None, f"the recordings' captures differ in size "
                                         f"({', '.join(map(str, sorted(sizes)))}): build each size separately")
            chosen = choose_across([entry["eligible"] for entry in plan], options.negatives, options.seed)
            negative_prints = []
            for recording, name, place, entry, wanted in zip(recordings, names, work, plan, chosen):
                def run_negatives(entry=entry, wanted=wanted, out=f"{place}.negatives.zarr") -> dict:
                    clip = entry["clip"]
                    written = write_negatives(clip, out, select=set(wanted.tolist()).__contains__,
                                              stop_after=int(wanted[-1]) if len(wanted) else -1, keys=entry["keys"],
                                              size=entry["size"], overwrite=True, quiet=quiet, strict=options.strict)
                    frames, eligible = entry["frames"], len(entry["eligible"])
                    return {"frames_claimed": clip.claimed_frames, "frames": frames,
                            "frames_read": clip.frames_read, "excluded_near_positive": frames - eligible,
                            "eligible": eligible, "chosen": len(wanted), "not_chosen": eligible - len(wanted),
                            "written": written, "chosen_past_end": len(wanted) - written}
                negative_prints.append(stage(
                    f"negatives {name}", lambda video=recording.video, entry=entry, wanted=wanted: fingerprint(
                        "negatives", hashes[video]["sha256"], entry["size"], entry["keys"],
                        hashlib.sha256(wanted.astype(np.int64).tobytes()).hexdigest()),
                    [f"{place}.negatives.zarr"], run_negatives))
            negatives_paths = [f"{place}.negatives.zarr" for place in work]

            # 3. all positives in one set, unreleased presses left out
            positives_out = os.path.join(folder, "work", "positives.zarr")
            positives_print = stage("positives", lambda: fingerprint("positives", positive_prints, options.keep_unreleased),
                                    [positives_out], lambda: _merge_positives(positives_paths, positives_out, options))

            # 4. augment
            augmented = os.path.join(folder, "work", "augmented.zarr")
            augment_options = AugmentOptions(multiplier=options.multiplier, seed=options.seed)
            augment_print = stage(
                "augment", lambda: fingerprint("augment", positives_print, asdict(augment_options)), [augmented],
                lambda: asdict(augment(positives_out, augmented, augment_options, overwrite=True, quiet=quiet)))

            # 5. the final merge, shuffled
            dataset_path = os.path.join(folder, "dataset.zarr")

            def run_dataset() -> dict:
                result = merge([augmented, *negatives_paths], dataset_path, shuffle=True, seed=options.seed,
                               overwrite=True, quiet=quiet)
                return {"samples": result.written, "keys": result.keys,
                        "image_shape": list(open_dataset(dataset_path).image_shape), "bytes": disk_size(dataset_path)}
            dataset_print = stage("dataset", lambda: fingerprint("dataset", augment_print, negative_prints, options.seed),
                                  [dataset_path], run_dataset)
            outputs = {"dataset.zarr": counts["dataset"]}

            # 6. the legacy export for the original trainer
            final = os.path.join(folder, "final.npz")
            if not options.legacy and os.path.lexists(final):  # an earlier build's: it no longer belongs
                remove_output(final)
                report.removed.append("final.npz")
            if options.legacy:
                def run_final() -> dict:
                    result = export(dataset_path, final, hold=options.hold, hold_key=options.key, overwrite=True,
                                    quiet=quiet)
                    return {"samples": result.samples, "bytes": result.bytes, "image_dtype": "float32",
                            "hold": options.hold, "hold_key": options.key if options.hold == "scalar" else None}
                stage("final", lambda: fingerprint("final", dataset_print, options.hold, options.key), [final],
                      run_final)
                outputs["final.npz"] = counts["final"]
        manifest.data["inputs"] = hashed_inputs(wait=True)
    finally:
        hashes.close()

    report.accounting = _accounting(counts, names, options)
    report.samples = counts["dataset"]["samples"]
    report.positives = report.accounting["dataset"]["positives"]
    report.negatives = report.accounting["dataset"]["negatives"]
    manifest.keep_only(order)
    manifest.data["outputs"] = outputs
    for name, stage_name in (("dataset.zarr", "dataset"), ("final.npz", "final")):
        if name in outputs:
            (report.wrote if stage_name in report.ran else report.unchanged).append(name)
    report.wrote.append(MANIFEST)
    manifest.data["accounting"] = report.accounting
    manifest.save()
    return report


def _plan_negatives(recording: Recording, positives: str, radius: int) -> dict[str, Any]:
    """A recording's video, its frame count, and its eligible frames (away from every positive)."""
    dataset = open_dataset(positives)
    clip = Video(recording.video)
    check_fits(clip, dataset.column("frame_index"), recording.raw, radius)
    frames = clip.frame_count()
    excluded = Frames.around(dataset.column("frame_index"), radius)
    return {"clip": clip, "frames": frames, "keys": dataset.keys, "eligible": Frames.all(frames).minus(excluded),
            "size": tuple(dataset.image_shape[:2])}


def _merge_positives(paths: list[str], output: str, options: BuildOptions) -> dict[str, Any]:
    """Every recording's positives in one set, keys remapped to their union, unreleased presses left out."""
    datasets = [open_dataset(p) for p in paths]
    union = union_keys([d.keys for d in datasets])
    dropped = [0]
    chunks = merged_chunks(datasets, union)
    if not options.keep_unreleased:
        chunks = _drop_unreleased(chunks, dropped)
    with create_dataset(output, union, overwrite=True) as writer:
        for chunk in chunks:
            writer.write(chunk)
        counts = {"in": sum(len(d) for d in datasets), "dropped_unreleased": dropped[0], "out": writer.rows,
                  "keys": union}
        writer.provenance = [{"stage": "positives", "parameters": {"keep_unreleased": options.keep_unreleased},
                              "inputs": [{"path": os.path.abspath(p), "provenance": d.provenance}
                                         for p, d in zip(paths, datasets)], "counts": counts}]
    return counts


def _accounting(counts: dict[str, dict], names: list[str], options: BuildOptions) -> dict[str, Any]:
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
    augmented = positives["out"] * (1 + options.multiplier)
    return {"recordings": recordings,
            "positives": {"from_recordings": positives["in"], "dropped_unreleased": positives["dropped_unreleased"],
                          "kept": positives["out"], "with_augmented_copies": augmented},
            "dataset": {"positives": augmented, "negatives": negatives, "samples": dataset["samples"]}}


def demo(folder: str | os.PathLike, *, seconds: float = 60.0, quiet: bool = True) -> BuildReport:
    """A synthetic recording in the recorder's layout (``folder``/collected/demo.npz and
    ``folder``/recordings/demo_120000.mp4, written once), built into ``folder``/build with the defaults."""
    from .synth import make_recording

    folder = os.fspath(folder)
    if not 1 <= seconds <= MAX_DEMO_SECONDS:
        raise JumpnetError(None, f"seconds must be between 1 and {MAX_DEMO_SECONDS}, not {seconds}")
    recording = Recording(os.path.join(folder, "collected", "demo.npz"),
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
