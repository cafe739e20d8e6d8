"""What a build is given: the recorder's sessions (a keylog and its video each), found in folders, given in
pairs or in a config file, and every option it takes (validated once, on construction)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from typing import Any

from ..errors import JumpnetError
from ..formats.legacy_npz import HOLDS
from ..stages.augment import check_multiplier
from ..stages.negatives import check_radius
from ..stages.frames import POSITIVE_IMAGES
from ..stages.preprocess import PAIRINGS

MANIFEST = "manifest.json"
HELD_FRAMES = ("exclude", "negative")
MAX_RATIO = 1000
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")


@dataclass(frozen=True)
class Session:
    """One recorder session: its keylog and its video."""

    raw: str
    video: str

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.raw))[0]


MAX_HISTORY = 32          # frames of history per sample: 32 x 154 KB is 5 MB a sample as read
MAX_HISTORY_STRIDE = 3600  # a minute at 60 fps between history frames


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
    held_frames: str = "exclude"   # frames while the jump key is held: left out, or (seed) negatives
    val_fraction: float = 0.0      # the share that validates: whole recordings, or blocks of each (0: none)
    negative_ratio: float | None = None  # negatives = ratio x positives (after augmentation), per split
    positive_images: str = "video"  # positives' images: the video frame at the press (label masked), or keylog
    history: int = 0               # video frames before each sample stored with it (0: none)
    history_stride: int = 1        # frames between them
    exclude: str | None = None     # a marks file (the viewer's): the samples it names are left out of the set

    def __post_init__(self) -> None:
        for name in ("multiplier", "negatives", "radius"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise JumpnetError(None, f"{name} must be a whole number, 0 or more, not {getattr(self, name)!r}")
        for name, least, most in (("history", 0, MAX_HISTORY), ("history_stride", 1, MAX_HISTORY_STRIDE)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
                raise JumpnetError(None, f"{name} must be a whole number between {least} and {most}, not {value!r}")
        check_radius(self.radius)
        check_multiplier(self.multiplier)
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 63:
            raise JumpnetError(None, f"seed must be between 0 and 2**63 - 1, not {self.seed!r}")
        if not isinstance(self.key, str) or not self.key:
            raise JumpnetError(None, f"key must be a key name, not {self.key!r}")
        if self.pairing not in PAIRINGS:
            raise JumpnetError(None, f"pairing must be one of {', '.join(PAIRINGS)}, not {self.pairing!r}")
        if self.hold not in HOLDS:
            raise JumpnetError(None, f"hold must be one of {', '.join(HOLDS)}, not {self.hold!r}")
        if self.held_frames not in HELD_FRAMES:
            raise JumpnetError(None, f"held_frames must be one of {', '.join(HELD_FRAMES)}, not {self.held_frames!r}")
        if self.positive_images not in POSITIVE_IMAGES:
            raise JumpnetError(None, f"positive_images must be one of {', '.join(POSITIVE_IMAGES)}, "
                                     f"not {self.positive_images!r}")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) \
                or not 0 <= self.val_fraction < 1:
            raise JumpnetError(None, f"val_fraction must be at least 0 and below 1, not {self.val_fraction!r}")
        if self.negative_ratio is not None and (isinstance(self.negative_ratio, bool)
                                                or not isinstance(self.negative_ratio, (int, float))
                                                or not 0 < self.negative_ratio <= MAX_RATIO):
            raise JumpnetError(None, f"negative_ratio must be above 0 and at most {MAX_RATIO}, "
                                     f"not {self.negative_ratio!r}")

    @property
    def mask(self) -> bool:
        """Images from the video carry the recorder's key label on press frames: masked in both classes."""
        return self.positive_images == "video"


OPTION_NAMES = tuple(f.name for f in fields(BuildOptions))


def pair_directory(folder: str | os.PathLike) -> list[Session]:
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
                                    "(pair it with its video by hand)")
        if len(matches) > 1:
            raise JumpnetError(raw, f"several videos could be its recording: {', '.join(matches)} "
                                    "(pair it with its video by hand)")
        pairs.append(Session(raw, matches[0]))
    if not pairs:
        raise JumpnetError(folder, "no recordings found (<name>.npz with <name>_<HHMMSS>.mp4)")
    return pairs


def pair_files(raws: list[str], videos: list[str]) -> list[Session]:
    """Keylogs and their videos given in pairs, in order (the CLI's ``--recording``/``--video``)."""
    if len(raws) != len(videos):
        raise JumpnetError(None, f"keylogs and videos go in pairs: got {len(raws)} keylogs and {len(videos)} videos")
    return [Session(os.fspath(raw), os.fspath(video)) for raw, video in zip(raws, videos)]


def load_config(path: str | os.PathLike) -> tuple[list[Session], dict[str, Any]]:
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
        recordings.append(Session(resolve(entry["raw"], "raw"), resolve(entry["video"], "video")))
    for folder in folders:
        recordings += pair_directory(resolve(folder, "a directory"))
    for name in ("output", "exclude"):
        if name in config:
            config[name] = resolve(config[name], name)
    unknown = set(config) - set(OPTION_NAMES) - {"output"}
    if unknown:
        raise JumpnetError(path, f"unknown setting(s) {', '.join(sorted(unknown))}: known are "
                                 f"{', '.join(OPTION_NAMES + ('output', 'recording', 'directories'))}")
    types = {f.name: f.type for f in fields(BuildOptions)}
    kinds = {"int": ((int,), "a whole number"), "bool": ((bool,), "true or false"), "str": ((str,), "a string"),
             "float": ((int, float), "a number"), "float | None": ((int, float), "a number")}
    for name, value in config.items():
        allowed, kind = kinds.get(types.get(name, "str"), kinds["str"])
        if type(value) not in allowed:  # bool is an int, and an int is no bool: the exact type
            raise JumpnetError(path, f"setting {name} must be {kind}, not {value!r}")
    return recordings, config
