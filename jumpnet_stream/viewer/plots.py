"""Charts as inline SVG written by hand: grouped bars, a histogram, a timeline and shares of a whole. No
plotting library and no script: the same text draws in the viewer and in the offline report, at any size."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Callable, Sequence

import numpy as np

WIDTH = 580
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 34, 40  # margins around a plot area: axis labels, legend, ticks
TEXT = "#222"
GRID = "#ddd"
PALETTE = ("#3a7dc9", "#e07b39", "#3a9d4a", "#c94a4a", "#8a63c2", "#8c6d46", "#d16fb5", "#7f7f7f", "#b5b83a",
           "#3ab5c2")


@dataclass(frozen=True)
class Series:
    """One named, coloured set of values: one value per category."""

    name: str
    colour: str
    values: Sequence[float]


def number(value: float) -> str:
    """A value as a short label: whole numbers without decimals, others with up to 3 significant digits."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.3g}"


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values from ``low`` to at least ``high``, about ``count`` of them, 1/2/5 x 10^n apart."""
    span = max(high - low, 1e-12)
    raw = span / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if step * m >= raw)
    first = math.floor(low / step) * step
    last = math.ceil(high / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int(round((last - first) / step)) + 1)]


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" font-family="sans-serif" '
            f'font-size="11" fill="{TEXT}"><title>{escape(title)}</title>'
            f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>{"".join(body)}</svg>')


def _legend(entries: list[tuple[str, str]], y: float) -> tuple[list[str], float]:
    """Coloured squares and names in rows from the plot's left edge (a new row where one is full); returns
    them and the baseline of the last row."""
    out, x = [], LEFT
    for name, colour in entries:
        width = 24 + 6.2 * len(name)
        if x > LEFT and x + width > WIDTH - RIGHT:
            x, y = LEFT, y + 14
        out.append(f'<rect x="{x:.0f}" y="{y - 9:.0f}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x + 14:.0f}" y="{y:.0f}">{escape(name)}</text>')
        x += width
    return out, y


def _y_axis(top: float, bottom: float, low: float, high: float, width: int,
            label: str) -> tuple[list[str], Callable[[float], float]]:
    """Grid lines and tick labels for values ``low``..``high`` between pixel rows ``bottom``..``top``; returns
    them and the value-to-row mapping."""
    marks = ticks(low, high)
    low, high = marks[0], marks[-1]

    def y(value: float) -> float:
        return bottom - (value - low) / (high - low or 1) * (bottom - top)

    out = [f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y(m):.1f}" y2="{y(m):.1f}" stroke="{GRID}"/>'
           f'<text x="{LEFT - 6}" y="{y(m) + 4:.1f}" text-anchor="end">{number(m)}</text>' for m in marks]
    out.append(f'<text transform="translate(14 {(top + bottom) / 2:.0f}) rotate(-90)" text-anchor="middle">'
               f'{escape(label)}</text>')
    return out, y


def bars(categories: Sequence[str], series: Sequence[Series], *, title: str, y_label: str,
         references: Sequence[tuple[float, str]] = (), y_range: tuple[float, float] | None = None,
         height: int = 260) -> str:
    """Grouped bars: one group per category, one bar per series, each labelled with its value;
    ``references`` are dashed lines across (value, label)."""
    values = [v for s in series for v in s.values]
    low, high = y_range or (0.0, max(values + [r for r, _ in references] + [1]))
    legend, last = _legend([(s.name, s.colour) for s in series], TOP)
    grid, y = _y_axis(last + 22, height - BOTTOM, low, high, WIDTH, y_label)
    body = grid + legend
    group = (WIDTH - LEFT - RIGHT) / max(1, len(categories))
    bar = min(60.0, group * 0.8 / max(1, len(series)))
    for c, category in enumerate(categories):
        left = LEFT + c * group + (group - bar * len(series)) / 2
        for s, one in enumerate(series):
            value = float(one.values[c])
            x, top = left + s * bar, y(max(value, low))
            tip = escape(f"{category}, {one.name}: {number(value)}")
            body.append(f'<rect x="{x:.1f}" y="{top:.1f}" width="{bar - 2:.1f}" height="{y(low) - top:.1f}" '
                        f'fill="{one.colour}"><title>{tip}</title></rect><text x="{x + bar / 2 - 1:.1f}" '
                        f'y="{top - 3:.1f}" text-anchor="middle">{number(value)}</text>')
        body.append(f'<text x="{LEFT + (c + 0.5) * group:.1f}" y="{height - BOTTOM + 16}" text-anchor="middle">'
                    f'{escape(category)}</text>')
    for value, label in references:
        body.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#c00" '
                    f'stroke-dasharray="5 4"/><text x="{WIDTH - RIGHT}" y="{y(value) - 4:.1f}" text-anchor="end" '
                    f'fill="#c00">{escape(label)}</text>')
    return _svg(WIDTH, height, title, body)


def histogram(counts: np.ndarray, edges: np.ndarray, *, title: str, x_label: str, colour: str,
              height: int = 240) -> str:
    """``counts`` of values in the bins between ``edges`` (one more than the counts)."""
    grid, y = _y_axis(TOP, height - BOTTOM, 0, max(1, int(counts.max())), WIDTH, "samples")
    marks = ticks(float(edges[0]), float(edges[-1]))

    def x(value: float) -> float:
        return LEFT + (value - marks[0]) / (marks[-1] - marks[0] or 1) * (WIDTH - LEFT - RIGHT)

    body = grid
    for count, lo, hi in zip(counts, edges[:-1], edges[1:]):
        body.append(f'<rect x="{x(lo):.1f}" y="{y(count):.1f}" width="{max(1.0, x(hi) - x(lo) - 1):.1f}" '
                    f'height="{y(0) - y(count):.1f}" fill="{colour}"><title>{number(lo)} to {number(hi)}: {count}'
                    f'</title></rect>')
    body += [f'<text x="{x(m):.1f}" y="{height - BOTTOM + 14}" text-anchor="middle">{number(m)}</text>' for m in marks]
    body.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{height - 8}" text-anchor="middle">'
                f'{escape(x_label)}</text>')
    return _svg(WIDTH, height, title, body)


@dataclass(frozen=True)
class Track:
    """One recording along time (minutes): events per minute in bins, marks under it (negatives chosen) and
    shaded spans (the validation part)."""

    name: str
    minutes: float
    edges: np.ndarray   # bin edges (minutes)
    rates: np.ndarray   # events per minute in each bin
    marks: np.ndarray   # minutes
    spans: Sequence[tuple[float, float]] = ()


def _minute_axis(minutes: float) -> tuple[list[float], Callable[[float], float]]:
    """A track of ``minutes``: its ticks and the minute-to-column mapping."""
    marks = ticks(0, max(minutes, 1e-3))

    def x(minute: float) -> float:
        return LEFT + minute / marks[-1] * (WIDTH - LEFT - RIGHT)
    return marks, x


def mark_column(minutes: float) -> Callable[[float], str]:
    """Where :func:`timeline` draws a mark at a minute along a track of ``minutes``: marks drawn at one
    column are drawn once, so a track keeps one mark per column however many events it has."""
    _, x = _minute_axis(minutes)
    return lambda minute: f"{x(minute):.1f}"


def timeline(tracks: Sequence[Track], *, title: str, legend: list[tuple[str, str]],
             colours: tuple[str, str, str]) -> str:
    """Each track a panel: its rate as bars, its marks as ticks in a strip below, its spans shaded; ``colours``
    of the rate, the marks and the spans, named in ``legend``."""
    panel, strip = 90, 14
    rate_colour, mark_colour, span_colour = colours
    body, last = _legend(legend, TOP)
    height = int(last) + 12 + len(tracks) * (panel + strip + 34) + 22
    for t, track in enumerate(tracks):
        top = last + 12 + t * (panel + strip + 34)
        bottom = top + panel
        marks, x = _minute_axis(track.minutes)
        body += [f'<rect x="{x(a):.1f}" y="{top}" width="{max(1.0, x(b) - x(a)):.1f}" height="{panel + strip + 4}" '
                 f'fill="{span_colour}"/>' for a, b in track.spans]
        grid, y = _y_axis(top + 12, bottom, 0, max(1.0, float(track.rates.max(initial=0))), WIDTH, "per minute")
        body += grid
        body.append(f'<text x="{LEFT + 4}" y="{top + 8}" font-weight="bold">{escape(track.name)}</text>')
        for rate, lo, hi in zip(track.rates, track.edges[:-1], track.edges[1:]):
            if rate:
                body.append(f'<rect x="{x(lo):.1f}" y="{y(rate):.1f}" width="{max(1.0, x(hi) - x(lo) - 1):.1f}" '
                            f'height="{y(0) - y(rate):.1f}" fill="{rate_colour}"><title>{number(lo)} to {number(hi)} '
                            f'min: {number(rate)} per minute</title></rect>')
        path = "".join(f"M{x(m):.1f} {bottom + 3}v{strip - 2}" for m in track.marks)
        body.append(f'<path d="{path or "M0 0"}" stroke="{mark_colour}" stroke-width="1"/>')
        body += [f'<text x="{x(m):.1f}" y="{bottom + strip + 16}" text-anchor="middle">{number(m)}</text>'
                 for m in marks]
    body.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{height - 6}" text-anchor="middle">minutes</text>')
    return _svg(WIDTH, height, title, body)


def shares(rows: Sequence[tuple[str, Sequence[tuple[str, int]]]], *, title: str) -> str:
    """Each row a bar split into its parts (a part's width its share of the row's total), the parts named,
    with their counts, under it."""
    body, top = [], TOP
    for label, parts in rows:
        total = sum(count for _, count in parts) or 1
        body.append(f'<text x="{LEFT}" y="{top}" font-weight="bold">{escape(label)}: {number(total)}</text>')
        x = float(LEFT)
        for p, (part, count) in enumerate(parts):
            width = count / total * (WIDTH - LEFT - RIGHT)
            body.append(f'<rect x="{x:.1f}" y="{top + 6}" width="{width:.1f}" height="18" '
                        f'fill="{PALETTE[p % len(PALETTE)]}"><title>{escape(f"{part}: {count}")}</title></rect>')
            x += width
        legend, last = _legend([(f"{part.replace('_', ' ')} {count}", PALETTE[p % len(PALETTE)])
                                for p, (part, count) in enumerate(parts)], top + 40)
        body += legend
        top = last + 28
    return _svg(WIDTH, int(top - 8), title, body)
