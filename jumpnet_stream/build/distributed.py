"""A build's tasks on Dask (issue 17): on the workers of an existing cluster (``scheduler``, e.g.
``tcp://host:8786``) or of a ``LocalCluster`` of worker processes on this machine (``workers``).

The driver (the process that called :func:`~jumpnet_stream.build.build`) plans, chooses the negatives and
writes the manifest; every stage spec (the shuffled set's: its spool and its ranges of chunks), every
input's hash and every recording's survey runs as a task on a worker, which writes its output into the
shared output folder under a name of its own (host and pid) and renames it into place. Imported only when a cluster is asked for: a build without one imports no Dask.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
import warnings
from typing import Any, Callable, Iterator

from distributed import Client, LocalCluster, as_completed
from distributed.scheduler import KilledWorker

from ..errors import JumpnetError
from ..pipeline import trim_heap
from .manifest import InputHashes, Manifest, file_record

MAX_WORKERS = 256
WORKER_WAIT = 120  # seconds a build waits for a scheduler's first worker


def _caught(fn: Callable[..., Any], *args: Any) -> tuple[Any, list[tuple[str, type]]]:
    """``fn(*args)`` on a worker, with the warnings it gave (the driver shows them, as a build here does); what
    the task freed goes back to the OS before the worker's next task (:func:`trim_heap`)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn(*args)
        return result, [(str(w.message), w.category) for w in caught]
    finally:
        trim_heap()


class Cluster:
    """A Dask client for one build or check: :meth:`__call__` is the executor's pool (tasks submitted at once,
    results as they finish), :meth:`hashes` the inputs' hashes computed by the workers."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None, tag: str = "tasks"):
        if (workers is None) == (scheduler is None):
            raise JumpnetError(None, "give either a number of workers or a scheduler's address, not both")
        if workers is not None and not 1 <= workers <= MAX_WORKERS:
            raise JumpnetError(None, f"workers must be between 1 and {MAX_WORKERS}, not {workers}")
        self.workers, self.scheduler = workers, scheduler
        self.prefix = f"jumpnet-{hashlib.sha256(tag.encode()).hexdigest()[:10]}-"  # every task's key begins so
        self.client: Client | None = None
        self.local: LocalCluster | None = None

    def __enter__(self) -> "Cluster":
        if self.scheduler is not None:
            try:
                self.client = Client(self.scheduler, timeout="10s", set_as_default=False)
            except (OSError, ValueError, TypeError) as exc:
                raise JumpnetError(self.scheduler, f"no Dask scheduler answers at this address ({exc})") from None
            client = self.client
            self._check_code(lambda: {"the scheduler": client.run_on_scheduler(code_id)})
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT)
            except (TimeoutError, OSError):
                client.close()
                raise JumpnetError(self.scheduler, f"no worker has joined this scheduler in {WORKER_WAIT} s: start "
                                                   f"some with 'dask worker {self.scheduler} --nthreads 1'") from None
            self._check_code(lambda: {f"worker {address}": found for address, found in client.run(code_id).items()})
        else:
            # One thread per worker process: our stages are single-threaded loops that hold the GIL.
            self.local = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self.local, set_as_default=False)
        return self

    def _check_code(self, ask: Callable[[], dict[str, str]]) -> None:
        """The scheduler (it unpickles the tasks) and every worker run this very jumpnet-stream (``ask``: their
        :func:`code_id` by name): another version or a stale copy on a node would give other bytes."""
        assert self.client is not None
        try:
            there = ask()
        except Exception as exc:  # it cannot even import this module: the error is Dask's or pickle's
            self.client.close()
            raise JumpnetError(self.scheduler, f"the cluster cannot run jumpnet-stream's tasks ({type(exc).__name__}: "
                                               f"{exc}): start its scheduler and workers in this environment") from None
        other = [name for name, found in there.items() if found != code_id()]
        if other:
            self.client.close()
            raise JumpnetError(self.scheduler, f"{', '.join(other)} run(s) another jumpnet-stream than this one: start "
                                               "the scheduler and workers in this environment")

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        self.stop_local()

    def stop_local(self) -> bool:
        """Close the LocalCluster, if this is one: its workers end, and what they were writing stays half
        written (the caller removes it). Whether there was one to close."""
        local, self.local = self.local, None
        if local is not None:
            local.close()
        return local is not None

    def __call__(self, fn: Callable[..., Any], tasks: list[tuple[str, tuple]]) -> Iterator[tuple[int, Any]]:
        """Every task ``(label, args)`` submitted as ``fn(*args)``; ``(index, result)`` as each finishes. A
        failing task raises its own error here (the first to fail; the others are cancelled); a task whose
        worker died too often (Dask reruns it on another each time) raises one naming its label."""
        assert self.client is not None, "use the cluster as a context manager"
        futures = {self.client.submit(_caught, fn, *args, key=self._key(label), pure=False):
                   (index, label) for index, (label, args) in enumerate(tasks)}
        try:
            for future in as_completed(futures, loop=self.client.loop):
                index, label = futures[future]
                try:
                    result, caught = future.result()
                except KilledWorker:
                    raise JumpnetError(None, f"{label}: every worker that ran it died (out of memory?); see the "
                                             "workers' logs") from None
                for message, category in caught:
                    warnings.warn(message, category, stacklevel=2)
                yield index, result
        finally:
            self.client.cancel(list(futures))

    def settle(self, timeout: float = 3600) -> None:
        """Wait for the tasks with this cluster's tag (a build's: its folder) that workers still run for a
        driver that was killed (Dask lets a running task end; its result is dropped): a rerun must not
        remove their partial outputs under them, nor land the same output beside them."""
        assert self.client is not None, "use the cluster as a context manager"
        deadline = time.monotonic() + timeout
        # call_stack(): every worker's running tasks, by key, including those the scheduler has forgotten
        while any(str(key).startswith(self.prefix) for stacks in self.client.call_stack().values() for key in stacks):
            if time.monotonic() > deadline:
                raise JumpnetError(None, f"the cluster's workers still run tasks of an earlier build of this "
                                         f"folder after {timeout:g} s: restart them, or wait")
            time.sleep(0.1)

    def _key(self, label: str) -> str:
        return f"{self.prefix}{re.sub(r'[^A-Za-z0-9_.]+', '_', label)[:60]}-{uuid.uuid4().hex}"

    def hashes(self, paths: list[str], manifest: Manifest) -> InputHashes:
        """The inputs' records (:func:`file_record`), each computed by a worker."""
        assert self.client is not None, "use the cluster as a context manager"
        return ClusterHashes(self.client, paths, manifest, self._key)


class ClusterHashes(InputHashes):
    """:class:`InputHashes` whose files are hashed by the cluster's workers, next to the other phase-1 tasks."""

    def __init__(self, client: Client, paths: list[str], manifest: Manifest,
                 key: Callable[[str], str]):  # noqa: super().__init__ not called: no thread pool here
        self._client = client
        self._records = {path: client.submit(file_record, path, manifest.known_input(path), pure=False,
                                             key=key(f"hash {os.path.basename(path)}")) for path in paths}

    def close(self) -> None:
        self._client.cancel(list(self._records.values()))


def code_id() -> str:
    """A hash of this jumpnet-stream's source files (what a cluster's every process must run alike)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(f for f in files if f.endswith(".py")):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(os.path.relpath(os.path.join(folder, name), root).encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]

