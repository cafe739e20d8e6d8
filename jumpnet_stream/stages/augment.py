"""Stage 3, augment: every original kept unchanged, plus ``multiplier`` augmented copies of each training sample.

Output order is per sample: the original, then its copies 1..multiplier, so the result does not
depend on chunking. Copy ``k`` of the sample at row ``i`` of the input depends only on (seed, i, k).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

import numpy as np

from ..chunk import DEFAULT_ROWS, Chunk
from ..errors import JumpnetError
from ..formats import check_output, jump_key, open_dataset
from ..kernels import augment_images
from ..progress import progress_bar
from ..runner import described, run_stage


MAX_MULTIPLIER = 64  # copies per sample: one sample's copies are made and written together (10 MB at 64)


def check_multiplier(multiplier: int) -> None:
    if not isinstance(multiplier, int) or not 0 <= multiplier <= MAX_MULTIPLIER:
        raise JumpnetError(None, f"multiplier must be between 0 and {MAX_MULTIPLIER}, not {multiplier!r}")


@dataclass(frozen=True)
class AugmentOptions:
    """Copies per sample and the probability of each transform; validated on construction."""

    multiplier: int = 2
    seed: int = 0
    p_flip: float = 0.5
    p_brightness: float = 0.5
    p_noise: float = 0.3
    p_shift: float = 0.3

    def __post_init__(self) -> None:
        check_multiplier(self.multiplier)
        if not 0 <= self.seed < 2 ** 63:
            raise JumpnetError(None, f"seed must be between 0 and 2**63 - 1, not {self.seed}")
        for name in ("p_flip", "p_brightness", "p_noise", "p_shift"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise JumpnetError(None, f"{name} must be between 0 and 1, not {getattr(self, name)}")

    def probabilities(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k.startswith("p_")}


@dataclass
class AugmentReport:
    originals: int = 0
    copies: int = 0
    written: int = 0


def augment_chunks(chunks: Iterable[Chunk], options: AugmentOptions) -> Iterator[Chunk]:
    """Sample chunks in, chunks of originals each followed by its augmented copies out. Only training samples
    are augmented: a validation sample (``split`` "val") stays a single original, so no copy of it can
    reach the training part. Copies are marked (``augmented``, ``copy`` 1..multiplier)."""
    offset = 0
    for chunk in chunks:
        n = len(chunk)
        train = chunk["split"] != "val" if "split" in chunk.fields else np.ones(n, bool)
        rows = np.flatnonzero(train)
        copies = augment_images(np.ascontiguousarray(chunk["image"][rows]), offset + rows, options.multiplier,
                                options.seed, **options.probabilities())
        counts = np.where(train, options.multiplier + 1, 1)
        source = np.repeat(np.arange(n), counts)
        number = np.arange(len(source)) - np.repeat(np.cumsum(counts) - counts, counts)  # 0 for the original
        images = np.empty((len(source), *chunk["image"].shape[1:]), np.uint8)
        images[number == 0] = chunk["image"]
        images[number > 0] = copies.reshape(-1, *chunk["image"].shape[1:])
        columns = {name: column[source] for name, column in chunk.columns.items() if name != "image"}
        columns.update(augmented=number > 0, copy=number.astype(np.int32))
        yield Chunk({"image": images, **columns})
        offset += n


def _pieces(chunks: Iterable[Chunk], rows: int) -> Iterator[Chunk]:
    """Each chunk as views of ``rows`` rows: the input is read a stored chunk at a time (a read of part of one
    decodes it whole, into a buffer of its own), and augmented a piece at a time (its copies are in memory)."""
    for chunk in chunks:
        for start in range(0, len(chunk), rows):
            yield chunk.take(slice(start, start + rows))


def augment(input: str | os.PathLike, output: str | os.PathLike, options: AugmentOptions = AugmentOptions(), *,
            overwrite: bool = False, quiet: bool = True) -> AugmentReport:
    """Write every sample of ``input`` and its augmented copies to ``output``."""
    input, output = os.fspath(input), os.fspath(output)
    check_output(output, overwrite, inputs=[input])
    dataset = open_dataset(input)
    report = AugmentReport(originals=len(dataset))
    per = options.multiplier + 1  # output chunks stay about DEFAULT_ROWS samples, whatever the multiplier

    def counts(rows: int) -> dict:
        report.written, report.copies = rows, rows - report.originals
        return asdict(report)

    pieces = _pieces(dataset.chunks(), max(1, DEFAULT_ROWS // per))
    run_stage(augment_chunks(pieces, options), output, keys=dataset.keys, stage="augment",
              parameters=asdict(options), inputs=[described(input, samples=len(dataset))], counts=counts,
              history=dataset.provenance, advance=lambda chunk: int(np.count_nonzero(~chunk["augmented"])),
              bar=progress_bar(len(dataset), f"augment {os.path.basename(input)}", unit="sample", quiet=quiet),
              image_shape=dataset.image_shape, jump_key=jump_key(dataset.provenance), overwrite=overwrite)
    return report
