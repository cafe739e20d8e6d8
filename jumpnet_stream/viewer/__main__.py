"""``python -m jumpnet_stream.viewer PATH [--port N] [--open]``: what ``jumpnet-stream view`` runs, errors
reported the same way (one line, exit 1)."""

from __future__ import annotations

import argparse
import sys

from ..cli_options import PROG
from ..errors import JumpnetError
from .cli import add_parser, cmd_view


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG)
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["view", *(sys.argv[1:] if argv is None else argv)])
    try:
        cmd_view(args)
    except (JumpnetError, OSError) as exc:
        if args.debug:
            raise
        where = f"{exc.filename}: " if isinstance(exc, OSError) and exc.filename else ""
        print(f"{PROG}: error: {where}{exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}",
              file=sys.stderr)
        return 1
    return 0


sys.exit(main())
