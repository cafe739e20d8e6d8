"""The ``view`` subcommand's handler, which calls :func:`.server.serve` (its options are with every other
command's, in ``cli_options``)."""

from __future__ import annotations

import argparse
import sys


def cmd_view(args: argparse.Namespace) -> tuple[dict, str]:
    """Serve until stopped; the address is printed as soon as the page answers."""
    from .server import serve

    def ready(url: str) -> None:
        print(f"view {args.path}: {url}  (Ctrl-C to stop)", file=sys.stderr if args.json else sys.stdout, flush=True)

    serve(args.path, port=args.port, open_browser=args.open, ready=ready)
    return {"path": args.path}, "view stopped"
