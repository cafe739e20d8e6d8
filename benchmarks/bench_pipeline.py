"""The whole ``build`` of a synthetic recording against plain decoding of its video, in one run.

For each length: writes a synthetic recording (keylog with float32 227x227 images per event, as the
recorder writes them, and a 454x454 mp4v video at 30 fps; cached in --workdir), then alternates, in
fresh processes, ``jumpnet-stream build --fresh`` (default options: 500 negatives, 2 augmented copies)
and a plain ``cv2.VideoCapture.read()`` loop over the same video; the best of ``--repeat`` counts (the
machine's speed drifts). Reported: the build's frames/s (video frames / whole wall time, start-up
included) beside plain decode, each stage's throughput (the build's own stage timings), peak RSS,
stored bytes per sample and the compression ratio of dataset.zarr.

    python benchmarks/bench_pipeline.py --minutes 5 [--repeat 2] [--workdir bench-out] [--json]
    python benchmarks/bench_pipeline.py --minutes 5,20,60    # peak RSS against length
    python benchmarks/bench_pipeline.py --minutes 5 --remedy # what positives from the video cost

``--remedy`` also times, in the same run, the build with ``--positive-images keylog`` (positives as the
keylog's clean captures, the original scripts' way, which leaves the sharpness shortcut in the set) and
reports what the default (positives from the video frame at each press, label masked) costs beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench_negatives import PLAIN, timed  # noqa: E402
from jumpnet_stream.synth import make_recording  # noqa: E402


def recording(workdir: str, minutes: float) -> tuple[str, str, int]:
    """(keylog, video, frames) of a synthetic recording of ``minutes``, made once and reused."""
    folder = os.path.join(workdir, f"pipeline-{minutes:g}min")
    raw, video = os.path.join(folder, "bench.npz"), os.path.join(folder, "bench_120000.mp4")
    if not os.path.exists(video):
        partial = folder + ".partial"
        rec = make_recording(partial, name="bench", seconds=60 * minutes, keys=("w",), seed=21)
        os.replace(partial, folder)
        return raw, video, rec.frames
    return raw, video, round(minutes * 60 * 30)


def measure(workdir: str, minutes: float, repeat: int, remedy: bool = False) -> dict:
    raw, video, frames = recording(workdir, minutes)
    out = os.path.join(workdir, "build-out")
    build = [sys.executable, "-m", "jumpnet_stream", "build", "--recording", raw, "--video", video, "-o", out,
             "--fresh", "--quiet", "--json"]
    keylog = [*build[:build.index("-o")], "-o", os.path.join(workdir, "build-keylog"), "--fresh", "--quiet",
              "--positive-images", "keylog"]
    best, plain_best, keylog_best, peak, report = float("inf"), float("inf"), float("inf"), 0.0, None
    for _ in range(repeat):  # interleaved, so drifts in machine speed hit all alike
        seconds, rss, stdout = timed(build)
        peak = max(peak, rss)
        if seconds < best:
            best, report = seconds, json.loads(stdout)
        plain_best = min(plain_best, timed([sys.executable, "-c", PLAIN, video])[0])
        if remedy:
            keylog_best = min(keylog_best, timed(keylog)[0])
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    stages, dataset = report["seconds"], manifest["outputs"]["dataset.zarr"]
    samples = dataset["samples"]
    raw_bytes = samples * 227 * 227 * 3
    return {
        "minutes": minutes, "frames": frames, "keylog_mb": round(os.path.getsize(raw) / 1e6),
        "plain_decode_fps": round(frames / plain_best), "build_fps": round(frames / best),
        "ratio": round(plain_best / best, 2), "build_s": round(best, 2), "peak_rss_mb": round(peak),
        "preprocess_mb_s": round(os.path.getsize(raw) / 1e6 / stages["preprocess bench"]),
        "negatives_fps": round(frames / stages["frames bench"]),
        "augment_samples_s": round((manifest["accounting"]["positives"]["kept"]
                                    + manifest["accounting"]["positives"]["augmented_copies"]) / stages["augment"]),
        "dataset_samples_s": round(samples / stages["dataset"]),
        "final_samples_s": round(samples / stages["final"]),
        "samples": samples, "stored_bytes_per_sample": round(dataset["bytes"] / samples),
        "compression_ratio": round(raw_bytes / dataset["bytes"], 2),
        **({"keylog_positives_build_s": round(keylog_best, 2), "remedy_cost": round(best / keylog_best, 2),
            "audit_default": report["audit"]["auc"]} if remedy else {}),
    }


COLUMNS = [("minutes", "min"), ("frames", "frames"), ("keylog_mb", "keylog MB"), ("plain_decode_fps", "decode fps"),
           ("build_fps", "build fps"), ("ratio", "ratio"), ("peak_rss_mb", "peak RSS MB"),
           ("preprocess_mb_s", "preprocess MB/s"), ("negatives_fps", "negatives fps"),
           ("augment_samples_s", "augment /s"), ("dataset_samples_s", "merge /s"), ("final_samples_s", "final.npz /s"),
           ("stored_bytes_per_sample", "B/sample"), ("compression_ratio", "compression")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="5", help="comma-separated recording lengths")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, the best counts")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench-out"))
    parser.add_argument("--remedy", action="store_true", help="also time the build with positives from the keylog")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    rows = [measure(args.workdir, float(m), args.repeat, args.remedy) for m in args.minutes.split(",")]
    print("  ".join(f"{title:>{max(len(title), 6)}}" for _, title in COLUMNS))
    for row in rows:
        print("  ".join(f"{row[key]:>{max(len(title), 6)}}" for key, title in COLUMNS))
    print("ratio = build fps / plain read() fps of the same video (start-up included in both); "
          "stage rates from the build's own timings")
    for row in rows:
        if "remedy_cost" in row:
            print(f"{row['minutes']:g} min: build {row['build_s']} s with positives from the video (the default), "
                  f"{row['keylog_positives_build_s']} s from the keylog: x{row['remedy_cost']}; audit {row['audit_default']}")
    if args.json:
        print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
