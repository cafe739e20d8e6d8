"""Progress bars on stderr for long work: shown only on a terminal, and never with ``quiet``."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, *, unit: str = "it", quiet: bool = False) -> tqdm:
    """A tqdm bar on stderr; disabled (a no-op) when quiet or when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", file=sys.stderr,
                disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True, leave=False)
