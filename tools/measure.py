"""Peak resident memory of a command, measured by the kernel (``wait4``), optionally under a memory cap,
for tests and benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from typing import Sequence

# Linux keeps ru_maxrss across execve, and a forked child starts as a copy of its parent: a command
# started straight from a large process (pytest after a few hundred tests: 320 MB) reports the parent's
# size. A small launcher forks the command from its own small image, applies the cap in the child,
# watches it and reports the command's own rusage.
_LAUNCHER = """
import json, os, resource, signal, sys, time
report, data_mb, kill_mb, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
pid = os.fork()
if pid == 0:
    if data_mb:
        resource.setrlimit(resource.RLIMIT_DATA, (data_mb << 20, data_mb << 20))
    os.execvp(sys.argv[5], sys.argv[5:])

def resident_mb():
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:")), 0.0)
    except OSError:
        return 0.0

killed, deadline = None, time.monotonic() + timeout
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG if kill_mb or timeout else 0)
    if done:
        break
    if killed is None:
        rss = resident_mb()
        if kill_mb and rss > kill_mb:
            killed = f"resident {rss:.0f} MB"
        elif timeout and time.monotonic() > deadline:
            killed = f"still running after {timeout:g} s"
        if killed:
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.01)
with open(report, "w") as f:
    json.dump({"code": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss, "killed": killed}, f)
"""


def run_measured(cmd: Sequence[str], env: dict | None = None, *, data_limit_mb: int = 0, kill_above_mb: float = 0,
                 timeout: float = 0) -> subprocess.CompletedProcess:
    """Run ``cmd`` (optionally under ``RLIMIT_DATA`` of ``data_limit_mb``, killed when resident above
    ``kill_above_mb`` or after ``timeout`` s); the result also carries ``peak_mb`` (the command's own peak
    resident memory) and ``killed`` (why the watcher killed it, or None)."""
    with tempfile.TemporaryDirectory() as work:
        report = os.path.join(work, "rusage.json")
        proc = subprocess.run([sys.executable, "-c", _LAUNCHER, report, str(data_limit_mb), str(kill_above_mb),
                               str(timeout), *map(str, cmd)], capture_output=True, encoding="utf-8",
                              errors="replace", env={**(os.environ if env is None else env), "OPENBLAS_NUM_THREADS": "1"})
        if not os.path.exists(report):
            raise RuntimeError(f"measuring {cmd[0]} failed: {proc.stderr.strip()}")
        with open(report) as f:
            usage = json.load(f)
    result = subprocess.CompletedProcess(list(cmd), usage["code"], proc.stdout, proc.stderr)
    result.peak_mb = usage["maxrss_kb"] / 1024
    result.killed = usage["killed"]
    return result


def run_peak_rss(cmd: Sequence[str], env: dict | None = None) -> tuple[int, float, str, str]:
    """Run ``cmd``; return (exit code, its own peak RSS in MB, stdout, stderr)."""
    result = run_measured(cmd, {**os.environ, **(env or {})})
    return result.returncode, result.peak_mb, result.stdout, result.stderr


class AnonymousPeaks:
    """The peak anonymous memory (``RssAnon``: what a process itself allocated, without the library files'
    pages that RSS also counts) of running processes, MB, polled every ``interval`` s from a thread while
    the ``with`` block runs. RSS of the same work depends on the page cache: right after the libraries are
    installed (their files whole in the cache) the kernel maps more of each per fault, about 60-90 MB more
    per process here. A peak shorter than ``interval`` can be missed."""

    def __init__(self, pids: Sequence[int], interval: float = 0.02):
        self.peaks = {pid: 0.0 for pid in pids}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for pid in self.peaks:
                self.peaks[pid] = max(self.peaks[pid], anonymous_mb(pid))
            self._stop.wait(self._interval)

    def __enter__(self) -> "AnonymousPeaks":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def anonymous_mb(pid: int) -> float:
    """A process's anonymous resident memory now (``RssAnon``), MB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith("RssAnon:")), 0.0)
    except OSError:
        return 0.0
