"""The build's record, ``DIR/manifest.json``: its inputs (with their hashes), options, every finished
stage (fingerprint, output, counts) and the accounting. Only the build's driver writes it."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import xxhash

from ..errors import JumpnetError
from ..formats import partial_path
from .inputs import MANIFEST


HASH = "xxh3_128"  # fast (a keylog of 9 GB in a few seconds of one core) and well kept; named in the manifest


def file_record(path: str, known: dict[str, Any] | None = None, stop: threading.Event | None = None) -> dict[str, Any]:
    """Path, size, modification time, inode and the :data:`HASH` of an input file, as
    ``{"hash": {"algorithm": HASH, "digest": hex}}``; the hash reused from ``known`` (the previous
    manifest's record) when size, modification time and inode are unchanged and it is of the same
    algorithm (so an unchanged input is not read again; a record of another algorithm is hashed anew).
    ``stop`` abandons it."""
    if not os.path.isfile(path):
        raise JumpnetError(path, "no such file")
    stat = os.stat(path)
    record = {"path": os.path.abspath(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
              "inode": stat.st_ino}
    if known and all(known.get(k) == record[k] for k in record) \
            and (known.get("hash") or {}).get("algorithm") == HASH and isinstance(known["hash"].get("digest"), str):
        return {**record, "hash": {"algorithm": HASH, "digest": known["hash"]["digest"]}}
    digest = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as f:
        block = bytearray(1 << 20)  # stays in cache while it is hashed
        while (n := f.readinto(block)) and not (stop and stop.is_set()):
            digest.update(memoryview(block)[:n])
    return {**record, "hash": {"algorithm": HASH, "digest": digest.hexdigest()}}


class InputHashes:
    """The inputs' records (:func:`file_record`), hashed one after another on a background thread
    (xxhash releases the GIL on large blocks), so hashing a keylog overlaps the stages instead of preceding
    them."""

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

    ORDER = ("tool", "options", "inputs", "stages", "outputs", "split", "accounting", "audit")

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

    def update(self, entries: dict[str, Any]) -> None:
        """Set build-wide entries (saved with the next record or save)."""
        self.data.update(entries)

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
