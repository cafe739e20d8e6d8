"""A build's report, ``DIR/report.html``: one self-contained file (inline SVG plots, images as data URIs, no
script, nothing fetched) that opens offline: the set in numbers, the plots the viewer draws, the build's
accounting and a contact sheet of samples of each kind."""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

from ..build.inputs import MANIFEST
from ..errors import JumpnetError
from ..formats import partial_path, remove_output
from ..formats.output import land
from . import pages
from .figures import Tally, audit_of, figures, tally
from .source import DatasetSource, open_source

REPORT = "report.html"
SHEET = (("original positives", 12), ("augmented copies", 6), ("negatives", 12))  # contact sheet: kind, how many
SEED = 0


def _summary(source: DatasetSource, counted: Tally) -> str:
    """The set in numbers: samples, keys, image size, each split's classes; the build's tool and options."""
    rows = [("samples", str(len(source))), ("keys", ", ".join(source.keys)),
            ("image", "x".join(map(str, source.image_shape)))]
    for name, classes in counted.splits.items():
        rows.append((f"split {name}", f"{int(classes[0] + classes[1])} positives, {int(classes[2])} negatives"))
    manifest = source.manifest or {}
    if isinstance(manifest.get("tool"), str):
        rows.append(("built by", manifest["tool"]))
    if isinstance(manifest.get("options"), dict):
        rows.append(("options", ", ".join(f"{k} {v}" for k, v in manifest["options"].items())))
    return '<table class="fields" id="summary">' + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>"
                                                          for k, v in rows) + "</table>"


def write_report(build_dir: str | os.PathLike) -> Path:
    """Write ``build_dir``/report.html (replacing an earlier one, atomically) and return its path."""
    folder = os.fspath(build_dir)
    if not os.path.isfile(os.path.join(folder, MANIFEST)):
        raise JumpnetError(folder, f"is not a build folder (no {MANIFEST})")
    source = open_source(folder, whole=False)  # the small fields a chunk at a time: memory flat in the set's length
    assert isinstance(source, DatasetSource)  # a build folder is viewed as its dataset.zarr
    counted = tally(source, SHEET, SEED)
    body = (_summary(source, counted) + "<h2>Plots</h2>"
            + pages.figure_sections(figures(source, audit_of(source), counted))
            + pages.accounting(source.manifest) + '<h2>Contact sheet</h2><div id="sheet">'
            + "".join(f"<h3>{escape(kind)}</h3>" + pages.sample_tiles(source, positions.tolist(), link=None)
                      for kind, positions in counted.picks) + "</div>")
    out = os.path.join(folder, REPORT)
    temp = partial_path(out)
    try:
        with open(temp, "w", encoding="utf-8", errors="backslashreplace") as f:  # names need not be UTF-8
            f.write(pages.page(f"Build report: {os.path.basename(os.path.abspath(folder))}", body))
        land(temp, out)
    except BaseException:
        remove_output(temp)
        raise
    return Path(out)

