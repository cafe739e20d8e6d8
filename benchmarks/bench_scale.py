"""Past one process: ``build`` of several recordings without Dask, and on a LocalCluster of 1 and 2 workers.

Builds ``--recordings`` synthetic recordings of ``--minutes`` each (made once, cached in --workdir), each
run a fresh ``jumpnet-stream build`` process (start-up and the cluster's start included), into the same
folder, so the outputs' bytes can be compared whole. Reported per run: wall time, the speed-up over the
build without Dask (the reference, same run), the driver's view of each phase (per recording: positives
and survey; the driver's choice of negatives; per recording: negatives; the set), whether dataset.zarr and
final.npz are the same bytes as the reference's, and the peak memory of the driver and of the largest worker:
RSS (``VmHWM``) and anonymous memory (``RssAnon``, polled every 0.05 s), which leaves out the library files'
pages that RSS counts (shared by every process on the host, and more of them mapped the fresher the
installation). Then, on paper, from the rates of the 1-worker run: ``--hours`` of recordings on
``--cluster`` workers (the per-recording phases and the shuffled set's range writes spread over them, the
rest of the set phase serial), and the worker count beyond which the serial part dominates.

    python benchmarks/bench_scale.py [--recordings 4] [--minutes 5] [--workers 0,1,2] [--repeat 1]
                                     [--hours 500] [--cluster 50] [--workdir bench-out] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jumpnet_stream.synth import make_recording  # noqa: E402
from tools.measure import anonymous_mb  # noqa: E402


def recordings(workdir: str, count: int, minutes: float) -> str:
    """A folder of ``count`` recordings of ``minutes`` each in the recorder's layout, made once."""
    folder = os.path.join(workdir, f"scale-{count}x{minutes:g}min")
    if not os.path.isdir(folder):
        partial = folder + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        for i in range(count):
            make_recording(partial, name=f"rec{i}", seconds=60 * minutes, keys=("w",), seed=40 + i, folders=True)
        os.replace(partial, folder)
    return folder


def _peak_mb(process: psutil.Process) -> float:
    try:
        with open(f"/proc/{process.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def digest(folder: str) -> str:
    """One hash over dataset.zarr's files and final.npz."""
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(os.path.join(folder, "dataset.zarr")) for f in names)
    total = hashlib.sha256()
    for path in files + [os.path.join(folder, "final.npz")]:
        with open(path, "rb") as f:
            total.update(os.path.relpath(path, folder).encode() + hashlib.sha256(f.read()).digest())
    return total.hexdigest()


def run(inputs: str, out: str, workers: int) -> dict:
    """One build in a fresh process: wall time, its report, and the peaks of the driver and its workers."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "jumpnet_stream", "build", inputs, "-o", out, "--quiet", "--json"]
    cmd += ["--workers", str(workers)] if workers else []
    start = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    driver = psutil.Process(process.pid)
    peaks: dict[int, float] = {}
    anon: dict[int, float] = {}
    while process.poll() is None:  # VmHWM is a high-water mark: its last reading is the peak so far
        for child in [driver, *driver.children(recursive=True)]:
            peaks[child.pid] = max(peaks.get(child.pid, 0.0), _peak_mb(child))
            anon[child.pid] = max(anon.get(child.pid, 0.0), anonymous_mb(child.pid))
        time.sleep(0.05)
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - start
    if process.returncode:
        sys.exit(f"build failed:\n{stderr}")
    workers_peak = max((mb for pid, mb in peaks.items() if pid != driver.pid), default=None)
    workers_anon = max((mb for pid, mb in anon.items() if pid != driver.pid), default=None)
    with open(os.path.join(out, "manifest.json")) as f:
        shuffled = json.load(f)["stages"]["dataset"]["counts"]["seconds"]  # its spool and its range tasks
    return {"workers": workers, "seconds": round(seconds, 2), "report": json.loads(stdout), "digest": digest(out),
            "shuffled_set_s": shuffled, "driver_peak_mb": round(peaks.get(driver.pid, 0.0)),
            "driver_anon_mb": round(anon.get(driver.pid, 0.0)), "worker_peak_mb": workers_peak and round(workers_peak),
            "worker_anon_mb": workers_anon and round(workers_anon)}


def projection(one: dict, minutes: float, count: int, hours: float, cluster: int) -> dict:
    """``hours`` of recordings on ``cluster`` workers, from one worker's rates: the per-recording phases' worker
    time and the shuffled set's range tasks spread over the workers, plus the rest of the set phase (serial:
    the positives' merge, augmentation, the shuffled set's spool, the audit, final.npz). The set's time grows
    with its samples, which grow with the positives (with a fixed --negatives only they do)."""
    report = one["report"]
    per_recording = sum(s for name, s in report["seconds"].items() if name.split(" ")[0] in ("preprocess", "frames"))
    recorded_minutes = minutes * count
    positives = report["positives"]  # with their augmented copies
    ranges = one["shuffled_set_s"]["ranges"]
    serial_seconds = report["phases"]["set"] - ranges
    samples = positives / recorded_minutes * hours * 60 + report["negatives"]
    parallel = (per_recording / recorded_minutes * hours * 60 + ranges / report["samples"] * samples) / cluster
    serial = serial_seconds / report["samples"] * samples
    # The serial part equals the parallel ones at W workers: (parallel worker time per hour) / W = serial time per hour.
    per_hour_parallel = per_recording / recorded_minutes + ranges / report["samples"] * positives / recorded_minutes
    crossover = per_hour_parallel / (serial_seconds / report["samples"] * positives / recorded_minutes)
    return {"worker_s_per_recorded_hour": round(per_recording / recorded_minutes * 60, 1),
            "serial_set_ms_per_sample": round(1000 * serial_seconds / report["samples"], 2),
            "range_writes_ms_per_sample": round(1000 * ranges / report["samples"], 2),
            "positives_per_recorded_hour": round(positives / recorded_minutes * 60),
            "hours": hours, "cluster": cluster, "parallel_h": round(parallel / 3600, 2),
            "serial_h": round(serial / 3600, 2), "total_h": round((parallel + serial) / 3600, 2),
            "serial_dominates_beyond_workers": round(crossover, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--workers", default="0,1,2", help="comma-separated; 0 is the build without Dask")
    parser.add_argument("--hours", type=float, default=500.0)
    parser.add_argument("--cluster", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each worker count, the fastest kept")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench-out"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    inputs = recordings(args.workdir, args.recordings, args.minutes)
    out = os.path.join(args.workdir, "scale-build")
    best: dict[int, dict] = {}
    for _ in range(args.repeat):  # interleaved, so drifts in the machine's speed hit every count alike
        for workers in (int(w) for w in args.workers.split(",")):
            result = run(inputs, out, workers)
            if workers not in best or result["seconds"] < best[workers]["seconds"]:
                best[workers] = result
    runs = list(best.values())
    reference = runs[0]
    print(f"{args.recordings} recordings of {args.minutes:g} minutes; reference: the build without Dask")
    print("| workers | wall s | speed-up | recordings s | driver's choice s | frames s | set s (range writes) | "
          "same bytes | driver peak MB: RSS / anon | largest worker peak MB: RSS / anon |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in runs:
        phases = r["report"]["phases"]
        worker = f"{r['worker_peak_mb']} / {r['worker_anon_mb']}" if r["worker_peak_mb"] else "-"
        print(f"| {r['workers'] or 'none'} | {r['seconds']} | {reference['seconds'] / r['seconds']:.2f} | "
              f"{phases['recordings']} | {phases['choice']} | {phases['frames']} | {phases['set']} "
              f"({r['shuffled_set_s']['ranges']}) | {'yes' if r['digest'] == reference['digest'] else 'NO'} | "
              f"{r['driver_peak_mb']} / {r['driver_anon_mb']} | "
              f"{worker} |")
    one = next((r for r in runs if r["workers"] == 1), reference)
    paper = projection(one, args.minutes, args.recordings, args.hours, args.cluster)
    print(f"On paper, {args.hours:g} hours on {args.cluster} workers: {paper['parallel_h']} h spread over the workers "
          f"(per-recording phases, range writes) + {paper['serial_h']} h serial (the rest of the set) = "
          f"{paper['total_h']} h; the serial part dominates beyond {paper['serial_dominates_beyond_workers']} workers")
    if args.json:
        print(json.dumps({"runs": [{k: v for k, v in r.items() if k != "report"} | {"phases": r["report"]["phases"]}
                                   for r in runs], "projection": paper}))


if __name__ == "__main__":
    main()
