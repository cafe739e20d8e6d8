"""The viewer's answers, apart from the HTTP plumbing: a request (method, path, query, form) in, a
:class:`Response` out. Pages: the grid of samples with its filters, a sample (its image, every field, its
copies, its video frames), the plots; marking a sample bad. A request it cannot answer gets an error status
and one line, never a traceback."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from html import escape
from typing import Mapping

import cv2
import numpy as np

from ..errors import JumpnetError
from . import pages
from .figures import Figure, audit_of, figures
from .plots import number
from .selection import PAGE_SIZES, Filters, RequestError, choices, label_text, page_of
from .source import DatasetSource, Source

FRAMES_AROUND = 3  # video frames shown either side of a sample's
FIELD_LABELS = {"label": "label", "split": "split", "recording": "recording", "augmented": "augmented",
                "key": "key held", "phase": "phase", "marked": "marked bad"}
# The sample page's script: arrow keys follow the previous/next links; the video frames are fetched after
# the page shows (decoding may take a moment).
SAMPLE_SCRIPT = """
document.addEventListener('keydown', e => {
  const link = document.getElementById({ArrowLeft: 'prev', ArrowRight: 'next'}[e.key]);
  if (link && !e.target.closest('input, select, textarea')) location.href = link.href;
});
fetch(document.getElementById('frames').dataset.src).then(r => r.text()).then(html => {
  document.getElementById('frames').innerHTML = html;
});
"""


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def html(text: str, status: int = 200) -> Response:
    return Response(status, text.encode("utf-8"))


def redirect(location: str) -> Response:
    return Response(303, b"", headers={"Location": location})


class Viewer:
    """Answers the viewer's requests over one :class:`Source`."""

    def __init__(self, source: Source):
        self.source = source
        self._figures: list[Figure] | None = None
        self._figures_lock = threading.Lock()

    #: (method, path pattern, the method answering it: a number in the path is a sample's position)
    ROUTES = (("GET", r"/", "grid"), ("GET", r"/go", "go"), ("GET", r"/plots", "plots"),
              ("GET", r"/sample/(\d+)", "sample"), ("GET", r"/image/(\d+)\.png", "image"),
              ("GET", r"/frames/(\d+)", "frames"), ("POST", r"/mark/(\d+)", "mark"))

    def answer(self, method: str, path: str, query: Mapping[str, str], form: Mapping[str, str]) -> Response:
        for verb, pattern, name in self.ROUTES:
            found = re.fullmatch(pattern, path)
            if found and verb == method:
                try:
                    return getattr(self, name)(*[self._position(g) for g in found.groups()], query=query, form=form)
                except RequestError as error:
                    return html(pages.error_page(error.status, error.message), error.status)
        if any(re.fullmatch(pattern, path) for _, pattern, _ in self.ROUTES):
            return html(pages.error_page(405, f"{method} is not allowed here"), 405)
        return html(pages.error_page(404, f"no such page: {path}"), 404)

    def _position(self, text: str) -> int:
        position = int(text)
        if position >= len(self.source):
            count = len(self.source)
            raise RequestError(404, f"no sample {position}: the set has {count}"
                                    + (f" (0 to {count - 1})" if count else ""))
        return position

    # -- pieces -----------------------------------------------------------------------------------

    def _nav(self, filters: Filters | None = None) -> list[tuple[str, str]]:
        marks = self.source.marks
        nav = [("/" + (f"?{filters.query()}" if filters and filters.query() else ""), "Samples"), ("/plots", "Plots")]
        if marks is not None and len(marks):
            nav.append(("/?marked=yes", f"{len(marks)} marked bad (saved in {marks.path})"))
        return nav

    def _field_rows(self, position: int) -> str:
        s = self.source
        rows = []
        for name in s.fields:
            value = s.small[name][position]
            if np.ndim(value):
                text = ", ".join(f"{key} {number(round(float(v), 4))}" for key, v in zip(s.keys, value))
            elif name == "label":
                text = label_text(value)
            elif isinstance(value, np.floating):
                text = number(round(float(value), 4)) if np.isfinite(value) else "NaN"
            else:
                text = str(value)
            rows.append(f"<tr><th>{escape(name)}</th><td>{escape(text)}</td></tr>")
        video = s.video_path(str(s.recordings[position]))
        rows.append(f"<tr><th>video</th><td>{escape(video or 'not found')}</td></tr>")
        return f'<table class="fields" id="fields">{"".join(rows)}</table>'

    # -- pages ------------------------------------------------------------------------------------

    def grid(self, *, query: Mapping[str, str], form: Mapping[str, str]) -> Response:
        s = self.source
        filters = Filters.parse(query, s)
        matches = np.flatnonzero(filters.mask(s))
        current, size = page_of(query, len(matches))
        shown = matches[current * size:(current + 1) * size]
        allowed = choices(s)
        controls = [pages.select(name, allowed[name], getattr(filters, name), label)
                    for name, label in FIELD_LABELS.items() if name in allowed]
        for name, label in (("hold_min", "hold from (s)"), ("hold_max", "to (s)")):
            value = getattr(filters, name)
            given = "" if value is None else number(value)
            controls.append(f'<label>{label}<input name="{name}" size="5" value="{given}"></label>')
        sizes = "".join(f'<option{" selected" if n == size else ""}>{n}</option>' for n in PAGE_SIZES)
        controls.append(f'<label>per page<select name="per">{sizes}</select></label><button id="apply">Apply</button>')
        pages_total = max(1, -(-len(matches) // size))
        keep = "&".join(part for part in (filters.query(), f"per={size}") if part)
        noun = "events" if s.label is None else "samples"
        pager = [f'<span id="count">{len(matches)} of {len(s)} {noun} match</span>',
                 f"<span>page {current + 1} of {pages_total}</span>"]
        if current > 0:
            pager.append(f'<a id="page-prev" href="/?{escape(keep)}&page={current - 1}">previous page</a>')
        if current + 1 < pages_total:
            pager.append(f'<a id="page-next" href="/?{escape(keep)}&page={current + 1}">next page</a>')
        body = (f'<form class="filters" method="get" action="/">{"".join(controls)}</form>'
                f'<form class="filters" method="get" action="/go"><label>go to #<input name="index" size="7"></label>'
                f'<button id="go">Go</button></form>'
                + "".join(f'<p class="note">{escape(n)}</p>' for n in s.notes)
                + f'<p class="pager">{"".join(pager)}</p>'
                + pages.sample_tiles(s, shown.tolist(),
                                     "/sample/{position}" + (f"?{filters.query()}" if filters.query() else "")))
        return html(pages.page(f"{s.title}: {s.kind} of {len(s)}", body, self._nav(filters)))

    def go(self, *, query: Mapping[str, str], form: Mapping[str, str]) -> Response:
        text = query.get("index", "").strip().lstrip("#")
        if not text.isdigit():
            raise RequestError(400, f"go to # takes a sample number, not {text!r}")
        return redirect(f"/sample/{self._position(text)}")

    def sample(self, position: int, *, query: Mapping[str, str], form: Mapping[str, str]) -> Response:
        s = self.source
        filters = Filters.parse(query, s)
        keep = f"?{filters.query()}" if filters.query() else ""
        matches = np.flatnonzero(filters.mask(s))
        at = int(np.searchsorted(matches, position))
        steps = []
        if at > 0:
            steps.append(f'<a id="prev" href="/sample/{matches[at - 1]}{escape(keep)}">previous (\u2190)</a>')
        after = at + 1 if at < len(matches) and matches[at] == position else at
        if after < len(matches):
            steps.append(f'<a id="next" href="/sample/{matches[after]}{escape(keep)}">next (\u2192)</a>')
        sample = s.summary(position)
        mark = ""
        if s.marks is not None:
            group = self._group(position)
            extra = f" with its {len(group) - 1} augmented copies" if len(group) > 1 else ""
            action, text = ("clear", f"Clear the mark{extra}") if sample["marked"] else ("mark", f"Mark bad{extra}")
            mark = (f'<form method="post" action="/mark/{position}">'
                    f'<input type="hidden" name="action" value="{action}">'
                    f'<input type="hidden" name="back" value="/sample/{position}{escape(keep)}">'
                    f'<button id="mark">{escape(text)}</button></form>'
                    f'<p class="note">marks are saved in {escape(s.marks.path)}; the set itself is never changed</p>')
        copies = ""
        if isinstance(s, DatasetSource):
            related = s.copies(position)
            if len(related) > 1:
                copies = "<h2>Its original and augmented copies</h2>" + pages.sample_tiles(s, related.tolist(),
                                                                                            "/sample/{position}")
        body = (f'<p class="pager">{"".join(steps)}</p>'
                f'<div class="pair"><div><img id="image" src="/image/{position}.png" alt="sample {position}">'
                f'{mark}</div>'
                f'<div>{self._field_rows(position)}</div></div>{copies}'
                f'<h2>The video at frame {sample["frame"]} of {escape(sample["recording"])}</h2>'
                f'<div id="frames" data-src="/frames/{position}"><p class="note">decoding...</p></div>')
        title = f"Sample #{position} of {len(s)}" + (" (marked bad)" if sample.get("marked") else "")
        return html(pages.page(title, body, self._nav(filters), SAMPLE_SCRIPT))

    def image(self, position: int, *, query: Mapping[str, str], form: Mapping[str, str]) -> Response:
        image = self.source.images([position])[position]
        return Response(200, pages.encode(image, ".png"), "image/png")

    def frames(self, position: int, *, query: Mapping[str, str], form: Mapping[str, str]) -> Response:
        """An HTML fragment: the video's frames around the sample's (and a positive's release frame)."""
        s = self.source
        recording, frame = str(s.recordings[position]), int(s.frames[position])
        release = int(s.small["release_index"][position]) if "release_index" in s.small else -1
        wanted = sorted({i for i in range(frame - FRAMES_AROUND, frame + FRAMES_AROUND + 1) if i >= 0}
                        | ({release} if release >= 0 else set()))
        if s.video_path(recording) is None:
            return html(f'<p class="note">no video found for recording {escape(recording)}: view the build folder '
                        "(its manifest names the videos), or keep the video where the recorder put it</p>")
        try:
            decoded = s.video_frames(recording, wanted)
        except JumpnetError as error:
            return html(f'<p class="error">{escape(str(error))}</p>')
        figures_ = []
        for i in wanted:
            if i not in decoded:
                continue
            what = " (the sample's)" if i == frame else " (release)" if i == release else ""
            uri = pages.data_uri(cv2.cvtColor(decoded[i], cv2.COLOR_BGR2RGB), longest=None)
            figures_.append(f'<figure class="{"at" if i == frame else ""}"><img src="{uri}" alt="frame {i}">'
                            f'<figcaption>frame {i}{what}</figcaption></figure>')
        missing = [i for i in wanted if i not in decoded]
        note = f'<p class="note">past the video\'s end: frame {", ".join(map(str, missing))}</p>' if missing else ""
        return html(f'<div class="strip">{"".join(figures_)}</div>{note}')

    def plots(self, *, query: Mapping[str, str], form: Mapping[str, str]) -> Response:
        with self._figures_lock:
            if self._figures is None:
                audited = audit_of(self.source) if isinstance(self.source, DatasetSource) else None
                self._figures = figures(self.source, audited)
        body = pages.figure_sections(self._figures) + pages.accounting(self.source.manifest)
        return html(pages.page(f"{self.source.title}: plots", body, self._nav()))

    def _group(self, position: int) -> list[int]:
        """What marking the sample at ``position`` marks: an original with its augmented copies, else itself."""
        s = self.source
        if int(s.small["copy"][position]) == 0:
            return [int(p) for p in s.copies(position)]
        return [position]

    def mark(self, position: int, *, query: Mapping[str, str], form: Mapping[str, str]) -> Response:
        s = self.source
        if s.marks is None:
            raise RequestError(400, "a keylog's events cannot be marked: marks name samples (build it first)")
        action = form.get("action", "")
        if action not in ("mark", "clear"):
            raise RequestError(400, f"action must be mark or clear, not {action!r}")
        group = self._group(position)
        try:
            s.marks.change(s.identities(group), group, bad=action == "mark")
        except JumpnetError as error:
            raise RequestError(500, str(error)) from None
        back = form.get("back", "")
        return redirect(back if back.startswith("/") and not back.startswith("//") else f"/sample/{position}")

