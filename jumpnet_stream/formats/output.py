"""Outputs that appear only when complete, and never over an input.

Every output is written to a hidden temporary sibling, ``.NAME.partial-HOST-PID``, and renamed over its
name only once complete; on failure the temporary output is removed, and what a killed run left is removed
by the next run writing that output. An output is checked before any work: its folder writable, not there
unless replacing is asked for, and none of the command's inputs.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import socket
from typing import Iterable

from ..errors import JumpnetError


def check_target(path: str, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = ()) -> str:
    """An output of any kind: its folder exists and is writable, it is not there unless ``overwrite``, and
    it is none of ``inputs`` (the same file or store, a link to one, inside one, or holding one)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise JumpnetError(path, f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise JumpnetError(path, f"output folder {parent} is not writable")
    for source in inputs:
        if overlaps(path, os.fspath(source)):
            raise JumpnetError(path, f"is an input of this command ({os.fspath(source)}): an output never replaces "
                                     "an input; choose another name")
    if os.path.lexists(path) and not overwrite:
        raise JumpnetError(path, "output exists (the overwrite option replaces it)")
    return path


def overlaps(output: str, source: str) -> bool:
    """Whether writing ``output`` could touch ``source``: the same path once links are followed, the same
    file (a hard link), or one inside the other (a store directory)."""
    out, src = os.path.realpath(output), os.path.realpath(source)
    if out == src or out.startswith(src + os.sep) or src.startswith(out + os.sep):
        return True
    try:
        return os.path.exists(out) and os.path.exists(src) and os.path.samefile(out, src)
    except OSError:
        return False


def disk_size(path: str | os.PathLike) -> int:
    """Bytes a dataset takes on disk: a file's size, or a store directory's files added up."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(folder, f)) for folder, _, files in os.walk(path) for f in files)


def partial_path(path: str) -> str:
    """Where an output is written until it is complete: a hidden sibling, ``.NAME.partial-HOST-PID`` (two
    hosts writing to one shared folder never collide)."""
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(parent, f".{name}.partial-{_HOST}-{os.getpid()}")


_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def remove_stale_partials(path: str) -> None:
    """Remove what killed runs on this host left of ``path``'s temporary outputs (their process is gone)."""
    parent, name = os.path.split(os.path.abspath(path))
    for stale in glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.partial-{_HOST}-*")):
        pid = stale.rsplit("-", 1)[-1].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            remove_output(stale)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_output(path: str) -> None:
    """Delete a file or a store directory, if it is there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


_interrupt: list[type[KeyboardInterrupt]] = []  # the Ctrl-C or SIGTERM the command line received, if any


def note_interrupt(kind: type[KeyboardInterrupt]) -> None:
    """A signal the command line turned into ``kind`` (and raised): no output lands after it, even if Python
    dropped that exception (one raised while a finalizer runs is only printed), until it is cleared."""
    _interrupt[:] = [kind]


def check_interrupt() -> None:
    """Raise the interrupt noted, if any (see :func:`note_interrupt`)."""
    if _interrupt:
        raise _interrupt[0]()


def clear_interrupt() -> None:
    """The interrupt noted was handled (the viewer stops on one; a command line run ends)."""
    _interrupt.clear()


def land(temp: str, path: str) -> None:
    """Move the finished output into place; an old output is replaced only once the new one is there (a
    link named as the output is replaced by the output, never its target). Not after an interrupt."""
    check_interrupt()
    if os.path.islink(path) and os.path.isdir(temp):
        os.remove(path)  # a directory cannot be renamed over a link
    old = f"{temp}.old"
    for attempt in range(LANDING_ATTEMPTS):
        remove_output(old)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.replace(path, old)
            os.replace(temp, path)  # atomic for files
            break
        except OSError as exc:  # another process landed the same output in between (a build's task run twice)
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST) or attempt == LANDING_ATTEMPTS - 1:
                raise
    remove_output(old)


#: Tries to land a store when another process lands the same one at the same moment (the same bytes: a
#: build's task that a Dask worker still ran for a driver that was killed, and the rerun's).
LANDING_ATTEMPTS = 20
