"""Frame history: the K video frames before each sample (S frames apart), stored once per video frame in the
dataset store and shared by every sample (and augmented copy) whose history holds it.

Layout, a ``history`` group inside ``dataset.zarr`` (M frames, M <= K x samples, fewer where stacks overlap)::

    history/image        (M, H, W, 3) uint8  one frame per chunk (a sample reads K chunks), zstd level 1
    history/frame_index  (M,)         int64  the video frame
    history/recording    (M,)         int32  which recording (attrs "sources": sample source -> recording)
    attrs: frames (K), stride (S), sources

A sample's stack is looked up by its ``source`` and ``frame_index``: frames ``frame_index - S*k`` for k = K..1,
oldest first; one before the video's start is padding (zeros, mask False). Per sample the layout costs the
frames no other sample shares (K x 23 KB compressed for 227x227 at most) and nothing in the sample's row.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np
import zarr
from numcodecs import Zstd
from zarr.codecs import ZstdCodec

from .errors import JumpnetError
from .formats.output import land, partial_path

GROUP = "history"
_KEY_ENCODING = {"name": "default", "separator": "."}


def offsets(count: int, stride: int) -> np.ndarray:
    """How far back each history frame is, oldest first: S*K ... S."""
    return stride * np.arange(count, 0, -1, dtype=np.int64)


def needed(frames: np.ndarray, count: int, stride: int) -> np.ndarray:
    """The video frames (sorted, unique, none before the start) the histories of samples at ``frames`` need."""
    wanted = (np.asarray(frames, np.int64)[:, None] - offsets(count, stride)[None, :]).ravel()
    return np.unique(wanted[wanted >= 0])


def _create(group: Any, rows: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
    arrays = {"image": group.create_array("image", shape=(rows, *image_shape), dtype="uint8",
                                          chunks=(1, *image_shape), compressors=ZstdCodec(level=1),
                                          chunk_key_encoding=_KEY_ENCODING, fill_value=0)}
    for name, dtype in (("frame_index", "int64"), ("recording", "int32")):
        arrays[name] = group.create_array(name, shape=(rows,), dtype=dtype, chunks=(max(rows, 1),),
                                          compressors=ZstdCodec(level=3), fill_value=0)
    return arrays


class HistoryWriter:
    """A recording's history frames, given in increasing frame order, written as a store of its own (``path``,
    landed when :meth:`finish` runs) that :func:`attach` later copies into the dataset."""

    def __init__(self, path: str, frames: int, image_shape: tuple[int, ...], sources: list[str]):
        self.path, self.partial = path, partial_path(path)
        shutil.rmtree(self.partial, ignore_errors=True)
        self._group = zarr.open_group(self.partial, mode="w-", zarr_format=3)
        self._group.attrs["sources"] = sources
        self._arrays = _create(self._group, frames, image_shape)
        self._indices = np.full(frames, -1, np.int64)
        self._zstd = Zstd(level=1)
        self.rows = 0

    def add(self, frame: int, image: np.ndarray) -> None:
        with open(os.path.join(self.partial, "image", f"c.{self.rows}.0.0.0"), "wb") as f:
            f.write(self._zstd.encode(np.ascontiguousarray(image)))
        self._indices[self.rows] = frame
        self.rows += 1

    def finish(self) -> None:
        for array in self._arrays.values():
            array.resize((self.rows, *array.shape[1:]))
        self._arrays["frame_index"][:] = self._indices[:self.rows]
        land(self.partial, self.path)

    def abort(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def attach(store: str, recordings: list[str], count: int, stride: int) -> int:
    """Copy each recording's history store into ``store``'s history group (replacing any); returns its frames.
    Two recordings whose samples share a source name could not be told apart, so that is refused."""
    parts = [zarr.open_group(path, mode="r") for path in recordings]
    sources: dict[str, int] = {}
    for number, part in enumerate(parts):
        for source in part.attrs["sources"]:
            if sources.setdefault(source, number) != number:
                raise JumpnetError(recordings[number], f"another recording's samples are also named '{source}': "
                                                       "frame history needs recordings with distinct names")
    rows = sum(part["frame_index"].shape[0] for part in parts)
    image_shape = next((tuple(p["image"].shape[1:]) for p in parts if p["image"].shape[0]), (227, 227, 3))
    final = os.path.join(store, GROUP)
    work = partial_path(final)
    shutil.rmtree(work, ignore_errors=True)
    group = zarr.open_group(work, mode="w-", zarr_format=3)
    arrays = _create(group, rows, image_shape)
    at = 0
    for number, (path, part) in enumerate(zip(recordings, parts)):
        n = part["frame_index"].shape[0]
        for i in range(n):  # chunk files copied as they are: one frame each
            shutil.copyfile(os.path.join(path, "image", f"c.{i}.0.0.0"), os.path.join(work, "image", f"c.{at + i}.0.0.0"))
        arrays["frame_index"][at:at + n] = part["frame_index"][:]
        arrays["recording"][at:at + n] = number
        at += n
    group.attrs.update({"frames": int(count), "stride": int(stride), "sources": sources})
    land(work, final)
    return rows


def describe(store: str) -> dict[str, int] | None:
    """A store's history settings ({"frames", "stride", "stored"}), or None when it has none."""
    if not os.path.isdir(os.path.join(store, GROUP)):
        return None
    group = zarr.open_group(os.path.join(store, GROUP), mode="r")
    return {"frames": int(group.attrs["frames"]), "stride": int(group.attrs["stride"]),
            "stored": int(group["frame_index"].shape[0])}


class HistoryFrames:
    """The stored history of a dataset (its images ``image_shape``), read a frame (one chunk file) at a time;
    no file stays open, so it crosses into worker processes as it is."""

    def __init__(self, path: str, count: int, image_shape: tuple[int, ...]):
        self.path, self.count = path, count
        info = describe(path) if os.path.isdir(path) else None
        if info is None:
            raise JumpnetError(path, f"has no frame history: build it with history {count} (only a build's "
                                     "dataset.zarr holds history)")
        if count > info["frames"]:
            raise JumpnetError(path, f"holds {info['frames']} history frames per sample, not {count}")
        group = zarr.open_group(os.path.join(path, GROUP), mode="r")
        self.stride = info["stride"]
        if tuple(group["image"].shape[1:]) != tuple(image_shape):
            raise JumpnetError(path, f"history frames are {tuple(group['image'].shape[1:])}, its images {image_shape}")
        self.image_shape = tuple(image_shape)
        self._sources = {str(k): int(v) for k, v in group.attrs["sources"].items()}
        self._keys = group["recording"][:].astype(np.int64) << 40 | group["frame_index"][:]
        self._order = np.argsort(self._keys, kind="stable")
        self._sorted = self._keys[self._order]
        self._folder = os.path.join(path, GROUP, "image")
        self._zstd = Zstd()

    def stack(self, source: str, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` frames before ``frame`` of ``source``'s video, oldest first, and which are real."""
        images = np.zeros((self.count, *self.image_shape), np.uint8)
        wanted = frame - offsets(self.count, self.stride)
        real = wanted >= 0
        recording = self._sources.get(source)
        if recording is None:
            raise JumpnetError(self.path, f"has no history frames of '{source}'")
        keys = (recording << 40) | wanted[real]
        at = np.searchsorted(self._sorted, keys)
        if (at >= len(self._sorted)).any() or (self._sorted[np.minimum(at, len(self._sorted) - 1)] != keys).any():
            raise JumpnetError(self.path, f"lacks a history frame of '{source}' before frame {frame}")
        for slot, row in zip(np.flatnonzero(real), self._order[at]):
            with open(os.path.join(self._folder, f"c.{row}.0.0.0"), "rb") as f:
                self._zstd.decode(f.read(), out=images[slot])  # into the frame: never more than its size
        return images, real
