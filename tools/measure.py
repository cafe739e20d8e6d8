"""Peak resident memory of a command, measured by the kernel (``wait4``), for tests and benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Sequence

# Linux keeps ru_maxrss across execve, and a forked child starts as a copy of its parent: a command
# started straight from a large process (pytest with data loaded) would report the parent's size.
# A small launcher forks the command from its own small image and reports the command's rusage.
_LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"code": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}, f)
"""


def run_peak_rss(cmd: Sequence[str], env: dict | None = None) -> tuple[int, float, str, str]:
    """Run ``cmd``; return (exit code, its own peak RSS in MB, stdout, stderr)."""
    with tempfile.TemporaryDirectory() as work:
        report = os.path.join(work, "rusage.json")
        proc = subprocess.run([sys.executable, "-c", _LAUNCHER, report, *cmd], capture_output=True, text=True,
                              env={**os.environ, "OPENBLAS_NUM_THREADS": "1", **(env or {})})
        if proc.returncode:
            raise RuntimeError(f"measuring {cmd[0]} failed: {proc.stderr.strip()}")
        with open(report) as f:
            usage = json.load(f)
    return usage["code"], usage["maxrss_kb"] / 1024, proc.stdout, proc.stderr
