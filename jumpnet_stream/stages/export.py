"""Export a dataset to any format: the seed's legacy ``.npz`` (what the original trainer loads), a
columnar ``.npz`` (plain arrays, no pickle), a ``.zarr`` copy (optionally rechunked) or ``.h5``."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..chunk import keep_rows
from ..errors import JumpnetError
from ..formats import check_output, disk_size, format_for, jump_key, open_dataset, options_for
from ..npz import available_memory
from ..progress import progress_bar
from ..runner import described, run_stage

ENTRY_OVERHEAD = 1024  # bytes per legacy entry beside its image, once unpickled: arrays, floats, tuple


@dataclass
class ExportReport:
    samples: int = 0
    bytes: int = 0
    excluded: int = 0  # samples a marks file (``exclude``) left out


def legacy_load_bytes(samples: int, image_shape: tuple[int, ...], image_dtype: str) -> int:
    """What the trainer's ``np.load(...)["data"]`` of a legacy export holds in memory."""
    return samples * (int(np.prod(image_shape)) * np.dtype(image_dtype).itemsize + ENTRY_OVERHEAD)


def export(input: str | os.PathLike, output: str | os.PathLike, *, layout: str | None = None,
           image_dtype: str | None = None, hold: str | None = None, hold_key: str | None = None,
           image_rows: int | None = None, codec: str | None = None, keys: list[str] | None = None,
           split: str | None = None, exclude: str | os.PathLike | None = None, force: bool = False,
           overwrite: bool = False, quiet: bool = True) -> ExportReport:
    """Copy ``input`` to ``output`` in the format its extension (and ``layout`` for .npz) names; the other
    options are that format's (an option it does not have is refused).

    A legacy .npz keeps one hold per sample by default (``hold="scalar"``): ``hold_key``'s, by default
    the jump key the dataset was built for (from its provenance) or its only key. ``codec``: a .zarr's
    image compression ("zstd", the default, or "lz4": faster to decode in a training loop). ``keys``
    names the keys of an input that holds none (the original scripts' files). ``split``: only the samples of this
    split ("train", "val"). ``exclude``: a marks file (the viewer's ``NAME.marks.json``) whose samples are
    left out, counted in the provenance."""
    input, output = os.fspath(input), os.fspath(output)
    check_output(output, overwrite, inputs=[input, *([exclude] if exclude is not None else [])])
    fmt = format_for(output, layout)
    options = options_for(fmt, output, dtype=image_dtype, hold=hold, hold_key=hold_key, rechunk=image_rows,
                          codec=codec)
    dataset = open_dataset(input, keys=keys)
    chunks, marks, excluded = dataset.chunks(), None, 0
    if exclude is not None:
        from ..viewer.marks import count_marked, drop_marked, load_marks

        marks = load_marks(exclude)
        samples, excluded = count_marked(dataset, marks, split)
    elif split is not None:
        samples = sum(int(np.count_nonzero(block["split"] == split)) for _, block in dataset.column_blocks(["split"]))
    else:
        samples = len(dataset)
    samples -= excluded
    if split is not None:
        chunks = keep_rows(chunks, lambda chunk: chunk["split"] == split)
    if marks is not None:
        chunks = drop_marked(chunks, marks, [0])
    if fmt.layout == "legacy" and not force:
        need = legacy_load_bytes(samples, dataset.image_shape, options.dtype)
        free = available_memory()
        if need > free:
            raise JumpnetError(output, f"the legacy format is loaded whole by the trainer: about {need >> 20} MB, "
                                       f"more than the {free >> 20} MB available here (write the columnar "
                                       "layout, .zarr or .h5, or set force)")
    chosen = jump_key(dataset.provenance) if hold_key is None else hold_key
    exclusion = {"exclude": described(os.fspath(exclude))} if exclude is not None else {}
    run_stage(chunks, output, keys=dataset.keys, stage="export",
              parameters={"layout": fmt.layout, "image_dtype": image_dtype, "hold": hold, "hold_key": chosen,
                          "image_rows": image_rows, "split": split, **exclusion,
                          **({"codec": codec} if codec is not None else {})},
              inputs=[described(input, samples=len(dataset))],
              counts=lambda rows: {"samples": rows, **({"excluded_marked": excluded} if exclude is not None else {})},
              history=dataset.provenance,
              bar=progress_bar(samples, f"export -> {os.path.basename(output)}", unit="sample", quiet=quiet),
              image_shape=dataset.image_shape, rows=samples, options=options, jump_key=chosen, overwrite=overwrite)
    return ExportReport(samples=samples, bytes=disk_size(output), excluded=excluded)
