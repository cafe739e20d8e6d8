"""Write a synthetic recording (``<name>.npz`` keylog + ``<name>_120000.mp4`` video) in the recorder's formats.

    python tools/make_recording.py OUT_DIR [--seconds 60] [--keys w] [--seed 0] [--layout rows|tuples]
                                           [--writer stream|numpy] [--wrinkles] [--old-keys] [--malformed N]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jumpnet_stream.synth import make_recording  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--name", default="demo")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--keys", default="w", help="comma-separated tracked keys; the first one jumps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--capture", type=int, default=227, help="capture size (the video is twice this)")
    parser.add_argument("--layout", choices=["rows", "tuples"], default="rows")
    parser.add_argument("--writer", choices=["stream", "numpy"], default="stream")
    parser.add_argument("--no-video", action="store_true")
    parser.add_argument("--wrinkles", action="store_true", help="apply the recorder's historical quirks")
    parser.add_argument("--old-keys", action="store_true", help="keys as an object array of shape (1, K)")
    parser.add_argument("--malformed", type=int, default=0, help="add this many broken entries (needs tuples)")
    args = parser.parse_args()
    rec = make_recording(args.out_dir, name=args.name, seconds=args.seconds, keys=tuple(args.keys.split(",")),
                         seed=args.seed, capture=args.capture, video=not args.no_video, layout=args.layout,
                         writer=args.writer, wrinkles=args.wrinkles, old_keys=args.old_keys,
                         malformed=args.malformed)
    print(f"{rec.npz}: {rec.events} events, keys {', '.join(rec.keys)}")
    if rec.video:
        print(f"{rec.video}: {rec.frames} frames")


if __name__ == "__main__":
    main()
