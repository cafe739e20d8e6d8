"""See the data: ``serve`` a local web page over a dataset, build folder or keylog (``jumpnet-stream view``),
``write_report`` a build's one-file offline report (``DIR/report.html``), and the marks of samples judged bad
(``load_marks``, and ``drop_marked`` to leave them out of a stage's chunks: ``--exclude``).

Each is imported on first use (PEP 562), so registering the ``view`` command costs the command line nothing."""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {"serve": "server", "write_report": "report", "IDENTITY": "marks", "drop_marked": "marks",
            "load_marks": "marks", "marks_path": "marks"}
__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
