"""The viewer (``jumpnet-stream view``) in a real browser:
Debian's chromium, headless, driven over the DevTools protocol. On a demo build: filter the grid, open a
sample (its image, fields, copies and video frames), mark it bad, and find the marks file beside the set;
bad requests get an error status and one line; marked samples are left out of a stage's chunks."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import websocket

from conftest import ROOT, run_cli
from jumpnet_stream.errors import JumpnetError
from jumpnet_stream.formats import create_dataset, open_dataset
from jumpnet_stream.schema import SMALL_FIELDS
from jumpnet_stream.viewer import drop_marked, load_marks, marks_path
from jumpnet_stream.viewer.marks import MarkBook, identities

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Screenshots land in the test's folder; with JUMPNET_SCREENSHOTS=1 also in docs/ (the README shows them).
SCREENSHOTS = os.environ.get("JUMPNET_SCREENSHOTS") == "1"
WAIT = 30.0  # seconds any awaited condition may take before the test fails


def demo_build(factory: pytest.TempPathFactory) -> Path:
    """One small demo build for the session (the viewer's and the report's tests share it)."""
    folder = factory.getbasetemp() / "viewer-demo"
    if not (folder / "sheet.png").exists():  # the demo's last output
        result = run_cli("demo", str(folder), "--seconds", "15", "--quiet")
        assert result.returncode == 0, result.stderr
    return folder / "build"


class Browser:
    """Headless chromium over the DevTools protocol: navigate, run script, wait for conditions, take
    screenshots; every console error, uncaught exception and failed load is kept (:meth:`errors`)."""

    def __init__(self, profile: Path):
        if CHROMIUM is None:
            if os.environ.get("CI"):
                pytest.fail("chromium is not installed: .ci/run installs it (apt-get install chromium)")
            pytest.skip("chromium is not installed (apt-get install chromium)")
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port = int(wait_until(lambda: _read_port(profile / "DevToolsActivePort"), "chromium's DevTools port"))
            page = wait_until(lambda: _page(port), "chromium's page")
            self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=WAIT, suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self.calls = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.size(1280, 900)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.calls:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]
            if "method" in message:
                self.events.append(message)

    def size(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def load(self, action: Callable[[], object]) -> None:
        """Do what navigates (a link, a form, a URL), then wait for the new page's load event."""
        seen = len(self.events)
        action()
        deadline = time.monotonic() + WAIT
        while not any(e["method"] == "Page.loadEventFired" for e in self.events[seen:]):
            self.socket.settimeout(max(0.01, deadline - time.monotonic()))
            message = json.loads(self.socket.recv())  # a timeout here fails the test
            if "method" in message:
                self.events.append(message)
        self.socket.settimeout(WAIT)

    def goto(self, url: str) -> None:
        self.load(lambda: self.call("Page.navigate", url=url))

    def run(self, script: str) -> Any:
        """The value of a script in the page (a promise awaited)."""
        result = self.call("Runtime.evaluate", expression=script, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{script}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, script: str) -> Any:
        return wait_until(lambda: self.run(script), script)

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event["method"], event["params"]
            if method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"{params['entry']['text']} {params['entry'].get('url', '')}")
        return found

    def screenshot(self, path: Path, width: int = 1280) -> None:
        """The whole page as PNG (at most 2400 pixels tall)."""
        height = min(2400, int(self.run("document.documentElement.scrollHeight")))
        self.size(width, height)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        self.size(1280, 900)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.socket.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _page(port: int) -> dict[str, Any] | None:
    """The browser's page (its DevTools target), once it has one."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=WAIT) as answer:
        return next((target for target in json.load(answer) if target["type"] == "page"), None)


def _read_port(path: Path) -> str | None:
    text = path.read_text() if path.exists() else ""
    return text.split("\n")[0] if "\n" in text else None


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    """``condition()``'s first truthy value, asked every 50 ms for up to :data:`WAIT` seconds."""
    deadline = time.monotonic() + WAIT
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {WAIT} s in vain for {what}")
        time.sleep(0.05)
    return value


def keep_screenshot(made: Path, name: str) -> None:
    assert made.stat().st_size > 10_000 and made.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if SCREENSHOTS:
        shutil.copyfile(made, Path(ROOT) / "docs" / name)


@contextlib.contextmanager
def viewer(path: Path) -> Iterator[str]:
    """The viewer over ``path`` on a free port: its address; stopped (and its stderr checked: no request failed
    inside it) on the way out."""
    process = subprocess.Popen([sys.executable, "-m", "jumpnet_stream", "view", str(path), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], WAIT)
        line = process.stdout.readline() if ready else ""
        address = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert address, f"the viewer printed no address: {line!r} (exit code {process.poll()})"
        yield address.group(0)
    finally:
        process.terminate()
        try:
            _, errors = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            _, errors = process.communicate()
    assert "error answering" not in errors, errors


def request(url: str, method: str = "GET", form: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of one request, redirects not followed."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=WAIT)
    try:
        body = urllib.parse.urlencode(form) if form is not None else None
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body, headers)
        answer = connection.getresponse()
        return answer.status, answer.read().decode("utf-8", "replace")
    finally:
        connection.close()


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    return demo_build(tmp_path_factory)


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Browser]:
    chromium = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def test_filter_open_and_mark_a_sample_in_the_browser(build, browser, tmp_path):
    marks = Path(marks_path(build / "dataset.zarr"))
    marks.unlink(missing_ok=True)
    dataset = open_dataset(build / "dataset.zarr")
    small = dataset.columns(list(SMALL_FIELDS))
    originals = np.flatnonzero((small["label"] == 1) & ~small["augmented"])
    with viewer(build) as url:
        browser.goto(url)
        assert browser.run("document.getElementById('count').textContent") == \
            f"{len(dataset)} of {len(dataset)} samples match"
        browser.wait_for("[...document.images].every(i => i.complete && i.naturalWidth > 0)")

        browser.load(lambda: browser.run("document.querySelector('select[name=label]').value = '1';"
                                         "document.querySelector('select[name=augmented]').value = 'no';"
                                         "document.getElementById('apply').click()"))
        assert browser.run("document.getElementById('count').textContent") == \
            f"{len(originals)} of {len(dataset)} samples match"
        tiles = browser.run("[...document.querySelectorAll('.cell')].map(c => [c.id, c.className])")
        assert [int(id_[1:]) for id_, _ in tiles] == originals.tolist()
        assert all(kind == "cell pos" for _, kind in tiles)

        position = int(originals[0])
        browser.load(lambda: browser.run(f"document.getElementById('s{position}').click()"))
        assert browser.run("location.pathname + location.search") == f"/sample/{position}?label=1&augmented=no"
        browser.wait_for("document.getElementById('image').complete")
        assert browser.run("document.getElementById('image').naturalWidth") == dataset.image_shape[1]
        fields = browser.run("document.getElementById('fields').innerText")
        frame = int(small["frame_index"][position])
        for name in ("label\t1", f"frame_index\t{frame}", f"source\t{small['source'][position]}", "copy\t0",
                     f"release_index\t{small['release_index'][position]}", "demo_120000.mp4"):
            assert name in fields
        copies = np.flatnonzero((small["frame_index"] == frame) & (small["label"] == 1))
        shown = browser.run("[...document.querySelectorAll('.grid .cell')].map(c => +c.id.slice(1))")
        assert sorted(shown) == copies.tolist() and len(copies) == 3  # the original and its 2 augmented copies

        browser.wait_for("document.querySelectorAll('#frames img').length > 0 && "
                         "[...document.querySelectorAll('#frames img')].every(i => i.complete && i.naturalWidth > 0)")
        captions = browser.run("[...document.querySelectorAll('#frames figcaption')].map(c => c.textContent)")
        assert f"frame {frame} (the sample's)" in captions
        release = int(small["release_index"][position])
        assert release == frame or f"frame {release} (release)" in captions

        browser.load(lambda: browser.run("document.getElementById('mark').click()"))
        assert browser.run("document.title") == f"Sample #{position} of {len(dataset)} (marked bad)"
        assert browser.run("document.getElementById('mark').textContent") == \
            "Clear the mark with its 2 augmented copies"
        browser.wait_for("[...document.querySelectorAll('#frames img')].length > 0")
        browser.screenshot(tmp_path / "viewer.png")
        keep_screenshot(tmp_path / "viewer.png", "viewer.png")

        status, page = request(url + "?marked=yes")
        assert status == 200 and f"{len(copies)} of {len(dataset)} samples match" in page
    assert browser.errors() == []

    saved = json.loads(marks.read_text())
    assert saved["dataset"] == str(build / "dataset.zarr")
    group = identities({name: small[name][copies] for name in small})
    assert {tuple(m[k] for k in saved["identity"]) for m in saved["marks"]} == set(group)
    assert sorted(load_marks(marks).tolist()) == sorted(group)


def test_bad_requests_get_an_error_status_and_one_line(build):
    checks = [("GET", "/sample/100000", 404, "no sample 100000"), ("GET", "/image/100000.png", 404, "no sample"),
              ("GET", "/nothing/here", 404, "no such page"), ("GET", "/?label=2", 400, "label must be one of"),
              ("GET", "/?split=test", 400, "split must be one of"), ("GET", "/?hold_min=abc", 400, "hold_min"),
              ("GET", "/?hold_max=inf", 400, "finite"), ("GET", "/?page=-1", 400, "page must be"),
              ("GET", "/?page=999", 400, "page must be"), ("GET", "/?per=7", 400, "per must be"),
              ("GET", "/go?index=abc", 400, "go to #"), ("GET", "/go?index=99999", 404, "no sample"),
              ("POST", "/sample/0", 405, "POST is not allowed"), ("POST", "/mark/0", 400, "action must be"),
              ("GET", "/mark/0", 405, "GET is not allowed")]
    with viewer(build) as url:
        for method, path, status, message in checks:
            got, page = request(url.rstrip("/") + path, method, {} if method == "POST" else None)
            assert (got, message in page, "Traceback" in page) == (status, True, False), (path, got, page)
        assert request(url + "go?index=7")[0] == 303
        assert request(url + "frames/0")[0] == 200


def test_a_keylog_is_browsed_as_events(build):
    with viewer(build.parent / "collected" / "demo.npz") as url:
        status, page = request(url + "?phase=release")
        releases = int(re.search(r"(\d+) of (\d+) events match", page).group(1))
        assert status == 200 and releases > 0
        status, page = request(url + "frames/1")
        assert status == 200 and "(the sample's)" in page and "data:image/jpeg" in page
        assert request(url + "?label=1")[0] == 400  # a keylog has no labels
        status, page = request(url + "mark/1", "POST", {"action": "mark"})
        assert status == 400 and "cannot be marked" in page
        assert request(url + "plots")[0] == 200


@pytest.mark.parametrize("export", ["legacy", "h5", "columnar"])
def test_every_format_is_browsed_through_its_reader(build, tmp_path, export):
    """The legacy final.npz as built, and the set exported to .h5 and to a columnar .npz."""
    path = build / "final.npz"
    if export != "legacy":
        path = tmp_path / ("set.h5" if export == "h5" else "set.npz")
        extra = ["--layout", "columnar"] if export == "columnar" else []
        assert run_cli("export", str(build / "dataset.zarr"), "-o", str(path), *extra, "--quiet").returncode == 0
    with viewer(path) as url:
        status, page = request(url + "?label=1")
        positives = int(re.search(r"(\d+) of \d+ samples match", page).group(1))
        assert status == 200 and positives == len(re.findall(r'class="cell pos', page)) > 0
        assert positives == int((open_dataset(path).column("label") == 1).sum())
        status, page = request(url + "sample/0")
        assert status == 200 and "frame_index" in page
        status, image = request(url + "image/0.png")
        assert status == 200 and image.startswith("\ufffdPNG")


@pytest.mark.parametrize("name", ["notes.txt", "folder"])
def test_not_a_dataset_gets_the_error_inspect_gives(tmp_path, name):
    path = tmp_path / name
    path.mkdir() if name == "folder" else path.write_text("hello")
    viewing = subprocess.Popen([sys.executable, "-m", "jumpnet_stream", "view", str(path), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    inspected = run_cli("inspect", str(path))  # meanwhile
    out, err = viewing.communicate(timeout=60)
    assert viewing.returncode == inspected.returncode == 1
    assert err == inspected.stderr and err.count("\n") == 1 and out == ""


def test_a_port_in_use_is_one_line(build):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = subprocess.run([sys.executable, "-m", "jumpnet_stream", "view", str(build), "--port",
                                 str(taken.getsockname()[1])], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "is in use" in result.stderr


def test_marked_samples_are_left_out_of_a_stage(build, tmp_path):
    dataset = open_dataset(build / "dataset.zarr")
    small = dataset.columns(list(SMALL_FIELDS))
    everything = identities(small)
    picked = np.concatenate([np.flatnonzero(small["label"] == 1)[:2], np.flatnonzero(small["label"] == 0)[:3]]).tolist()
    book = MarkBook(str(tmp_path / "set.marks.json"), str(build / "dataset.zarr"))
    book.change([everything[p] for p in picked], picked, bad=True)
    marks = load_marks(book.path)
    assert len(marks) == len(picked)

    dropped = [0]
    with create_dataset(tmp_path / "kept.zarr", dataset.keys, image_shape=dataset.image_shape) as writer:
        for chunk in drop_marked(dataset.chunks(), marks, dropped):
            writer.write(chunk)
    kept = open_dataset(tmp_path / "kept.zarr")
    assert dropped == [len(picked)] and len(kept) == len(dataset) - len(picked)
    assert sorted(identities(kept.columns(list(SMALL_FIELDS)))) == \
        sorted(i for p, i in enumerate(everything) if p not in picked)

    chunks = list(dataset.chunks())
    unmarked = drop_marked(chunks, load_marks(book.path)[:0], [0])
    assert all(a is b for a, b in zip(unmarked, chunks))  # nothing marked: the chunks as they were


def test_export_leaves_out_marked_samples(build, tmp_path):
    """``export --exclude``: the marked samples of the exported split left out, counted in the provenance."""
    dataset = open_dataset(build / "dataset.zarr")
    small = dataset.columns(list(SMALL_FIELDS))
    picked = np.flatnonzero(small["label"] == 0)[:3].tolist()
    book = MarkBook(str(tmp_path / "set.marks.json"), str(build / "dataset.zarr"))
    book.change([identities(small)[p] for p in picked], picked, bad=True)
    result = run_cli("export", str(build / "dataset.zarr"), "-o", str(tmp_path / "kept.npz"), "--layout", "columnar",
                     "--exclude", book.path, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["excluded"] == 3
    kept = open_dataset(tmp_path / "kept.npz")
    assert len(kept) == len(dataset) - 3
    assert not set(identities(kept.columns(list(SMALL_FIELDS)))) & {identities(small)[p] for p in picked}
    record = kept.provenance[-1]
    assert record["counts"]["excluded_marked"] == 3 and record["parameters"]["exclude"]["path"] == book.path
    refused = run_cli("export", str(build / "dataset.zarr"), "-o", str(tmp_path / "other.npz"), "--exclude",
                      str(tmp_path / "missing.marks.json"))
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1 and "no such marks file" in refused.stderr
    assert not (tmp_path / "other.npz").exists()


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"), ('{"marks": []}', "is not a marks file"),
    ('{"jumpnet_stream_marks": 1, "marks": [{"source": "demo"}]}', "mark 0 must be an object with"),
    ('{"jumpnet_stream_marks": 1, "marks": [{"source": "d", "label": "1", "frame_index": 1, "release_index": -1, '
     '"copy": 0}]}', "label a number"),
    ('{"jumpnet_stream_marks": 1, "marks": [{"source": "d", "label": 1, "frame_index": 1.5, "release_index": -1, '
     '"copy": 0}]}', "whole numbers"),
    ('{"jumpnet_stream_marks": 1, "marks": [{"source": "d", "label": NaN, "frame_index": 1, "release_index": -1, '
     '"copy": 0}]}', "label a number"),
    ('{"jumpnet_stream_marks": 1, "marks": [{"source": "d", "label": 0, "frame_index": 1, "release_index": -1, '
     '"copy": 4294967296}]}', "whole numbers")])
def test_a_bad_marks_file_is_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "bad.marks.json"
    path.write_text(text)
    with pytest.raises(JumpnetError, match=message) as raised:
        load_marks(path)
    assert "\n" not in str(raised.value) and str(path) in str(raised.value)
    with pytest.raises(JumpnetError, match="no such marks file"):
        load_marks(tmp_path / "missing.json")


def test_build_leaves_out_marked_samples(build, tmp_path):
    """``build --exclude``: a rebuild with the viewer's marks file (in the build's folder, where the viewer
    saves it) redoes only the set and what follows it, without the marked samples, counted in the manifest;
    a changed marks file redoes the set again; without it, the set is the first build's."""
    folder = tmp_path / "build"
    shutil.copytree(build, folder)
    (folder / "dataset.marks.json").unlink(missing_ok=True)   # the browser test's marks: not these
    recordings = build.parent  # the demo folder: the recorder's collected/ and recordings/
    before = open_dataset(folder / "dataset.zarr")
    small = before.columns(list(SMALL_FIELDS))
    everything = identities(small)
    positives = np.flatnonzero(small["label"] == 1)
    picked = [int(p) for p in (*positives[small["copy"][positives] == 0][:1],
                               *positives[small["copy"][positives] > 0][:1], *np.flatnonzero(small["label"] == 0)[:3])]
    book = MarkBook(str(folder / "dataset.marks.json"), str(folder / "dataset.zarr"))
    book.change([everything[p] for p in picked], picked, bad=True)

    def rebuild(*extra: str) -> dict:
        result = run_cli("build", str(recordings), "-o", str(folder), "--quiet", "--json", *extra)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    report = rebuild("--exclude", book.path)
    assert set(report["ran"]) == {"dataset", "audit", "final"} and report["accounting"]["dataset"]["excluded_marked"] == 5
    kept = open_dataset(folder / "dataset.zarr")
    assert sorted(identities(kept.columns(list(SMALL_FIELDS)))) == \
        sorted(i for p, i in enumerate(everything) if p not in picked)
    assert kept.provenance[-1]["parameters"]["exclude"]["path"] == book.path
    assert len(open_dataset(folder / "final.npz")) == report["samples"] == len(before) - 5

    book.change([everything[picked[0]]], [picked[0]], bad=False)
    assert rebuild("--exclude", book.path)["accounting"]["dataset"]["excluded_marked"] == 4
    assert set(rebuild()["ran"]) == {"dataset", "audit", "final"}
    again = open_dataset(folder / "dataset.zarr")
    for name in SMALL_FIELDS:
        np.testing.assert_array_equal(again.column(name), small[name], err_msg=name)
    refused = run_cli("build", str(recordings), "-o", str(folder), "--exclude", str(tmp_path / "none.json"))
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "no such marks file" in refused.stderr
