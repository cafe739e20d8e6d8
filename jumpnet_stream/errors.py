"""The tool's own error type: one line that names the file and the problem."""

from __future__ import annotations

import os


class JumpnetError(Exception):
    """A problem with a user's input or output; rendered as ``PATH: message`` on one line."""

    def __init__(self, path: str | os.PathLike | None, message: str):
        self.path = None if path is None else os.fspath(path)
        self.message = " ".join(str(message).split())
        super().__init__(str(self))

    def __str__(self) -> str:
        return self.message if self.path is None else f"{self.path}: {self.message}"

    def __reduce__(self) -> tuple:
        """Pickled as its path and message (a build's worker process hands its error to the driver)."""
        return type(self), (self.path, self.message)


class UnsafeInputError(JumpnetError):
    """An input that names code to run on loading (a hostile pickle): refused, never half-used."""
