"""One shard of a build (``build --shard I/N``), for a job array without Dask (SLURM's ``--array``): the
per-recording work of recordings I, I+N, I+2N, ... Phase 1 (positives) always; phase 3 (negatives and the
positives' frames) too once every recording's phase 1 is done, by whichever shard (so the array is run
twice, the second after the first). The manifest is the driver's alone: a shard records what it finished in
``work/shard-I-of-N.json``; shards read each other's records, and a later plain build adopts them all
(:func:`adopt`) and reuses those stages.
"""

from __future__ import annotations

import glob
import json
import os
from functools import partial
from typing import Any

from ..errors import JumpnetError
from ..progress import progress_bar
from .execute import Executor, check_sizes, choose, survey
from .inputs import BuildOptions, Session
from .manifest import InputHashes, Manifest
from .plan import plan_frames, plan_positives, session_names


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)``, 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise JumpnetError(None, f"--shard takes I/N (e.g. 0/8), not {text!r}") from None
    if not 0 <= index < count:
        raise JumpnetError(None, f"--shard I/N needs 0 <= I < N, not {text}")
    return index, count


def _records(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join(glob.escape(folder), "work", "shard-*-of-*.json")))


def _read(path: str) -> dict[str, Any]:
    """A shard's records ({} if there are none, or they are unreadable: their stages are redone)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def adopt(data: dict[str, Any], folder: str) -> list[str]:
    """Merge the shards' records into a manifest's ``data`` (their stages over its own: a shard's record is
    of the last run that wrote that output; a stage is reused only if its fingerprint still matches); the
    record files merged."""
    paths = _records(folder)
    inputs: list[dict[str, Any]] = []
    for path in paths:
        shard = _read(path)
        data.setdefault("stages", {}).update(shard.get("stages", {}))
        inputs += shard.get("inputs", [])
    data["inputs"] = inputs + data.get("inputs", [])  # the shards' hashes first: they are the latest
    return paths


class ShardRecords(Manifest):
    """The manifest as one shard sees it: the driver's records and every shard's (read), and the records of
    this shard's own stages and inputs, which alone it writes, to ``work/shard-I-of-N.json``."""

    def __init__(self, folder: str, index: int, count: int):
        super().__init__(folder)
        adopt(self.data, folder)
        self.path = os.path.join(folder, "work", f"shard-{index}-of-{count}.json")
        self.own: dict[str, Any] = {"stages": {}, "inputs": [], **_read(self.path)}

    def record(self, stage: str, entry: dict) -> None:
        self.own["stages"][stage] = entry
        super().record(stage, entry)

    def start(self, stage: str) -> None:
        self.own["stages"].pop(stage, None)
        super().start(stage)

    def update(self, entries: dict[str, Any]) -> None:
        self.own.update(entries)
        super().update(entries)

    def save(self) -> None:
        everything, self.data = self.data, self.own  # written as the manifest is, atomically: its own only
        try:
            super().save()
        finally:
            self.data = everything


def run_shard(sessions: list[Session], folder: str, options: BuildOptions, index: int, count: int,
              quiet: bool) -> dict[str, Any]:
    """Run shard ``index`` of ``count`` (see the module's docstring) into ``folder`` (made and locked by the
    caller); what it ran, reused, and which recordings' phase 1 its phase 3 waits for."""
    folder = os.path.abspath(folder)
    names = session_names(sessions)
    mine = list(range(index, len(sessions), count))
    records = ShardRecords(folder, index, count)
    positives = plan_positives(sessions, options)
    others = [i for i in range(len(sessions)) if i not in mine]
    # Another recording's inputs are hashed only if its positives are recorded (their hashes with them).
    waiting = [i for i in others if positives[i].name not in records.data["stages"]
               or not os.path.exists(os.path.join(folder, positives[i].output))]
    hashed = [i for i in range(len(sessions)) if i not in waiting]
    hashes = InputHashes([path for i in hashed for path in (sessions[i].raw, sessions[i].video)], records)

    def inputs() -> dict[str, Any]:
        return {"inputs": [{"name": names[i], "raw": hashes[sessions[i].raw], "video": hashes[sessions[i].video]}
                           for i in mine]}
    bar = progress_bar(2 * len(mine), f"build shard {index}/{count}", unit="stage", quiet=quiet)
    executor = Executor(folder, records, hashes, bar, quiet, recorded=inputs)
    try:
        with bar:
            executor.run_each([positives[i] for i in mine])
            waiting += [i for i in others if i not in waiting and records.finished(
                positives[i].name, partial(executor.fingerprint, positives[i]),
                [os.path.join(folder, positives[i].output)]) is None]
            if not waiting:
                for i in others:
                    executor.prints[positives[i].name] = executor.fingerprint(positives[i])
                surveys = [survey(s.video, executor.output(spec), s.raw, options.radius)
                           for s, spec in zip(sessions, positives)]
                check_sizes(surveys)
                _, zones, chosen = choose(surveys, options)
                frames = plan_frames(sessions, positives, surveys, zones, chosen, options)
                executor.run_each([frames[i] for i in mine])
            executor.describe(**inputs())
            records.save()
    finally:
        hashes.close()
    return {"shard": f"{index}/{count}", "recordings": [names[i] for i in mine], "ran": executor.ran,
            "reused": executor.reused, "waiting_for": [names[i] for i in sorted(waiting)]}
