"""The ``jumpnet-stream`` command: each subcommand parses its options and calls one library function."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Callable, Sequence

from . import __version__
from .errors import JumpnetError
from .stages.preprocess import preprocess

PROG = "jumpnet-stream"


def _one_line_warnings() -> None:
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{PROG}: warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def cmd_preprocess(args: argparse.Namespace) -> int:
    report = preprocess(args.raw, args.output, key=args.key, overwrite=args.overwrite,
                        scalar_hold=args.scalar_hold, quiet=args.quiet)
    if args.json:
        print(json.dumps(report.counts()))
        return 0
    rows = [("entries", report.total), ("presses", report.press_seen), ("releases", report.release_seen),
            ("paired (positives)", report.paired), ("unmatched final press", report.unmatched_final_press),
            ("malformed (skipped)", report.malformed)]
    print(f"preprocess {args.raw} -> {args.output} (key '{args.key}')")
    for label, value in rows:
        print(f"  {label:<24}{value:>8}")
    for reason, count in sorted(report.malformed_reasons.items()):
        print(f"    {count:>6} x {reason}")
    if report.unmatched_final_press:
        print("  the final press was never released: its positive has hold NaN")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output dataset: .zarr (the store) or .npz (the seed's legacy format)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Turn gameplay recordings (an .mp4 and a recorder "
                                     "keylog .npz) into labelled jump datasets, streaming, in bounded memory.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("preprocess", help="pair presses with releases: one positive sample per jump",
                       description="Stage 1: walk the keylog's events in order and emit one positive sample per "
                       "jump of KEY (its first press's image, multi_hot and frame index; the hold from the next "
                       "release). Auto-repeat presses are ignored, malformed entries counted and skipped.")
    p.add_argument("raw", metavar="RAW.npz", help="recorder keylog (collected/<name>.npz)")
    _common(p)
    p.add_argument("--key", default="w", help="target key (default: w)")
    p.add_argument("--scalar-hold", action="store_true",
                   help=".npz output: store hold_duration as a 0-d array, which float() accepts on numpy >= 2.4 "
                   "(single-key sets only)")
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object on stdout")
    p.set_defaults(run=cmd_preprocess)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _one_line_warnings()
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except JumpnetError as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
