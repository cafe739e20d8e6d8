"""The whole ``build`` of a synthetic recording against plain decoding of its video, in one run.

For each kind and length: writes a synthetic recording (keylog with float32 227x227 images per event, as
the recorder writes them, and a 454x454 mp4v video at 30 fps, or with ``--kind h264`` a 1080p60 H.264
screen recording with B-frames and 250-frame GOPs; cached in --workdir), then alternates, in fresh
processes, ``jumpnet-stream build --fresh`` (default options: 500 negatives, 2 augmented copies) and a
plain ``cv2.VideoCapture.read()`` loop over the same video; the medians of ``--repeat`` runs count (the
machine's speed drifts). Reported: the build's frames/s (video frames / whole wall time, start-up
included) beside plain decode, each stage's throughput (the build's own stage timings), peak RSS,
stored bytes per sample and the compression ratio of dataset.zarr.

    python benchmarks/bench_pipeline.py --minutes 5 [--kind mp4v,h264] [--repeat 3] [--workdir bench-out] [--json]
    python benchmarks/bench_pipeline.py --minutes 5,20,60    # peak RSS against length
    python benchmarks/bench_pipeline.py --minutes 5 --remedy # what positives from the video cost
    python benchmarks/bench_pipeline.py --minutes 10 --baseline ../before  # against an earlier version's build

``--remedy`` also times, in the same run, the build with ``--positive-images keylog`` (positives as the
keylog's clean captures, the original scripts' way, which leaves the sharpness shortcut in the set) and
reports what the default (positives from the video frame at each press, label masked) costs beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench_negatives import PLAIN, timed  # noqa: E402
from jumpnet_stream.screen_video import write_screen_recording  # noqa: E402
from jumpnet_stream.synth import make_recording  # noqa: E402
from jumpnet_stream.video import Video  # noqa: E402


KINDS = ("mp4v", "h264")


def recording(workdir: str, minutes: float, kind: str = "mp4v") -> tuple[str, str]:
    """(keylog, video) of a synthetic recording of ``minutes``, made once and reused: the recorder's own
    (454x454 mp4v at 30 fps), or its keylog beside a screen recorder's video of the same length (``h264``:
    1920x1080 H.264 at 60 fps, B-frames, 250-frame GOPs; the keylog's frame indices then cover its first half)."""
    folder = os.path.join(workdir, f"pipeline-{minutes:g}min" + ("" if kind == "mp4v" else f"-{kind}"))
    raw, video = os.path.join(folder, "bench.npz"), os.path.join(folder, "bench_120000.mp4")
    if not os.path.exists(video):
        partial = folder + ".partial"
        make_recording(partial, name="bench", seconds=60 * minutes, keys=("w",), seed=21, video=kind == "mp4v")
        if kind == "h264":
            write_screen_recording(os.path.join(partial, "bench_120000.mp4"), frames=round(minutes * 3600),
                                   width=1920, height=1080, fps=60, gop=250, bframes=3, seed=5)
        os.replace(partial, folder)
    return raw, video


def baseline_build(checkout: str, args: list[str]) -> list[str]:
    """The command line running ``jumpnet-stream`` from another checkout (an earlier version) instead."""
    start = f"import sys; sys.path.insert(0, {os.path.abspath(checkout)!r}); from jumpnet_stream.cli import main; " \
            "sys.exit(main())"
    return [sys.executable, "-c", start, *args]


def measure(workdir: str, minutes: float, repeat: int, kind: str = "mp4v", remedy: bool = False,
            baseline: str | None = None) -> dict:
    raw, video = recording(workdir, minutes, kind)
    frames = Video(video).frame_count()
    out = os.path.join(workdir, "build-out")
    build = [sys.executable, "-m", "jumpnet_stream", "build", "--recording", raw, "--video", video, "-o", out,
             "--fresh", "--quiet", "--json"]
    keylog = [*build[:build.index("-o")], "-o", os.path.join(workdir, "build-keylog"), "--fresh", "--quiet",
              "--positive-images", "keylog"]
    before = baseline_build(baseline, [*build[3:build.index("-o")], "-o", os.path.join(workdir, "build-baseline"),
                                       "--fresh", "--quiet", "--json"]) if baseline else None
    runs: list[tuple[float, dict]] = []
    plain: list[float] = []
    keylog_runs: list[float] = []
    baseline_runs: list[tuple[float, dict]] = []
    peak = 0.0
    for _ in range(repeat):  # interleaved, so drifts in machine speed hit all alike
        seconds, rss, stdout = timed(build)
        peak = max(peak, rss)
        runs.append((seconds, json.loads(stdout)))
        plain.append(timed([sys.executable, "-c", PLAIN, video])[0])
        if remedy:
            keylog_runs.append(timed(keylog)[0])
        if before:
            seconds, _, stdout = timed(before)
            baseline_runs.append((seconds, json.loads(stdout)))
    best = statistics.median(seconds for seconds, _ in runs)
    plain_s = statistics.median(plain)
    report = min(runs, key=lambda run: abs(run[0] - best))[1]  # the stage timings of the median run
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    stages, dataset = report["seconds"], manifest["outputs"]["dataset.zarr"]
    samples = dataset["samples"]
    raw_bytes = samples * 227 * 227 * 3
    keylog_s = statistics.median(keylog_runs) if remedy else None
    baseline_s = statistics.median(seconds for seconds, _ in baseline_runs) if before else None
    return {
        "kind": kind, "minutes": minutes, "frames": frames, "keylog_mb": round(os.path.getsize(raw) / 1e6),
        "plain_decode_fps": round(frames / plain_s), "build_fps": round(frames / best),
        "ratio": round(plain_s / best, 2), "build_s": round(best, 2), "plain_s": round(plain_s, 2),
        "peak_rss_mb": round(peak), "stage_s": stages,
        "preprocess_mb_s": round(os.path.getsize(raw) / 1e6 / stages["preprocess bench"]),
        "negatives_fps": round(frames / stages["frames bench"]),
        "augment_samples_s": round((manifest["accounting"]["positives"]["kept"]
                                    + manifest["accounting"]["positives"]["augmented_copies"]) / stages["augment"]),
        "dataset_samples_s": round(samples / stages["dataset"]),
        "final_samples_s": round(samples / stages["final"]),
        "samples": samples, "stored_bytes_per_sample": round(dataset["bytes"] / samples),
        "compression_ratio": round(raw_bytes / dataset["bytes"], 2),
        **({"keylog_positives_build_s": round(keylog_s, 2), "remedy_cost": round(best / keylog_s, 2),
            "audit_default": report["audit"]["auc"]} if remedy else {}),
        **({"baseline_build_s": round(baseline_s, 2), "baseline_ratio": round(plain_s / baseline_s, 2),
            "speedup": round(baseline_s / best, 2),
            "baseline_stage_s": min(baseline_runs, key=lambda run: abs(run[0] - baseline_s))[1]["seconds"]}
           if before else {}),
    }


COLUMNS = [("kind", "video"), ("minutes", "min"), ("frames", "frames"), ("keylog_mb", "keylog MB"),
           ("plain_decode_fps", "decode fps"), ("build_fps", "build fps"), ("ratio", "ratio"),
           ("peak_rss_mb", "peak RSS MB"), ("preprocess_mb_s", "preprocess MB/s"), ("negatives_fps", "negatives fps"),
           ("augment_samples_s", "augment /s"), ("dataset_samples_s", "merge /s"), ("final_samples_s", "final.npz /s"),
           ("stored_bytes_per_sample", "B/sample"), ("compression_ratio", "compression")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="5", help="comma-separated recording lengths")
    parser.add_argument("--kind", default="mp4v", help=f"comma-separated videos: {', '.join(KINDS)}")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, the medians count")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench-out"))
    parser.add_argument("--remedy", action="store_true", help="also time the build with positives from the keylog")
    parser.add_argument("--baseline", metavar="CHECKOUT", help="also time the build of another checkout (an earlier "
                        "version: git worktree add ../before REV), interleaved")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kinds = args.kind.split(",")
    if set(kinds) - set(KINDS):
        parser.error(f"--kind: one or more of {', '.join(KINDS)}")
    os.makedirs(args.workdir, exist_ok=True)
    rows = [measure(args.workdir, float(m), args.repeat, kind, args.remedy, args.baseline) for kind in kinds
            for m in args.minutes.split(",")]
    print("  ".join(f"{title:>{max(len(title), 6)}}" for _, title in COLUMNS))
    for row in rows:
        print("  ".join(f"{row[key]:>{max(len(title), 6)}}" for key, title in COLUMNS))
    print(f"ratio = build fps / plain read() fps of the same video (start-up included in both; medians of "
          f"{args.repeat} interleaved fresh runs); stage rates from the build's own timings")
    for row in rows:
        stages = ", ".join(f"{name} {seconds:g}" for name, seconds in row["stage_s"].items())
        print(f"{row['kind']} {row['minutes']:g} min: build {row['build_s']} s, read() {row['plain_s']} s; "
              f"stage seconds: {stages}")
        if "baseline_build_s" in row:
            stages = ", ".join(f"{name} {seconds:g}" for name, seconds in row["baseline_stage_s"].items())
            print(f"{row['kind']} {row['minutes']:g} min, {args.baseline}: build {row['baseline_build_s']} s, ratio "
                  f"{row['baseline_ratio']} (this checkout x{row['speedup']} faster); stage seconds: {stages}")
        if "remedy_cost" in row:
            print(f"{row['minutes']:g} min: build {row['build_s']} s with positives from the video (the default), "
                  f"{row['keylog_positives_build_s']} s from the keylog: x{row['remedy_cost']}; audit {row['audit_default']}")
    if args.json:
        print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
