"""``serve``: the viewer on a local port, bound to 127.0.0.1 only. The standard library's threaded HTTP
server is enough for one person's browser (a page's image and frames load side by side); every request is
answered by :class:`.app.Viewer`, and whatever fails inside it becomes a one-line 500, never a traceback."""

from __future__ import annotations

import errno
import os
import sys
import urllib.parse
import webbrowser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from ..errors import JumpnetError
from ..formats.output import clear_interrupt
from . import pages
from .app import Response, Viewer, html
from .source import open_source

HOST = "127.0.0.1"
MAX_FORM_BYTES = 64 << 10  # a mark's form is a few dozen bytes


def _handler(viewer: Viewer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "jumpnet-stream-view"

        def log_message(self, format: str, *args: object) -> None:  # no line per request
            pass

        def _answer(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            try:
                form = {}
                if method == "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    if not 0 <= length <= MAX_FORM_BYTES:
                        raise ValueError(f"a form of {length} bytes")
                    form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode("utf-8")))
                response = viewer.answer(method, url.path, query, form)
            except (ValueError, UnicodeDecodeError) as error:
                response = html(pages.error_page(400, f"bad request: {error}"), 400)
            except Exception as error:  # a fault of the viewer's: one line here and in the browser
                message = f"{type(error).__name__}: {error}"
                print(f"jumpnet-stream view: error answering {method} {self.path}: {message}", file=sys.stderr)
                response = html(pages.error_page(500, f"the viewer failed: {message}"), 500)
            self._send(response)

        def _send(self, response: Response) -> None:
            try:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                self.send_header("Cache-Control", "no-store")
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)
            except (BrokenPipeError, ConnectionResetError):  # the browser went away: nothing to answer
                pass

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

    return Handler


def serve(path: str | os.PathLike, port: int = 8765, open_browser: bool = False,
          ready: Callable[[str], None] | None = None) -> None:
    """Serve the viewer over ``path`` (a dataset, build folder or keylog) on 127.0.0.1:``port`` (0: any free
    port) until interrupted (Ctrl-C, SIGTERM). ``ready`` is called with the URL once it answers;
    ``open_browser`` opens it there."""
    if not 0 <= port <= 65535:
        raise JumpnetError(None, f"port must be between 0 and 65535, not {port}")
    viewer = Viewer(open_source(path))
    try:
        server = ThreadingHTTPServer((HOST, port), _handler(viewer))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise JumpnetError(None, f"port {port} is in use: choose another port (0: any free one)") from None
        raise JumpnetError(None, f"cannot listen on {HOST}:{port}: {error.strerror or error}") from None
    server.daemon_threads = True
    url = f"http://{HOST}:{server.server_address[1]}/"
    with server:
        if ready is not None:
            ready(url)
        if open_browser:
            webbrowser.open(url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM handled as one: the normal way to stop
            clear_interrupt()
