"""Names as text every format can store: a file name's bytes that are not UTF-8 (Python keeps them as lone
surrogates) cannot be written to zarr attributes, string columns or UTF-8 JSON, so they are escaped."""

from __future__ import annotations

import os
from typing import Any


def printable(text: str) -> str:
    """``text`` with every character that is not valid Unicode text escaped (``caf\\udce9`` for the Latin-1
    byte of ``café``); valid text is returned as it is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def stem(path: str) -> str:
    """A file's name without folder and extension, printable: the recording's name it stands for."""
    return printable(os.path.splitext(os.path.basename(path))[0])


def printable_tree(value: Any) -> Any:
    """A JSON-like structure (a dataset's provenance) with every string made :func:`printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_tree(k): printable_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable_tree(v) for v in value]
    return value
