"""The ``view`` subcommand: its options, and the handler that calls :func:`.server.serve` (``jumpnet-stream``'s
``cli`` registers both)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``view PATH [--port N] [--open]`` on the command line's subparsers."""
    p = subparsers.add_parser(
        "view", help="browse a dataset, build folder or keylog in a local web page; mark bad samples",
        description="Serve a web page on 127.0.0.1 (this machine only) over PATH: a dataset (.zarr, .npz, .h5), a "
        "build folder or a recorder keylog. A paged grid of samples with filters, each sample with every field, "
        "its augmented copies and its video frames; the plots (class balance, holds, jumps along each recording, "
        "the shortcut audit, the build's accounting); samples marked bad are saved to NAME.marks.json beside the "
        "set, never into it. Stop it with Ctrl-C.")
    p.add_argument("path", metavar="PATH", help="a dataset, a build folder (holding manifest.json) or a keylog .npz")
    p.add_argument("--port", type=int, default=8765, help="the port on 127.0.0.1 (default: 8765; 0: any free one)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object on stdout when it stops "
                   "(the address goes to stderr)")
    return p


def cmd_view(args: argparse.Namespace) -> tuple[dict, str]:
    """Serve until stopped; the address is printed as soon as the page answers."""
    from .server import serve

    def ready(url: str) -> None:
        print(f"view {args.path}: {url}  (Ctrl-C to stop)", file=sys.stderr if args.json else sys.stdout, flush=True)

    serve(args.path, port=args.port, open_browser=args.open, ready=ready)
    return {"path": args.path}, "view stopped"
