"""Write a synthetic recording as the recorder writes one: ``OUT_DIR/collected/<name>.npz`` (the keylog)
and ``OUT_DIR/recordings/<name>_120000.mp4`` (the preview video).

    python tools/make_recording.py OUT_DIR [--name demo] [--seconds 60] [--keys w] [--seed 0] ...
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jumpnet_stream.synth import make_recording  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder that receives collected/ and recordings/")
    parser.add_argument("--name", default="demo", help="the recording's name (default: demo)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the recording (default: 60)")
    parser.add_argument("--keys", default="w", help="comma-separated tracked keys; the first one jumps (default: w; "
                        "the recorder's own default is a,s,d,f)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scene and the key presses (default: 0)")
    parser.add_argument("--capture", type=int, default=227, help="capture size; the video is twice this (default: 227)")
    parser.add_argument("--layout", choices=["rows", "tuples"], default="rows",
                        help="'data' as an (N, 6) array (rows, numpy's own layout) or an (N,) array of tuples")
    parser.add_argument("--writer", choices=["stream", "numpy"], default="stream",
                        help="write the keylog entry by entry (stream, any length) or with np.savez as the recorder "
                        "does (numpy: holds it all in memory)")
    parser.add_argument("--no-video", action="store_true", help="write the keylog only")
    parser.add_argument("--wrinkles", action="store_true", help="apply the recorder's historical quirks at random")
    parser.add_argument("--old-keys", action="store_true", help="keys as an object array of shape (1, K)")
    parser.add_argument("--malformed", type=int, default=0, help="add this many broken entries (needs --layout tuples)")
    args = parser.parse_args()
    rec = make_recording(args.out_dir, name=args.name, seconds=args.seconds, keys=tuple(args.keys.split(",")),
                         seed=args.seed, capture=args.capture, video=not args.no_video, layout=args.layout,
                         writer=args.writer, wrinkles=args.wrinkles, old_keys=args.old_keys,
                         malformed=args.malformed, folders=True)
    print(f"{rec.npz}: {rec.events} events, keys {', '.join(rec.keys)}")
    if rec.video:
        print(f"{rec.video}: {rec.frames} frames")


if __name__ == "__main__":
    main()
