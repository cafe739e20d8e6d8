"""Peak resident memory of a command, measured by the kernel (``wait4``), for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Sequence


def run_peak_rss(cmd: Sequence[str], env: dict | None = None) -> tuple[int, float, str, str]:
    """Run ``cmd``; return (exit code, its own peak RSS in MB, stdout, stderr)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err,
                                env={**os.environ, "OPENBLAS_NUM_THREADS": "1", **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, usage.ru_maxrss / 1024, out.read(), err.read()
