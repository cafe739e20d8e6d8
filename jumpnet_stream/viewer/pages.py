"""The viewer's and the report's HTML: one stylesheet, pages written as text (every value escaped), images
inline as data URIs so a page is one request and the report one file."""

from __future__ import annotations

import base64
import json
from html import escape
from typing import Any, Sequence

import cv2
import numpy as np

from .figures import Figure
from .plots import number
from .selection import label_text
from .source import Source

THUMB = 128  # grid and contact sheet tiles: the longer side, pixels
STYLE = """
body{font:14px/1.4 sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#eee;padding:8px 16px}header a{color:#9cf;margin-right:14px}
h1{font-size:18px;margin:6px 0}h2{font-size:15px;margin:18px 0 6px}main{padding:12px 16px}
form.filters{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:end;margin-bottom:10px}
form.filters label{display:flex;flex-direction:column;font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:8px}
.cell{width:136px;background:#fff;border:3px solid #ccc;padding:2px;font-size:11px;text-decoration:none;color:#222}
.cell.pos{border-color:#3a9d4a}.cell.neg{border-color:#8c8c8c}.cell.marked{outline:3px dashed #c00}
.cell img{display:block;margin:auto;max-width:128px;max-height:128px}
.pager a,.pager span{margin-right:12px}.note{color:#666;font-size:12px}.error{color:#b00}
.pair{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
table.fields th{white-space:nowrap}
table.fields td,table.fields th{border-bottom:1px solid #ddd;padding:2px 10px 2px 0;text-align:left;vertical-align:top}
.strip{display:flex;flex-wrap:wrap;gap:6px}.strip figure{margin:0;font-size:11px;text-align:center}
.strip img{max-width:227px;border:3px solid transparent}.strip .at img{border-color:#3a7dc9}
section.figure{background:#fff;border:1px solid #ddd;padding:8px;margin:0 12px 12px 0;display:inline-block;
vertical-align:top}
svg.chart{display:block;max-width:100%;height:auto}
"""


def encode(image_rgb: np.ndarray, kind: str = ".png", longest: int | None = None) -> bytes:
    """An RGB image as PNG or JPEG bytes, shrunk to ``longest`` pixels on its longer side if given."""
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    if longest is not None and max(bgr.shape[:2]) > longest:
        scale = longest / max(bgr.shape[:2])
        bgr = cv2.resize(bgr, (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(kind, bgr)
    if not ok:
        raise ValueError(f"OpenCV could not encode an image as {kind}")
    return data.tobytes()


def data_uri(image_rgb: np.ndarray, longest: int | None = THUMB) -> str:
    """An RGB image inline, as a JPEG data URI."""
    return "data:image/jpeg;base64," + base64.b64encode(encode(image_rgb, ".jpg", longest)).decode("ascii")


def page(title: str, body: str, nav: Sequence[tuple[str, str]] = (), script: str = "") -> str:
    """A whole HTML page: ``nav`` links (href, text) over the title; no request leaves it but its own."""
    links = "".join(f'<a href="{escape(href)}">{escape(text)}</a>' for href, text in nav)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<link rel="icon" href="data:,"><style>{STYLE}</style></head><body><header><nav>{links}</nav>'
            f'<h1>{escape(title)}</h1></header><main>{body}</main>'
            + (f"<script>{script}</script>" if script else "") + "</body></html>")


def error_page(status: int, message: str) -> str:
    return page(f"Error {status}", f'<p class="error">{escape(message)}</p><p><a href="/">back to the samples</a></p>')


def caption(sample: dict[str, Any]) -> tuple[str, str]:
    """A tile's class (for its border colour) and its caption: class, hold, position, recording and frame."""
    label = sample.get("label")
    if label is None:
        kind, text = "", f"{sample['phase']} {'+'.join(sample['held']) or '-'}"
        if sample["hold"] > 0:
            text += f" hold {number(round(sample['hold'], 3))}"
    else:
        kind = "pos" if label == 1 else "neg" if label == 0 else ""
        text = "POS" if label == 1 else "NEG" if label == 0 else f"label {label_text(label)}"
        if label != 0:
            text += f" hold {number(round(sample['hold'], 3)) if np.isfinite(sample['hold']) else 'NaN'}"
        if sample.get("augmented"):
            text += f" copy {sample['copy']}"
    return kind, f"{text}<br>#{sample['position']} {escape(sample['recording'])}:{sample['frame']}"


def tiles(samples: Sequence[dict[str, Any]], link: str | None) -> str:
    """Samples as captioned thumbnails; ``link`` (with ``{position}``) makes each one a link."""
    out = []
    for sample in samples:
        kind, text = caption(sample)
        classes = " ".join(["cell", kind] + (["marked"] if sample.get("marked") else []))
        inner = f'<img src="{sample["thumb"]}" alt="sample {sample["position"]}">{text}'
        if link is None:
            out.append(f'<div class="{classes}">{inner}</div>')
        else:
            out.append(f'<a class="{classes}" id="s{sample["position"]}" '
                       f'href="{escape(link.format(position=sample["position"]))}">{inner}</a>')
    return f'<div class="grid">{"".join(out)}</div>'


def sample_tiles(source: Source, positions: Sequence[int], link: str | None) -> str:
    """The samples at ``positions`` as :func:`tiles` (their images read together)."""
    images = source.images(list(positions))
    return tiles([{**summary, "thumb": data_uri(images[int(p)])}
                  for p, summary in zip(positions, source.summaries(positions))], link)


def figure_sections(found: Sequence[Figure]) -> str:
    return "".join(f'<section class="figure" id="fig-{f.name}">{f.svg}'
                   + (f'<p class="note">{escape(f.note)}</p>' if f.note else "") + "</section>" for f in found)


def accounting(manifest: dict[str, Any] | None) -> str:
    """The build's accounting, as its manifest records it (nothing for a set that is no build's)."""
    if not manifest or not isinstance(manifest.get("accounting"), dict):
        return ""
    return "<h2>The build's accounting</h2>" + record_table(manifest["accounting"])


def record_table(value: Any) -> str:
    """A JSON record (the build's accounting) as nested tables."""
    if isinstance(value, dict):
        rows = "".join(f"<tr><th>{escape(str(k).replace('_', ' '))}</th><td>{record_table(v)}</td></tr>"
                       for k, v in value.items())
        return f'<table class="fields">{rows}</table>'
    if isinstance(value, list):
        return escape(", ".join(json.dumps(v) if isinstance(v, (list, dict)) else str(v) for v in value))
    return escape(str(value))


def select(name: str, options: Sequence[str], chosen: str, label: str) -> str:
    items = "".join(f'<option value="{escape(o)}"{" selected" if o == chosen else ""}>{escape(o or "any")}</option>'
                    for o in ["", *options])
    return f'<label>{escape(label)}<select name="{name}">{items}</select></label>'
