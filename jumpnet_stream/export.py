"""Export a dataset to any format: the seed's legacy ``.npz`` (what the original trainer loads), a
columnar ``.npz`` (plain arrays, no pickle), a ``.zarr`` copy (optionally rechunked) or ``.h5``."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import JumpnetError
from .formats import WriteOptions, check_output, create_dataset, disk_size, jump_key, open_dataset
from .store import IMAGE_ROWS
from .npz import available_memory
from .progress import progress_bar

ENTRY_OVERHEAD = 1024  # bytes per legacy entry beside its image, once unpickled: arrays, floats, tuple


@dataclass
class ExportReport:
    samples: int = 0
    bytes: int = 0


def legacy_load_bytes(samples: int, image_shape: tuple[int, ...], image_dtype: str) -> int:
    """What the trainer's ``np.load(...)["data"]`` of a legacy export holds in memory."""
    return samples * (int(np.prod(image_shape)) * np.dtype(image_dtype).itemsize + ENTRY_OVERHEAD)


def export(input: str | os.PathLike, output: str | os.PathLike, *, layout: str = "legacy",
           image_dtype: str | None = None, hold: str = "scalar", hold_key: str | None = None,
           image_rows: int | None = None, keys: list[str] | None = None, force: bool = False,
           overwrite: bool = False, quiet: bool = True) -> ExportReport:
    """Copy ``input`` to ``output`` in the format its extension (and ``layout`` for .npz) names.

    A legacy .npz keeps one hold per sample by default (``hold="scalar"``): ``hold_key``'s, by default
    the jump key the dataset was built for (from its provenance) or its only key. ``keys`` names the
    keys of an input that holds none (the original scripts' files)."""
    input, output = os.fspath(input), os.fspath(output)
    check_output(output, overwrite, inputs=[input])
    dataset = open_dataset(input, keys=keys)
    legacy = output.lower().endswith(".npz") and layout == "legacy"
    if legacy and not force:
        need = legacy_load_bytes(len(dataset), dataset.image_shape, image_dtype or "float32")
        free = available_memory()
        if need > free:
            raise JumpnetError(output, f"the legacy format is loaded whole by the trainer: about {need >> 20} MB, "
                                       f"more than the {free >> 20} MB available here (use --layout columnar, "
                                       ".zarr or .h5, or --force)")
    options = WriteOptions(layout=layout, image_dtype=image_dtype, hold=hold,
                           hold_key=hold_key or jump_key(dataset.provenance), rows=len(dataset),
                           image_size=tuple(dataset.image_shape[:2]),
                           image_rows=IMAGE_ROWS if image_rows is None else image_rows)
    bar = progress_bar(len(dataset), f"export -> {os.path.basename(output)}", unit="sample", quiet=quiet)
    with bar, create_dataset(output, dataset.keys, overwrite=overwrite, options=options) as writer:
        for chunk in dataset.chunks():
            writer.write(chunk)
            bar.update(len(chunk))
        writer.provenance = [*dataset.provenance, {
            "stage": "export", "parameters": {"layout": layout, "image_dtype": image_dtype, "hold": hold,
                                              "hold_key": options.hold_key, "image_rows": image_rows},
            "inputs": [{"path": os.path.abspath(input), "samples": len(dataset)}], "counts": {"samples": writer.rows}}]
    return ExportReport(samples=len(dataset), bytes=disk_size(output))
