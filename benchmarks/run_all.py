"""Every benchmark in one run, summarised as a Markdown table (ours, the reference from the same run, the ratio).

Runs bench_kernels, bench_negatives, bench_pipeline and bench_preprocess_memory with ``--json`` in
fresh processes, and writes ``--out`` (default benchmarks/RESULTS.md) with the machine it ran on.
The full run (``--minutes 5,20,60``) writes about 16 GB of synthetic recordings into --workdir
(cached for the next run) and takes about half an hour; ``--quick`` measures 1 and 5 minutes only.

    python benchmarks/run_all.py [--quick] [--workdir bench-out] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(script: str, *args: str) -> dict:
    """A benchmark's last stdout line, parsed (its ``--json`` object); its table is echoed."""
    cmd = [sys.executable, os.path.join(HERE, script), *args, "--json"]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        sys.exit(f"{script} failed:\n{proc.stderr}")
    lines = proc.stdout.strip().splitlines()
    print("\n".join(lines[:-1]), flush=True)
    return json.loads(lines[-1])


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    import cv2
    import numba
    import numpy
    import zarr
    return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GB RAM, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, numpy {numpy.__version__}, OpenCV {cv2.__version__}, "
            f"numba {numba.__version__}, zarr {zarr.__version__}")


def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 and 5 minute recordings only")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench-out"))
    parser.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = parser.parse_args()
    minutes = "1,5" if args.quick else "5,20,60"
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    kernels = run("bench_kernels.py")
    negatives = run("bench_negatives.py", "--minutes", minutes, "--repeat", "2", "--workdir", args.workdir)
    pipeline = run("bench_pipeline.py", "--minutes", minutes, "--repeat", "2", "--workdir", args.workdir)
    os.makedirs(args.workdir, exist_ok=True)
    preprocess = run("bench_preprocess_memory.py", "--minutes", "1,5" if args.quick else "1,5,20",
                     "--workdir", args.workdir)

    lines = ["# Benchmark results", "", f"{started}, `python benchmarks/run_all.py{' --quick' if args.quick else ''}`",
             "", f"Machine: {machine()}", "",
             "Ratios compare figures from the same run; absolute figures drift by up to 30% on shared machines.",
             "", "## Kernels (`bench_kernels.py`, median of repeats, compile/cache load excluded)", ""]
    rows = [[case, f"{c['ours_us']:.1f} us", f"{c['cv2_us']:.1f} us", f"**{c['speedup']}x**"]
            for case, c in kernels["cases"].items()]
    rows.append(["augment, 64 images 227x227, all four transforms", f"{kernels['augment_chunk_ms']} ms",
                 f"{kernels['augment_numpy_chunk_ms']} ms (numpy chain)", f"**{kernels['augment_speedup_vs_numpy']}x**"])
    lines += table(["work", "ours", "reference", "speed-up"], rows)
    lines += ["", f"First calls (numba cache load): {kernels['first_call_ms']} ms.", "",
              "## Negatives against plain decoding (`bench_negatives.py`)", ""]
    lines += table(["minutes", "frames", "plain read() fps", "negatives fps", "ratio", "peak RSS MB", "stored B/frame"],
                   [[r["minutes"], r["frames"], r["plain_decode_fps"], r["negatives_fps"], f"**{r['ratio']}**",
                     r["negatives_peak_rss_mb"], r["store_bytes_per_frame"]] for r in negatives["rows"]])
    lines += ["", "## The whole build (`bench_pipeline.py`)", ""]
    lines += table(["minutes", "keylog MB", "plain read() fps", "build fps", "ratio", "peak RSS MB",
                    "preprocess MB/s", "negatives fps", "augment /s", "merge /s", "final.npz /s", "B/sample",
                    "compression"],
                   [[r["minutes"], r["keylog_mb"], r["plain_decode_fps"], r["build_fps"], f"**{r['ratio']}**",
                     r["peak_rss_mb"], r["preprocess_mb_s"], r["negatives_fps"], r["augment_samples_s"],
                     r["dataset_samples_s"], r["final_samples_s"], r["stored_bytes_per_sample"],
                     r["compression_ratio"]] for r in pipeline["rows"]])
    lines += ["", "## Preprocess memory against keylog size (`bench_preprocess_memory.py`)", ""]
    lines += table(["minutes", "keylog MB", "preprocess peak RSS MB", "seconds", "np.load peak RSS MB", "ratio"],
                   [[r["minutes"], r["keylog_mb"], r["preprocess_peak_mb"], r["preprocess_s"], r["np_load_peak_mb"],
                     f"**{r['ratio']}x**"] for r in preprocess["rows"]])
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
