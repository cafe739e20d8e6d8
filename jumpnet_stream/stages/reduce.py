"""Stage 5, reduce: keep ``keep`` samples chosen uniformly without replacement, seeded, in order.

The choice is made on indices first; then only the chosen rows are copied, chunk by chunk.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from ..formats import check_output, jump_key, open_dataset
from ..progress import progress_bar
from ..runner import described, run_stage
from ..sampling import choose


@dataclass
class ReduceReport:
    total: int = 0
    kept: int = 0
    dropped: int = 0


def reduce(input: str | os.PathLike, output: str | os.PathLike, *, keep: int, seed: int = 42,
           overwrite: bool = False, quiet: bool = True) -> ReduceReport:
    """Copy ``keep`` rows of ``input`` chosen by :func:`sampling.choose` to ``output``, in their order."""
    input, output = os.fspath(input), os.fspath(output)
    choose(0, keep, seed)  # validates keep before any work
    check_output(output, overwrite, inputs=[input])
    dataset = open_dataset(input)
    chosen = choose(len(dataset), keep, seed)
    report = ReduceReport(total=len(dataset), kept=len(chosen), dropped=len(dataset) - len(chosen))
    run_stage(dataset.take(chosen), output, keys=dataset.keys, stage="reduce", parameters={"keep": keep, "seed": seed},
              inputs=[described(input, samples=len(dataset))], counts=lambda rows: asdict(report),
              history=dataset.provenance,
              bar=progress_bar(len(chosen), f"reduce {os.path.basename(input)}", unit="sample", quiet=quiet),
              image_shape=dataset.image_shape, jump_key=jump_key(dataset.provenance), overwrite=overwrite)
    return report
