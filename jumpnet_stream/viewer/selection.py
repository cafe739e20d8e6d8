"""Which samples the grid shows: filters read from a request's query, checked against the values the set
holds (a value it does not hold is a bad request, not an empty page), and the page of them asked for."""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass, fields
from typing import Mapping

import numpy as np

from .source import Source

PAGE_SIZES = (24, 48, 96, 192)


class RequestError(Exception):
    """A request the viewer cannot answer: its HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def label_text(value: float) -> str:
    """A label as short text: ``1``, ``0``, ``0.5``."""
    return np.format_float_positional(np.float32(value), trim="-")


def choices(source: Source) -> dict[str, list[str]]:
    """The values each list filter may take for ``source`` (filters that do not apply to it are absent)."""
    found = {"recording": sorted(set(source.recordings.tolist())), "key": list(source.keys),
             "phase": sorted(set(source.small["phase"].tolist()))}
    if source.label is not None:
        found["label"] = [label_text(v) for v in sorted(set(source.label.tolist()), reverse=True)]
        found["split"] = sorted(set(source.small["split"].tolist()))
        found["augmented"] = ["no", "yes"]
    if source.marks is not None:
        found["marked"] = ["no", "yes"]
    return found


def _number(query: Mapping[str, str], name: str) -> float | None:
    text = query.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise RequestError(400, f"{name} must be a number of seconds, not {text!r}") from None
    if not math.isfinite(value):
        raise RequestError(400, f"{name} must be a finite number, not {text!r}")
    return value


@dataclass(frozen=True)
class Filters:
    """The grid's filters; an empty value shows every sample. ``hold_min``/``hold_max`` bound the hold
    (seconds; a sample whose hold is NaN, a press never released, is outside every range)."""

    label: str = ""
    split: str = ""
    recording: str = ""
    augmented: str = ""
    key: str = ""
    phase: str = ""
    marked: str = ""
    hold_min: float | None = None
    hold_max: float | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str], source: Source) -> "Filters":
        """The filters a query names, each checked against :func:`choices`."""
        allowed = choices(source)
        values: dict[str, object] = {}
        for field in fields(cls):
            if field.name.startswith("hold_"):
                values[field.name] = _number(query, field.name)
                continue
            text = query.get(field.name, "")
            if text and text not in allowed.get(field.name, []):
                listed = ", ".join(allowed.get(field.name, [])) or "nothing: it does not apply to this set"
                raise RequestError(400, f"{field.name} must be one of {listed} (or empty), not {text!r}")
            values[field.name] = text
        return cls(**values)

    def mask(self, source: Source) -> np.ndarray:
        """Which samples pass every filter."""
        keep = np.ones(len(source), bool)
        if self.label:
            keep &= source.label == np.float32(self.label)
        for name, column in (("split", "split"), ("phase", "phase")):
            if getattr(self, name):
                keep &= source.small[column] == getattr(self, name)
        if self.recording:
            keep &= source.recordings == self.recording
        if self.augmented:
            keep &= source.small["augmented"] == (self.augmented == "yes")
        if self.key:
            keep &= source.held[:, source.keys.index(self.key)]
        if self.marked:
            keep &= source.marked() == (self.marked == "yes")
        if self.hold_min is not None:
            keep &= source.holds >= self.hold_min  # NaN compares False
        if self.hold_max is not None:
            keep &= source.holds <= self.hold_max
        return keep

    def query(self) -> str:
        """The filters as a query string (set ones only), for links that keep them."""
        return urllib.parse.urlencode({f.name: getattr(self, f.name) for f in fields(self)
                                       if getattr(self, f.name) not in ("", None)})


def page_of(query: Mapping[str, str], matches: int) -> tuple[int, int]:
    """(page, page size) a query asks for, checked: a page past the last is a bad request."""
    size_text, page_text = query.get("per", str(PAGE_SIZES[1])), query.get("page", "0")
    if size_text not in map(str, PAGE_SIZES):
        raise RequestError(400, f"per must be one of {', '.join(map(str, PAGE_SIZES))}, not {size_text!r}")
    size = int(size_text)
    pages = max(1, -(-matches // size))
    if not page_text.isdigit() or int(page_text) >= pages:
        raise RequestError(400, f"page must be a whole number from 0 to {pages - 1}, not {page_text!r}")
    return int(page_text), size
