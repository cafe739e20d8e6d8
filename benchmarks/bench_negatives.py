"""Negative extraction against plain decoding of the same video, in one run.

For each length: writes a synthetic recording (454x454 mp4v, 30 fps; cached in --workdir), pairs its
positives, then times in fresh processes ``jumpnet-stream negatives`` (all eligible frames: decode,
resize, compress, write) and a plain ``cv2.VideoCapture.read()`` loop over the same file. Start-up
(imports, numba cache load, opening files) is excluded by differencing against a short recording:
fps = (frames_long - frames_short) / (time_long - time_short). Runs of ours and of plain decoding
alternate, ``--repeat`` times each, and the best time of each counts: the machine's speed drifts.
Also the seed's in-memory approach (every frame kept as float64, then ``np.savez``) on a short
clip, for contrast.

    python benchmarks/bench_negatives.py --minutes 5 [--workdir bench-out] [--json]
    python benchmarks/bench_negatives.py --minutes 5,60     # peak RSS against length
    python benchmarks/bench_negatives.py --minutes 5 --kind h264 --seed-seconds 0  # 1080p60 H.264

``--kind h264``: the keylog beside a screen recorder's video of the same length (1920x1080 H.264 at 60 fps,
B-frames, 250-frame GOPs; the keylog's frame indices cover its first half), as ``bench_pipeline.py`` makes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jumpnet_stream.formats import disk_size  # noqa: E402
from jumpnet_stream.screen_video import write_screen_recording  # noqa: E402
from jumpnet_stream.synth import make_recording  # noqa: E402
from tools.measure import run_peak_rss  # noqa: E402

PLAIN = """
import cv2, sys
cap = cv2.VideoCapture(sys.argv[1])
n, frame = 0, None
while True:
    ok, frame = cap.read(frame)
    if not ok:
        break
    n += 1
print(n)
"""

SEED_STYLE = """
import cv2, numpy as np, sys
cap = cv2.VideoCapture(sys.argv[1])
entries, i = [], 0
while True:
    ok, frame = cap.read()
    if not ok:
        break
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) / 255.0
    entries.append((rgb, 0.0, [0.0], [0.0], "press", i))
    i += 1
np.savez(sys.argv[2], data=np.array(entries, dtype=object))
print(i)
"""


def recording(workdir: str, minutes: float, kind: str = "mp4v") -> tuple[str, str]:
    """(video, positives.zarr) for a synthetic recording of ``minutes``, made once and reused: the recorder's
    (454x454 mp4v) or, ``kind="h264"``, its keylog beside a 1080p60 H.264 screen recording."""
    folder = os.path.join(workdir, f"rec-{minutes:g}min" + ("" if kind == "mp4v" else f"-{kind}"))
    name = "bench"
    video = os.path.join(folder, f"{name}_120000.mp4")
    positives = os.path.join(folder, "positives.zarr")
    if not os.path.exists(positives):
        make_recording(folder, name=name, seconds=60 * minutes, keys=("w",), seed=21, video=kind == "mp4v")
        if kind == "h264":
            write_screen_recording(video, frames=round(minutes * 3600), width=1920, height=1080, fps=60, gop=250,
                                   bframes=3, seed=5)
        subprocess.run([sys.executable, "-m", "jumpnet_stream", "preprocess", os.path.join(folder, f"{name}.npz"),
                        "-o", positives, "--quiet", "--json"], check=True, capture_output=True)
        os.remove(os.path.join(folder, f"{name}.npz"))  # only the positives are needed here
    return video, positives


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stdout) of a command in a fresh process."""
    start = time.perf_counter()
    code, peak, out, err = run_peak_rss(cmd)
    seconds = time.perf_counter() - start
    if code:
        sys.exit(f"{' '.join(cmd)} failed: {err.strip()}")
    return seconds, peak, out


def negatives_run(video: str, positives: str, out: str) -> tuple[float, float, int]:
    seconds, peak, stdout = timed([sys.executable, "-m", "jumpnet_stream", "negatives", video, "-o", out,
                                   "--positives", positives, "--overwrite", "--quiet", "--json"])
    return seconds, peak, json.loads(stdout)["frames_read"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="5", help="comma-separated video lengths to measure")
    parser.add_argument("--kind", default="mp4v", choices=("mp4v", "h264"), help="the recorder's video, or a "
                        "1080p60 H.264 screen recording")
    parser.add_argument("--short-minutes", type=float, default=0.5, help="the short run that start-up is taken from")
    parser.add_argument("--seed-seconds", type=float, default=10, help="clip length for the seed-style run (0: skip)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, the best counts")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench-out"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    out = os.path.join(args.workdir, "negatives.zarr")

    short_video, short_pos = recording(args.workdir, args.short_minutes, args.kind)
    rows = []
    for minutes in [float(m) for m in args.minutes.split(",")]:
        video, positives = recording(args.workdir, minutes, args.kind)
        best = {"ours_long": float("inf"), "ours_short": float("inf"), "plain_long": float("inf"),
                "plain_short": float("inf"), "peak": 0.0}
        for _ in range(args.repeat):  # interleaved, so drifts in machine speed hit both alike
            seconds, peak, frames_long = negatives_run(video, positives, out)
            size = disk_size(out)
            best["ours_long"], best["peak"] = min(best["ours_long"], seconds), max(best["peak"], peak)
            best["plain_long"] = min(best["plain_long"], timed([sys.executable, "-c", PLAIN, video])[0])
            seconds, _, frames_short = negatives_run(short_video, short_pos, out)
            best["ours_short"] = min(best["ours_short"], seconds)
            best["plain_short"] = min(best["plain_short"], timed([sys.executable, "-c", PLAIN, short_video])[0])
        frames = frames_long - frames_short
        ours_fps = frames / (best["ours_long"] - best["ours_short"])
        plain_fps = frames / (best["plain_long"] - best["plain_short"])
        ours_short, peak = best["ours_short"], best["peak"]
        rows.append({"kind": args.kind, "minutes": minutes, "frames": frames_long, "plain_decode_fps": round(plain_fps),
                     "negatives_fps": round(ours_fps), "ratio": round(ours_fps / plain_fps, 2),
                     "negatives_peak_rss_mb": round(peak), "startup_s": round(ours_short - frames_short / ours_fps, 2),
                     "store_bytes_per_frame": round(size / frames_long)})

    print(f"{'minutes':>7} {'frames':>7} {'plain decode fps':>17} {'negatives fps':>14} {'ratio':>6} "
          f"{'peak RSS MB':>12} {'start-up s':>11} {'stored B/frame':>15}")
    for r in rows:
        print(f"{r['minutes']:>7g} {r['frames']:>7} {r['plain_decode_fps']:>17} {r['negatives_fps']:>14} "
              f"{r['ratio']:>6} {r['negatives_peak_rss_mb']:>12} {r['startup_s']:>11} {r['store_bytes_per_frame']:>15}")

    seed = None
    if args.seed_seconds:
        clip, _ = recording(args.workdir, args.seed_seconds / 60)
        seconds, peak, stdout = timed([sys.executable, "-c", SEED_STYLE, clip, os.path.join(args.workdir, "seed.npz")])
        os.remove(os.path.join(args.workdir, "seed.npz"))
        seed = {"frames": int(stdout), "fps": round(int(stdout) / seconds), "peak_rss_mb": round(peak),
                "mb_per_minute": round(peak / (args.seed_seconds / 60))}
        print(f"\nseed-style (all frames in RAM as float64, np.savez), {args.seed_seconds:g} s clip: "
              f"{seed['fps']} frames/s, peak RSS {seed['peak_rss_mb']} MB (~{seed['mb_per_minute']} MB per minute of video)")
    if args.json:
        print(json.dumps({"rows": rows, "seed_style": seed}))


if __name__ == "__main__":
    main()
