"""Reading video: seeking to sparse frames against grabbing through, and dense decoding paths.

Two files, made once and cached in --workdir: the recorder's kind (454x454 mp4v, 30 fps, written by
``synth.make_recording``; --mp4v-minutes long) and a screen recorder's kind (1920x1080 H.264 at 60 fps,
B-frames, 250-frame GOPs, written by ``screen_video.write_screen_recording``; --h264-minutes long).

Sparse: for each density "N of M minutes" (N frames chosen uniformly, seeded, from a video of M
minutes; applied to each file at its own length and rate), the time to get the chosen frames as BGR
arrays with ``Video.frames(select, stop_after=last, backend="opencv")`` (today's path: every frame
grabbed up to the last chosen one, the chosen ones retrieved) and with ``Video.frames_at(chosen)`` (the
keyframe index read, then a seek before each run of chosen frames). Both include opening the video.

Dense: every frame of the first --dense-seconds of each file to 227x227 RGB: OpenCV ``read()`` plus
``kernels.resize_rgb`` (today's negatives path) against PyAV paths (``Video.frames(backend="pyav")``,
PyAV's decoder with frame threads, and, for contrast only, FFmpeg's own scaler, which changes pixels:
its largest difference from ``resize_rgb`` is reported), and a plain ``cv2.VideoCapture.read()``
loop (the issue's yardstick).

Every measurement runs in a fresh process, the modes interleaved, --repeat times each; the median
counts (the machine's speed drifts).

    python benchmarks/bench_video.py [--mp4v-minutes 10] [--h264-minutes 3] [--densities 500/10,500/5]
                                     [--dense-seconds 30] [--repeat 3] [--workdir bench-out] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SPARSE_MODES = ("grab", "seek")
DENSE_MODES = ("plain_read", "opencv_resize", "pyav_resize", "pyav_frame_threads_resize", "pyav_scale_filter")


def mp4v_file(workdir: str, minutes: float) -> str:
    """A 454x454 mp4v recording as the recorder writes it (its keylog is not needed here: removed)."""
    from jumpnet_stream.synth import make_recording

    folder = os.path.join(workdir, f"video-mp4v-{minutes:g}min")
    video = os.path.join(folder, "bench_120000.mp4")
    if not os.path.exists(video):
        make_recording(folder, name="bench", seconds=60 * minutes, keys=("w",), seed=21)
        os.remove(os.path.join(folder, "bench.npz"))
    return video


def h264_file(workdir: str, minutes: float) -> str:
    """A 1080p60 H.264 screen recording with B-frames and 250-frame GOPs."""
    from jumpnet_stream.screen_video import write_screen_recording

    path = os.path.join(workdir, f"screen-1080p60-{minutes:g}min.mp4")
    if not os.path.exists(path):
        partial = path + ".partial.mp4"
        write_screen_recording(partial, frames=int(minutes * 60 * 60), width=1920, height=1080, fps=60, gop=250,
                               bframes=3, seed=5)
        os.replace(partial, path)
    return path


WORKER = r"""
import json, sys, time
import numpy as np
mode, path, arg = sys.argv[1], sys.argv[2], sys.argv[3]
from jumpnet_stream.video import Video
from jumpnet_stream.kernels import resize_rgb
size = (227, 227)
out = np.empty((*size, 3), np.uint8)
resize_rgb(np.zeros((454, 454, 3), np.uint8), size, out=out)  # numba compiled (or loaded) before timing
result = {}
excluded = 0.0
start = time.perf_counter()
if mode in ("grab", "seek"):
    wanted = np.array(json.loads(arg), np.int64)
    video = Video(path)
    if mode == "grab":
        chunks = video.frames(set(wanted.tolist()).__contains__, stop_after=int(wanted[-1]), backend="opencv")
    else:
        chunks = video.frames_at(wanted)
    got = 0
    for chunk in chunks:
        got += len(chunk)
    assert got == len(wanted), (got, len(wanted))
    report = video.read_report
    result.update(frames=got, method=report.method, seeks=report.seeks, decoded=report.decoded,
                  index_seconds=report.index_seconds)
else:
    limit = int(arg)
    if mode == "plain_read":
        import cv2
        capture = cv2.VideoCapture(path)
        frame, got = None, 0
        while got < limit:
            ok, frame = capture.read(frame)
            if not ok:
                break
            got += 1
    elif mode in ("opencv_resize", "pyav_resize"):
        video = Video(path)
        got = 0
        for chunk in video.frames(stop_after=limit - 1, backend=mode.split("_")[0]):
            for frame in chunk["frame"]:
                resize_rgb(frame, size, out=out)
                got += 1
        result["method"] = video.read_report.method
    elif mode == "pyav_frame_threads_resize":
        import av
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_type = "FRAME"
            stream.codec_context.thread_count = 2
            got = 0
            for frame in container.decode(stream):
                resize_rgb(np.ascontiguousarray(frame.to_ndarray(format="bgr24")), size, out=out)
                got += 1
                if got == limit:
                    break
    elif mode == "pyav_scale_filter":
        import av
        diff = 0
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            graph = av.filter.Graph()
            chain = [graph.add_buffer(template=stream), graph.add("scale", "227:227:flags=area"),
                     graph.add("format", "rgb24"), graph.add("buffersink")]
            for a, b in zip(chain, chain[1:]):
                a.link_to(b)
            graph.configure()
            got = 0
            for frame in container.decode(stream):
                graph.push(frame)
                rgb = graph.pull().to_ndarray()
                if got % 50 == 0:  # now and then, how far FFmpeg's scaler is from the exact path (not timed)
                    t0 = time.perf_counter()
                    exact = resize_rgb(np.ascontiguousarray(frame.to_ndarray(format="bgr24")), size)
                    diff = max(diff, int(np.abs(rgb.astype(np.int16) - exact).max()))
                    excluded += time.perf_counter() - t0
                got += 1
                if got == limit:
                    break
        result["max_abs_diff_vs_resize_rgb"] = diff
    result["frames"] = got
result["seconds"] = time.perf_counter() - start - excluded
print(json.dumps(result))
"""


def run(mode: str, path: str, arg: str) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", WORKER, mode, path, arg], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"{mode} on {path} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_runs(modes: tuple[str, ...], path: str, arg: str, repeat: int) -> dict[str, dict]:
    """Each mode ``repeat`` times, interleaved; per mode the run of median time (with the median time)."""
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for _ in range(repeat):
        for mode in modes:
            runs[mode].append(run(mode, path, arg))
    chosen = {}
    for mode, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        chosen[mode] = {**min(results, key=lambda r: abs(r["seconds"] - seconds)), "seconds": seconds,
                        "all_seconds": [round(r["seconds"], 3) for r in results]}
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mp4v-minutes", type=float, default=10, help="length of the 454x454 mp4v recording")
    parser.add_argument("--h264-minutes", type=float, default=3, help="length of the 1080p60 H.264 recording")
    parser.add_argument("--densities", default="500/10,500/5,500/60",
                        help='comma-separated "N/M": N frames of a video M minutes long')
    parser.add_argument("--dense-seconds", type=float, default=30, help="video seconds decoded by the dense modes")
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process runs of each mode (the median counts)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: sparse, dense, mp4v, h264")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench-out"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    os.makedirs(args.workdir, exist_ok=True)
    import numpy as np

    from jumpnet_stream.video import Video

    files = []
    if "mp4v" not in skip:
        files.append(("454x454 mp4v 30 fps", mp4v_file(args.workdir, args.mp4v_minutes)))
    if "h264" not in skip:
        files.append(("1080p60 H.264 GOP 250 B-frames", h264_file(args.workdir, args.h264_minutes)))

    sparse, dense = [], []
    for label, path in files:
        video = Video(path)
        frames, fps = video.frame_count(), video.fps
        if "sparse" not in skip:
            for density in args.densities.split(","):
                n, minutes = (float(x) for x in density.split("/"))
                count = max(1, min(frames, round(n / (minutes * 60) * frames / fps)))
                wanted = np.sort(np.random.default_rng(42).choice(frames, count, replace=False))
                result = median_runs(SPARSE_MODES, path, json.dumps(wanted.tolist()), args.repeat)
                grab, seek = result["grab"], result["seek"]
                sparse.append({"video": label, "frames": frames, "density": density, "wanted": count,
                               "grab_s": round(grab["seconds"], 3), "seek_s": round(seek["seconds"], 3),
                               "grab_fps": round(count / grab["seconds"], 1),
                               "seek_fps": round(count / seek["seconds"], 1),
                               "ratio": round(grab["seconds"] / seek["seconds"], 2), "seek_method": seek["method"],
                               "seeks": seek["seeks"], "decoded": seek["decoded"],
                               "index_s": round(seek["index_seconds"], 3),
                               "runs": {m: result[m]["all_seconds"] for m in SPARSE_MODES}})
        if "dense" not in skip:
            limit = min(frames, int(args.dense_seconds * fps))
            result = median_runs(DENSE_MODES, path, str(limit), args.repeat)
            plain = result["plain_read"]["seconds"]
            row = {"video": label, "frames": limit}
            for mode in DENSE_MODES:
                row[f"{mode}_fps"] = round(result[mode]["frames"] / result[mode]["seconds"], 1)
                row[f"{mode}_vs_plain"] = round(plain / result[mode]["seconds"], 2)
            row["pyav_resize_method"] = result["pyav_resize"].get("method")
            row["scale_filter_max_abs_diff"] = result["pyav_scale_filter"]["max_abs_diff_vs_resize_rgb"]
            row["runs"] = {m: result[m]["all_seconds"] for m in DENSE_MODES}
            dense.append(row)

    if sparse:
        print("sparse frames: grab through (today) against seek (frames_at), medians of fresh processes")
        print(f"{'video':<32} {'density':>8} {'wanted':>7} {'grab s':>8} {'seek s':>8} {'grab f/s':>9} "
              f"{'seek f/s':>9} {'ratio':>6} {'seeks':>6} {'decoded':>8} {'index s':>8}")
        for r in sparse:
            print(f"{r['video']:<32} {r['density']:>8} {r['wanted']:>7} {r['grab_s']:>8} {r['seek_s']:>8} "
                  f"{r['grab_fps']:>9} {r['seek_fps']:>9} {r['ratio']:>6} {r['seeks']:>6} {r['decoded']:>8} "
                  f"{r['index_s']:>8}")
    if dense:
        print("\ndense: every frame to 227x227 RGB, frames/s (x plain read() fps)")
        print(f"{'video':<32} {'frames':>7} " + " ".join(f"{m:>26}" for m in DENSE_MODES))
        for r in dense:
            cells = " ".join(f"{str(r[f'{m}_fps']) + ' (x' + str(r[f'{m}_vs_plain']) + ')':>26}" for m in DENSE_MODES)
            print(f"{r['video']:<32} {r['frames']:>7} {cells}")
            print(f"{'':<32} pyav_resize ran as {r['pyav_resize_method']!r}; the scale filter's pixels differ from "
                  f"resize_rgb's by up to {r['scale_filter_max_abs_diff']}")
    if args.json:
        print(json.dumps({"sparse": sparse, "dense": dense}))


if __name__ == "__main__":
    main()
