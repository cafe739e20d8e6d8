"""How every stage goes from chunks to an output: one loop, written once.

A stage is a generator over chunks (``Iterator[Chunk] -> Iterator[Chunk]``, testable on a hand-made list)
plus a report of what it counted. :func:`run_stage` writes what the generator yields to an output that
lands only when complete, advances the progress bar, and records the stage in the output's provenance
(its parameters, inputs and counts, after whatever history the inputs carried).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator

from .chunk import Chunk
from .formats import create_dataset
from .pipeline import BufferPool
from .progress import progress_bar


def run_stage(chunks: Iterable[Chunk], output: str | os.PathLike, *, keys: list[str], stage: str,
              parameters: dict[str, Any], inputs: list[dict[str, Any]], counts: Callable[[int], dict[str, Any]],
              history: list[dict[str, Any]] = (), bar: Any = None, advance: Callable[[Chunk], int] = len,
              **dataset: Any) -> int:
    """Write ``chunks`` to ``output`` (``dataset``: :func:`formats.create_dataset`'s options); returns the
    rows written. ``counts(rows)`` is asked once every chunk is written; ``advance(chunk)`` is how far the
    progress bar moves for a chunk."""
    bar = bar if bar is not None else progress_bar(None, stage, quiet=True)
    with bar, create_dataset(output, keys, **dataset) as writer:
        for chunk in chunks:
            writer.write(chunk)
            bar.update(advance(chunk))
        writer.provenance = [*history, {"stage": stage, "parameters": parameters, "inputs": inputs,
                                        "counts": counts(writer.rows)}]
    return writer.rows


def recycled(chunks: Iterable[Chunk], buffers: BufferPool) -> Iterator[Chunk]:
    """The chunks, each image array given back to ``buffers`` once the consumer asks for the next one
    (writers keep no reference to a chunk's arrays once ``write`` returns)."""
    for chunk in chunks:
        yield chunk
        buffers.give(chunk["image"])


def described(path: str | os.PathLike, **facts: Any) -> dict[str, Any]:
    """An input as a stage record names it: its absolute path and what else the stage says of it."""
    return {"path": os.path.abspath(os.fspath(path)), **facts}
