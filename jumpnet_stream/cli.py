"""The ``jumpnet-stream`` command: each subcommand parses its options and calls one library function."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from dataclasses import asdict
from typing import Callable, Sequence

from .cli_options import PROG, build_parser
from .errors import JumpnetError
from .formats.output import check_interrupt, clear_interrupt, note_interrupt
from .pipeline import return_large_buffers_to_os
from .viewer.cli import cmd_view


def _held_warnings() -> list[str]:
    """Warnings are held until the command's outcome is known: shown, one line each, if it succeeds; left
    out if it fails, whose one line is its error (a warning about how a file was read, then the error it
    led to, would be two)."""
    held: list[str] = []

    def hold(message, category, filename, lineno, file=None, line=None):
        text = f"{PROG}: warning: {message}"
        if text not in held:
            held.append(text)

    warnings.showwarning = hold
    return held


# Each command imports its own stage (preprocess need not load numba and OpenCV, ~60 MB) and returns
# its counts (what --json prints) and a human summary (what it prints otherwise).
Result = tuple[dict, str]


def cmd_preprocess(args: argparse.Namespace) -> Result:
    from .stages.preprocess import preprocess

    report = preprocess(args.raw, args.output, key=args.key, pairing=args.pairing, overwrite=args.overwrite,
                        hold=args.hold, quiet=args.quiet)
    rows = [("entries", report.total), ("presses", report.press_seen), ("releases", report.release_seen),
            ("paired (positives)", report.paired), ("unmatched final press", report.unmatched_final_press),
            ("another key let go", report.other_key_release_while_pending),
            ("malformed (skipped)", report.malformed)]
    lines = [f"preprocess {args.raw} -> {args.output} (key '{args.key}')"]
    lines += [f"  {label:<24}{value:>8}" for label, value in rows]
    lines += [f"    {count:>6} x {reason}" for reason, count in sorted(report.malformed_reasons.items())]
    if report.unmatched_final_press:
        lines.append("  the final press was never released: its positive has hold NaN")
    return report.counts(), "\n".join(lines)


def cmd_negatives(args: argparse.Namespace) -> Result:
    from .stages.negatives import negatives

    report = negatives(args.video, args.output, positives=args.positives, radius=args.radius, keep=args.keep,
                       seed=args.seed, size=args.size, held_frames=args.held_frames, overwrite=args.overwrite,
                       quiet=args.quiet, strict=args.strict)
    claimed = "unknown" if report.frames_claimed is None else report.frames_claimed
    read = "frames read" if args.keep is None else "frames read (to the last chosen)"
    rows = [(read, report.frames_read), ("frames claimed by container", claimed),
            (f"excluded (within {args.radius} of a press{', or held' if args.held_frames == 'exclude' else ''})",
             report.excluded), ("eligible", report.eligible)]
    if args.keep is not None:
        rows.append((f"not chosen (--keep {args.keep})", report.not_chosen))
    rows.append(("negatives written", report.written))
    lines = [f"negatives {args.video} -> {args.output}"] + [f"  {label:<36}{value:>9}" for label, value in rows]
    if report.chosen_past_end:
        lines.append(f"  {report.chosen_past_end} chosen frames lie past the video's end: its container claims "
                     f"{claimed} frames")
    return asdict(report), "\n".join(lines)


def cmd_reduce(args: argparse.Namespace) -> Result:
    from .stages.reduce import reduce

    report = reduce(args.input, args.output, keep=args.keep, seed=args.seed, overwrite=args.overwrite,
                    quiet=args.quiet)
    return asdict(report), (f"reduce {args.input} -> {args.output}: kept {report.kept} of {report.total} "
                            f"(seed {args.seed}), dropped {report.dropped}")


def cmd_augment(args: argparse.Namespace) -> Result:
    from .stages.augment import AugmentOptions, augment

    options = AugmentOptions(multiplier=args.multiplier, seed=args.seed, p_flip=args.p_flip,
                             p_brightness=args.p_brightness, p_noise=args.p_noise, p_shift=args.p_shift)
    report = augment(args.input, args.output, options, overwrite=args.overwrite, quiet=args.quiet)
    return asdict(report), (f"augment {args.input} -> {args.output}: {report.originals} originals + "
                            f"{report.copies} augmented copies = {report.written} samples (seed {args.seed})")


def cmd_merge(args: argparse.Namespace) -> Result:
    from .stages.merge import merge

    report = merge(args.inputs, args.output, shuffle=args.shuffle, seed=args.seed, keys=args.keys,
                   overwrite=args.overwrite, quiet=args.quiet)
    lines = [f"merge -> {args.output}: {report.written} samples, keys {', '.join(report.keys)}"
             + (f", shuffled (seed {args.seed})" if args.shuffle else "")]
    lines += [f"  {entry['samples']:>8}  {path}  (keys {', '.join(entry['keys'])})"
              for path, entry in zip(args.inputs, report.inputs)]
    return asdict(report), "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> Result:
    from .stages.export import export

    report = export(args.input, args.output, layout=args.layout, image_dtype=args.dtype, hold=args.hold,
                    hold_key=args.hold_key, image_rows=args.rechunk, codec=args.codec, keys=args.keys,
                    exclude=args.exclude, force=args.force, overwrite=args.overwrite, quiet=args.quiet)
    left_out = f" ({report.excluded} marked samples left out)" if args.exclude else ""
    return asdict(report), (f"export {args.input} -> {args.output}: {report.samples} samples, "
                            f"{report.bytes / 1e6:.1f} MB{left_out}")


def cmd_build(args: argparse.Namespace) -> Result:
    from .build import OPTION_NAMES, BuildOptions, build, load_config, pair_directory, pair_files

    recordings, settings = load_config(args.config) if args.config else ([], {})
    for folder in args.directories:
        recordings += pair_directory(folder)
    recordings += pair_files(args.recording or [], args.video or [])
    settings.update({name: getattr(args, name) for name in OPTION_NAMES if getattr(args, name) is not None})
    output = args.output or settings.pop("output", None)
    settings.pop("output", None)
    if output is None:
        raise JumpnetError(args.config, "no output directory: pass -o DIR (or set output in the config)")
    if args.shard:
        from .build import build_shard
        from .build.shard import parse_shard

        index, count = parse_shard(args.shard)
        shard = build_shard(recordings, output, BuildOptions(**settings), index=index, count=count, quiet=args.quiet)
        waiting = (f"; negatives wait for the positives of {', '.join(shard['waiting_for'])}: run it again once "
                   "the other shards are done" if shard["waiting_for"] else "")
        ran = ", ".join(shard["ran"]) or "nothing"
        return shard, (f"build shard {shard['shard']} -> {output}: recordings "
                       f"{', '.join(shard['recordings']) or 'none'}; ran {ran}{waiting}")
    report = build(recordings, output, BuildOptions(**settings), fresh=args.fresh, quiet=args.quiet,
                   workers=args.workers, scheduler=args.scheduler)
    return asdict(report), _build_summary(report, output)


def cmd_demo(args: argparse.Namespace) -> Result:
    from .build import demo
    from .inspection import contact_sheet

    report = demo(args.folder, seconds=args.seconds, quiet=args.quiet)
    sheet = os.path.join(args.folder, "sheet.png")
    contact_sheet(os.path.join(report.folder, "dataset.zarr"), sheet, overwrite=True)
    built = os.path.join(args.folder, "build")
    return asdict(report), (f"{_build_summary(report, built)}\n  contact sheet            {sheet}\n"
                            f"look inside: {PROG} inspect {os.path.join(built, 'final.npz')}")


def _build_summary(report, folder: str) -> str:
    lines = [f"build -> {folder}"]
    for name, recording in report.accounting["recordings"].items():
        events, frames = recording["events"], recording["frames"]
        lines.append(f"  {name}: {events['total']} events -> {recording['positives']} positives "
                     f"({events['malformed']} malformed); {frames['frames']} frames -> {frames['negatives']} negatives")
    positives = report.accounting["positives"]
    if positives["dropped_unreleased"]:
        lines.append(f"  {positives['dropped_unreleased']} positives left out: press never released (hold NaN)")
    if report.accounting["dataset"]["excluded_marked"]:
        lines.append(f"  {report.accounting['dataset']['excluded_marked']} samples left out: marked bad (--exclude)")
    if positives["dropped_in_gap"]:
        lines.append(f"  {positives['dropped_in_gap']} positives left out: in the gap between training and validation")
    lines += [f"  positives with augmented copies {report.positives:>8}",
              f"  negatives                       {report.negatives:>8}",
              f"  samples (shuffled)              {report.samples:>8}"]
    if len(report.splits) > 1:
        for split, counts in report.splits.items():
            lines.append(f"    {split:<5} {counts['positives']:>6} positives {counts['negatives']:>6} negatives  class "
                         f"weights {report.class_weights[split]['positive']:.2f} / "
                         f"{report.class_weights[split]['negative']:.2f}")
    lines += [f"  {line}" for line in _audit_lines(report.audit)]
    if report.reused:
        lines.append(f"  reused from an earlier run: {', '.join(report.reused)}")
    if report.unchanged:
        lines.append(f"  unchanged from the earlier run: {', '.join(report.unchanged)}")
    if report.removed:
        lines.append(f"  removed (no longer part of this build): {', '.join(report.removed)}")
    lines.append(f"  wrote {', '.join(report.wrote)}")
    return "\n".join(lines)


def _audit_lines(audit: dict) -> list[str]:
    from .quality import AuditReport

    return AuditReport(**audit).lines() if audit else []


def cmd_inspect(args: argparse.Namespace) -> Result:
    from .inspection import contact_sheet, describe

    summary = describe(args.path, n=args.n, keys=args.keys, shortcuts=not args.no_audit)
    counts, text = summary.counts(), summary.text()
    if args.sheet:
        sheet = contact_sheet(args.path, args.sheet, count=args.count, columns=args.columns, pick=args.pick,
                              seed=args.seed, overwrite=args.overwrite, keys=args.keys)
        counts["sheet"] = asdict(sheet)
        text += (f"\ncontact sheet {args.sheet}: {len(sheet.positions)} samples ({sheet.positives} positive, "
                 f"{sheet.negatives} negative), {sheet.width}x{sheet.height}")
    return counts, text


def cmd_check(args: argparse.Namespace) -> Result:
    options = {"size": args.size, "sample": args.sample, "max_offset": args.max_offset, "seed": args.seed}
    if args.video is None:
        from .folder_check import check_folder

        if not os.path.isdir(args.raw):
            raise JumpnetError(args.raw, "check takes a keylog and its video, or a folder of recordings")
        report = check_folder(args.raw, workers=args.workers, scheduler=args.scheduler, **options)
    else:
        from .sync import check_sync

        if args.workers is not None or args.scheduler is not None:
            raise JumpnetError(None, "--workers and --scheduler are for checking a folder (check DIR)")
        report = check_sync(args.raw, args.video, quiet=args.quiet, **options)
    # scripts can tell "suspect" (2) from an error (1)
    args.exit_code = {"ok": 0, "suspect": 2}.get(report.verdict, 1)
    return report.counts(), report.text()


COMMANDS: dict[str, Callable[[argparse.Namespace], Result]] = {
    "preprocess": cmd_preprocess, "negatives": cmd_negatives, "reduce": cmd_reduce, "augment": cmd_augment,
    "merge": cmd_merge, "export": cmd_export, "build": cmd_build, "demo": cmd_demo, "inspect": cmd_inspect,
    "check": cmd_check, "view": cmd_view}


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: every output in progress is removed on the way out."""


def _interrupt(signum: int, frame: object) -> None:
    kind = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    note_interrupt(kind)  # raised again before any output lands, should Python drop this one
    raise kind()


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 are printed escaped, never crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    args.run = COMMANDS[args.command]
    held = _held_warnings()
    return_large_buffers_to_os()
    clear_interrupt()
    # Ctrl-C stays ignored where it was (a job started in the background by a script): Python's own rule
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, signal.SIGTERM)
                if signum == signal.SIGTERM or signal.getsignal(signum) is not signal.SIG_IGN}
    run: Callable[[argparse.Namespace], Result] = args.run
    try:
        counts, summary = run(args)
        check_interrupt()  # one Python dropped, in a command that landed nothing after it
        for line in held:
            print(line, file=sys.stderr)
        print(json.dumps(counts) if args.json else summary)
        return getattr(args, "exit_code", 0)
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
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated): outputs in progress are removed by now
        print(f"{PROG}: {'terminated' if isinstance(exc, Terminated) else 'interrupted'} (nothing half-written "
              "was kept)", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(143 if isinstance(exc, Terminated) else 130)  # background threads (zarr's loop) end with us
    finally:  # a program that called main goes on as before it
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        clear_interrupt()
