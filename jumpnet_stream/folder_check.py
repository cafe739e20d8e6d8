"""``jumpnet-stream check DIR``: every recording of a folder checked against its video (:func:`sync.check_sync`
each), one after another, or in parallel on Dask workers (``workers``/``scheduler``, as ``build`` takes them).
A recording that cannot be checked is reported with its one-line error; the others are still checked."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .build.execute import in_process
from .build.inputs import pair_directory
from .build.plan import session_names
from .errors import JumpnetError
from .sync import SyncReport, check_sync


@dataclass
class FolderCheck:
    """Each recording's :class:`SyncReport`, or its error; the folder's verdict: "error" if any recording could
    not be checked, else "suspect" if any is, else "ok"."""

    folder: str
    reports: dict[str, SyncReport] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.errors:
            return "error"
        return "suspect" if any(r.verdict != "ok" for r in self.reports.values()) else "ok"

    def counts(self) -> dict[str, Any]:
        return {"folder": self.folder, "verdict": self.verdict,
                "recordings": {**{name: r.counts() for name, r in self.reports.items()},
                               **{name: {"verdict": "error", "error": e} for name, e in self.errors.items()}}}

    def text(self) -> str:
        suspect = [name for name, r in self.reports.items() if r.verdict != "ok"]
        lines = [r.text() for r in self.reports.values()]
        lines += [f"check {name}: error: {error}" for name, error in self.errors.items()]
        lines.append(f"check {self.folder}: {len(self.reports) + len(self.errors)} recordings, "
                     f"{len(self.reports) - len(suspect)} ok"
                     + (f", suspect: {', '.join(suspect)}" if suspect else "")
                     + (f", could not be checked: {', '.join(self.errors)}" if self.errors else ""))
        return "\n".join(lines)


def _check_one(raw: str, video: str, options: dict[str, Any]) -> SyncReport | JumpnetError:
    """One recording's check, as a worker runs it; its error returned, not raised (the others go on)."""
    try:
        return check_sync(raw, video, **options)
    except JumpnetError as exc:
        return exc


def check_folder(folder: str | os.PathLike, *, workers: int | None = None, scheduler: str | None = None,
                 **options: Any) -> FolderCheck:
    """Check every recording ``folder`` holds (paired as ``build`` pairs them; named by absolute paths);
    ``options`` are :func:`check_sync`'s (``quiet`` is implied: there is one line per recording at the end)."""
    folder = os.fspath(folder)
    sessions = pair_directory(folder)
    options = {**options, "quiet": True}
    tasks = [(name, (os.path.abspath(s.raw), os.path.abspath(s.video), options))  # a worker's folder may differ
             for s, name in zip(sessions, session_names(sessions))]
    if workers is None and scheduler is None:
        results = dict(in_process(_check_one, tasks))
    else:
        from .build.distributed import Cluster

        with Cluster(workers, scheduler, tag=f"check {os.path.abspath(folder)}") as pool:
            results = dict(pool(_check_one, tasks))
    check = FolderCheck(folder)
    for index, (name, _) in enumerate(tasks):
        result = results[index]
        if isinstance(result, JumpnetError):
            check.errors[name] = str(result)
        else:
            check.reports[name] = result
    return check
