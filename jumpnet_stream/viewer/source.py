"""What the viewer and the report read: a dataset of any format, a build folder (its ``dataset.zarr`` and
``manifest.json``) or a recorder keylog, opened through the library. The small fields are read whole once (a
few bytes per sample), or a block at a time (the report); images, and video frames, only for the samples
shown."""

from __future__ import annotations

import json
import os
import re
import threading
from functools import cached_property
from typing import Any, Iterator, Sequence

import numpy as np

from ..build.inputs import MANIFEST, VIDEO_EXTENSIONS
from ..chunk import Chunk, select_rows
from ..errors import JumpnetError
from ..formats import open_dataset
from ..formats.legacy_npz import is_keylog_file
from ..inspection import positive_holds
from ..keylog import NOMINAL_FPS
from ..names import stem
from ..recording import EVENT_FIELDS, Recording
from ..schema import SMALL_FIELDS
from ..video import Video
from .marks import IDENTITY, Identity, MarkBook, identities, marks_path

BUILD_DATASET = "dataset.zarr"  # what a build folder is viewed as
BLOCK_ROWS = 32768  # small fields read together when not whole: a few MB, and few reads (each costs zarr 2 ms)


def _video_name(path: str) -> str:
    """The recording a video is of: ``<name>_<HHMMSS>.mp4`` gives ``<name>`` (as :attr:`Video.name`)."""
    return re.sub(r"_\d{6}$", "", stem(path))


def _is_video(path: object) -> bool:
    return isinstance(path, str) and os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def _provenance_videos(records: object, found: dict[str, str], depth: int = 0) -> dict[str, str]:
    """Every video a set's provenance names, by the recording it is of."""
    if isinstance(records, list) and depth < 32:
        for record in records:
            for entry in (record.get("inputs") or []) if isinstance(record, dict) else []:
                if isinstance(entry, dict):
                    if _is_video(entry.get("path")):
                        found.setdefault(_video_name(entry["path"]), entry["path"])
                    _provenance_videos(entry.get("provenance"), found, depth + 1)
    return found


def _manifest_videos(manifest: dict[str, Any]) -> dict[str, str]:
    """The build's videos by recording name, as its manifest records them."""
    found = {}
    for entry in manifest.get("inputs") or []:
        video = entry.get("video") if isinstance(entry, dict) else None
        if isinstance(entry.get("name"), str) and isinstance(video, dict) and _is_video(video.get("path")):
            found[entry["name"]] = video["path"]
    return found


def _recorder_video(keylog: str) -> str | None:
    """A keylog's video where the recorder puts it: ``<name>_<HHMMSS>.<ext>`` beside it, or in a folder
    beside its folder (``collected/`` and ``recordings/``); None unless exactly one."""
    def listing(folder: str) -> list[str]:
        try:
            return sorted(os.listdir(folder))
        except OSError:  # a folder we may not read holds nothing we can show
            return []

    here = os.path.dirname(os.path.abspath(keylog))
    parent = os.path.dirname(here)
    places = [here] + [os.path.join(parent, d) for d in listing(parent)
                       if os.path.isdir(os.path.join(parent, d)) and os.path.join(parent, d) != here]
    pattern = re.compile(re.escape(stem(keylog)) + r"_\d{6}$")
    found = [os.path.join(place, f) for place in places for f in listing(place)
             if _is_video(f) and pattern.match(os.path.splitext(f)[0])]
    return found[0] if len(found) == 1 else None


def _read_manifest(folder: str) -> dict[str, Any] | None:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise JumpnetError(path, f"cannot read the build's manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise JumpnetError(path, "the build's manifest is not a JSON object")
    return manifest


class Source:
    """Samples to show. ``small``: every small field, read whole; ``held`` (n, keys) which keys each sample
    holds, ``holds`` its hold (seconds; the largest slot), ``recordings`` and ``frames`` where it comes from;
    ``label`` None for a keylog, whose events are not samples. ``manifest`` is the build's, when the set is
    one's; ``marks`` the set's marks (None for a keylog: marks name samples)."""

    kind: str
    fields: tuple[str, ...]
    small: dict[str, np.ndarray]
    label: np.ndarray | None
    held: np.ndarray        # (n, keys) bool
    holds: np.ndarray       # (n,) seconds
    recordings: np.ndarray  # (n,) text
    frames: np.ndarray      # (n,) frame index

    def __init__(self, path: str, keys: list[str], image_shape: tuple[int, ...]):
        self.path, self.keys, self.image_shape = path, list(keys), tuple(image_shape)
        self.manifest: dict[str, Any] | None = None
        self.marks: MarkBook | None = None
        self.notes: list[str] = []
        self.lock = threading.Lock()  # one read of the set at a time (the server is threaded)
        self._videos: dict[str, Video] = {}
        self._video_locks: dict[str, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self.recordings)

    @property
    def title(self) -> str:
        return os.path.basename(self.path.rstrip("/" + os.sep)) or self.path

    def _chunks(self, positions: np.ndarray) -> Iterator[Chunk]:
        raise NotImplementedError

    def _one(self, position: int) -> dict[str, np.ndarray]:
        """The sample at ``position``: its small fields and what is derived from them (``held``, ``holds``,
        ``recordings``, ``frames``, ``label``), each as a one-row array."""
        at = slice(position, position + 1)
        return {**{name: column[at] for name, column in self.small.items()}, "held": self.held[at],
                "holds": self.holds[at], "recordings": self.recordings[at], "frames": self.frames[at],
                "label": None if self.label is None else self.label[at]}

    def summary(self, position: int) -> dict[str, Any]:
        """What a tile or a sample's page says of the sample at ``position``."""
        return self._summary(position, self._one(position))

    def summaries(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        """:meth:`summary` of each of ``positions`` (a page of tiles)."""
        return [self.summary(int(p)) for p in positions]

    def _summary(self, position: int, one: dict[str, np.ndarray]) -> dict[str, Any]:
        sample = {"position": position, "recording": str(one["recordings"][0]), "frame": int(one["frames"][0]),
                  "phase": str(one["phase"][0]), "hold": float(one["holds"][0]),
                  "held": [key for key, down in zip(self.keys, one["held"][0]) if down]}
        if one["label"] is not None:
            sample.update(label=float(one["label"][0]), augmented=bool(one["augmented"][0]), copy=int(one["copy"][0]))
        if self.marks is not None:
            sample["marked"] = bool(self.marks.marked({name: one[name] for name in IDENTITY})[0])
        return sample

    def images(self, positions: list[int]) -> dict[int, np.ndarray]:
        """The images (H, W, 3 RGB uint8) at ``positions``: only their rows are read (with every row before
        them, for a format without random access)."""
        wanted = np.unique(np.asarray(positions, np.int64))
        out: dict[int, np.ndarray] = {}
        with self.lock:
            for chunk in self._chunks(wanted):
                for image in chunk["image"]:
                    out[int(wanted[len(out)])] = image.copy()
        return out

    def video_path(self, recording: str) -> str | None:
        """The video of ``recording``, where known."""
        raise NotImplementedError

    def video_frames(self, recording: str, indices: list[int]) -> dict[int, np.ndarray]:
        """Frames of ``recording``'s video (BGR uint8), decoded on demand (PyAV seeks to each when that saves
        work); frames past the video's end are missing from the result."""
        path = self.video_path(recording)
        if path is None:
            return {}
        with self._video_locks.setdefault(path, threading.Lock()):
            return {int(i): frame.copy() for chunk in self._video(path).frames_at(indices)
                    for i, frame in zip(chunk["frame_index"], chunk["frame"])}

    def _video(self, path: str) -> Video:
        if path not in self._videos:
            self._videos[path] = Video(path)
        return self._videos[path]

    def fps(self, recording: str) -> tuple[float, bool]:
        """The rate a recording's frames are timed at: its video's labelled rate, or the recorder's nominal
        one (then False: no video tells)."""
        path = self.video_path(recording)
        if path is not None:
            try:
                fps = self._video(path).fps
            except JumpnetError:
                fps = None
            if fps:
                return fps, True
        return NOMINAL_FPS, False


class DatasetSource(Source):
    """A dataset of any format (a build folder's ``dataset.zarr``, with the build's manifest). Its small fields
    are read whole on first use (at once unless ``whole`` is False: then :meth:`blocks` reads them
    :data:`BLOCK_ROWS` at a time and a sample's summary its own rows, in memory flat in the set's length)."""

    kind = "dataset"
    fields = SMALL_FIELDS

    def __init__(self, path: str, manifest: dict[str, Any] | None, whole: bool = True):
        self.reader = open_dataset(path)
        super().__init__(self.reader.path, self.reader.keys, self.reader.image_shape)
        self.manifest = manifest
        self.marks = MarkBook(marks_path(self.path), os.path.abspath(self.path))
        self._known_videos = _provenance_videos(self.reader.provenance, {})
        if manifest:
            self._known_videos.update(_manifest_videos(manifest))
        if whole:
            self._whole  # noqa: B018 (read now: a damaged field is refused when the set is opened)

    @staticmethod
    def _derive(small: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The small fields with what the viewer derives from them."""
        return {**small, "held": small["keys_raw"] > 0.5, "holds": positive_holds(small["hold_duration"]),
                "recordings": small["source"].astype(str), "frames": small["frame_index"], "label": small["label"]}

    @cached_property
    def _whole(self) -> dict[str, np.ndarray]:
        return self._derive(self.reader.columns(list(SMALL_FIELDS)))

    @cached_property
    def small(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        return {name: self._whole[name] for name in SMALL_FIELDS}

    label = property(lambda self: self._whole["label"])  # type: ignore[assignment]
    held = property(lambda self: self._whole["held"])  # type: ignore[assignment]
    holds = property(lambda self: self._whole["holds"])  # type: ignore[assignment]
    recordings = property(lambda self: self._whole["recordings"])  # type: ignore[assignment]
    frames = property(lambda self: self._whole["frames"])  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.reader)

    def _one(self, position: int) -> dict[str, np.ndarray]:
        if "_whole" in self.__dict__:
            return super()._one(position)
        with self.lock:
            return self._derive(self.reader.column_rows(list(SMALL_FIELDS), position, position + 1))

    def summaries(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        """Not whole, the small fields of each stored block that holds some of ``positions`` are read once (a
        row at a time, a build's report spent 0.4 s reading its 30 tiles' fields)."""
        if "_whole" in self.__dict__:
            return super().summaries(positions)
        block = self.reader.column_block
        found: dict[int, dict[str, Any]] = {}
        for start in sorted({int(p) // block * block for p in positions}):
            with self.lock:
                rows = self._derive(self.reader.column_rows(list(SMALL_FIELDS), start, start + block))
            for p in {int(p) for p in positions if start <= p < start + block}:
                found[p] = self._summary(p, {name: column[p - start:p - start + 1] for name, column in rows.items()})
        return [found[int(p)] for p in positions]

    def blocks(self, names: list[str]) -> Iterator[dict[str, np.ndarray]]:
        """The small fields ``names`` in row order: whole once read, else :data:`BLOCK_ROWS` at a time."""
        if "_whole" in self.__dict__:
            yield {name: self._whole[name] for name in names}
            return
        rows = self.reader.column_block * max(1, BLOCK_ROWS // self.reader.column_block)
        for start in range(0, len(self), rows):
            with self.lock:
                block = self.reader.column_rows(names, start, start + rows)
            yield block

    def _chunks(self, positions: np.ndarray) -> Iterator[Chunk]:
        return self.reader.take(positions)

    def identities(self, positions: list[int]) -> list[Identity]:
        """The identities of the samples at ``positions`` (what their marks name)."""
        return identities({name: self.small[name][positions] for name in IDENTITY})

    def marked(self) -> np.ndarray:
        """Whether each sample is marked bad."""
        return self.marks.marked(self.small)

    def video_path(self, recording: str) -> str | None:
        path = self._known_videos.get(recording)
        return path if path is not None and os.path.isfile(path) else None

    def copies(self, position: int) -> np.ndarray:
        """Positions of the samples made from the same event as the one at ``position`` (its original and
        augmented copies, itself included), in copy order."""
        s = self.small
        same = (s["source"] == s["source"][position]) & (s["label"] == s["label"][position]) \
            & (s["frame_index"] == s["frame_index"][position]) & (s["release_index"] == s["release_index"][position])
        found = np.flatnonzero(same)
        return found[np.argsort(s["copy"][found], kind="stable")]


class KeylogSource(Source):
    """A recorder keylog: its events, in order (malformed entries left out and counted), with the video the
    recorder wrote beside it."""

    kind = "keylog"
    fields = EVENT_FIELDS[1:]

    def __init__(self, path: str):
        recording = Recording(path)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.fields}
        shape: tuple[int, ...] = ()
        for chunk in recording.events():
            shape = shape or tuple(chunk["image"].shape[1:])
            for name in self.fields:
                parts[name].append(chunk[name])
        if not shape:
            raise JumpnetError(path, "holds no events to show")
        super().__init__(recording.path, recording.keys, shape)
        self.small = small = {name: np.concatenate(p) for name, p in parts.items()}
        self.label = None
        self.held = small["multi_hot"] > 0.5
        self.holds = small["hold_durations"].astype(np.float64).max(axis=1)
        self.recordings = np.full(len(small["frame_idx"]), recording.name)
        self.frames = small["frame_idx"]
        malformed = sum(recording.malformed.values())
        if malformed:
            self.notes.append(f"{malformed} malformed entries left out ({', '.join(recording.malformed)})")
        self._video_file = _recorder_video(path)

    def _chunks(self, positions: np.ndarray) -> Iterator[Chunk]:
        return select_rows(Recording(self.path).events(), positions)

    def video_path(self, recording: str) -> str | None:
        return self._video_file


def open_source(path: str | os.PathLike, whole: bool = True) -> Source:
    """A build folder, a dataset (of any format) or a recorder keylog; anything else is refused with the
    error ``inspect`` gives it. ``whole``: a dataset's small fields are read at once (see :class:`DatasetSource`)."""
    path = os.fspath(path)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, MANIFEST)):
        dataset = os.path.join(path, BUILD_DATASET)
        if not os.path.exists(dataset):
            raise JumpnetError(path, f"is a build folder without {BUILD_DATASET} (an unfinished build?)")
        return DatasetSource(dataset, _read_manifest(path), whole)
    if path.lower().endswith(".npz") and is_keylog_file(path):
        return KeylogSource(path)
    return DatasetSource(path, _read_manifest(os.path.dirname(os.path.abspath(path.rstrip("/" + os.sep)))), whole)
